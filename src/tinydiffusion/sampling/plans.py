"""A sampling job checked before any work (``plan``) and run batch by batch (``run``).

Layout: image ``k`` has context row ``k // n`` and seed ``seeds[k % n]`` and is made in batch
``k // batch_size``. Each image has its own generator, whose first draw is its ``x_T``, so an image depends
on its seed only, never on the batch, and batches can be spread over processes or streamed to disk and still
give, bit for bit, the images of one call. The functions take a loaded ``Pipeline`` (``pipeline.py``) and
import it for type checking only: the pipeline calls these, never the other way round.
"""

from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import torch

from .. import checks
from ..core.guidance import cfg
from ..core.samplers import get_sampler
from ..errors import bad_value
from ..runtime.dist import autocast
from ..vocab import PRECISIONS, UNGUIDED
from .card import check_distilled

if TYPE_CHECKING:
    from .pipeline import Pipeline

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


def plan(pipe: "Pipeline", context: ContextLike = None, *, n: int = 1, seed: int = 0,
         seeds: Sequence[int] | None = None, sampler: str | None = None, steps: int | None = None,
         batch_size: int = 64, guidance: float | None = None, guidance_rescale: float = 0.0,
         precision: str = "fp32", **options: Any) -> SamplePlan:
    """The arguments of ``Pipeline.sample`` checked (a bad one raises ``UsageError`` naming it), nothing run yet;
    ``sampler``, ``steps`` and ``guidance`` left at ``None`` come from the model card (``card.resolve``)."""
    sampler, steps, guidance = pipe.resolve(sampler, as_int(steps), guidance)
    rows = pipe.contexts(context)
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
    check_distilled(pipe.distilled, sampler, steps, guidance, guidance_rescale, options)
    asked = not pipe.distilled and (guidance != UNGUIDED or guidance_rescale != 0.0)  # a student has it inside
    null = rows is None or not bool(rows.any())  # only the null context: both guided halves would be one call
    model = cfg(pipe.model, guidance, guidance_rescale) if asked and not null else pipe.model
    note = (f"guidance {guidance:g} skipped: the context is the null (unconditional) one, where the guided and "
            f"unguided predictions are the same network call") if asked and null else None
    shape = (int(pipe.config["model"]["channels"]), pipe.image_size, pipe.image_size)
    return SamplePlan(model, fn, rows, seeds, batch_size, steps, precision, dict(options), shape,
                      model is not pipe.model, note)


def run(pipe: "Pipeline", job: SamplePlan, batches: Iterable[int] | None = None,
        callback: Callable | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(b, images [b_size, C, H, W])`` (float32, CPU) for each batch index ``b`` of ``job`` (default: all, in
    order). Batch ``b`` holds images ``b·batch_size …``."""
    C, H, W = job.shape
    n, device = len(job.seeds), pipe.device
    pipe.model.eval()
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
def counting_evaluations(model: torch.nn.Module) -> Iterator[list[int]]:
    """``[n]``: the images ``model`` is evaluated on inside the block. Divided by the images sampled it is the
    network evaluations per image, 2 per guided step (both halves), 1 per step of a student or unguided."""
    seen = [0]
    hook = model.register_forward_hook(lambda module, args, out: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    try:
        yield seen
    finally:
        hook.remove()


def as_int(value: Any) -> Any:
    """NumPy and other integral types as a plain int; anything else unchanged, for the checks to refuse."""
    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
