"""Who owns a run folder: a lock file taken atomically, and what happens to a finished run.

``OUT/.lock`` holds the owner's PID, host, process start time and command, created with
``O_CREAT | O_EXCL`` so that exactly one trainer wins. A lock whose process is gone (same host,
PID dead or reused by another program) is stale: it is reported and taken over. A live owner, or
one on another host, is named in the refusal. ``claim_run`` also decides, for training and distillation
alike, what may happen to a folder that already holds a run: resume it, refuse, or (``overwrite``) move it aside.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, bad_value
from ..store.files import clean_stale_temps, disk_error, write_json

LOCK = ".lock"
RUN_FILES = ("state.pt", "config.json", "metrics.csv", "model", "samples")  # what makes a folder a run


@dataclass
class RunLock:
    path: Path
    owner: dict

    def release(self) -> None:
        """Remove the lock if it is still ours (a later owner's lock is left alone)."""
        if read_owner(self.path) == self.owner:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:  # a disk turned read-only: the next trainer finds this PID dead and takes over
                pass

    def move(self, folder: Path) -> None:
        self.path = folder / LOCK


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so that a reused PID is not taken for the owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    started = owner.get("start_time")
    return started is None or _start_time(pid) in (None, started)


def read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def describe(owner: dict | None) -> str:
    if not owner:
        return "an unknown process (the lock file is empty or unreadable)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
    return f"PID {owner.get('pid')} on {owner.get('host')} since {since} ({owner.get('command', '?')})"


def acquire(folder: Path, notes: list[str]) -> RunLock:
    """Take ``folder/.lock`` or refuse, naming its holder; stale locks are reported in ``notes`` and taken over."""
    path = folder / LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return _acquire(folder, path, notes)
    except OSError as e:  # a read-only or full disk, a folder we may not write: one line, nothing changed
        raise UsageError(f"run folder {folder} cannot be written ({disk_error(e) or e.strerror or e}); "
                         f"nothing was changed there") from None


def _acquire(folder: Path, path: Path, notes: list[str]) -> RunLock:
    command = " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])[:200] if sys.argv else "?"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": _start_time(os.getpid()),
          "started": time.time(), "job": os.environ.get("TORCHELASTIC_RUN_ID"), "command": command}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_owner(path)
            fresh = time.time() - _mtime(path) < 10
            if owner is None and fresh:  # another trainer is between creating and filling it
                raise UsageError(f"run folder {folder} is being claimed by another process right now "
                                 f"(lock file {path}); use another --out") from None
            if owner is not None and _earlier_attempt(owner, me):
                notes.append(f"took over the lock of an earlier attempt of this torchrun job ({describe(owner)})")
                path.unlink(missing_ok=True)
                continue
            if owner is not None and owner.get("host") != me["host"]:
                raise UsageError(f"run folder {folder} is locked by {describe(owner)}; this machine cannot "
                                 f"check whether it still runs: if it does not, delete {path}") from None
            if owner is not None and _alive(owner):
                raise UsageError(f"run folder {folder} is in use by {describe(owner)}; wait for it to finish, "
                                 f"stop it, or use another --out") from None
            notes.append(f"removed a stale lock in {folder}: {describe(owner)} is no longer running")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
            f.flush()
            os.fsync(f.fileno())
        return RunLock(path, json.loads(json.dumps(me)))
    raise UsageError(f"run folder {folder}: another process took the lock {path} at the same moment; use another --out")


def _earlier_attempt(owner: dict, me: dict) -> bool:
    """A lock left by this torchrun job before it restarted its workers (rank 0 may now be on another node)."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    return restarted and me["job"] is not None and owner.get("job") == me["job"] and owner.get("pid") != me["pid"]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def holds_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in RUN_FILES)


def move_aside(folder: Path) -> Path:
    """Rename a finished run to ``FOLDER.old-YYYYmmdd-HHMMSS`` (nothing is deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.old-{stamp}")
    k = 1
    while target.exists():
        target, k = folder.with_name(f"{folder.name}.old-{stamp}-{k}"), k + 1
    os.replace(folder, target)
    return target


@dataclass(frozen=True)
class RunRecord:
    """A run's settings kept as JSON in its folder (a distillation's ``distill.json``): written whole on a fresh
    start, and what a resume continues from, which must bring the same settings apart from ``overrides``."""

    file: str  # the record's name in the run folder
    noun: str  # what such a run is called in messages ("distillation")
    section: str  # the record's entry that holds the settings a resume compares
    content: dict  # the record this call writes on a fresh start
    overrides: tuple[str, ...] = ()  # settings a resume takes from this call rather than from the record
    parts: tuple[str, ...] = ()  # entries besides RUN_FILES that make a folder such a run ("stages")

    def read(self, out: Path) -> dict:
        """The record in ``out``, ``{}`` when there is none; an unreadable one is refused."""
        path = out / self.file
        if not path.is_file():
            return {}
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"{path} could not be read ({e}); move the folder aside or use --overwrite") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path} is not a {self.noun} record; use --overwrite")
        return record

    def write(self, out: Path, update: dict, fresh: bool = False) -> None:
        """Merge ``update`` into the record, atomically; ``fresh``: replace whatever was there."""
        record = {} if fresh else self.read(out)
        write_json(out / self.file, {**record, **update})

    def check(self, out: Path, old: dict) -> None:
        """Refuse to resume the run recorded as ``old`` with other settings, naming each one that changed."""
        mine = {k: v for k, v in self.content[self.section].items() if k not in self.overrides}
        theirs = {k: v for k, v in old.get(self.section, {}).items() if k not in self.overrides}
        if mine != theirs:
            changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise UsageError(f"{out} holds a {self.noun} with other settings ({', '.join(changed)}); resume "
                             f"it with the same ones, or use --overwrite")


def claim_run(out: Path, resume: bool | str, overwrite: bool, holder: list, note,
              record: RunRecord | None = None) -> str:
    """Rank 0 decides what a command does with ``out``: ``resume``, ``fresh`` or ``overwrite`` (or refuses, leaving
    the folder as it was). The lock it takes is appended to ``holder``; ``note`` receives what the caller should
    tell the user.

    A training run continues from its state (``state.pt``) and moves an old run aside itself once its data has
    loaded (``replace_run``). A run with a ``record`` (a distillation, whose caller has checked everything first)
    continues from the record with the same settings only; on a fresh start the old run is moved aside and the
    record written here, so ``overwrite`` is then already done."""
    existed = out.exists()
    if existed and not out.is_dir():
        raise bad_value("out", str(out), f"a folder for the {record.noun if record else 'run'} (that path is a file)")
    stale: list[str] = []
    lock = acquire(out, stale)  # refuses if another process owns it; a dead one's lock is taken over
    for text in stale:
        note(text)
    try:
        mode = _decide(out, resume, overwrite, record, note)
        if record is not None and mode != "resume":
            if mode == "overwrite":
                lock = replace_run(out, lock, note)
            clean_stale_temps(out)  # left by a writer killed mid-write; we hold the lock, nobody else writes
            record.write(out, record.content, fresh=True)
    except BaseException:
        lock.release()
        if not existed:
            remove_empty(out)
        raise
    holder.append(lock)
    return mode


def _decide(out: Path, resume: bool | str, overwrite: bool, record: RunRecord | None, note) -> str:
    """The one rule for a folder that may hold a run: resume it only when asked and there is something to resume;
    refuse a folder that holds a run unless it may be moved aside (``overwrite``) or, for training with
    ``resume="auto"``, the run never got as far as a state or a model (it is started again)."""
    old = record.read(out) if record else {}
    saved = bool(old) if record else (out / "state.pt").is_file()
    if resume is True and not saved:
        raise UsageError(f"{out / record.file} does not exist (nothing to resume); drop --resume to start" if record
                         else f"training state {out / 'state.pt'} does not exist (nothing to resume); drop --resume "
                              f"to start a new run, or use --resume auto")
    if saved and resume:
        if record:
            record.check(out, old)
            note(f"resuming the {record.noun} in {out}")
        return "resume"
    taken = holds_run(out) or saved or any((out / part).exists() for part in (record.parts if record else ()))
    restart = resume == "auto" and record is None and not (out / "model").exists()
    if taken and not (overwrite or restart):
        what = "a training state" if saved else "an exported model" if (out / "model").exists() else "a run"
        where = f"folder {out} already holds a run" if record else f"run folder {out} already holds {what}"
        raise UsageError(f"{where}; continue it with --resume, pass --overwrite to move it aside (to "
                         f"{out.name}.old-<time>), or choose another --out")
    if resume == "auto" and record is None:
        note(f"no training state in {out}: starting a fresh run")
    return "overwrite" if taken and overwrite else "fresh"


def replace_run(out: Path, lock: RunLock, note) -> RunLock:
    """``--overwrite``: move the old run aside whole (nothing deleted), take the lock in a fresh folder."""
    moved = move_aside(out)
    lock.move(moved)
    new_lock = acquire(out, [])
    lock.release()
    note(f"--overwrite: moved the previous run to {moved}")
    return new_lock


def remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
