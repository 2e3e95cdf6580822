"""A loaded model ready to sample: network + schedule + context spec, and ``load(path)``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .checkpoint import read_model
from .context import ContextSpec
from .errors import UsageError, bad_value
from .dist import autocast
from .guidance import cfg
from .models import ModelConfig, build_model
from .samplers import SAMPLERS
from .schedule import Schedule

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
            return rows
        return self.context.parse_many(list(context))

    def sample(self, context: ContextLike = None, *, n: int = 1, seed: int = 0, seeds: Sequence[int] | None = None,
               sampler: str = "ddpm", steps: int | None = None, batch_size: int = 64, guidance: float = 1.0,
               guidance_rescale: float = 0.0, precision: str = "fp32", callback: Callable | None = None,
               **options: Any) -> torch.Tensor:
        """Images ``[K·n, 3, H, W]`` in ``[-1, 1]``: ``n`` per context row, row by row.

        Column ``j`` of every row starts from seed ``seed + j`` (or ``seeds[j]``), and each image
        has its own generator, so an image depends on its seed only, never on the batch.
        ``guidance`` is the classifier-free guidance scale (1 = none); ``precision="bf16"`` autocasts the network.
        """
        rows = self.contexts(context)
        seeds = list(range(seed, seed + n)) if seeds is None else list(seeds)
        if n < 1 or batch_size < 1:
            raise bad_value("n" if n < 1 else "batch_size", n if n < 1 else batch_size, "a positive integer")
        fn = get_sampler(sampler, options)
        self.model.prediction = self.prediction  # samplers read what the network's output means
        model = self.model if guidance == 1.0 and guidance_rescale == 0.0 else cfg(self.model, guidance, guidance_rescale)
        K = 1 if rows is None else rows.shape[0]
        all_seeds = [s for _ in range(K) for s in seeds]
        all_rows = None if rows is None else rows.repeat_interleave(len(seeds), dim=0)  # [K·n, D]
        device, (C, H) = self.device, (int(self.config["model"]["channels"]), self.image_size)
        out = []
        self.model.eval()
        if precision not in ("fp32", "bf16"):
            raise bad_value("precision", precision, "'fp32' or 'bf16'")
        with torch.inference_mode(), autocast(device, precision):
            for start in range(0, len(all_seeds), batch_size):
                chunk = all_seeds[start:start + batch_size]
                gens = [torch.Generator().manual_seed(int(s)) for s in chunk]
                x_T = torch.stack([torch.randn(C, H, H, generator=g) for g in gens]).to(device)  # [b, C, H, W]
                c = None if all_rows is None else all_rows[start:start + batch_size].to(device)
                out.append(fn(model, self.schedule, x_T, c, steps=steps, generator=gens, callback=callback,
                              **options).float().cpu())
        return torch.cat(out)


def get_sampler(name: str, options: dict[str, Any]) -> Callable:
    """The registered sampler, after checking that it takes every option given."""
    if name not in SAMPLERS:
        raise bad_value("sampler", name, f"one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[name]
    params = inspect.signature(fn).parameters
    for key in options:
        if key not in params:
            allowed = [p for p, v in params.items() if v.kind == v.KEYWORD_ONLY and p not in ("steps", "generator", "callback")]
            raise UsageError(f"{key}={options[key]!r} is not an option of the {name} sampler; "
                             f"it takes: {', '.join(allowed)}")
    return fn


SHIPPED = ("sprites", "emoji")


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
    path = resolve_model(path)
    config, weights = read_model(path)
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}  # shipped as fp16
    _check_expected(path, config, prediction, schedule)
    try:
        model_config = ModelConfig.from_dict(config["model"])
        schedule = Schedule.from_dict(config["schedule"])
        spec = ContextSpec.from_dict(config.get("context", {}))
    except KeyError as e:
        raise UsageError(f"model config in {path} lacks the {e} section") from None
    model = build_model(model_config)
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
