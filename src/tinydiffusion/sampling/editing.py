"""Editing with a loaded model: a checked plan (``plan_edit``; ``interpolate.plan_interpolate`` likewise) that
``run_edit`` runs batch by batch through ``Pipeline.run``, and the files layer (``edit_to_files``: what
``tinydiffusion edit`` runs).

Layout, as in ``sample``: image ``i`` has row ``i // n`` and seed ``seed + i % n``. Row ``r`` edits input
``r`` with context row ``r``; one input or one context serves every row (they broadcast). Each image has its
own generator, whose first draw is the noise that ``edit.img2img``/``edit.inpaint`` noise the input with, so an
edit depends on its seed only, and strength 1 (whole grid) is ``sample`` from that seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .. import checks
from ..core import edit, samplers
from ..errors import UsageError, bad_value
from ..store.pictures import save_gif, save_grid
from .pipeline import ContextLike, Pipeline, SamplePlan

INPAINT_STEPS = 50  # DDPM steps of RePaint when none are given (the card's steps are tuned for its own sampler)


@dataclass(frozen=True, eq=False)
class EditPlan:
    """A checked edit: ``plan`` draws the seeds and contexts as ``Pipeline.run`` does, and ``sampler_for(k)``
    is the sampler-shaped function that edits the images ``k`` of a batch (their noise is its ``x_T``)."""

    plan: SamplePlan
    sampler_for: Callable[[torch.Tensor], Callable]
    settings: dict[str, Any]  # what was used: sampler, steps, guidance, strength, …, nfe per image


def run_edit(pipe: Pipeline, job: EditPlan, batches: Iterable[int] | None = None,
             callback: Callable | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(b, images [b_size, C, H, W])`` for each batch ``b`` of ``job``, as ``Pipeline.run`` yields them."""
    plan = job.plan
    for b in range(plan.batches) if batches is None else batches:
        k = torch.arange(b * plan.batch_size, min((b + 1) * plan.batch_size, plan.count))  # image indices
        yield from pipe.run(replace(plan, fn=job.sampler_for(k)), [b], callback)


def plan_edit(pipe: Pipeline, images: torch.Tensor, context: ContextLike = None, mask: torch.Tensor | None = None,
              *, strength: float | None = None, n: int = 1, seed: int = 0, sampler: str | None = None,
              steps: int | None = None, guidance: float | None = None, jump_length: int = 10, resample: int = 1,
              **kwargs: Any) -> EditPlan:
    """img2img (no ``mask``; ``strength`` required) or RePaint inpainting (``mask``: 1 = keep, 0 = generate;
    ``strength`` 1 unless given), every argument checked before any work. ``kwargs``: ``Pipeline.plan``'s
    ``guidance_rescale``, ``batch_size``, ``precision`` and sampler options."""
    inputs = _images(pipe, images)  # [B, C, H, W]
    rows = pipe.contexts(context)  # [K, D] or None
    B, K = len(inputs), 1 if rows is None else len(rows)
    if B != K and 1 not in (B, K):
        raise bad_value("context", f"{K} rows for {B} input images", "one context row per input image, or one "
                                                                     "of either (it serves every row)")
    count = max(B, K)
    if "start" in kwargs:
        raise bad_value("start", kwargs["start"], "no start: strength sets where the edit starts")
    if mask is None:
        if strength is None:
            raise bad_value("strength", None, "a number in (0, 1]: how much of the time grid to run again")
        sampler, steps, guidance = pipe.resolve(sampler, steps, guidance)
    else:
        if sampler not in (None, "ddpm"):
            raise bad_value("sampler", sampler, "ddpm (or none): inpainting runs RePaint over DDPM steps")
        sampler, steps = "ddpm", INPAINT_STEPS if steps is None else steps
        strength = 1.0 if strength is None else strength
        guidance = pipe.resolve(None, None, guidance)[2]
        other = set(kwargs) - {"guidance_rescale", "batch_size", "precision", "spacing", "variance", "clip_x0"}
        if other:
            raise UsageError(f"{sorted(other)[0]}={kwargs[sorted(other)[0]]!r} is not an option of inpainting; it "
                             f"takes: spacing, variance, clip_x0")
        keep = _mask(mask, inputs, count)  # bool [B', 1, H, W]
        edit.check_resampling(jump_length, resample)
    rows = None if rows is None else rows.expand(count, -1) if len(rows) == 1 else rows
    n = checks.integer("n", _int(n), low=1, allowed="a positive number of images per row")
    checks.memory("n", n, 8.0 * count * n * inputs[0].numel(), f"{count * n} edited images")
    if rows is None:  # unconditional: the rows are told apart by their inputs only, so list every seed
        seeds = [checks.seed("seed", _int(seed), n) + j for _ in range(count) for j in range(n)]
    else:
        seeds = None
    plan = pipe.plan(rows, n=n, seed=seed, seeds=seeds, sampler=sampler, steps=steps, guidance=guidance, **kwargs)
    grid = samplers.grid(sampler, pipe.schedule, plan.steps, plan.options.get("spacing", "trailing"))
    k = edit.tail_length(strength, len(grid))

    def sampler_for(idx: torch.Tensor) -> Callable:
        row = idx // n  # [b]: image i edits row i // n
        x0 = inputs[row if len(inputs) > 1 else torch.zeros_like(row)]  # [b, C, H, W]
        if mask is None:
            return lambda model, schedule, x_T, c, **kw: edit.img2img(
                model, schedule, x0.to(x_T), c, strength=strength, sampler=plan.fn, noise=x_T, **kw)
        m = keep[row if len(keep) > 1 else torch.zeros_like(row)]  # [b, 1, H, W]
        return lambda model, schedule, x_T, c, *, steps, generator, callback, **kw: edit.inpaint(
            model, schedule, x0.to(x_T), m.to(x_T.device), c, steps=steps, generator=generator, noise=x_T,
            callback=callback, jump_length=jump_length, resample=resample, strength=strength, **kw)

    walked = k if mask is None else edit.repaint_nfe(k, jump_length, resample)
    if mask is not None and resample > 1 and walked == k:
        raise bad_value("jump_length", jump_length, f"fewer than the {k} steps walked, so that resample={resample} "
                                                    f"has room to jump back")
    checks.memory("batch_size", plan.batch_size, pipe.batch_bytes(plan), "network batch")
    settings = {"sampler": sampler, "steps": len(grid), "guidance": float(guidance), "strength": strength,
                "nfe": walked * (2 if plan.guided else 1),  # a guided step evaluates both halves
                **({"jump_length": jump_length, "resample": resample} if mask is not None else {})}
    return EditPlan(plan, sampler_for, settings | {"options": dict(plan.options)})


def _int(value: Any) -> Any:
    import numbers

    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


def _images(pipe: Pipeline, images: Any) -> torch.Tensor:
    """Input images as float ``[B, C, H, W]`` (CPU) at the model's size, finite; refused otherwise."""
    C, S = int(pipe.config["model"]["channels"]), pipe.image_size
    if not isinstance(images, torch.Tensor) or images.dim() not in (3, 4) or tuple(images.shape[-3:]) != (C, S, S) \
            or not images.is_floating_point() or images.numel() == 0:
        shown = f"tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise bad_value("images", shown, f"a float tensor [{C}, {S}, {S}] or [B, {C}, {S}, {S}] in [-1, 1] "
                                         f"(this model's size)")
    images = images.detach().float().cpu().reshape(-1, C, S, S)
    if not torch.isfinite(images).all():
        raise bad_value("images", "a tensor holding NaN or infinity", "finite pixel values in [-1, 1]")
    return images


def _mask(mask: Any, inputs: torch.Tensor, count: int) -> torch.Tensor:
    """The mask as bool ``[1 or count, 1, H, W]`` (true = keep); all-keep and all-generate masks are refused."""
    S = inputs.shape[-1]
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape[-2:]) != (S, S) or mask.dim() not in (2, 3, 4):
        shown = f"tensor of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise bad_value("mask", shown, f"a tensor [{S}, {S}], [1, {S}, {S}] or [B, 1, {S}, {S}]: 1 = keep, "
                                       f"0 = generate")
    keep = (mask if mask.dtype == torch.bool else mask.float() > 0.5).cpu().reshape(-1, 1, S, S)
    if len(keep) not in (1, count):
        raise bad_value("mask", f"{len(keep)} masks", f"1 or {count} (one per edited row)")
    per_row = keep.flatten(1).float().mean(1)  # share kept per mask
    if (per_row == 1).any():
        raise bad_value("mask", "a mask that keeps every pixel (all white)", "some black (generated) pixels: with "
                                                                             "none the output is the input unchanged")
    if (per_row == 0).any():
        raise bad_value("mask", "a mask that generates every pixel (all black)", "some white (kept) pixels: with none "
                                                                                 "nothing of the input is kept; that "
                                                                                 "is img2img or sample (omit the mask)")
    return keep


# ---------------------------------------------------------------------- files
STRENGTH = 0.6  # img2img's default strength (inpainting's is 1: the masked region from pure noise)


@dataclass(frozen=True)
class EditConfig:
    model: str
    image: str
    mask: str | None = None  # white = keep, black = generate; any size (resized with nearest)
    contexts: tuple[str, ...] = ()  # target contexts, one row each; empty: every class (or the examples)
    strength: float | None = None  # None: 0.6 for img2img, 1 for inpainting
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
        """The settings ``sample`` shares are checked by ``SampleConfig`` (same names, same messages)."""
        from .generate import SampleConfig

        for key in ("image", "mask"):
            value = getattr(self, key)
            if (value is not None or key == "image") and (not isinstance(value, str) or not value.strip()):
                raise bad_value(key, value, "a PNG or JPEG file")
        if self.strength is not None:
            edit.check_strength(self.strength)
        edit.check_resampling(self.jump_length, self.resample)
        SampleConfig(**{k: getattr(self, k) for k in ("model", "sampler", "steps", "eta", "variance", "spacing",
                                                      "guidance", "guidance_rescale", "contexts", "n", "seed", "out",
                                                      "gif", "batch_size", "precision")})

    def options(self) -> dict:
        given = {k: getattr(self, k) for k in ("eta", "variance") if getattr(self, k) is not None}
        return {"spacing": self.spacing} | given

    def metadata(self) -> dict:
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in ("out", "gif", "batch_size", "device")}


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
    import json
    import time

    from ..runtime.dist import DistInfo, resolve_device
    from .generate import _Frames
    from ..store.pictures import to_uint8
    from .pipeline import load

    info = DistInfo(device=resolve_device(config.device))
    pipe = pipeline or load(config.model, device=info.device)
    picture = read_picture(config.image, pipe.image_size, "image")  # uint8 [S, S, 3]
    keep = None if config.mask is None else read_mask(config.mask, pipe.image_size)  # bool [S, S]
    rows = list(config.contexts) or pipe.default_rows()
    strength = config.strength if config.strength is not None else STRENGTH if keep is None else 1.0
    job = plan_edit(pipe, to_float(picture), rows or None, None if keep is None else torch.from_numpy(keep),
                    strength=strength, n=config.n, seed=config.seed, sampler=config.sampler, steps=config.steps,
                    guidance=config.guidance, jump_length=config.jump_length, resample=config.resample,
                    guidance_rescale=config.guidance_rescale, batch_size=config.batch_size,
                    precision=config.precision, **config.options())
    s = job.settings
    config = replace(config, sampler=s["sampler"], steps=s["steps"], guidance=s["guidance"], strength=s["strength"])
    count = job.plan.count
    if config.gif:
        checks.memory("n", config.n, 200.0 * count * picture.nbytes, f"denoising animation of {count} images")
    recorder, parts = _Frames() if config.gif else None, []
    t0 = time.perf_counter()
    for b in range(job.plan.batches):
        if recorder is not None:
            recorder.batch = b
        parts += [to_uint8(x) for _, x in run_edit(pipe, job, [b], recorder)]
    seconds = time.perf_counter() - t0
    pictures = np.concatenate(parts)  # [R·n, S, S, 3]
    metadata = json.dumps({**config.metadata(), "rows": rows, "nfe": s["nfe"], "seconds": round(seconds, 3),
                           "model_prediction": pipe.prediction, "schedule_used": pipe.schedule.to_dict()})
    shown = [picture] + ([] if keep is None else [mask_picture(keep)])
    paths = [_write_edit(pictures, shown, job, pipe, rows, config, metadata)]
    if recorder is not None:
        frames = recorder.gather(info) + [pictures]
        paths.append(save_gif([beside(f, shown, config.n) for f in frames], config.gif, ncol=config.n + len(shown)))
    return EditResult(paths, seconds, s["nfe"], count, rows, s)


def beside(pictures: np.ndarray, shown: list[np.ndarray], n: int) -> np.ndarray:
    """uint8 ``[R·(k+n), S, S, 3]``: each row of ``n`` pictures after the ``k`` pictures ``shown`` (input, mask)."""
    rows = pictures.reshape(-1, n, *pictures.shape[1:])  # [R, n, S, S, 3]
    first = np.broadcast_to(np.stack(shown)[None], (len(rows), len(shown), *pictures.shape[1:]))
    return np.concatenate([first, rows], axis=1).reshape(-1, *pictures.shape[1:])


def _write_edit(pictures: np.ndarray, shown: list[np.ndarray], job: EditPlan, pipe: Pipeline, rows: list[str],
                config: EditConfig, metadata: str):
    from pathlib import Path

    from PIL import Image

    from ..store.files import AtomicFolder, save_npz, write_text
    from .generate import _write_pngs

    out = Path(config.out)
    if out.suffix.lower() == ".png":
        return save_grid(beside(pictures, shown, config.n), out, ncol=config.n + len(shown),
                         text={"tinydiffusion": metadata})
    if out.suffix == "":
        with AtomicFolder(out) as tmp:
            _write_pngs(tmp, pictures, 0, len(pictures), [r.replace("/", "_").replace(" ", "_") for r in rows]
                        or ["uncond"] * job.plan.count, config)
            for name, picture in zip(("input", "mask"), shown):
                Image.fromarray(picture).save(tmp / f"{name}.png")
            write_text(tmp / "metadata.json", metadata + "\n")
        return out
    contexts = job.plan.rows
    arrays = {"images": pictures, "inputs": shown[0][None], "metadata": np.array(metadata),
              "contexts": np.zeros((len(pictures), pipe.context.width), np.float32) if contexts is None
              else contexts.repeat_interleave(config.n, dim=0).numpy().astype(np.float32)}
    if len(shown) > 1:
        arrays["mask"] = shown[1][..., 0]  # uint8 [S, S]: 255 = kept, 0 = generated
    labels = [pipe.context.label_of(r) for r in rows]
    if rows and all(label is not None for label in labels):
        arrays["labels"] = np.repeat(np.array(labels, dtype=np.int64), config.n)
    return save_npz(out, arrays)


def read_picture(path: str, size: int, param: str) -> np.ndarray:
    """uint8 ``[size, size, 3]`` from a PNG/JPEG, as training data is read: RGB on black, centre-cropped, resized."""
    from pathlib import Path

    from ..store.imagefile import BadImageFile, read_image

    try:
        return read_image(Path(path), size)
    except BadImageFile as e:
        raise UsageError(f"{param}: {str(e).split('; fix or remove it')[0]}; expected a PNG or JPEG image") from None


def read_mask(path: str, size: int) -> np.ndarray:
    """bool ``[size, size]`` (true = keep) from a PNG/JPEG of any size: white (grey >= 128) keeps, black (or
    transparent) generates; centre-cropped like the input, then resized with nearest-neighbour."""
    from PIL import Image

    from ..store.imagefile import IMAGE_FORMATS

    try:  # the header only, for the side to read it at unresampled; read_picture checks and decodes the file
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            side = max(1, min(im.size))
    except Exception:  # noqa: BLE001 - unreadable: read_picture below says why, naming the file
        side = size
    grey = Image.fromarray(read_picture(path, side, "mask")).convert("L")
    return np.asarray(grey.resize((size, size), Image.Resampling.NEAREST)) >= 128


def mask_picture(keep: np.ndarray) -> np.ndarray:
    """uint8 ``[S, S, 3]``: white where kept, black where generated."""
    return np.repeat((keep.astype(np.uint8) * 255)[..., None], 3, axis=-1)


def to_float(picture: np.ndarray) -> torch.Tensor:
    """uint8 ``[S, S, 3]`` to float ``[1, 3, S, S]`` in ``[-1, 1]`` (as training batches are scaled)."""
    from ..data.batches import as_tensor, make_batch

    return make_batch(as_tensor(picture[None]), torch.arange(1))
