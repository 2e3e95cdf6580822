"""A loaded model ready to sample: network + schedule + context spec, and ``load(path)``."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from ..store.checkpoint import CONFIG, WEIGHTS, check_weights, read_model
from ..store.modelfile import MODEL_FORMAT
from ..conditioning.spec import ContextSpec
from ..errors import UsageError, bad_value
from .. import checks
from ..runtime.dist import autocast
from ..core.guidance import cfg
from ..models import ModelConfig, build_model
from ..core.samplers import SAMPLERS
from ..core.schedule import Schedule
from ..vocab import PRECISIONS, SPACINGS, VARIANCES

ContextLike = None | str | Sequence[str] | torch.Tensor


@dataclass(eq=False)
class Pipeline:
    model: torch.nn.Module
    schedule: Schedule
    context: ContextSpec
    config: dict[str, Any] = field(default_factory=dict)
    prediction: str = "eps"

    @property
    def image_size(self) -> int:
        return int(self.config["model"]["image_size"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def recommended(self) -> dict[str, Any]:
        """The model card's sampling settings (``config.json`` ``recommended``: sampler, steps, guidance),
        used when a caller gives none. A model exported without them gets DDPM over all T, unguided."""
        card = self.config.get("recommended") or {}
        return {"sampler": card.get("sampler", "ddpm"), "steps": card.get("steps"),
                "guidance": float(card.get("guidance", 1.0))}

    def resolve(self, sampler: str | None, steps: int | None, guidance: float | None) -> tuple:
        """``(sampler, steps, guidance)`` with the model card's values where ``None``. Steps come from the
        card only together with its sampler (``sampler="ddim"`` alone keeps DDIM's own default)."""
        card = self.recommended
        if sampler is None or (self.distilled and sampler == card["sampler"]):
            sampler, steps = card["sampler"], card["steps"] if steps is None else steps
        return sampler, steps, card["guidance"] if guidance is None else guidance

    @property
    def distilled(self) -> dict[str, Any] | None:
        """A few-step student's ``distilled`` card (method, sampler, steps, guidance folded in), else ``None``."""
        return self.config.get("distilled")

    def to(self, device: str | torch.device) -> "Pipeline":
        self.model.to(device)
        return self

    def default_rows(self) -> list[str]:
        """What a grid shows when no context is given: every class, or the model's example captions."""
        if self.context.kind == "class":
            return list(self.context.names)
        if self.context.kind == "text":
            return [caption for _, caption in self.config.get("examples", [])]
        return []

    def contexts(self, context: ContextLike) -> torch.Tensor | None:
        """Context rows ``[K, D]`` from names/mixtures, a tensor, or ``None`` (unconditional, one row)."""
        if context is None:
            return None
        if isinstance(context, str):
            context = [context]
        if isinstance(context, torch.Tensor):
            rows = context.float().reshape(-1, context.shape[-1]) if context.dim() else context
            if context.dim() not in (1, 2) or rows.shape[-1] != self.context.width:
                raise bad_value("context", f"tensor of shape {tuple(context.shape)}",
                                f"[D] or [N, D] with D = {self.context.width} (this model's context width)")
            bad = (~torch.isfinite(rows)).any(dim=-1).nonzero().flatten().tolist() if rows.dim() == 2 else []
            if bad:  # a NaN context silently gives black images
                raise bad_value("context", f"tensor whose row {bad[0]} holds {rows[bad[0]].tolist()[:8]}",
                                "finite numbers in every row")
        else:
            rows = self.context.parse_many(list(context))
        if rows.shape[0] == 0:
            raise bad_value("context", "no rows", "at least one context row (or None for unconditional)")
        return rows

    def sample(self, context: ContextLike = None, *, n: int = 1, seed: int = 0, seeds: Sequence[int] | None = None,
               sampler: str | None = None, steps: int | None = None, batch_size: int = 64,
               guidance: float | None = None, guidance_rescale: float = 0.0, precision: str = "fp32",
               callback: Callable | None = None,
               **options: Any) -> torch.Tensor:
        """Images ``[K·n, 3, H, W]`` in ``[-1, 1]``: ``n`` per context row, row by row.

        Column ``j`` of every row starts from seed ``seed + j`` (or ``seeds[j]``), and each image
        has its own generator, so an image depends on its seed only, never on the batch.
        ``guidance`` is the classifier-free guidance scale (1 = none); ``precision="bf16"`` autocasts the network.
        ``sampler``, ``steps`` and ``guidance`` left at ``None`` come from the model card (``recommended``).
        Every argument is checked, and the memory the result needs estimated, before any work.
        """
        plan = self.plan(context, n=n, seed=seed, seeds=seeds, sampler=sampler, steps=steps, batch_size=batch_size,
                         guidance=guidance, guidance_rescale=guidance_rescale, precision=precision, **options)
        checks.memory("n" if seeds is None else "seeds", n if seeds is None else f"{len(plan.seeds)} seeds",
                      plan.count * plan.image_bytes + self.batch_bytes(plan),
                      f"{plan.count} float32 images plus a network batch")
        return torch.cat([x for _, x in self.run(plan, callback=callback)])

    def plan(self, context: ContextLike = None, *, n: int = 1, seed: int = 0, seeds: Sequence[int] | None = None,
             sampler: str | None = None, steps: int | None = None, batch_size: int = 64,
             guidance: float | None = None, guidance_rescale: float = 0.0, precision: str = "fp32",
             **options: Any) -> "SamplePlan":
        """The arguments of ``sample`` checked (a bad one raises ``UsageError`` naming it), nothing run yet."""
        sampler, steps, guidance = self.resolve(sampler, steps, guidance)
        rows = self.contexts(context)
        if seeds is None:
            n = checks.integer("n", _as_int(n), low=1)
            seeds = range(checks.seed("seed", _as_int(seed), n), seed + n)  # lazy: no list of K·n seeds
        else:
            if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) == 0:
                raise bad_value("seeds", seeds, "a non-empty sequence of integer seeds")
            seeds = [checks.seed(f"seeds[{i}]", _as_int(s)) for i, s in enumerate(seeds)]
        batch_size = checks.integer("batch_size", _as_int(batch_size), low=1)
        guidance = checks.guidance(guidance)
        guidance_rescale = checks.finite("guidance_rescale", guidance_rescale, low=0, high=1)
        checks.choice("precision", precision, PRECISIONS)
        fn = get_sampler(sampler, options)
        if steps is not None:
            self.schedule.timesteps(_as_int(steps), options.get("spacing", "trailing"))  # 1 <= steps <= T
        check_distilled(self.distilled, sampler, _as_int(steps), guidance, guidance_rescale, options)
        self.model.prediction = self.prediction  # samplers (and the guidance closure) read what the output means
        unguided = self.distilled or (guidance == 1.0 and guidance_rescale == 0.0)  # a student has it inside
        model = self.model if unguided else cfg(self.model, guidance, guidance_rescale)
        shape = (int(self.config["model"]["channels"]), self.image_size, self.image_size)
        return SamplePlan(model, fn, rows, seeds, batch_size, steps, precision, dict(options), shape, model is not self.model)

    def run(self, plan: "SamplePlan", batches: Iterable[int] | None = None,
            callback: Callable | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(b, images [b_size, C, H, W])`` (float32, CPU) for each batch index ``b`` of ``plan`` (default:
        all, in order). Batch ``b`` holds images ``b·batch_size …``, so batches can be spread over processes
        or streamed to disk and still give, bit for bit, the images of one ``sample`` call."""
        C, H, W = plan.shape
        n, device = len(plan.seeds), self.device
        self.model.eval()
        for b in range(plan.batches) if batches is None else batches:
            k = torch.arange(b * plan.batch_size, min((b + 1) * plan.batch_size, plan.count))  # image indices
            gens = [torch.Generator().manual_seed(int(plan.seeds[i % n])) for i in k.tolist()]
            with torch.inference_mode(), autocast(device, plan.precision):  # left before yielding to the caller
                x_T = torch.stack([torch.randn(C, H, W, generator=g) for g in gens]).to(device)  # [b, C, H, W]
                c = None if plan.rows is None else plan.rows[k // n].to(device)  # [b, D]: image k has row k // n
                x_0 = plan.fn(plan.model, self.schedule, x_T, c, steps=plan.steps, generator=gens, callback=callback,
                              **plan.options).float().cpu()
            yield b, x_0

    def batch_bytes(self, plan: "SamplePlan") -> int:
        """A generous estimate of one batch's working memory: the network's activations (a UNet keeps about
        eight maps of its widest width at full size for its skips), both halves under guidance, the
        per-image generators (5 KB of Mersenne-Twister state each)."""
        m = self.config.get("model", {})
        width = int(m.get("base", 32)) * max(m.get("mults") or [1])
        C, H, W = plan.shape
        b = min(plan.batch_size, plan.count)
        return b * (2 if plan.guided else 1) * 4 * H * W * (8 * width + 4 * C) + b * 5 * 1024

    # ------------------------------------------------------------------ editing (edit.py, editing.py)
    def img2img(self, images: torch.Tensor, context: ContextLike = None, *, strength: float, n: int = 1,
                seed: int = 0, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                callback: Callable | None = None, **options: Any) -> torch.Tensor:
        """SDEdit: ``images`` ``[3, H, W]`` or ``[B, 3, H, W]`` in ``[-1, 1]`` re-dressed with ``context``,
        ``[R·n, 3, H, W]`` (row ``r`` edits input ``r`` with context row ``r``; one of either serves every row;
        column ``j`` has seed ``seed + j``). ``strength`` in ``(0, 1]`` runs the last ``round(strength·steps)``
        (half up, at least 1) steps of the sampler's grid (1: ``sample`` from the same seed, the input ignored;
        the rule is in ``edit.py``)."""
        from .editing import plan_edit, run_edit

        job = plan_edit(self, images, context, strength=strength, n=n, seed=seed, sampler=sampler, steps=steps,
                        guidance=guidance, **options)
        return torch.cat([x for _, x in run_edit(self, job, callback=callback)])

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, context: ContextLike = None, *, n: int = 1,
                seed: int = 0, steps: int | None = None, guidance: float | None = None, jump_length: int = 10,
                resample: int = 1, strength: float = 1.0, callback: Callable | None = None,
                **options: Any) -> torch.Tensor:
        """RePaint: regenerate where ``mask`` (``[H, W]``, ``[1, H, W]`` or one per row; 1 = keep, 0 = generate)
        is 0, over DDPM steps (default 50), the kept pixels exact; ``resample > 1`` jumps back ``jump_length``
        steps ``resample - 1`` times at every ``jump_length``-th step (better harmony, more network evaluations)."""
        from .editing import plan_edit, run_edit

        job = plan_edit(self, images, context, mask, strength=strength, n=n, seed=seed, steps=steps,
                        guidance=guidance, jump_length=jump_length, resample=resample, **options)
        return torch.cat([x for _, x in run_edit(self, job, callback=callback)])

    def interpolate(self, seed_a: int = 0, seed_b: int = 1, *, frames: int = 9, context: ContextLike = None,
                    context_to: str | None = None, sampler: str | None = None, steps: int | None = None,
                    guidance: float | None = None, callback: Callable | None = None, **options: Any) -> torch.Tensor:
        """``[frames, 3, H, W]`` from the slerp of the two seeds' noises (and ``context`` → ``context_to``) with a
        deterministic sampler: the first and last frames are the two seeds' samples."""
        from .interpolate import plan_interpolate
        from .editing import run_edit

        job = plan_interpolate(self, seed_a, seed_b, frames=frames, context=context, context_to=context_to,
                               sampler=sampler, steps=steps, guidance=guidance, **options)
        return torch.cat([x for _, x in run_edit(self, job, callback=callback)])


def check_distilled(distilled: dict[str, Any] | None, sampler: str, steps: int | None, guidance: float,
                    guidance_rescale: float = 0.0, options: dict[str, Any] | None = None) -> None:
    """Refuse, naming the setting, what a student with this ``distilled`` card was not trained for: another
    sampler, step count or guidance scale (it is inside the network), guidance rescale, another time grid,
    DDIM noise. ``None`` (an ordinary model) passes. The studio calls it before any weights are read."""
    d, options = distilled, options or {}
    if not d:
        return
    counts = ", ".join(map(str, d["steps"]))
    what = (f"this model is a student distilled ({d['method']}) for the {d['sampler']} sampler in {counts} "
            f"step(s) with guidance {d['guidance']:g} folded into the network")
    if sampler != d["sampler"]:
        raise UsageError(f"sampler={sampler!r} is not one this model supports: {what} (omit the sampler to use it)")
    if steps not in d["steps"]:
        raise UsageError(f"steps={steps!r} is not one this model supports: {what}")
    if guidance != d["guidance"]:
        raise UsageError(f"guidance={guidance:g} is not one this model supports: {what}; another scale needs "
                         f"another distillation (tinydiffusion distill TEACHER --guidance W)")
    if guidance_rescale:
        raise UsageError(f"guidance_rescale={guidance_rescale:g} is not one this model supports: {what}")
    if options.get("spacing", "trailing") != "trailing":
        raise bad_value("spacing", options["spacing"], "'trailing' (the grid this student was distilled on)")
    if options.get("eta", 0):
        raise bad_value("eta", options["eta"], "0: this student was distilled for deterministic DDIM steps")


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


def _as_int(value: Any) -> Any:
    """NumPy and other integral types as a plain int; anything else unchanged, for the checks to refuse."""
    import numbers

    return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value


_OPTION_CHOICES = {"variance": VARIANCES, "spacing": SPACINGS}


def get_sampler(name: str, options: dict[str, Any]) -> Callable:
    """The registered sampler, after checking that it takes every option given, with a valid value."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise bad_value("sampler", name, f"one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[name]
    params = inspect.signature(fn).parameters
    for key, value in options.items():
        if key not in params:
            allowed = [p for p, v in params.items() if v.kind == v.KEYWORD_ONLY and p not in ("steps", "generator", "callback")]
            raise UsageError(f"{key}={value!r} is not an option of the {name} sampler; "
                             f"it takes: {', '.join(allowed)}")
        if key == "eta":
            checks.finite("eta", value, low=0, high=1, allowed="a number from 0 (deterministic) to 1 (DDPM-like)")
        elif key in _OPTION_CHOICES and value not in _OPTION_CHOICES[key]:
            raise bad_value(key, value, f"one of {', '.join(_OPTION_CHOICES[key])}")
        elif key in ("extra_noise", "clip_x0") and not isinstance(value, bool):
            raise bad_value(key, value, "True or False")
    return fn


SHIPPED = ("sprites", "emoji", "sprites-fast", "sprites-instant")  # the last two: distilled students of sprites


def resolve_model(path: str | Path) -> Path:
    """A shipped model's name (``sprites``, ``emoji``) to its folder inside the package; paths pass through."""
    if str(path) in SHIPPED and not Path(str(path)).exists():
        from importlib import resources

        return Path(str(resources.files("tinydiffusion") / "assets" / "models" / str(path)))
    return Path(path)


def load(path: str | Path, device: str | torch.device = "cpu", *, prediction: str | None = None,
         schedule: dict[str, Any] | None = None) -> Pipeline:
    """Rebuild network, schedule and context spec from an exported model folder or a shipped name.

    ``prediction`` and ``schedule`` (e.g. ``{"kind": "cosine"}``) are expectations: a model trained
    otherwise is refused with an explanation rather than sampled into wrong images.
    """
    if not isinstance(path, (str, Path)) or not str(path).strip():  # '' would be the current folder
        raise bad_value("model", path, f"a shipped model ({', '.join(SHIPPED)}) or an exported model folder")
    path = resolve_model(path)
    # read_model checks config.json against modelfile's schema and the weights for being readable and finite
    config, weights = read_model(path, expect=MODEL_FORMAT)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}  # shipped as fp16
    _check_expected(path, config, prediction, schedule)
    try:  # what the schema cannot say: sizes the network can halve, a schedule that decreases, encoder widths
        model_config = ModelConfig.from_dict(config["model"])
        schedule = Schedule.from_dict(config["schedule"])
        spec = ContextSpec.from_dict(config.get("context", {"kind": "none", "width": 0}))
    except UsageError as e:
        raise UsageError(f"model config {path / CONFIG}: {e}") from None
    model = build_model(model_config)
    check_weights(path / WEIGHTS, weights, model.state_dict())  # names, shapes and dtypes, each named
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise UsageError(f"model weights in {path} do not fit its config.json: {str(e)[:500]}") from None
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        # channels-last convolutions sample 1.4× (16 px) to 1.6× (32 px) faster on a CPU, with the same
        # images to 1e-5 (`tinydiffusion bench`, speed settings); training does not gain, so only here
        model = model.to(memory_format=torch.channels_last)
    return Pipeline(model, schedule, spec, config, config.get("prediction", "eps"))


def _check_expected(path, config: dict[str, Any], prediction: str | None, schedule: dict[str, Any] | None) -> None:
    trained = config.get("prediction", "eps")
    if prediction is not None and prediction != trained:
        raise UsageError(f"model {path} was trained to predict {trained!r}, not {prediction!r}; sampling it as "
                         f"{prediction!r} would give wrong images (omit the setting to use the model's own)")
    for key, value in (schedule or {}).items():
        if config.get("schedule", {}).get(key) != value:
            raise UsageError(f"model {path} was trained with schedule {key}={config.get('schedule', {}).get(key)!r}, "
                             f"not {value!r}; a sampler must use the schedule the model was trained with")
