"""Guidance as model-shaped closures; samplers never know.

- ``cfg(model, scale)``: classifier-free guidance (Ho & Salimans 2022),
  ``out_u + scale · (out_c - out_u)``, the conditional and the unconditional (null-context) halves computed
  in one batched forward pass.
- ``autoguidance(model, guide, scale)``: guidance by a bad version of the model itself (Karras et al. 2024),
  ``out_g + scale · (out_m - out_g)`` with both networks on the same context (conditional, or none for an
  unconditional model). The guide is a weaker network of the same task (an earlier checkpoint of the run, a
  smaller preset) with the same schedule and prediction. Two networks: two forward passes per guided step,
  one of each (``counting_evaluations`` in ``sampling/plans.py`` counts both).
- ``interval=(lo, hi)`` for either: the guidance interval (Kynkäänniemi et al. 2024). Guidance acts only where
  the diffusion time ``s = (t + 1) / T`` lies in ``(lo, hi]`` (``s = 1`` is the noisiest step ``T - 1``, ``s``
  near 0 the clean end; with trailing spacing a grid of ``n`` steps sits at ``s = 1, (n-1)/n, …, 1/n``).
  Outside it the closure is the conditional model with ONE network evaluation. ``(0, 1)`` is everywhere,
  ``(a, a)`` nowhere. ``T`` (the schedule's step count) is required with an interval.

The combinations are affine, so they are the same whether the network predicts eps, x0 or v. Autoguidance
replaces the unconditional branch; ``autoguided_cfg(model, guide, scale, guide_scale)`` puts it beside the
unconditional branch instead: ``cfg(autoguidance(m, g, guide_scale), scale)``, four evaluations per step (both
networks on both halves, two of them the guide's). Classifier-free guidance pushes toward the context and
costs diversity; autoguidance restores quality without narrowing, so the two together reach a class accuracy
at a lower FD than either (docs/sampling.md has the measurement). Each closure carries ``evaluations(t)``, the
network evaluations it makes per image at the integer step ``t``.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import checks
from ..errors import UsageError, bad_value

Mask = Callable[[torch.Tensor], "torch.Tensor | None"]


def cfg(model, scale: float, rescale: float = 0.0, interval: tuple[float, float] | None = None,
        T: int | None = None):
    """Guided model. ``scale = 1`` is exactly the conditional model, ``scale = 0`` exactly the
    unconditional one; ``rescale = phi`` applies guidance rescale (Lin et al. 2023, eqs. 15–16);
    ``interval``: guidance only where ``(t + 1) / T`` is in ``(lo, hi]`` (the module's docstring)."""
    scale, rescale, inside = checks.guidance(scale), _rescale(rescale), _inside(interval, T)

    def guided(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        mask = inside(t)  # None: every image in the interval
        if context is None or scale == 1.0 or (mask is not None and not mask.any()):
            return model(x_t, t, context)
        if scale == 0.0 and mask is None:
            return model(x_t, t, torch.zeros_like(context))
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([torch.zeros_like(context), context]))
        out_u, out_c = both.chunk(2)  # [B, C, H, W] each
        return _where(mask, _combine(out_u, out_c, scale, rescale), out_c)

    return _shaped(guided, model, scale, inside)


def autoguidance(model, guide, scale: float, rescale: float = 0.0, interval: tuple[float, float] | None = None,
                 T: int | None = None):
    """``model`` guided by the weaker ``guide``: ``out_g + scale · (out_m - out_g)``, both on the same context.
    ``scale = 1`` is exactly ``model`` (the guide is not run), ``scale = 0`` exactly ``guide``; ``rescale`` matches
    the std of ``model``'s output as in ``cfg``; ``interval`` as in ``cfg``. ``guide = model`` is ``model``
    itself, bit for bit (``out_m - out_g`` is exactly zero)."""
    scale, rescale, inside = checks.guidance(scale), _rescale(rescale), _inside(interval, T)
    kinds = getattr(model, "prediction", "eps"), getattr(guide, "prediction", "eps")
    if kinds[0] != kinds[1]:
        raise UsageError(f"the guide predicts {kinds[1]!r} and the model {kinds[0]!r}; autoguidance combines the "
                         f"two outputs, so they must predict the same thing")

    def guided(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        mask = inside(t)
        if scale == 1.0 or (mask is not None and not mask.any()):
            return model(x_t, t, context)
        if scale == 0.0 and mask is None:
            return guide(x_t, t, context)
        out_m = model(x_t, t, context)
        out_g = guide(x_t, t, context)  # a different network: a second forward pass
        return _where(mask, _combine(out_g, out_m, scale, rescale), out_m)

    return _shaped(guided, model, scale, inside)


def autoguided_cfg(model, guide, scale: float, guide_scale: float, rescale: float = 0.0,
                   interval: tuple[float, float] | None = None, T: int | None = None):
    """Classifier-free guidance (``scale``) over autoguidance (``guide_scale``): the guide beside the unconditional
    branch, ``cfg(autoguidance(model, guide, guide_scale), scale)``; ``interval`` limits both. ``guide = model``
    is classifier-free guidance itself, bit for bit; ``guide_scale = 1`` too (the guide is not run)."""
    inner = autoguidance(model, guide, guide_scale, 0.0, interval, T)
    outer = cfg(inner, scale, rescale, interval, T)

    halves = outer.evaluations

    def evaluations(t: int) -> int:  # each guided half runs the inner closure, the guide beside the model
        return halves(t) * inner.evaluations(t)

    outer.evaluations = evaluations
    return outer


def in_interval(t: torch.Tensor, interval: tuple[float, float], T: int) -> torch.Tensor:
    """Bool ``[B]``: which steps ``t`` (int ``[B]``) lie in the guidance interval, ``lo < (t + 1) / T <= hi``."""
    s = (t.to("cpu", torch.float64) + 1) / T
    return (s > interval[0]) & (s <= interval[1])


# ---------------------------------------------------------------------- shared
def _inside(interval: tuple[float, float] | None, T: int | None) -> Mask:
    """``t -> mask``: None when every step of the batch is inside (no interval, or all of it)."""
    if interval is None:
        return lambda t: None
    interval = checks.guidance_interval(interval)
    T = checks.integer("T", T, low=1, allowed="the schedule's number of steps (a guidance interval is a share of it)")

    def mask(t: torch.Tensor) -> torch.Tensor | None:
        m = in_interval(t, interval, T)
        return None if bool(m.all()) else m.to(t.device)
    return mask


def _combine(low: torch.Tensor, high: torch.Tensor, scale: float, rescale: float) -> torch.Tensor:
    """``low + scale · (high - low)``, then guidance rescale toward ``high``'s std (Lin et al. 2023, eq. 16)."""
    out = low + scale * (high - low)
    if rescale > 0:
        dims = tuple(range(1, out.dim()))
        ratio = high.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True).clamp(min=1e-12)
        out = rescale * (out * ratio) + (1 - rescale) * out  # eq. 16: match the unguided std
    return out


def _where(mask: torch.Tensor | None, guided: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
    """``guided`` for the images inside the interval, ``plain`` (the conditional output) for the others."""
    return guided if mask is None else torch.where(mask.view(-1, *([1] * (guided.dim() - 1))), guided, plain)


def _rescale(rescale: float) -> float:
    if isinstance(rescale, bool) or not isinstance(rescale, (int, float)) or not 0.0 <= rescale <= 1.0:
        raise bad_value("guidance_rescale", rescale, "a number from 0 (off) to 1")
    return float(rescale)


def _shaped(guided, model, scale: float, inside: Mask):
    """The closure with what samplers and counters read: the network's ``prediction``, and ``evaluations(t)``,
    the network evaluations per image at step ``t`` (2 inside the interval, 1 outside it and at scales 0 and 1)."""
    guided.prediction = getattr(model, "prediction", "eps")

    def evaluations(t: int) -> int:
        mask = inside(torch.tensor([int(t)]))
        return 1 if scale in (0.0, 1.0) or (mask is not None and not mask.any()) else 2

    guided.evaluations = evaluations
    return guided
