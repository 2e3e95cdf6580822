"""Sampling to files: ``sample_to_files(SampleConfig) -> SampleResult`` (what ``tinydiffusion sample`` runs).

The outputs are ``outputs.py``'s (a grid, an ``.npz`` or a folder of PNGs). A folder is streamed: each batch's
PNGs go into the hidden temp folder as they are made, so its size is bounded by the disk, not by memory; a grid,
an ``.npz`` and a GIF hold everything in memory and are refused up front when that would not fit. Under torchrun
the batches are shared among the processes (``runtime/shard.py``) and rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checks
from ..core.samplers import get_sampler
from ..errors import UsageError, bad_value
from ..runtime import shard
from ..runtime.dist import DistInfo, agree
from ..store.files import write_text
from ..store.pictures import grid_bytes, save_gif, to_uint8
from ..vocab import PRECISIONS, PREDICTIONS, SCHEDULES
from .outputs import MAX_GIF_FRAMES, Frames, Output, check_replaceable, context_arrays, picture_names, write, write_pngs
from .pipeline import Pipeline, load
from .plans import SamplePlan, batch_bytes, counting_evaluations

PNG_FILE_BYTES = 4096  # one file-system block: what a small PNG of a streamed folder takes on disk
OUT_SUFFIXES = (".png", ".npz", "")  # a grid, the raw images, a folder


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
    guidance_interval: tuple[float, float] | None = None  # guided where (t+1)/T is in (lo, hi]; None: the card's
    guide: str | None = None  # autoguidance: a weaker model folder or shipped name ("none": none); None: the card's
    guide_scale: float | None = None  # the guide beside classifier-free guidance, at this scale; None: the card's
    snap: float | None = None  # text: move each prompt toward its nearest training caption (0–1); None: the card's
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
        check_settings(self, self.n, self.seed)
        if self.guidance_interval is not None:
            checks.guidance_interval(self.guidance_interval)
        if self.guide is not None and (not isinstance(self.guide, str) or not self.guide.strip()):
            raise bad_value("guide", self.guide, "a model folder or a shipped name (or 'none': no guide)")
        if self.guide_scale is not None:
            checks.guidance(self.guide_scale, "guide_scale")
        if self.snap is not None:
            checks.snap(self.snap)
        for key, allowed in (("prediction", PREDICTIONS), ("schedule", SCHEDULES)):
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
        return {k: v for k, v in asdict(self).items() if k not in ("out", "gif", "batch_size", "device")}


def check_settings(config: Any, n: int, seed: int) -> None:
    """The settings ``sample``, ``edit`` and ``interpolate`` share, checked before any model is loaded: the model
    name, the sampler and its options, steps, guidance, precision, the images per row and their seeds, the batch,
    the outputs. Each value has one check and one message, wherever it comes from."""
    if not isinstance(config.model, (str, Path)) or not str(config.model).strip():
        raise bad_value("model", config.model, "a shipped model name or an exported model folder")
    if config.sampler is not None:  # else checked once the model's recommendation is known
        get_sampler(config.sampler, config.options())  # the name, the options it takes, their values
    if config.steps is not None:
        checks.integer("steps", config.steps, low=1, allowed="a positive integer (at most the model's T)")
    if config.guidance is not None:
        checks.guidance(config.guidance)
    checks.finite("guidance_rescale", config.guidance_rescale, low=0, high=1)
    checks.choice("precision", config.precision, PRECISIONS)
    n = checks.integer("n", n, low=1, high=checks.MAX_SEED,
                       allowed="a positive number of images per row (below 2**63: one seed each)")
    checks.seed("seed", seed, n)  # the seeds seed … seed + n - 1 must all be valid
    checks.integer("batch_size", config.batch_size, low=1, allowed="a positive number of images per forward pass")
    out = checks.output_path("out", config.out, suffixes=OUT_SUFFIXES, folder=Path(str(config.out)).suffix == "")
    if out.suffix == "":
        check_replaceable(out)
    if config.gif is not None:
        checks.output_path("gif", config.gif, suffixes=(".gif",))


@dataclass(frozen=True)
class SampleResult:
    paths: list[Path]  # empty on the ranks > 0 of a torchrun job: only rank 0 writes
    seconds: float
    nfe: int  # network evaluations per image
    count: int
    rows: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)  # the sampler, steps and guidance used (the card's, where not given)
    distilled: bool = False  # the model is a few-step student (distill.py)
    note: str | None = None  # what the plan decided that was not asked for (e.g. guidance skipped)


def sample_to_files(config: SampleConfig, pipeline: Pipeline | None = None) -> SampleResult:
    with shard.processes(config.device) as info:
        return _sample_to_files(config, pipeline, info)


def _sample_to_files(config: SampleConfig, pipeline: Pipeline | None, info: DistInfo) -> SampleResult:
    expected_schedule = {"kind": config.schedule} if config.schedule else None
    pipe = pipeline or load(config.model, device=info.device, prediction=config.prediction, schedule=expected_schedule)
    sampler, steps, guidance = pipe.resolve(config.sampler, config.steps, config.guidance)
    settings = {"sampler": sampler, "steps": steps, "guidance": guidance}  # as used: the card's where not given
    rows, context = _rows(pipe, config)
    plan = pipe.plan(context, n=config.n, seed=config.seed, sampler=sampler, steps=steps, batch_size=config.batch_size,
                     guidance=guidance, guidance_rescale=config.guidance_rescale,
                     guidance_interval=config.guidance_interval, guide=config.guide, guide_scale=config.guide_scale,
                     snap=config.snap, precision=config.precision, **config.options())
    settings |= plan.levers  # the guidance interval and guide asked for (the card's where not given)
    folder = Path(config.out).suffix == ""
    _check_size(pipe, plan, config, folder, info)
    recorder, parts, mine = Frames() if config.gif else None, [], shard.my_batches(plan.batches, info)
    t0 = time.perf_counter()
    with counting_evaluations(pipe.model, plan.guide) as evaluated:  # the guide's evaluations count too
        with shard.shared_folder(config.out, info) if folder else contextlib.nullcontext() as tmp:
            for b in mine:
                if recorder is not None:
                    recorder.batch = b
                for _, x in pipe.run(plan, [b], callback=recorder):
                    pictures = to_uint8(x)
                    if tmp is not None:  # streamed: written now, this batch's memory freed
                        names = picture_names(rows, config.n, config.seed, plan.count, b * plan.batch_size, len(x))
                        write_pngs(tmp, pictures, names)
                    if tmp is None or recorder is not None:
                        parts.append((b, pictures))
            gathered = shard.gather(parts, info)
            frames = recorder.gather(info) if recorder is not None else None
            seconds = time.perf_counter() - t0
            metadata = {**config.metadata(), **settings, "rows": rows,
                        "nfe": evaluated[0] // max(1, plan.images_in(mine)), "seconds": round(seconds, 3),
                        "nfe_guide": evaluated[2] // max(1, plan.images_in(mine)) if len(evaluated) > 2 else 0,
                        "model_prediction": pipe.prediction, "schedule_used": pipe.schedule.to_dict()}
            if tmp is not None and info.is_main:
                write_text(tmp / "metadata.json", json.dumps(metadata) + "\n")
    settings["nfe_guide"] = metadata["nfe_guide"]  # of the nfe, the guide network's (autoguidance)
    result = SampleResult([], seconds, metadata["nfe"], plan.count, rows, settings, bool(pipe.distilled), plan.note)

    def outputs() -> list[Path]:  # rank 0 writes; a refusal there (a full disk) is every rank's, so all exit alike
        pictures = np.concatenate(gathered) if gathered else None
        arrays = context_arrays(rows, context, config.n, pipe.context, plan.count)
        paths = [Path(config.out) if folder else write(config.out, Output(pictures, config.n, metadata, arrays))]
        return paths + ([save_gif(frames + [pictures], config.gif, ncol=config.n)] if recorder is not None else [])
    paths = agree(outputs, info)
    if info.is_main:
        result.paths.extend(paths)
    return result


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
    need = batch_bytes(pipe, plan)
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
