"""Sampling to files: ``sample_to_files(SampleConfig) -> SampleResult`` (what ``tinydiffusion sample`` runs).

``--out`` ending in ``.png`` writes a grid (one row per context, one column per seed), ``.npz``
the raw uint8 images with their contexts (and class labels), anything else a folder of PNGs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .dist import resolve_device
from .errors import bad_value
from .images import save_gif, save_grid, to_uint8
from .pipeline import Pipeline, load

MAX_GIF_FRAMES = 60


@dataclass(frozen=True)
class SampleConfig:
    model: str
    sampler: str = "ddpm"
    steps: int | None = None
    eta: float | None = None
    variance: str | None = None
    extra_noise: bool = True
    spacing: str = "trailing"
    contexts: tuple[str, ...] = ()  # empty: one row per class (or one unconditional row)
    n: int = 8  # images per row
    seed: int = 0
    out: str = "samples.png"
    gif: str | None = None
    batch_size: int = 64
    device: str = "auto"

    def options(self) -> dict:
        """Sampler options the user set; a sampler that does not take one refuses it by name."""
        opts = {"spacing": self.spacing}
        if self.eta is not None:
            opts["eta"] = self.eta
        if self.variance is not None:
            opts["variance"] = self.variance
        if not self.extra_noise:
            opts["extra_noise"] = False
        return opts


@dataclass(frozen=True)
class SampleResult:
    paths: list[Path]
    seconds: float
    nfe: int  # network evaluations per image
    count: int
    rows: list[str] = field(default_factory=list)


def sample_to_files(config: SampleConfig, pipeline: Pipeline | None = None) -> SampleResult:
    if config.n < 1:
        raise bad_value("n", config.n, "a positive number of images per row")
    pipe = pipeline or load(config.model, device=resolve_device(config.device))
    rows = list(config.contexts) or (list(pipe.context.names) if pipe.context.kind == "class" else [])
    calls, recorder = [0], _Frames(pipe.schedule, config) if config.gif else None
    hook = pipe.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))  # counts NFE
    t0 = time.perf_counter()
    try:
        images = pipe.sample(rows or None, n=config.n, seed=config.seed, sampler=config.sampler, steps=config.steps,
                             batch_size=config.batch_size, callback=recorder, **config.options())
    finally:
        hook.remove()
    seconds = time.perf_counter() - t0
    chunks = -(-images.shape[0] // config.batch_size)
    pictures = to_uint8(images)
    paths = [_write(pictures, pipe, rows, config)]
    if recorder is not None:
        paths.append(save_gif(recorder.frames() + [pictures], config.gif, ncol=config.n))
    return SampleResult(paths, seconds, calls[0] // chunks, len(pictures), rows)


def _write(pictures: np.ndarray, pipe: Pipeline, rows: list[str], config: SampleConfig) -> Path:
    out = Path(config.out)
    if out.suffix == ".png":
        return save_grid(pictures, out, ncol=config.n)
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        contexts = pipe.contexts(rows or None)
        width = pipe.context.width
        ctx = np.zeros((len(pictures), width), np.float32) if contexts is None else \
            contexts.repeat_interleave(config.n, dim=0).numpy().astype(np.float32)
        arrays = {"images": pictures, "contexts": ctx}
        labels = [pipe.context.label_of(r) for r in rows]
        if rows and all(label is not None for label in labels):
            arrays["labels"] = np.repeat(np.array(labels, dtype=np.int64), config.n)
        np.savez_compressed(out, **arrays)
        return out
    if out.suffix:
        raise bad_value("out", str(out), "a .png grid, an .npz array file, or a folder (no suffix)")
    out.mkdir(parents=True, exist_ok=True)
    names = rows or ["uncond"]
    for k, picture in enumerate(pictures):
        row, col = divmod(k, config.n)
        label = names[row].replace("/", "_").replace(" ", "_")
        from PIL import Image

        Image.fromarray(picture).save(out / f"{k:04d}_{label}_seed{config.seed + col}.png")
    return out


class _Frames:
    """A sampler callback that keeps about ``MAX_GIF_FRAMES`` snapshots of ``x_t`` for the animation."""

    def __init__(self, schedule, config: SampleConfig):
        steps = config.steps or (schedule.T if config.sampler == "ddpm" else min(50, schedule.T))
        stride = max(1, -(-steps // MAX_GIF_FRAMES))
        self.keep = set(range(0, steps, stride))
        self.parts: dict[int, list[np.ndarray]] = {}

    def __call__(self, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if i in self.keep:
            self.parts.setdefault(i, []).append(to_uint8(x_t))

    def frames(self) -> list[np.ndarray]:
        return [np.concatenate(self.parts[i]) for i in sorted(self.parts)]
