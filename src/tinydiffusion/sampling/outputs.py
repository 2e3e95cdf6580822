"""What sampling commands write, written one way for ``sample``, ``edit``, ``interpolate`` and the studio.

``--out`` ending in ``.png`` is a grid (a row per context, a column per seed; an edit shows its input and
mask before each row), ``.npz`` the raw uint8 images with their context rows (and class labels when every row
is one class), no suffix a folder of PNGs with ``metadata.json``. Every file appears whole or not at all
(``store/files.py``). ``Frames`` records the denoising for a GIF with bounded memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..conditioning.spec import ContextSpec
from ..errors import bad_value
from ..runtime import shard
from ..runtime.dist import DistInfo
from ..store.files import AtomicFolder, save_npz, write_text
from ..store.pictures import beside, save_grid, to_uint8

MAX_GIF_FRAMES = 60  # frames of a denoising animation (and of the studio's live view); the last step always kept
SHOWN_NAMES = ("input", "mask")  # the pictures an edit shows before each row, by their file names in a folder


@dataclass
class Output:
    """Pictures made by one command and what is written beside them."""

    pictures: np.ndarray  # uint8 [N, S, S, 3], row by row
    ncol: int  # pictures per row
    metadata: dict[str, Any]  # how they were made (the settings used); the PNG text chunk, metadata.json
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # contexts, labels, inputs, … for the .npz
    names: list[str] = field(default_factory=list)  # a file name (no suffix) per picture for a folder
    shown: list[np.ndarray] = field(default_factory=list)  # [S, S, 3] pictures before each row (input, mask)


def write(out: str | Path, output: Output) -> Path:
    """``output`` as a ``.png`` grid, an ``.npz`` or a folder (no suffix), by the suffix of ``out``."""
    out, text = Path(out), json.dumps(output.metadata)
    if out.suffix.lower() == ".png":
        pictures = beside(output.pictures, output.shown, output.ncol) if output.shown else output.pictures
        return save_grid(pictures, out, ncol=output.ncol + len(output.shown), text={"tinydiffusion": text})
    if out.suffix == "":
        with AtomicFolder(out) as tmp:
            write_pngs(tmp, output.pictures, output.names)
            write_pngs(tmp, output.shown, SHOWN_NAMES)
            write_text(tmp / "metadata.json", text + "\n")
        return out
    return save_npz(out, {"images": output.pictures, **output.arrays, "metadata": np.array(text)})


def write_pngs(folder: Path, pictures, names) -> None:
    """One PNG per picture, ``NAME.png``, into ``folder`` (the hidden temp folder of a folder output)."""
    for picture, name in zip(pictures, names):
        Image.fromarray(picture).save(folder / f"{name}.png")


def picture_names(rows: list[str], n: int, seed: int, total: int, start: int = 0, count: int | None = None
                  ) -> list[str]:
    """File names of pictures ``start …``: ``0007_hero_seed3`` (index, row, seed), the index zero-padded."""
    digits = max(4, len(str(total - 1)))
    safe = [r.replace("/", "_").replace(" ", "_") for r in rows] or ["uncond"]
    names = []
    for k in range(start, start + (total - start if count is None else count)):
        row, col = divmod(k, n)
        names.append(f"{k:0{digits}d}_{safe[row if len(safe) > 1 else 0]}_seed{seed + col}")
    return names


def context_arrays(rows: list[str], contexts: torch.Tensor | None, n: int, spec: ContextSpec, count: int
                   ) -> dict[str, np.ndarray]:
    """``contexts`` float32 ``[N, D]`` (every image's row; zeros when unconditional) and ``labels`` int64 ``[N]``
    when every row is a single class of ``spec``."""
    out = {"contexts": np.zeros((count, spec.width), np.float32) if contexts is None else
           contexts.repeat_interleave(n, dim=0).numpy().astype(np.float32)}
    labels = [spec.label_of(r) for r in rows]
    if rows and all(label is not None for label in labels):
        out["labels"] = np.repeat(np.array(labels, dtype=np.int64), n)
    return out


def check_replaceable(out: Path) -> None:
    """A folder output replaces ``out`` whole, so ``out`` must be new or an earlier folder of samples
    (PNGs and metadata.json): never the working folder, one above it, or a folder of other files."""
    if out.is_dir():
        here, target = Path.cwd().resolve(), out.resolve()
        if target == here or target in here.parents:
            raise bad_value("out", str(out), "a new folder for the samples, not the working folder or one above it")
        others = [p.name for p in out.iterdir() if p.name != "metadata.json" and p.suffix.lower() != ".png"]
        if others or (any(out.iterdir()) and not (out / "metadata.json").is_file()):
            raise bad_value("out", str(out), f"a new folder or an earlier folder of samples, which is replaced whole; "
                                             f"this one holds other files ({', '.join(sorted(others)[:3]) or 'PNGs without metadata.json'})")


class Frames:
    """A sampler callback that keeps uint8 snapshots of ``x_t`` per step and batch (``batch`` is set by the
    caller). Memory stays bounded: every other kept step is dropped whenever more than twice
    ``MAX_GIF_FRAMES`` are held, and ``gather`` thins what is left to ``MAX_GIF_FRAMES``."""

    def __init__(self) -> None:
        self.parts: dict[int, dict[int, np.ndarray]] = {}  # step -> batch -> [b, H, W, 3]
        self.stride, self.batch = 1, 0

    def __call__(self, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if i % self.stride:
            return
        self.parts.setdefault(i, {})[self.batch] = to_uint8(x_t)
        if len(self.parts) > 2 * MAX_GIF_FRAMES:  # every batch walks the same steps, so all keep the same ones
            self.stride *= 2
            self.parts = {s: p for s, p in self.parts.items() if s % self.stride == 0}

    def gather(self, info: DistInfo | None = None) -> list[np.ndarray] | None:
        """Rank 0: the thinned frames of every rank's batches, images in the one-process order (None elsewhere)."""
        info = info or DistInfo()
        everyone = shard.gather([(0, self.parts)], info) if info.world > 1 else [self.parts]
        if everyone is None:
            return None
        merged: dict[int, dict[int, np.ndarray]] = {}
        for parts in everyone:
            for step, batches in parts.items():
                merged.setdefault(step, {}).update(batches)
        steps = sorted(merged)
        stride = max(1, -(-len(steps) // MAX_GIF_FRAMES))
        return [np.concatenate([merged[s][b] for b in sorted(merged[s])]) for s in steps[::stride]]
