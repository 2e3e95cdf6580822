"""Seed interpolation with a loaded model: ``plan_interpolate`` (run by ``editing.run_edit``) and
``interpolate_to_files(InterpolateConfig)`` (what ``tinydiffusion interpolate`` runs).

Frame ``i`` of ``F`` starts from ``slerp(z_a, z_b, i/(F-1))`` (``edit.slerp``), where ``z_a``, ``z_b`` are the
noises ``sample`` starts from for ``seed_a``, ``seed_b``; with ``context_to`` the context moves along too
(``ContextSpec.mix``, as ``sample --prompt-to``). A deterministic sampler makes frame 0 and frame ``F-1`` the two
seeds' samples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch

from .. import checks
from ..core import edit, samplers
from .editing import EditPlan, EditResult, _int, run_edit
from ..errors import bad_value
from .pipeline import ContextLike, Pipeline


def plan_interpolate(pipe: Pipeline, seed_a: int = 0, seed_b: int = 1, *, frames: int = 9,
                     context: ContextLike = None, context_to: str | None = None, sampler: str | None = None,
                     steps: int | None = None, guidance: float | None = None, **kwargs: Any) -> EditPlan:
    """Frames ``0 … frames-1`` between the noises of ``seed_a`` and ``seed_b`` (slerp) and, with ``context_to``,
    between the contexts ``context`` and ``context_to`` (``ContextSpec.mix``), through a deterministic sampler."""
    weights = edit.frame_weights(frames)
    for name, value in (("seed_a", seed_a), ("seed_b", seed_b)):
        checks.seed(name, _int(value))
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
    plan = pipe.plan(rows, seeds=[seed_a] if rows is not None else [seed_a] * frames, sampler=sampler, steps=steps,
                     guidance=guidance, **kwargs)
    _, name = edit.sampler_of(plan.fn)
    edit.check_deterministic(name, plan.options)
    C, H, W = plan.shape
    z_a, z_b = (torch.randn(C, H, W, generator=torch.Generator().manual_seed(int(s))) for s in (seed_a, seed_b))
    x_T = edit.slerp(z_a, z_b, weights)  # [F, C, H, W]: what Pipeline.run draws for each seed, slerped

    def sampler_for(idx: torch.Tensor) -> Callable:
        return lambda model, schedule, x, c, **kw: plan.fn(model, schedule, x_T[idx].to(x), c, **kw)

    steps = len(samplers.grid(name, pipe.schedule, plan.steps, plan.options.get("spacing", "trailing")))
    settings = {"sampler": name, "steps": steps, "guidance": float(guidance), "nfe": steps * (2 if plan.guided else 1),
                "weights": weights}
    return EditPlan(plan, sampler_for, settings | {"options": dict(plan.options)})


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
        """The settings ``sample`` shares are checked by ``SampleConfig`` (same names, same messages)."""
        from .generate import SampleConfig

        edit.frame_weights(self.frames)
        for key in ("seed_a", "seed_b"):
            checks.seed(key, getattr(self, key))
        if self.context_to is not None and self.context is None:
            raise bad_value("context_to", self.context_to, "a context to move to, with --context to start from")
        for key in ("context", "context_to"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                raise bad_value(key, getattr(self, key), "a class name, mixture or prompt")
        SampleConfig(**{k: getattr(self, k) for k in ("model", "sampler", "steps", "spacing", "guidance",
                                                      "guidance_rescale", "out", "gif", "batch_size", "precision")},
                     n=self.frames)

    def metadata(self) -> dict:
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in ("out", "gif", "batch_size", "device")}


def interpolate_to_files(config: InterpolateConfig, pipeline: Pipeline | None = None) -> EditResult:
    """Sample the frames and write ``config.out`` (a one-row strip, an ``.npz`` or a folder) and ``config.gif``
    (the frames as an animation)."""
    import json
    import time
    from pathlib import Path

    from PIL import Image

    from ..runtime.dist import resolve_device
    from ..store.files import AtomicFolder, save_npz, write_text
    from ..store.pictures import save_gif, save_grid, to_uint8
    from .pipeline import load

    pipe = pipeline or load(config.model, device=resolve_device(config.device))
    job = plan_interpolate(pipe, config.seed_a, config.seed_b, frames=config.frames, context=config.context,
                           context_to=config.context_to, sampler=config.sampler, steps=config.steps,
                           guidance=config.guidance, guidance_rescale=config.guidance_rescale,
                           batch_size=config.batch_size, precision=config.precision, spacing=config.spacing)
    s = job.settings
    config = replace(config, sampler=s["sampler"], steps=s["steps"], guidance=s["guidance"])
    t0 = time.perf_counter()
    pictures = np.concatenate([to_uint8(x) for _, x in run_edit(pipe, job)])  # [F, S, S, 3]
    seconds = time.perf_counter() - t0
    metadata = json.dumps({**config.metadata(), "weights": s["weights"], "nfe": s["nfe"],
                           "seconds": round(seconds, 3), "model_prediction": pipe.prediction})
    out = Path(config.out)
    if out.suffix.lower() == ".png":
        paths = [save_grid(pictures, out, ncol=config.frames, text={"tinydiffusion": metadata})]
    elif out.suffix == "":
        with AtomicFolder(out) as tmp:
            for i, picture in enumerate(pictures):
                Image.fromarray(picture).save(tmp / f"frame_{i:04d}.png")
            write_text(tmp / "metadata.json", metadata + "\n")
        paths = [out]
    else:
        rows = job.plan.rows
        contexts = np.zeros((len(pictures), pipe.context.width), np.float32) if rows is None else \
            rows.numpy().astype(np.float32)
        paths = [save_npz(out, {"images": pictures, "contexts": contexts, "metadata": np.array(metadata),
                                "weights": np.array(s["weights"])})]
    if config.gif:
        paths.append(save_gif([p[None] for p in pictures], config.gif, ncol=1, ms_per_frame=150, hold_last_ms=600))
    return EditResult(paths, seconds, s["nfe"], len(pictures), [config.context or "uncond"], s)
