"""The edit and interpolate commands to files: ``edit_to_files(EditConfig)`` (img2img, or RePaint inpainting with a
mask) and ``interpolate_to_files(InterpolateConfig)`` (a morph between two seeds).

The plans are ``edit_plans.py``'s, the outputs ``outputs.py``'s: a ``.png`` grid (an edit shows its input and
mask before each row), an ``.npz`` (the outputs with their inputs, mask, contexts and labels; an interpolation's
frame weights) or a folder of PNGs, and a ``.gif`` of the denoising.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checks
from ..core import edit
from ..errors import bad_value
from ..runtime.dist import DistInfo, resolve_device
from ..store.imagefile import read_mask, read_picture
from ..store.pictures import beside, mask_picture, save_gif, to_float, to_uint8
from ..vocab import IMG2IMG_STRENGTH
from .edit_plans import EditPlan, plan_img2img, plan_inpaint, plan_interpolate, run_edit
from .generate import check_settings
from .outputs import Frames, Output, context_arrays, picture_names, write
from .pipeline import Pipeline, load

OMITTED = ("out", "gif", "batch_size", "device")  # settings that do not change the images: not in the metadata


@dataclass(frozen=True)
class EditConfig:
    model: str
    image: str
    mask: str | None = None  # white = keep, black = generate; any size (resized with nearest)
    contexts: tuple[str, ...] = ()  # target contexts, one row each; empty: every class (or the examples)
    strength: float | None = None  # None: IMG2IMG_STRENGTH for img2img, 1 for inpainting
    sampler: str | None = None  # None: the model card's (img2img) or ddpm (inpainting)
    steps: int | None = None
    eta: float | None = None
    variance: str | None = None
    spacing: str = "trailing"
    guidance: float | None = None
    guidance_rescale: float = 0.0
    jump_length: int = 10
    resample: int = 1
    n: int = 4
    seed: int = 0
    out: str = "edit.png"
    gif: str | None = None
    batch_size: int = 64
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        """Checked before any model is loaded; the settings ``sample`` shares with the same checks and messages."""
        for key in ("image", "mask"):
            value = getattr(self, key)
            if (value is not None or key == "image") and (not isinstance(value, str) or not value.strip()):
                raise bad_value(key, value, "a PNG or JPEG file")
        if self.strength is not None:
            edit.check_strength(self.strength)
        edit.check_resampling(self.jump_length, self.resample)
        if not isinstance(self.contexts, tuple) or not all(isinstance(c, str) for c in self.contexts):
            raise bad_value("contexts", self.contexts, "a tuple of class names, mixtures or prompts")
        check_settings(self, self.n, self.seed)
        for key in ("out", "gif"):  # an output that is an input would overwrite the user's picture with the grid
            if getattr(self, key) is not None and _same_file(getattr(self, key), self.image, self.mask):
                raise bad_value(key, getattr(self, key), "a path other than --image and --mask (they are inputs)")

    def options(self) -> dict:
        given = {k: getattr(self, k) for k in ("eta", "variance") if getattr(self, k) is not None}
        return {"spacing": self.spacing} | given

    def metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in OMITTED}


@dataclass(frozen=True)
class InterpolateConfig:
    model: str
    seed_a: int = 0
    seed_b: int = 1
    frames: int = 9
    context: str | None = None  # None: unconditional
    context_to: str | None = None  # move the context from ``context`` to this one along the frames
    sampler: str | None = None  # None: the model card's (a deterministic one)
    steps: int | None = None
    spacing: str = "trailing"
    guidance: float | None = None
    guidance_rescale: float = 0.0
    out: str = "interpolate.png"
    gif: str | None = None
    batch_size: int = 64
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        """Checked before any model is loaded; the settings ``sample`` shares with the same checks and messages."""
        edit.frame_weights(self.frames)
        for key in ("seed_a", "seed_b"):
            checks.seed(key, getattr(self, key))
        if self.context_to is not None and self.context is None:
            raise bad_value("context_to", self.context_to, "a context to move to, with --context to start from")
        for key in ("context", "context_to"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise bad_value(key, getattr(self, key), "a class name, mixture or prompt")
        check_settings(self, self.frames, 0)

    def options(self) -> dict:
        return {"spacing": self.spacing}

    def metadata(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in OMITTED}


@dataclass(frozen=True)
class EditResult:
    paths: list  # the files written
    seconds: float
    nfe: int  # network evaluations per image
    count: int
    rows: list[str]
    settings: dict  # sampler, steps, guidance, strength, … as used (the card's where not given)


def edit_to_files(config: EditConfig, pipeline: Pipeline | None = None) -> EditResult:
    """Read ``config.image`` (and ``config.mask``) at the model's size, edit it, write ``config.out`` (and ``gif``)."""
    pipe = pipeline or load(config.model, device=resolve_device(config.device))
    picture = read_picture(config.image, pipe.image_size, "image")  # uint8 [S, S, 3]
    keep = None if config.mask is None else read_mask(config.mask, pipe.image_size)  # bool [S, S]
    rows = list(config.contexts) or pipe.default_rows()
    shared = dict(n=config.n, seed=config.seed, sampler=config.sampler, steps=config.steps, guidance=config.guidance,
                  guidance_rescale=config.guidance_rescale, batch_size=config.batch_size, precision=config.precision,
                  **config.options())
    if keep is None:
        strength = IMG2IMG_STRENGTH if config.strength is None else config.strength
        job = plan_img2img(pipe, to_float(picture), rows or None, strength=strength, **shared)
    else:
        job = plan_inpaint(pipe, to_float(picture), torch.from_numpy(keep), rows or None, strength=config.strength,
                           jump_length=config.jump_length, resample=config.resample, **shared)
    count = job.plan.count
    if config.gif:
        checks.memory("n", config.n, 200.0 * count * picture.nbytes, f"denoising animation of {count} images")
    pictures, frames, seconds = _run(pipe, job, bool(config.gif))  # [R·n, S, S, 3]
    s = job.settings
    metadata = {**config.metadata(), **{k: s[k] for k in ("sampler", "steps", "guidance", "strength")}, "rows": rows,
                "nfe": s["nfe"], "seconds": round(seconds, 3), "model_prediction": pipe.prediction,
                "schedule_used": pipe.schedule.to_dict()}
    shown = [picture] + ([] if keep is None else [mask_picture(keep)])
    arrays = {"inputs": picture[None], **context_arrays(rows, job.plan.rows, config.n, pipe.context, count)}
    if keep is not None:
        arrays["mask"] = shown[1][..., 0]  # uint8 [S, S]: 255 = kept, 0 = generated
    names = picture_names(rows, config.n, config.seed, count)
    paths = [write(config.out, Output(pictures, config.n, metadata, arrays, names, shown))]
    if config.gif:
        paths.append(save_gif([beside(f, shown, config.n) for f in frames + [pictures]], config.gif,
                              ncol=config.n + len(shown)))
    return EditResult(paths, seconds, s["nfe"], count, rows, s)


def interpolate_to_files(config: InterpolateConfig, pipeline: Pipeline | None = None) -> EditResult:
    """Sample the frames and write ``config.out`` (a one-row strip, an ``.npz`` or a folder) and ``config.gif``
    (the frames as an animation)."""
    pipe = pipeline or load(config.model, device=resolve_device(config.device))
    job = plan_interpolate(pipe, config.seed_a, config.seed_b, frames=config.frames, context=config.context,
                           context_to=config.context_to, sampler=config.sampler, steps=config.steps,
                           guidance=config.guidance, guidance_rescale=config.guidance_rescale,
                           batch_size=config.batch_size, precision=config.precision, **config.options())
    pictures, _, seconds = _run(pipe, job, False)  # [F, S, S, 3]
    s = job.settings
    metadata = {**config.metadata(), **{k: s[k] for k in ("sampler", "steps", "guidance")}, "weights": s["weights"],
                "nfe": s["nfe"], "seconds": round(seconds, 3), "model_prediction": pipe.prediction}
    rows = job.plan.rows
    arrays = {"contexts": np.zeros((len(pictures), pipe.context.width), np.float32) if rows is None
              else rows.numpy().astype(np.float32), "weights": np.array(s["weights"])}
    names = [f"frame_{i:04d}" for i in range(len(pictures))]
    paths = [write(config.out, Output(pictures, config.frames, metadata, arrays, names))]
    if config.gif:
        paths.append(save_gif([p[None] for p in pictures], config.gif, ncol=1, ms_per_frame=150, hold_last_ms=600))
    return EditResult(paths, seconds, s["nfe"], len(pictures), [config.context or "uncond"], s)


def _same_file(out: str, *inputs: str | None) -> bool:
    """Whether ``out`` names one of the ``inputs`` (the same path, a link to it, or the same file)."""
    target = Path(out).resolve()
    return any(p is not None and (Path(p).resolve() == target or (Path(p).exists() and target.exists() and
                                                                  Path(p).samefile(target))) for p in inputs)


def _run(pipe: Pipeline, job: EditPlan, record: bool) -> tuple[np.ndarray, list[np.ndarray], float]:
    """``(pictures uint8 [N, S, S, 3], the recorded x_t frames, seconds)`` of an edit plan, batch by batch."""
    recorder, parts = Frames() if record else None, []
    t0 = time.perf_counter()
    for b in range(job.plan.batches):
        if recorder is not None:
            recorder.batch = b
        parts += [to_uint8(x) for _, x in run_edit(pipe, job, [b], recorder)]
    frames = recorder.gather(DistInfo()) if recorder is not None else []
    return np.concatenate(parts), frames, time.perf_counter() - t0
