"""Classifier-free guidance (Ho & Salimans 2022) as a model-shaped closure; samplers never know.

``cfg(model, scale)(x_t, t, context) = out_u + scale · (out_c - out_u)``, with the conditional and the
unconditional (null-context) halves computed in one batched forward pass. The combination is
affine, so it is the same whether the network predicts eps, x0 or v.
"""

from __future__ import annotations

import torch

from .. import checks
from ..errors import bad_value


def cfg(model, scale: float, rescale: float = 0.0):
    """Guided model. ``scale = 1`` is exactly the conditional model, ``scale = 0`` exactly the
    unconditional one; ``rescale = phi`` applies guidance rescale (Lin et al. 2023, eqs. 15–16)."""
    scale = checks.guidance(scale)
    if not 0.0 <= rescale <= 1.0:
        raise bad_value("guidance_rescale", rescale, "a number from 0 (off) to 1")

    def guided(x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if context is None or scale == 1.0:
            return model(x_t, t, context)
        if scale == 0.0:
            return model(x_t, t, torch.zeros_like(context))
        both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([torch.zeros_like(context), context]))
        out_u, out_c = both.chunk(2)  # [B, C, H, W] each
        out = out_u + scale * (out_c - out_u)
        if rescale > 0:
            dims = tuple(range(1, out.dim()))
            ratio = out_c.std(dim=dims, keepdim=True) / out.std(dim=dims, keepdim=True).clamp(min=1e-12)
            out = rescale * (out * ratio) + (1 - rescale) * out  # eq. 16: match the conditional std
        return out

    guided.prediction = getattr(model, "prediction", "eps")
    return guided
