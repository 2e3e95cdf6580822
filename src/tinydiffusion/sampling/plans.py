"""A sampling job checked before any work (``plan``) and run batch by batch (``run``).

Layout: image ``k`` has context row ``k // n`` and seed ``seeds[k % n]`` and is made in batch
``k // batch_size``. Each image has its own generator, whose first draw is its ``x_T``, so an image depends
on its seed only, never on the batch, and batches can be spread over processes or streamed to disk and still
give, bit for bit, the images of one call. The functions take a loaded ``Pipeline`` (``pipeline.py``) and
never import it: the pipeline calls these, never the other way round.
"""

from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from .. import checks
from ..core.guidance import autoguidance, autoguided_cfg, cfg
from ..core.samplers import get_sampler
from ..errors import bad_value
from ..runtime.dist import autocast
from ..vocab import PRECISIONS, UNGUIDED
from . import card
from .card import check_distilled

Pipeline = Any  # a loaded ``pipeline.Pipeline``: named here, not imported, since the pipeline imports this module

ContextLike = None | str | Sequence[str] | torch.Tensor


@dataclass(frozen=True, eq=False)
class SamplePlan:
    """One checked sampling job: image ``k`` has context row ``k // n`` and seed ``seeds[k % n]``
    (``n = len(seeds)``), and is made in batch ``k // batch_size``."""

    model: Callable  # the network, or its guidance closure
    fn: Callable  # the sampler
    rows: torch.Tensor | None  # [K, D]; None: one unconditional row
    seeds: Sequence[int]  # the n seeds of every row (a range when given as seed + n)
    batch_size: int
    steps: int | None
    precision: str
    options: dict[str, Any]
    shape: tuple[int, int, int]  # C, H, W
    guided: bool
    note: str | None = None  # what the plan decided that the caller did not ask for (said once by the CLI)
    guide: torch.nn.Module | None = None  # autoguidance's guide network, evaluated beside the model (counted too)
    levers: dict[str, Any] | None = None  # the guidance interval and guide asked for (given, else the card's)

    @property
    def count(self) -> int:
        return (1 if self.rows is None else self.rows.shape[0]) * len(self.seeds)

    @property
    def batches(self) -> int:
        return -(-self.count // self.batch_size)

    @property
    def image_bytes(self) -> int:
        C, H, W = self.shape
        return 4 * C * H * W

    def images_in(self, batches: Iterable[int]) -> int:
        """How many images the given batch indices hold (the last batch may be short)."""
        return sum(min(self.batch_size, self.count - b * self.batch_size) for b in batches)

    def evaluations(self, times: Iterable[int]) -> int:
        """Network evaluations per image over the steps ``times`` the sampler takes: 1 per step unguided or outside
        the guidance interval, 2 per guided step (both halves, or the model and its guide)."""
        per_step = getattr(self.model, "evaluations", None) if self.guided else None
        return sum(1 if per_step is None else per_step(t) for t in times)


def plan(pipe: "Pipeline", context: ContextLike = None, *, n: int = 1, seed: int = 0,
         seeds: Sequence[int] | None = None, sampler: str | None = None, steps: int | None = None,
         batch_size: int = 64, guidance: float | None = None, guidance_rescale: float = 0.0,
         guidance_interval: Any = None, guide: Any = None, guide_scale: float | None = None,
         snap: float | None = None, precision: str = "fp32", **options: Any) -> SamplePlan:
    """The arguments of ``Pipeline.sample`` checked (a bad one raises ``UsageError`` naming it), nothing run yet;
    ``sampler``, ``steps``, ``guidance``, ``guidance_interval``, ``guide``, ``guide_scale`` and ``snap`` left at
    ``None`` come from the model card (``card.resolve``, ``card.interval``, ``card.guide``, ``card.guide_scale``,
    ``card.snap``)."""
    sampler, steps, guidance = pipe.resolve(sampler, as_int(steps), guidance)
    interval, (guide, carded) = card.interval(pipe.config, guidance_interval), card.guide(pipe.config, guide)
    guide_scale = card.guide_scale(pipe.config, guide_scale, guide)
    rows, strength = pipe.contexts(context), card.snap(pipe.config, snap)
    snapped = None
    if strength and rows is not None:
        rows, snapped = pipe.snap(rows, strength)
    if seeds is None:
        n = checks.integer("n", as_int(n), low=1)
        seeds = range(checks.seed("seed", as_int(seed), n), seed + n)  # lazy: no list of K·n seeds
    else:
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) == 0:
            raise bad_value("seeds", seeds, "a non-empty sequence of integer seeds")
        seeds = [checks.seed(f"seeds[{i}]", as_int(s)) for i, s in enumerate(seeds)]
    batch_size = checks.integer("batch_size", as_int(batch_size), low=1)
    guidance = checks.guidance(guidance)
    guidance_rescale = checks.finite("guidance_rescale", guidance_rescale, low=0, high=1)
    checks.choice("precision", precision, PRECISIONS)
    fn = get_sampler(sampler, options)
    if steps is not None:
        pipe.schedule.timesteps(steps, options.get("spacing", "trailing"))  # 1 <= steps <= T
    check_distilled(pipe.distilled, sampler, steps, guidance, guidance_rescale, options, interval=interval,
                    guide=guide)
    pulls = guidance != UNGUIDED or guide_scale not in (None, UNGUIDED)
    guide = pipe.load_guide(guide, carded) if guide is not None and (pulls or not carded) else None
    model, note = _guided(pipe, rows, guidance, guidance_rescale, interval, guide, guide_scale)
    shape = (int(pipe.config["model"]["channels"]), pipe.image_size, pipe.image_size)
    levers = {"guidance_interval": None if interval is None else list(interval),
              "guide": None if guide is None else _named(guide),
              "guide_scale": None if guide is None else guide_scale,
              "snap": strength, "snapped_to": snapped}
    return SamplePlan(model, fn, rows, seeds, batch_size, steps, precision, dict(options), shape,
                      model is not pipe.model, note, guide.model if guide is not None and model is not pipe.model
                      else None, levers)


def _named(guide: "Pipeline") -> str:
    """How a guide is recorded: a shipped model by its name, else its folder."""
    return guide.config.get("shipped_as") or str(guide.path or "a loaded Pipeline")


def _guided(pipe: "Pipeline", rows: torch.Tensor | None, guidance: float, rescale: float,
            interval: tuple[float, float] | None, guide: "Pipeline | None",
            guide_scale: float | None = None) -> tuple[Callable, str | None]:
    """``(the model or its guidance closure, a note)``: autoguidance with a guide (beside classifier-free guidance
    with a ``guide_scale``), else classifier-free guidance, which is skipped (and said) when every row is the null
    context; a student has its guidance inside."""
    asked = not pipe.distilled and (guidance != UNGUIDED or rescale != 0.0)
    null = rows is None or not bool(rows.any())
    if guide is not None and guide_scale is not None:
        if guide_scale == UNGUIDED and not asked:
            return pipe.model, f"guide {guide.path} unused: guidance 1 and guide scale 1 are the model alone"
        if null or not asked:  # no classifier-free half to add: autoguidance alone, at its own scale
            note = (f"guidance {guidance:g} skipped: the context is the null (unconditional) one" if null and asked
                    else None)
            return autoguidance(pipe.model, guide.model, guide_scale, rescale, interval, pipe.schedule.T), note
        return autoguided_cfg(pipe.model, guide.model, guidance, guide_scale, rescale, interval,
                              pipe.schedule.T), None
    if guide is not None:
        if guidance == UNGUIDED:
            return pipe.model, f"guide {guide.path} unused: guidance 1 is the model alone"
        return autoguidance(pipe.model, guide.model, guidance, rescale, interval, pipe.schedule.T), None
    if asked and null:  # only the null context: both halves would be one call
        return pipe.model, (f"guidance {guidance:g} skipped: the context is the null (unconditional) one, where the "
                            f"guided and unguided predictions are the same network call")
    return (cfg(pipe.model, guidance, rescale, interval, pipe.schedule.T), None) if asked else (pipe.model, None)


def run(pipe: "Pipeline", job: SamplePlan, batches: Iterable[int] | None = None,
        callback: Callable | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(b, images [b_size, C, H, W])`` (float32, CPU) for each batch index ``b`` of ``job`` (default: all, in
    order). Batch ``b`` holds images ``b·batch_size …``."""
    C, H, W = job.shape
    n, device = len(job.seeds), pipe.device
    for net in (pipe.model, job.guide):
        if net is not None:
            net.eval()
    for b in range(job.batches) if batches is None else batches:
        k = torch.arange(b * job.batch_size, min((b + 1) * job.batch_size, job.count))  # image indices
        gens = [torch.Generator().manual_seed(int(job.seeds[i % n])) for i in k.tolist()]
        with torch.inference_mode(), autocast(device, job.precision):  # left before yielding to the caller
            x_T = torch.stack([torch.randn(C, H, W, generator=g) for g in gens]).to(device)  # [b, C, H, W]
            c = None if job.rows is None else job.rows[k // n].to(device)  # [b, D]: image k has row k // n
            x_0 = job.fn(job.model, pipe.schedule, x_T, c, steps=job.steps, generator=gens, callback=callback,
                         **job.options).float().cpu()
        yield b, x_0


def batch_bytes(pipe: "Pipeline", job: SamplePlan) -> int:
    """A generous estimate of one batch's working memory: the network's activations (a UNet keeps about eight maps
    of its widest width at full size for its skips), both halves under guidance, the per-image generators
    (5 KB of Mersenne-Twister state each)."""
    m = pipe.config.get("model", {})
    width = int(m.get("base", 32)) * max(m.get("mults") or [1])
    C, H, W = job.shape
    b = min(job.batch_size, job.count)
    return b * (2 if job.guided else 1) * 4 * H * W * (8 * width + 4 * C) + b * 5 * 1024


@contextlib.contextmanager
def counting_evaluations(*models: torch.nn.Module | None) -> Iterator[list[int]]:
    """``[n, n_1, n_2, …]``: the images the networks ``models`` (``None`` skipped, each counted once) are evaluated on
    inside the block, in all (``n``) and each. Divided by the images sampled, ``n`` is the network evaluations per
    image: 2 per guided step (both halves, or the model and its autoguidance guide, a network of its own: pass
    ``plan.guide`` too), 1 per step of a student, unguided or outside the guidance interval."""
    nets = list({id(m): m for m in models if m is not None}.values())
    seen = [0] * (len(nets) + 1)

    def count(i: int, images: int) -> None:
        seen[0] += images
        seen[i] += images

    hooks = [m.register_forward_hook(lambda module, args, out, i=i: count(i, args[0].shape[0]))
             for i, m in enumerate(nets, 1)]
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def as_int(value: Any) -> Any:
    """NumPy and other integral types as a plain int; anything else unchanged, for the checks to refuse."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
