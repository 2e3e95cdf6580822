"""Every file the package writes goes through here: whole or not at all, never half.

A writer fills a temp file in the target's folder, flushes and fsyncs it, then ``os.replace``
swaps it in (atomic on POSIX), so a reader or a crash sees the old bytes or the new, never a mix.
A folder of outputs is built as a hidden sibling and renamed into place the same way. A full disk
or a read-only folder becomes one ``UsageError`` line that says what was kept.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError

TMP_SUFFIX = ".tmp"
_NO_ROOM = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None], *, kept: str | None = None) -> Path:
    """Write through ``write(file)`` so that ``path`` holds either the old or the new bytes, never half.

    ``kept`` says what survives a failure ("the previous state at step 40 is intact"); a full or
    read-only disk is reported as one ``UsageError`` line naming the file and that.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        reason = disk_error(e)
        if reason:
            raise UsageError(f"{reason} while writing {path}; " + (kept or "nothing was changed there")) from None
        raise
    return path


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before any thread writes
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def disk_error(e: BaseException) -> str | None:
    """The plain reason when ``e`` (or what caused it, e.g. inside torch.save) is a full or read-only disk."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in _NO_ROOM:
            return _NO_ROOM[e.errno]
        text = str(e).lower()
        for reason in ("no space left on device", "disk quota exceeded", "read-only file system"):
            if reason in text:
                return reason
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def write_bytes(path: str | Path, data: bytes, **kw: Any) -> Path:
    return atomic_write(path, lambda f: f.write(data), **kw)


def write_text(path: str | Path, text: str, **kw: Any) -> Path:
    return write_bytes(path, text.encode(), **kw)


def write_json(path: str | Path, data: Any, **kw: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=list) + "\n", **kw)


def save_npz(path: str | Path, arrays: dict[str, Any], compressed: bool = True) -> Path:
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda f: save(f, **arrays))


class AtomicFolder:
    """Build a folder of outputs as a hidden sibling, then swap it in with one rename.

    ``with AtomicFolder(out) as tmp: ...write into tmp...``: on success ``out`` is replaced as a
    whole (an old folder of the same name is removed only after the new one is complete); on
    failure the partial sibling is deleted and ``out`` is untouched.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=TMP_SUFFIX, dir=self.path.parent))
        os.chmod(self.tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        return self.tmp

    def __exit__(self, kind, value, tb) -> bool:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            reason = disk_error(value) if value is not None else None
            if reason:
                raise UsageError(f"{reason} while writing {self.path}; nothing was changed there") from None
            return False
        old = None
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old.{os.getpid()}.{time.monotonic_ns()}{TMP_SUFFIX}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        return False


def clean_stale_temps(folder: str | Path) -> list[Path]:
    """Remove temp files and folders a killed writer left behind (``.NAME.*.tmp``) directly in ``folder``."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.glob(f".*{TMP_SUFFIX}"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tinydiffusion``, else ``~/.cache/tinydiffusion``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")  # the spec ignores relative values
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache") / "tinydiffusion"
