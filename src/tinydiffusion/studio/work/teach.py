"""The studio's Teach: fine-tune a listed model on the user's pictures (``training/finetune.py``), one at a time.

``POST /api/teach`` brings the pictures as data URLs in its JSON body; ``parse_teach`` checks every value with the
library's own checks (``FinetuneConfig``, the picture reader ``imagefile.read_image``) before anything is written.
``Teacher.start`` then makes a fresh folder under the first ``--runs`` folder, named by the server
(``teach-SLUG-TIME``: never a path from the request), writes the pictures into its ``pictures/`` and runs
``finetune`` in a background thread with ``out`` = that folder: an ordinary fine-tune run (``train/`` with
``metrics.csv`` and sample grids, ``model/``, ``report.*``), which the catalog lists like any run and model.
What ``finetune`` refuses before it claims the folder (a student base, a class the base has, a text model without
a prompt, too few pictures) comes back to the request as 422 with the library's message, and the folder is removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ... import checks
from ...errors import UsageError, bad_value
from ...store.pictures import save_picture
from ...training.finetune import RECORD, FinetuneConfig, finetune
from ...training.finetune_data import MIN_IMAGES
from ...training.finetune_report import lines
from ...vocab import FINETUNE_MINUTES as DEFAULT_MINUTES
from ..catalog import Catalog, ModelEntry, NotFound
from ..runfiles import MAX_PICTURE, read_bounded
from .edits import decode
from .jobs import INTERNAL

log = logging.getLogger("tinydiffusion.studio")
MAX_TEACH_BODY = 16 * 2**20  # bytes of the JSON body: up to MAX_TEACH_IMAGES small pictures (the page shrinks them)
MAX_TEACH_IMAGES = 100
MINUTES = (0.1, 30.0)  # bounds of a fine-tune's training budget in the studio
MAX_STEPS = 100_000
REPORT_SAMPLES, MAX_REPORT_SAMPLES = 20, 50  # the report's samples per class (0: no report)
TEACH_KEYS = ("base", "class", "prompt", "images", "minutes", "steps", "method", "report_samples")
WAIT_S = 300.0  # how long POST /api/teach waits for the fine-tune to pass its checks before answering anyway


class Busy(UsageError):
    """A fine-tune is already running: 409."""

    status = 409


@dataclass(frozen=True, eq=False)
class TeachRequest:
    entry: ModelEntry  # the listed base model
    config: FinetuneConfig  # checked; its data and out are set by Teacher.start
    pictures: list[np.ndarray]  # uint8 [S, S, 3] each, at the base's size


def limits() -> dict[str, Any]:
    """What the page needs to know about a Teach request's bounds."""
    return {"min_images": MIN_IMAGES, "max_images": MAX_TEACH_IMAGES, "minutes": list(MINUTES),
            "default_minutes": DEFAULT_MINUTES, "report_samples": REPORT_SAMPLES,
            "max_report_samples": MAX_REPORT_SAMPLES, "max_body": MAX_TEACH_BODY}


def parse_teach(raw: Any, catalog: Catalog, device: str = "cpu") -> TeachRequest:
    """Every value of a Teach request checked (422 naming it), the pictures decoded; nothing written."""
    if not isinstance(raw, Mapping):
        raise UsageError(f"the request body is {type(raw).__name__}; expected a JSON object with base, class, images")
    unknown = [k for k in raw if k not in TEACH_KEYS]
    if unknown:
        raise UsageError(f"unknown parameter {str(unknown[0])[:40]!r}; known: {', '.join(TEACH_KEYS)}")
    entry = _base(raw.get("base"), catalog)
    minutes = checks.finite("minutes", raw.get("minutes", DEFAULT_MINUTES), low=MINUTES[0], high=MINUTES[1],
                            allowed=f"minutes of training from {MINUTES[0]:g} to {MINUTES[1]:g}")
    steps = raw.get("steps")
    if steps is not None:
        steps = checks.integer("steps", steps, low=1, high=MAX_STEPS, allowed=f"at most {MAX_STEPS} optimizer steps")
    samples = checks.integer("report_samples", raw.get("report_samples", REPORT_SAMPLES), low=0,
                             high=MAX_REPORT_SAMPLES,
                             allowed=f"0 (no report) to {MAX_REPORT_SAMPLES} samples per class")
    settings = {"name": raw.get("class"), "prompt": raw.get("prompt"), "method": raw.get("method", "lora")}
    config = FinetuneConfig(base=entry.name if entry.source == "shipped" else str(entry.path), data="pictures",
                            out="run", minutes=minutes, steps=steps, report_samples=samples, progress=False,
                            device=device, **settings)  # the library's checks: the class name, method, prompt
    images = raw.get("images")
    if not isinstance(images, list) or not MIN_IMAGES <= len(images) <= MAX_TEACH_IMAGES:
        shown = f"{len(images)} pictures" if isinstance(images, list) else type(images).__name__
        raise bad_value("images", shown, f"a list of {MIN_IMAGES} to {MAX_TEACH_IMAGES} PNG or JPEG pictures of the "
                                         f"new class as data URLs (data:image/png;base64,...); about 20 is typical")
    size = int(entry.config["model"]["image_size"])
    return TeachRequest(entry, config, [decode(f"images[{i}]", v, size) for i, v in enumerate(images)])


def _base(name: Any, catalog: Catalog) -> ModelEntry:
    """The listed model a Teach request fine-tunes (its kind and whether it is a student: ``finetune`` checks)."""
    try:
        entry = catalog.model(name)
    except NotFound:
        raise bad_value("base", name if isinstance(name, str) or name is None else type(name).__name__,
                        "the name of a listed model to fine-tune (GET /api/models)") from None
    if not entry.available:
        raise bad_value("base", name, f"a model that can be loaded here ({entry.reason})")
    return entry


class Teacher:
    """The one fine-tune the studio runs at a time (a second start while it runs: ``Busy``, 409), and the state of
    the last one (``status``)."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._lock = threading.Lock()
        self._busy = False
        self._state: dict[str, Any] = {"state": "idle"}
        self._folder: Path | None = None

    @property
    def root(self) -> tuple[str, Path] | None:
        """``(listed name, folder)`` of the runs folder fine-tunes are written to: the first ``--runs`` folder."""
        return self.catalog.roots[0] if self.catalog.roots else None

    def status(self) -> dict[str, Any]:
        with self._lock:
            state, folder = dict(self._state), self._folder
        if state["state"] == "preparing" and folder is not None and (folder / RECORD).is_file():
            state["state"] = "training"  # its checks passed: it claimed the folder
        root = self.root
        reason = None if root else "the studio lists no runs folder: start it with --runs FOLDER to fine-tune there"
        return {**state, "enabled": root is not None, "reason": reason, "limits": limits()}

    def start(self, request: TeachRequest) -> None:
        """Write the pictures into a fresh folder and start the fine-tune in a thread; ``Busy`` while one runs."""
        root = self.root
        if root is None:
            raise UsageError(self.status()["reason"])
        with self._lock:
            if self._busy:
                raise Busy(f"a fine-tune is already running ({self._state.get('run')}); wait for it to finish "
                           f"(GET /api/teach)")
            self._busy = True
        try:
            folder = _fresh_folder(root[1], request.config.name or "concept")
            for i, picture in enumerate(request.pictures):
                save_picture(folder / "pictures" / f"{i:03d}.png", Image.fromarray(picture), format="PNG")
        except BaseException:
            with self._lock:
                self._busy = False
            raise
        config = replace(request.config, data=str(folder / "pictures"), out=str(folder))
        name = f"{root[0]}/{folder.name}"
        with self._lock:
            self._folder = folder
            self._state = {"state": "preparing", "base": request.entry.name, "class": request.config.name,
                           "prompt": request.config.prompt, "run": name, "model": None, "started": time.time(),
                           "minutes": config.minutes, "pictures": len(request.pictures), "note": None}
        threading.Thread(target=self._work, args=(config, folder, name), name="studio-teach", daemon=True).start()

    async def started(self, poll_s: float = 0.1) -> dict[str, Any]:
        """Wait until the fine-tune has passed its checks (claimed its folder) or failed; a refusal is raised."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            state = self.status()
            if state["state"] == "refused":
                raise UsageError(state["error"])
            if state["state"] != "preparing":
                return state
            await asyncio.sleep(poll_s)
        return self.status()

    def report_png(self) -> bytes:
        """The last finished fine-tune's ``report.png`` (its new class's samples above their nearest pictures)."""
        with self._lock:
            folder = self._folder if self._state.get("state") == "done" else None
        data = read_bounded(folder / "report.png", MAX_PICTURE) if folder is not None else b""
        if not data:
            raise NotFound("no fine-tune report picture (none has finished here, or it ran with report_samples 0)")
        return data

    # ---------------------------------------------------------------- the thread
    def _work(self, config: FinetuneConfig, folder: Path, name: str) -> None:
        update: dict[str, Any]
        try:
            result = finetune(config, notify=self._note)
            self.catalog.rescan()  # the fine-tuned model joins the listing at once
            report = result.report
            update = {"state": "done", "model": name, "steps": result.step, "seconds": round(result.seconds, 1),
                      "report": _finite(report), "summary": [self.catalog.redact(line) for line in lines(report)]
                      if report else []}
        except UsageError as e:
            claimed = (folder / RECORD).is_file()
            log.info("fine-tune %s refused: %s", name, e)
            update = {"state": "error" if claimed else "refused", "error": self.catalog.redact(str(e))}
        except Exception:  # logged with its traceback, never shown
            log.exception("fine-tune %s failed", name)
            update = {"state": "error", "error": INTERNAL}
        if not (folder / RECORD).is_file():  # refused before it claimed the folder: only the pictures we wrote
            shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._state = {**self._state, **update, "finished": time.time()}
            self._busy = False

    def _note(self, text: str) -> None:
        log.info("fine-tune: %s", text)
        with self._lock:
            self._state["note"] = self.catalog.redact(str(text))


def _finite(value: Any) -> Any:
    """``value`` (the report) with every non-finite number as ``None``: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _fresh_folder(root: Path, name: str) -> Path:
    """A new folder ``root/teach-SLUG-TIME`` (a suffix when taken), made here: the name never comes from a path."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24] or "concept"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(100):
        folder = root / (f"teach-{slug}-{stamp}" + (f"-{k + 1}" if k else ""))
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            continue
    raise UsageError(f"could not make a fresh folder for the fine-tune under the runs folder (teach-{slug}-{stamp}…)")
