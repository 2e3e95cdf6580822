"""The training objective (Ho et al. 2020, Algorithm 1), with context dropout for guidance."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import bad_value
from ..vocab import PREDICTIONS
from .schedule import Schedule


def diffusion_loss(model, schedule: Schedule, x0: torch.Tensor, context: torch.Tensor | None = None, *,
                   p_uncond: float = 0.1, prediction: str = "eps", snr_gamma: float | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between the network's output and its target at a uniformly random step per image.

    With probability ``p_uncond`` an image's context is replaced by the null (all-zero) context,
    so the same network also learns the unconditional model that guidance needs.
    """
    if prediction not in PREDICTIONS:
        raise bad_value("prediction", prediction, f"one of {', '.join(PREDICTIONS)}")
    B, device = x0.shape[0], x0.device
    t = torch.randint(0, schedule.T, (B,), generator=generator)  # t ~ Uniform({0, …, T-1})
    noise = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)  # eps ~ N(0, I)
    x_t = schedule.q_sample(x0, t, noise)  # eq. 4, with sqrt(1 - alpha_bar) on the noise
    if context is not None and p_uncond > 0:
        keep = (torch.rand(B, generator=generator) >= p_uncond).to(device=device, dtype=context.dtype)
        context = context * keep[:, None]
    out = model(x_t, t.to(device), context)
    target = {"eps": noise, "x0": x0}.get(prediction)
    if target is None:
        target = schedule.v_target(x0, t, noise)
    per_image = F.mse_loss(out.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))  # [B]
    if snr_gamma is not None:
        per_image = per_image * min_snr_weight(schedule, t, prediction, snr_gamma).to(device)
    return per_image.mean()


def min_snr_weight(schedule: Schedule, t: torch.Tensor, prediction: str, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma (Hang et al. 2023, eq. 9): the x0-loss weight ``min(SNR, gamma)``, expressed for
    the chosen target (the eps loss equals the x0 loss times SNR, the v loss times SNR + 1)."""
    if gamma <= 0:
        raise bad_value("snr_gamma", gamma, "a positive number (5 is the paper's choice)")
    snr = schedule.snr(t).float()  # [B]
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction == "x0":
        return clipped
    if prediction == "v":
        return clipped / (snr + 1)
    return torch.where(snr > 0, clipped / snr.clamp(min=1e-12), torch.ones_like(snr))
