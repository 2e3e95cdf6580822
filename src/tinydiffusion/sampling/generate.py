"""Sampling to files: ``sample_to_files(SampleConfig) -> SampleResult`` (what ``tinydiffusion sample`` runs).

``--out`` ending in ``.png`` writes a grid (one row per context, one column per seed), ``.npz``
the raw uint8 images with their contexts (and class labels), no suffix a folder of PNGs. Every
output appears whole or not at all (``files.py``). A folder is streamed: each batch's PNGs go into
the hidden temp folder as they are made, so its size is bounded by the disk, not by memory; a grid,
an ``.npz`` and a GIF hold everything in memory and are refused up front when that would not fit.
Under torchrun the batches are shared among the processes (``shard.py``) and rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .. import checks
from ..runtime import shard
from ..runtime.dist import DistInfo
from ..vocab import PRECISIONS, PREDICTIONS, SCHEDULES
from ..errors import UsageError, bad_value
from ..store.files import save_npz, write_text
from ..store.pictures import grid_bytes, save_gif, save_grid, to_uint8
from .pipeline import Pipeline, SamplePlan, counting_evaluations, get_sampler, load

MAX_GIF_FRAMES = 60
PNG_FILE_BYTES = 4096  # one file-system block: what a small PNG of a streamed folder takes on disk


@dataclass(frozen=True)
class SampleConfig:
    model: str
    sampler: str | None = None  # None: the model card's recommendation (sampler, steps and guidance)
    steps: int | None = None
    eta: float | None = None
    variance: str | None = None
    extra_noise: bool = True
    spacing: str = "trailing"
    clip_x0: bool = False
    guidance: float | None = None
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

    def __post_init__(self) -> None:
        """Every setting that needs no model is checked here, so the library refuses what the CLI refuses."""
        if not isinstance(self.model, (str, Path)) or not str(self.model).strip():
            raise bad_value("model", self.model, "a shipped model name or an exported model folder")
        if self.sampler is not None:  # else checked again once the model's recommendation is known
            get_sampler(self.sampler, self.options())  # the name, the options it takes, their values
        if self.steps is not None:
            checks.integer("steps", self.steps, low=1, allowed="a positive integer (at most the model's T)")
        if self.guidance is not None:
            checks.guidance(self.guidance)
        checks.finite("guidance_rescale", self.guidance_rescale, low=0, high=1)
        for key, allowed in (("prediction", PREDICTIONS), ("schedule", SCHEDULES), ("precision", PRECISIONS)):
            if getattr(self, key) is not None:
                checks.choice(key, getattr(self, key), allowed)
        if not isinstance(self.contexts, tuple) or not all(isinstance(c, str) for c in self.contexts):
            raise bad_value("contexts", self.contexts, "a tuple of class names, mixtures or prompts")
        for w in self.mix:
            checks.finite("mix", w, low=0, high=1, allowed="weights from 0 (the first prompt) to 1 (the second)")
        if self.mix and self.prompt_to is None:
            raise bad_value("mix", list(self.mix), "weights only together with --prompt-to")
        if self.prompt_to is not None and len(self.contexts) != 1:
            raise bad_value("prompt_to", self.prompt_to, "exactly one --prompt (or --context) to start from")
        if self.context_file is not None and self.contexts:
            raise bad_value("context_file", self.context_file, "either --context-file or --context/--prompt, not both")
        n = checks.integer("n", self.n, low=1, high=checks.MAX_SEED,
                           allowed="a positive number of images per row (below 2**63: one seed each)")
        checks.seed("seed", self.seed, n)  # the seeds seed … seed + n - 1 must all be valid
        checks.integer("batch_size", self.batch_size, low=1, allowed="a positive number of images per forward pass")
        out = checks.output_path("out", self.out, suffixes=(".png", ".npz", ""), folder=Path(str(self.out)).suffix == "")
        if out.suffix == "":
            _check_replaceable(out)
        if self.gif is not None:
            checks.output_path("gif", self.gif, suffixes=(".gif",))

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
    paths: list[Path]  # empty on the ranks > 0 of a torchrun job: only rank 0 writes
    seconds: float
    nfe: int  # network evaluations per image
    count: int
    rows: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the sampler, steps and guidance used (the card's, where not given)
    distilled: bool = False  # the model is a few-step student (distill.py)


def sample_to_files(config: SampleConfig, pipeline: Pipeline | None = None) -> SampleResult:
    with shard.processes(config.device) as info:
        return _sample_to_files(config, pipeline, info)


def _sample_to_files(config: SampleConfig, pipeline: Pipeline | None, info: DistInfo) -> SampleResult:
    expected_schedule = {"kind": config.schedule} if config.schedule else None
    pipe = pipeline or load(config.model, device=info.device, prediction=config.prediction, schedule=expected_schedule)
    sampler, steps, guidance = pipe.resolve(config.sampler, config.steps, config.guidance)
    config = replace(config, sampler=sampler, steps=steps, guidance=guidance)  # checked again, recorded as used
    rows, context = _rows(pipe, config)
    plan = pipe.plan(context, n=config.n, seed=config.seed, sampler=config.sampler, steps=config.steps,
                     batch_size=config.batch_size, guidance=config.guidance, guidance_rescale=config.guidance_rescale,
                     precision=config.precision, **config.options())
    out = Path(config.out)
    folder = out.suffix == ""
    _check_size(pipe, plan, config, folder, info)
    names = [r.replace("/", "_").replace(" ", "_") for r in rows] or ["uncond"]
    recorder, parts, mine = _Frames() if config.gif else None, [], shard.my_batches(plan.batches, info)
    t0 = time.perf_counter()
    with counting_evaluations(pipe.model) as evaluated:
        with shard.shared_folder(out, info) if folder else contextlib.nullcontext() as tmp:
            for b in mine:
                if recorder is not None:
                    recorder.batch = b
                for _, x in pipe.run(plan, [b], callback=recorder):
                    pictures = to_uint8(x)
                    if tmp is not None:  # streamed: written now, this batch's memory freed
                        _write_pngs(tmp, pictures, b * plan.batch_size, plan.count, names, config)
                    if tmp is None or recorder is not None:
                        parts.append((b, pictures))
            gathered = shard.gather(parts, info)
            frames = recorder.gather(info) if recorder is not None else None
            seconds = time.perf_counter() - t0
            metadata = {**config.metadata(), "rows": rows, "nfe": evaluated[0] // max(1, plan.images_in(mine)),
                        "seconds": round(seconds, 3), "model_prediction": pipe.prediction,
                        "schedule_used": pipe.schedule.to_dict()}
            if tmp is not None and info.is_main:
                write_text(tmp / "metadata.json", json.dumps(metadata) + "\n")
    if not info.is_main:
        return SampleResult([], seconds, metadata["nfe"], plan.count, rows, _settings(config), bool(pipe.distilled))
    pictures = np.concatenate(gathered) if gathered else None
    paths = [out if folder else _write(pictures, pipe, rows, context, config, json.dumps(metadata))]
    if recorder is not None:
        paths.append(save_gif(frames + [pictures], config.gif, ncol=config.n))
    return SampleResult(paths, seconds, metadata["nfe"], plan.count, rows, _settings(config), bool(pipe.distilled))


def _settings(config: SampleConfig) -> dict:
    return {"sampler": config.sampler, "steps": config.steps, "guidance": config.guidance}


def _rows(pipe: Pipeline, config: SampleConfig) -> tuple[list[str], torch.Tensor | None]:
    """Row names and context rows ``[K, D]`` (None: one unconditional row)."""
    if config.context_file:
        vectors = _context_file(pipe, config.context_file)
        return [f"row {i}" for i in range(vectors.shape[0])], vectors
    if config.prompt_to is not None:
        start, weights = config.contexts[0], config.mix or (0.0, 0.25, 0.5, 0.75, 1.0)
        return [f"{start} → {config.prompt_to} @ {w:g}" for w in weights], pipe.context.mix(start, config.prompt_to, weights)
    rows = list(config.contexts) or pipe.default_rows()
    return rows, pipe.contexts(rows) if rows else None


def _context_file(pipe: Pipeline, path: str) -> torch.Tensor:
    """Context rows from an ``.npy`` file, refused (naming the file) unless they are finite numbers of the
    model's width: a NaN row would silently give black images."""
    if pipe.context.width == 0:
        raise bad_value("context_file", path, "no context file: this model is unconditional")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # mapped: the size is checked before reading
    except (OSError, ValueError, EOFError) as e:
        raise bad_value("context_file", path, f"an .npy array of context vectors ({e})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu" or array.ndim not in (1, 2) or not array.size:
        kind = f"array of shape {array.shape} ({array.dtype})" if isinstance(array, np.ndarray) else type(array).__name__
        raise bad_value("context_file", path, f"an .npy array of numbers [K, D] with K >= 1 (this is an {kind})")
    checks.memory("context_file", path, 8 * array.size, "context rows")
    rows = np.array(array, dtype=np.float32).reshape(-1, array.shape[-1])  # [K, D]
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if bad.size:
        raise bad_value("context_file", path, f"finite numbers in every row (row {bad[0]} holds NaN or infinity)")
    try:
        return pipe.contexts(torch.from_numpy(rows))
    except UsageError as e:
        raise UsageError(f"context_file={path!r}: {e}") from None


def _check_size(pipe: Pipeline, plan: SamplePlan, config: SampleConfig, folder: bool, info: DistInfo) -> None:
    """Refuse, before any work, what would not fit: a grid, an .npz or a GIF in memory, a folder on disk."""
    N, (_, H, W) = plan.count, plan.shape
    pixels = N * H * W * 3  # the uint8 pictures
    shared = 2 if info.world > 1 else 1  # rank 0 also holds the pickled copies it gathers
    need = pipe.batch_bytes(plan)
    checks.memory("batch_size", config.batch_size, need, f"network batch of {min(plan.batch_size, N)} images")
    if not folder:
        need += shared * pixels + (grid_bytes(N, H, config.n) if Path(config.out).suffix.lower() == ".png"
                                   else pixels + N * pipe.context.width * 4)  # .npz: the compressed copy, contexts
        what = f"{N} images ({N // config.n} rows × {config.n}) in one {Path(config.out).suffix} file"
        checks.memory("n", config.n, need, what)
    else:
        checks.disk("n", config.n, N * PNG_FILE_BYTES * -(-(H * W * 3 + 1024) // PNG_FILE_BYTES), config.out,
                    f"folder of {N} PNG files")
    if config.gif:
        need += shared * (2 * MAX_GIF_FRAMES + 2) * pixels + (MAX_GIF_FRAMES + 1) * grid_bytes(N, H, config.n)
        checks.memory("n", config.n, need, f"denoising animation (--gif: up to {MAX_GIF_FRAMES} frames of {N} images)")


def _check_replaceable(out: Path) -> None:
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


def _write_pngs(folder: Path, pictures: np.ndarray, start: int, total: int, names: list[str],
                config: SampleConfig) -> None:
    """Images ``start …`` of a folder output, into its hidden temp folder (the folder appears whole)."""
    from PIL import Image

    digits = max(4, len(str(total - 1)))
    for k, picture in enumerate(pictures, start):
        row, col = divmod(k, config.n)
        Image.fromarray(picture).save(folder / f"{k:0{digits}d}_{names[row]}_seed{config.seed + col}.png")


def _write(pictures: np.ndarray, pipe: Pipeline, rows: list[str], contexts: torch.Tensor | None,
           config: SampleConfig, text: str) -> Path:
    out = Path(config.out)
    if out.suffix.lower() == ".png":
        return save_grid(pictures, out, ncol=config.n, text={"tinydiffusion": text})
    width = pipe.context.width
    ctx = np.zeros((len(pictures), width), np.float32) if contexts is None else \
        contexts.repeat_interleave(config.n, dim=0).numpy().astype(np.float32)
    arrays = {"images": pictures, "contexts": ctx, "metadata": np.array(text)}
    labels = [pipe.context.label_of(r) for r in rows]
    if rows and all(label is not None for label in labels):
        arrays["labels"] = np.repeat(np.array(labels, dtype=np.int64), config.n)
    return save_npz(out, arrays)


class _Frames:
    """A sampler callback that keeps uint8 snapshots of ``x_t`` per step and batch (``batch`` is set by the
    caller). Memory stays bounded: every other kept step is dropped whenever more than twice
    ``MAX_GIF_FRAMES`` are held, and ``frames()`` thins what is left to ``MAX_GIF_FRAMES``."""

    def __init__(self):
        self.parts: dict[int, dict[int, np.ndarray]] = {}  # step -> batch -> [b, H, W, 3]
        self.stride, self.batch = 1, 0

    def __call__(self, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if i % self.stride:
            return
        self.parts.setdefault(i, {})[self.batch] = to_uint8(x_t)
        if len(self.parts) > 2 * MAX_GIF_FRAMES:  # every batch walks the same steps, so all keep the same ones
            self.stride *= 2
            self.parts = {s: p for s, p in self.parts.items() if s % self.stride == 0}

    def gather(self, info: DistInfo) -> list[np.ndarray] | None:
        """Rank 0: the thinned frames of every rank's batches, images in the one-process order."""
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
