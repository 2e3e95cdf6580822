"""A loaded model ready to sample: network + schedule + context spec (``Pipeline``), and ``load(path)``.

The methods are the library's face: each checks its arguments into a plan (``plans.py``, ``edit_plans.py``) and
runs it; the model card's settings fill what is not given (``card.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from .. import checks
from ..conditioning.snap import snap
from ..conditioning.spec import ContextSpec
from ..conditioning.text import embed_captions
from ..core.schedule import Schedule
from ..errors import UsageError, bad_value
from ..models import ModelConfig, build_model
from ..models.adapter_file import merge_adapter
from ..models.onnxnet import onnx_network
from ..store.checkpoint import CONFIG, WEIGHTS, check_weights, read_model
from ..store.modelfile import MODEL_FORMAT
from . import card, plans
from .edit_plans import plan_img2img, plan_inpaint, plan_interpolate, run_edit
from .plans import ContextLike, SamplePlan


@dataclass(eq=False)
class Pipeline:
    model: torch.nn.Module
    schedule: Schedule
    context: ContextSpec
    config: dict[str, Any] = field(default_factory=dict)
    prediction: str = "eps"
    path: Path | None = None  # the model folder it was loaded from (a card's guide is found relative to it)
    guides: dict[str, "Pipeline"] = field(default_factory=dict, init=False, repr=False)  # loaded guides, by folder
    bank: torch.Tensor | None = field(default=None, init=False, repr=False)  # the training captions' rows, once

    def snap(self, rows: torch.Tensor, strength: float) -> tuple[torch.Tensor, list[str | None]]:
        """``(rows', nearest captions)``: context rows moved ``strength`` toward the nearest caption the model was
        trained on (``conditioning/snap.py``; the card's ``captions``, encoded once), and each row's caption
        (``None`` for the null context)."""
        captions = self.config.get("captions") or []
        if self.bank is None:  # cached in the user cache, keyed by the encoder and the captions, like training's
            self.bank = embed_captions(captions, self.context.encoder, progress=False, tokens=self.context.tokens)
        moved, nearest, _ = snap(self.context, rows, self.bank, strength)
        return moved, [captions[i] if i >= 0 else None for i in nearest.tolist()]

    def __post_init__(self) -> None:
        # samplers and the guidance closure read what the network's output means from the network itself
        self.model.prediction = self.prediction

    @property
    def image_size(self) -> int:
        return int(self.config["model"]["image_size"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def recommended(self) -> dict[str, Any]:
        """The model card's sampling settings (sampler, steps, guidance), used when a caller gives none."""
        return card.recommended(self.config)

    def resolve(self, sampler: str | None, steps: int | None, guidance: float | None) -> tuple:
        """``(sampler, steps, guidance)`` with the model card's values where ``None`` (``card.resolve``)."""
        return card.resolve(self.config, sampler, steps, guidance, self.schedule.T)

    @property
    def distilled(self) -> dict[str, Any] | None:
        """A few-step student's ``distilled`` card (method, sampler, steps, guidance folded in), else ``None``."""
        return self.config.get("distilled")

    def load_guide(self, guide: "Pipeline | str | Path", carded: bool = False) -> "Pipeline":
        """An autoguidance guide (a loaded Pipeline, a model folder or a shipped name; the card's ``guide`` when
        ``carded``: a folder relative to this model's, or a shipped name), loaded once on this model's device and
        refused unless it fits (``card.check_guide``: same image size, context, schedule and prediction)."""
        if not isinstance(guide, Pipeline):
            if not isinstance(guide, (str, Path)):
                raise bad_value("guide", guide, "a loaded Pipeline, a model folder or a shipped name")
            path = resolve_model(guide)
            if carded:  # relative to this model's folder, else a shipped name
                local = (self.path or Path(".")) / str(guide)
                path = local if (local / CONFIG).is_file() or str(guide) not in SHIPPED else path
                if not (path / CONFIG).is_file():
                    raise UsageError(f"the model card's guide {str(guide)!r} is not a model folder beside this model "
                                     f"({local}) nor a shipped model; fix recommended.guide or pass guide='none'")
            key = str(path.absolute())
            if key not in self.guides:
                self.guides[key] = load(path, self.device)
            guide = self.guides[key]
        card.check_guide(self.config, guide.config, str(guide.path or "the guide"))
        return guide

    def to(self, device: str | torch.device) -> "Pipeline":
        self.model.to(device)
        for guide in self.guides.values():
            guide.to(device)
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
               guidance: float | None = None, guidance_rescale: float = 0.0,
               guidance_interval: tuple[float, float] | None = None, guide: "Pipeline | str | Path | None" = None,
               guide_scale: float | None = None, snap: float | None = None, precision: str = "fp32",
               callback: Callable | None = None, raw: bool = False, **options: Any) -> torch.Tensor:
        """Images ``[K·n, 3, H, W]`` in ``[-1, 1]``: ``n`` per context row, row by row.

        The sampler's final ``x0`` is clipped to the data's range ``[-1, 1]`` (as every file output is);
        ``raw=True`` returns it unclipped (a guided sample overshoots, e.g. -1.6 to 2.3 at guidance 2).

        Column ``j`` of every row starts from seed ``seed + j`` (or ``seeds[j]``), and each image
        has its own generator, so an image depends on its seed only, never on the batch.
        ``guidance`` is the classifier-free guidance scale (1 = none); ``precision="bf16"`` autocasts the network.
        ``guidance_interval=(lo, hi)`` guides only where ``(t + 1) / T`` is in ``(lo, hi]`` (1: the noisiest step;
        ``(0, 1)`` everywhere), one evaluation per step outside it. ``guide`` (a Pipeline, a model folder or a
        shipped name; ``"none"``: none) is autoguidance: the weaker guide takes the unconditional branch's place and
        ``guidance`` is its scale (two networks per guided step); with ``guide_scale`` the guide stands beside the
        unconditional branch instead: autoguidance at ``guide_scale`` under classifier-free guidance at ``guidance``
        (four evaluations per guided step, two of them the guide's). ``snap`` (text models, 0 to 1) moves each
        prompt toward the nearest caption the model was trained on (``conditioning/snap.py``). ``sampler``,
        ``steps``, ``guidance``, ``guidance_interval``, ``guide``, ``guide_scale`` and ``snap`` left at ``None``
        come from the model card (``recommended``).
        Every argument is checked, and the memory the result needs estimated, before any work.
        """
        job = self.plan(context, n=n, seed=seed, seeds=seeds, sampler=sampler, steps=steps, batch_size=batch_size,
                        guidance=guidance, guidance_rescale=guidance_rescale, guidance_interval=guidance_interval,
                        guide=guide, guide_scale=guide_scale, snap=snap, precision=precision, **options)
        checks.memory("n" if seeds is None else "seeds", n if seeds is None else f"{len(job.seeds)} seeds",
                      job.count * job.image_bytes + plans.batch_bytes(self, job),
                      f"{job.count} float32 images plus a network batch")
        return _images(torch.cat([x for _, x in self.run(job, callback=callback)]), raw)

    def plan(self, context: ContextLike = None, **kwargs: Any) -> SamplePlan:
        """The arguments of ``sample`` checked (a bad one raises ``UsageError`` naming it), nothing run yet."""
        return plans.plan(self, context, **kwargs)

    def run(self, plan: SamplePlan, batches: Iterable[int] | None = None,
            callback: Callable | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """``(b, images)`` for each batch ``b`` of ``plan`` (``plans.run``): the images of one ``sample`` call."""
        return plans.run(self, plan, batches, callback)

    # ------------------------------------------------------------------ editing (core/edit.py, edit_plans.py)
    def img2img(self, images: torch.Tensor, context: ContextLike = None, *, strength: float, n: int = 1,
                seed: int = 0, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                callback: Callable | None = None, raw: bool = False, **options: Any) -> torch.Tensor:
        """SDEdit: ``images`` ``[3, H, W]`` or ``[B, 3, H, W]`` in ``[-1, 1]`` re-dressed with ``context``,
        ``[R·n, 3, H, W]`` (row ``r`` edits input ``r`` with context row ``r``; one of either serves every row;
        column ``j`` has seed ``seed + j``). ``strength`` in ``(0, 1]`` runs the last ``round(strength·steps)``
        (half up, at least 1) steps of the sampler's grid (1: ``sample`` from the same seed, the input ignored;
        the rule is in ``core/edit.py``)."""
        job = plan_img2img(self, images, context, strength=strength, n=n, seed=seed, sampler=sampler, steps=steps,
                           guidance=guidance, **options)
        return _images(torch.cat([x for _, x in run_edit(self, job, callback=callback)]), raw)

    def inpaint(self, images: torch.Tensor, mask: torch.Tensor, context: ContextLike = None, *, n: int = 1,
                seed: int = 0, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
                jump_length: int = 10, resample: int = 1, strength: float = 1.0, callback: Callable | None = None,
                raw: bool = False, **options: Any) -> torch.Tensor:
        """RePaint: regenerate where ``mask`` (``[H, W]``, ``[1, H, W]`` or one per row; 1 = keep, 0 = generate)
        is 0, over ``sampler``'s steps (ddpm, default 50 steps, or ddim with ``eta``, default 20), the kept pixels
        exact; ``resample > 1`` jumps back ``jump_length`` steps ``resample - 1`` times at every
        ``jump_length``-th step (better harmony, more network evaluations)."""
        job = plan_inpaint(self, images, mask, context, strength=strength, n=n, seed=seed, sampler=sampler,
                           steps=steps, guidance=guidance, jump_length=jump_length, resample=resample, **options)
        return _images(torch.cat([x for _, x in run_edit(self, job, callback=callback)]), raw)

    def interpolate(self, seed_a: int = 0, seed_b: int = 1, *, frames: int = 9, context: ContextLike = None,
                    context_to: str | None = None, sampler: str | None = None, steps: int | None = None,
                    guidance: float | None = None, callback: Callable | None = None, raw: bool = False,
                    **options: Any) -> torch.Tensor:
        """``[frames, 3, H, W]`` from the slerp of the two seeds' noises (and ``context`` → ``context_to``) with a
        deterministic sampler: the first and last frames are the two seeds' samples."""
        job = plan_interpolate(self, seed_a, seed_b, frames=frames, context=context, context_to=context_to,
                               sampler=sampler, steps=steps, guidance=guidance, **options)
        return _images(torch.cat([x for _, x in run_edit(self, job, callback=callback)]), raw)


def _images(x: torch.Tensor, raw: bool) -> torch.Tensor:
    """What the library returns: images clipped to the data's ``[-1, 1]`` (every file output clips the same way),
    or the sampler's own ``x0`` when ``raw``."""
    return x if raw else x.clamp_(-1.0, 1.0)


SHIPPED = ("sprites", "emoji", "sprites-fast", "sprites-instant", "emoji-fast", "sprites-guide")  # students, then a guide


def resolve_model(path: str | Path) -> Path:
    """A shipped model's name (``sprites``, ``emoji``) to its folder inside the package; paths pass through. A local
    folder of a shipped name counts only when it is an exported model (it holds a ``config.json``)."""
    if str(path) in SHIPPED and not (Path(str(path)) / CONFIG).is_file():
        return Path(str(resources.files("tinydiffusion") / "assets" / "models" / str(path)))
    return Path(path)


def load(path: str | Path, device: str | torch.device = "cpu", *, prediction: str | None = None,
         schedule: dict[str, Any] | None = None, backend: str = "auto") -> Pipeline:
    """Rebuild network, schedule and context spec from an exported model folder or a shipped name.

    ``prediction`` and ``schedule`` (e.g. ``{"kind": "cosine"}``) are expectations: a model trained
    otherwise is refused with an explanation rather than sampled into wrong images.
    ``backend``: ``torch``, ``onnx`` (onnxruntime runs the network) or ``auto`` (onnx for a folder holding
    ``model.onnx``, on the CPU); ``models/onnxnet.py``.
    """
    if not isinstance(path, (str, Path)) or not str(path).strip():  # '' would be the current folder
        raise bad_value("model", path, f"a shipped model ({', '.join(SHIPPED)}) or an exported model folder")
    path = resolve_model(path)
    # read_model checks config.json against modelfile's schema and the weights for being readable and finite
    config, weights = read_model(path, expect=MODEL_FORMAT)
    if "adapter" in config:  # a fine-tune's adapter: the base it names, with the adapter merged (finetune.md)
        weights = merge_adapter(path, config, weights, resolve_model)
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
    model = onnx_network(path, model, config, backend, device)  # the same network run by onnxruntime, or model
    return Pipeline(model, schedule, spec, config, config.get("prediction", "eps"), path)


def _check_expected(path, config: dict[str, Any], prediction: str | None, schedule: dict[str, Any] | None) -> None:
    trained = config.get("prediction", "eps")
    if prediction is not None and prediction != trained:
        raise UsageError(f"model {path} was trained to predict {trained!r}, not {prediction!r}; sampling it as "
                         f"{prediction!r} would give wrong images (omit the setting to use the model's own)")
    for key, value in (schedule or {}).items():
        if config.get("schedule", {}).get(key) != value:
            raise UsageError(f"model {path} was trained with schedule {key}={config.get('schedule', {}).get(key)!r}, "
                             f"not {value!r}; a sampler must use the schedule the model was trained with")
