"""Edits as checked plans on a loaded model: img2img (SDEdit), RePaint inpainting and seed interpolation.

Each plan is a ``SamplePlan`` (seeds, context rows, batches: ``plans.py``) plus ``sampler_for(k)``, the
sampler-shaped function that edits the images ``k`` of a batch; ``run_edit`` runs it batch by batch. Layout, as
in ``sample``: image ``i`` has row ``i // n`` and seed ``seed + i % n``. Row ``r`` edits input ``r`` with context
row ``r``; one input or one context serves every row (they broadcast). Each image's first draw is the noise that
``core.edit`` noises its input with, so an edit depends on its seed only, and strength 1 (the whole grid) is
``sample`` from that seed. The math is ``core/edit.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

import torch

from .. import checks
from ..core import edit, samplers
from ..errors import UsageError, bad_value
from ..vocab import INPAINT_STEPS
from .card import check_inpaintable
from .plans import ContextLike, Pipeline, SamplePlan, as_int, batch_bytes, plan, run


INPAINT_OPTIONS = {"ddpm": ("spacing", "variance", "clip_x0"),  # the sampler options RePaint's steps take
                   "ddim": ("spacing", "eta", "clip_x0")}
PLAN_OPTIONS = ("guidance_rescale", "guidance_interval", "guide", "guide_scale", "snap", "batch_size", "precision")


@dataclass(frozen=True, eq=False)
class EditPlan:
    """A checked edit: ``plan`` draws the seeds and contexts as ``plans.run`` does, and ``sampler_for(k)`` is the
    sampler-shaped function that edits the images ``k`` of a batch (their noise is its ``x_T``)."""

    plan: SamplePlan
    sampler_for: Callable[[torch.Tensor], Callable]
    settings: dict[str, Any]  # what was used: sampler, steps, guidance, strength, …, nfe per image


def run_edit(pipe: "Pipeline", job: EditPlan, batches: Iterable[int] | None = None,
             callback: Callable | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(b, images [b_size, C, H, W])`` for each batch ``b`` of ``job``, as ``plans.run`` yields them."""
    p = job.plan
    for b in range(p.batches) if batches is None else batches:
        k = torch.arange(b * p.batch_size, min((b + 1) * p.batch_size, p.count))  # image indices
        yield from run(pipe, replace(p, fn=job.sampler_for(k)), [b], callback)


def plan_img2img(pipe: "Pipeline", images: torch.Tensor, context: ContextLike = None, *, strength: float | None,
                 n: int = 1, seed: int = 0, sampler: str | None = None, steps: int | None = None,
                 guidance: float | None = None, **kwargs: Any) -> EditPlan:
    """SDEdit: ``images`` re-dressed with ``context``, running the last ``round(strength·steps)`` steps of the
    sampler's grid. ``kwargs``: ``plans.plan``'s ``guidance_rescale``, ``batch_size``, ``precision`` and options."""
    inputs, rows, count = _inputs(pipe, images, context, kwargs)
    if strength is None:
        raise bad_value("strength", None, "a number in (0, 1]: how much of the time grid to run again")
    sampler, steps, guidance = pipe.resolve(sampler, steps, guidance)
    job, total, k = _plan(pipe, inputs, rows, count, strength, n, seed, sampler, steps, guidance, kwargs)
    edit.check_keeps_input(strength, total)  # else the whole grid runs from pure noise, the input ignored

    def sampler_for(idx: torch.Tensor) -> Callable:
        x0 = _rows_of(inputs, idx // as_int(n))  # [b, C, H, W]: image i edits row i // n (n checked by _plan)
        return lambda model, schedule, x_T, c, **kw: edit.img2img(
            model, schedule, x0.to(x_T), c, strength=strength, sampler=job.fn, noise=x_T, **kw)

    return _edit_plan(pipe, job, sampler_for, {"sampler": sampler, "steps": total, "guidance": float(guidance),
                                                "strength": strength}, walked=_grid(pipe, job, sampler)[total - k:])


def plan_inpaint(pipe: "Pipeline", images: torch.Tensor, mask: torch.Tensor, context: ContextLike = None, *,
                 strength: float | None = None, n: int = 1, seed: int = 0, sampler: str | None = None,
                 steps: int | None = None, guidance: float | None = None, jump_length: int = 10, resample: int = 1,
                 **kwargs: Any) -> EditPlan:
    """RePaint: regenerate where ``mask`` is 0 (1 = keep) over ``steps`` steps of ``sampler`` (ddpm, the default, or
    ddim; default steps ``INPAINT_STEPS[sampler]``), the kept pixels exact; ``strength`` 1 unless given;
    ``resample > 1`` jumps back ``jump_length`` steps."""
    check_inpaintable(pipe.distilled)
    inputs, rows, count = _inputs(pipe, images, context, kwargs)
    sampler = _inpaint_sampler(sampler, kwargs)
    steps, strength = INPAINT_STEPS[sampler] if steps is None else steps, 1.0 if strength is None else strength
    guidance = pipe.resolve(None, None, guidance)[2]
    keep = _mask(mask, inputs, count)  # bool [B', 1, H, W]
    edit.check_resampling(jump_length, resample)
    job, total, k = _plan(pipe, inputs, rows, count, strength, n, seed, sampler, steps, guidance, kwargs)

    def sampler_for(idx: torch.Tensor) -> Callable:
        row = idx // as_int(n)  # image i edits row i // n
        x0, m = _rows_of(inputs, row), _rows_of(keep, row)  # [b, C, H, W], [b, 1, H, W]
        return lambda model, schedule, x_T, c, *, steps, generator, callback, **kw: edit.inpaint(
            model, schedule, x0.to(x_T), m.to(x_T.device), c, sampler=sampler, steps=steps, generator=generator,
            noise=x_T, callback=callback, jump_length=jump_length, resample=resample, strength=strength, **kw)

    walked = edit.repaint_nfe(k, jump_length, resample)
    if resample > 1 and walked == k:
        raise bad_value("jump_length", jump_length, f"fewer than the {k} steps walked, so that resample={resample} "
                                                    f"has room to jump back")
    return _edit_plan(pipe, job, sampler_for, {"sampler": sampler, "steps": total, "guidance": float(guidance),
                                                "strength": strength, "jump_length": jump_length,
                                                "resample": resample},
                      walked=_repaint_times(_grid(pipe, job, sampler), k, jump_length, resample))


def plan_interpolate(pipe: "Pipeline", seed_a: int = 0, seed_b: int = 1, *, frames: int = 9,
                     context: ContextLike = None, context_to: str | None = None, sampler: str | None = None,
                     steps: int | None = None, guidance: float | None = None, **kwargs: Any) -> EditPlan:
    """Frames ``0 … frames-1`` from the slerp of the noises ``sample`` starts from for ``seed_a`` and ``seed_b``
    and, with ``context_to``, along ``ContextSpec.mix`` from ``context``, through a deterministic sampler: the
    first and last frames are the two seeds' samples."""
    weights = edit.frame_weights(frames)
    for name, value in (("seed_a", seed_a), ("seed_b", seed_b)):
        checks.seed(name, as_int(value))
    if context_to is not None:
        if not isinstance(context, str) or not isinstance(context_to, str):
            raise bad_value("context_to", context_to, "a name or prompt, together with a context given as one")
        rows = pipe.context.mix(context, context_to, weights)  # [F, D]
    else:
        rows = pipe.contexts(context)
        if rows is not None and len(rows) != 1:
            raise bad_value("context", f"{len(rows)} rows", "one context (or context and context_to)")
    sampler, steps, guidance = pipe.resolve(sampler, steps, guidance)
    rows = None if rows is None else rows.expand(frames, -1)
    job = plan(pipe, rows, seeds=[seed_a] if rows is not None else [seed_a] * frames, sampler=sampler, steps=steps,
               guidance=guidance, **kwargs)
    _, name = edit.sampler_of(job.fn)
    edit.check_deterministic(name, job.options)
    C, H, W = job.shape
    z_a, z_b = (torch.randn(C, H, W, generator=torch.Generator().manual_seed(int(s))) for s in (seed_a, seed_b))
    x_T = edit.slerp(z_a, z_b, weights)  # [F, C, H, W]: what plans.run draws for each seed, slerped

    def sampler_for(idx: torch.Tensor) -> Callable:
        return lambda model, schedule, x, c, **kw: job.fn(model, schedule, x_T[idx].to(x), c, **kw)

    grid = _grid(pipe, job, name)
    settings = {"sampler": name, "steps": len(grid), "guidance": float(guidance), "nfe": job.evaluations(grid),
                "weights": weights}
    return EditPlan(job, sampler_for, settings | {"options": dict(job.options)})


# ---------------------------------------------------------------------- shared by img2img and inpainting
def _inputs(pipe: "Pipeline", images: Any, context: ContextLike, kwargs: dict) -> tuple:
    """``(inputs [B, C, H, W], context rows [K, D] or None, rows edited)``; B and K broadcast when one is 1."""
    inputs = _images(pipe, images)
    rows = pipe.contexts(context)
    B, K = len(inputs), 1 if rows is None else len(rows)
    if B != K and 1 not in (B, K):
        raise bad_value("context", f"{K} rows for {B} input images", "one context row per input image, or one "
                                                                     "of either (it serves every row)")
    if "start" in kwargs:
        raise bad_value("start", kwargs["start"], "no start: strength sets where the edit starts")
    return inputs, rows, max(B, K)


def _inpaint_sampler(sampler: str | None, kwargs: dict) -> str:
    """RePaint's sampler (ddpm unless given; else ddim, or refused with the reason), with only its options."""
    sampler = edit.check_inpaint_sampler("ddpm" if sampler is None else sampler)
    other = sorted(set(kwargs) - {*PLAN_OPTIONS, *INPAINT_OPTIONS[sampler]})
    if other:
        raise UsageError(f"{other[0]}={kwargs[other[0]]!r} is not an option of inpainting with {sampler}; it takes: "
                         f"{', '.join(INPAINT_OPTIONS[sampler])}")
    return sampler


def _plan(pipe: "Pipeline", inputs: torch.Tensor, rows: torch.Tensor | None, count: int, strength: float, n: int,
          seed: int, sampler: str, steps: int | None, guidance: float, kwargs: dict) -> tuple[SamplePlan, int, int]:
    """The sampling plan of ``count`` edited rows of ``n`` images, its grid's length and ``k``, the steps its
    strength keeps."""
    rows = None if rows is None else rows.expand(count, -1) if len(rows) == 1 else rows
    n = checks.integer("n", as_int(n), low=1, allowed="a positive number of images per row")
    checks.memory("n", n, 8.0 * count * n * inputs[0].numel(), f"{count * n} edited images")
    if rows is None:  # unconditional: the rows are told apart by their inputs only, so list every seed
        seeds = [checks.seed("seed", as_int(seed), n) + j for _ in range(count) for j in range(n)]
    else:
        seeds = None
    job = plan(pipe, rows, n=n, seed=seed, seeds=seeds, sampler=sampler, steps=steps, guidance=guidance, **kwargs)
    grid = _grid(pipe, job, sampler)
    return job, len(grid), edit.tail_length(strength, len(grid))


def _grid(pipe: "Pipeline", job: SamplePlan, sampler: str) -> list[int]:
    """The whole descending time grid of ``job``'s sampler (the edits walk its tail)."""
    return samplers.grid(sampler, pipe.schedule, job.steps, job.options.get("spacing", "trailing"))


def _repaint_times(grid: list[int], levels: int, jump_length: int, resample: int) -> list[int]:
    """The steps RePaint evaluates the network at: one per step down its walk (``core.edit.repaint_walk``)."""
    walk = edit.repaint_walk(levels, jump_length, resample)
    return [grid[len(grid) - 1 - here] for here, there in zip(walk, walk[1:]) if there < here]


def _edit_plan(pipe: "Pipeline", job: SamplePlan, sampler_for: Callable, settings: dict,
               walked: list[int]) -> EditPlan:
    """The plan with what it uses (``settings``) and its network evaluations per image (both guided halves count)."""
    checks.memory("batch_size", job.batch_size, batch_bytes(pipe, job), "network batch")
    nfe = job.evaluations(walked)  # the network times walked: 2 each where guided (the interval's), else 1
    return EditPlan(job, sampler_for, {**settings, "nfe": nfe, "options": dict(job.options)})


def _rows_of(tensor: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """The rows ``row`` of ``tensor``, or its one row for every image when it has one."""
    return tensor[row if len(tensor) > 1 else torch.zeros_like(row)]


def _images(pipe: "Pipeline", images: Any) -> torch.Tensor:
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
