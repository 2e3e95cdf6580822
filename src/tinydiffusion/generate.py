"""Sampling to files: ``sample_to_files(SampleConfig) -> SampleResult`` (what ``tinydiffusion sample`` runs).

``--out`` ending in ``.png`` writes a grid (one row per context, one column per seed), ``.npz``
the raw uint8 images with their contexts (and class labels), anything else a folder of PNGs.
"""

from __future__ import annotations

import json
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
    clip_x0: bool = False
    guidance: float = 1.0
    guidance_rescale: float = 0.0
    prediction: str | None = None  # expectations checked against the model (never overrides)
    schedule: str | None = None
    contexts: tuple[str, ...] = ()  # class names, mixtures or prompts; empty: every class (or the examples)
    prompt_to: str | None = None  # interpolate from the one context/prompt to this one …
    mix: tuple[float, ...] = ()  # … at these weights (one row each)
    context_file: str | None = None  # an .npy of context vectors [K, D], one row each
    n: int = 8  # images per row
    seed: int = 0
    out: str = "samples.png"
    gif: str | None = None
    batch_size: int = 64
    device: str = "auto"
    precision: str = "fp32"

    def options(self) -> dict:
        """Sampler options the user set; a sampler that does not take one refuses it by name."""
        opts = {"spacing": self.spacing}
        if self.eta is not None:
            opts["eta"] = self.eta
        if self.variance is not None:
            opts["variance"] = self.variance
        if not self.extra_noise:
            opts["extra_noise"] = False
        if self.clip_x0:
            opts["clip_x0"] = True
        return opts

    def metadata(self) -> dict:
        """What made these images; written into the PNG, the .npz or the folder beside them."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in ("out", "gif", "batch_size", "device")}


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
    expected_schedule = {"kind": config.schedule} if config.schedule else None
    pipe = pipeline or load(config.model, device=resolve_device(config.device), prediction=config.prediction,
                            schedule=expected_schedule)
    rows, context = _rows(pipe, config)
    calls, recorder = [0], _Frames() if config.gif else None
    hook = pipe.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))  # counts NFE
    t0 = time.perf_counter()
    try:
        images = pipe.sample(context, n=config.n, seed=config.seed, sampler=config.sampler, steps=config.steps,
                             batch_size=config.batch_size, guidance=config.guidance,
                             guidance_rescale=config.guidance_rescale, precision=config.precision, callback=recorder,
                             **config.options())
    finally:
        hook.remove()
    seconds = time.perf_counter() - t0
    pictures = to_uint8(images)
    metadata = {**config.metadata(), "rows": rows, "nfe": calls[0] // -(-images.shape[0] // config.batch_size),
                "seconds": round(seconds, 3), "model_prediction": pipe.prediction, "schedule_used": pipe.schedule.to_dict()}
    paths = [_write(pictures, pipe, rows, context, config, metadata)]
    if recorder is not None:
        paths.append(save_gif(recorder.frames() + [pictures], config.gif, ncol=config.n))
    return SampleResult(paths, seconds, metadata["nfe"], len(pictures), rows)


def _rows(pipe: Pipeline, config: SampleConfig) -> tuple[list[str], torch.Tensor | None]:
    """Row names and context rows ``[K, D]`` (None: one unconditional row)."""
    if config.context_file:
        try:
            vectors = torch.from_numpy(np.load(config.context_file, allow_pickle=False)).float()
        except (OSError, ValueError) as e:
            raise bad_value("context_file", config.context_file, f"an .npy array of context vectors ({e})") from None
        vectors = pipe.contexts(vectors)
        return [f"row {i}" for i in range(vectors.shape[0])], vectors
    if config.mix and config.prompt_to is None:
        raise bad_value("mix", list(config.mix), "weights only together with --prompt-to")
    if config.prompt_to is not None:
        if len(config.contexts) != 1:
            raise bad_value("prompt_to", config.prompt_to, "exactly one --prompt (or --context) to start from")
        start, weights = config.contexts[0], config.mix or (0.0, 0.25, 0.5, 0.75, 1.0)
        return [f"{start} → {config.prompt_to} @ {w:g}" for w in weights], pipe.context.mix(start, config.prompt_to, weights)
    rows = list(config.contexts) or pipe.default_rows()
    return rows, pipe.contexts(rows) if rows else None


def _write(pictures: np.ndarray, pipe: Pipeline, rows: list[str], contexts: torch.Tensor | None,
           config: SampleConfig, metadata: dict) -> Path:
    out, text = Path(config.out), json.dumps(metadata)
    if out.suffix == ".png":
        return save_grid(pictures, out, ncol=config.n, text={"tinydiffusion": text})
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        width = pipe.context.width
        ctx = np.zeros((len(pictures), width), np.float32) if contexts is None else \
            contexts.repeat_interleave(config.n, dim=0).numpy().astype(np.float32)
        arrays = {"images": pictures, "contexts": ctx, "metadata": np.array(text)}
        labels = [pipe.context.label_of(r) for r in rows]
        if rows and all(label is not None for label in labels):
            arrays["labels"] = np.repeat(np.array(labels, dtype=np.int64), config.n)
        np.savez_compressed(out, **arrays)
        return out
    if out.suffix:
        raise bad_value("out", str(out), "a .png grid, an .npz array file, or a folder (no suffix)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metadata.json").write_text(text + "\n")
    names = rows or ["uncond"]
    for k, picture in enumerate(pictures):
        row, col = divmod(k, config.n)
        label = names[row].replace("/", "_").replace(" ", "_")
        from PIL import Image

        Image.fromarray(picture).save(out / f"{k:04d}_{label}_seed{config.seed + col}.png")
    return out


class _Frames:
    """A sampler callback that keeps snapshots of ``x_t``; ``frames()`` thins them to ``MAX_GIF_FRAMES``."""

    def __init__(self):
        self.parts: dict[int, list[np.ndarray]] = {}

    def __call__(self, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        self.parts.setdefault(i, []).append(to_uint8(x_t))  # uint8: 500 steps of 64 sprites is ~25 MB

    def frames(self) -> list[np.ndarray]:
        steps = sorted(self.parts)
        stride = max(1, -(-len(steps) // MAX_GIF_FRAMES))
        return [np.concatenate(self.parts[i]) for i in steps[::stride]]
