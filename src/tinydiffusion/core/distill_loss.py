"""Distillation objectives: what a few-step student is trained to output, from a (guided) teacher.

Both work on batches where every image has its own step, so the helpers take a tensor ``t`` of
step indices with ``-1`` meaning the clean state (``alpha_bar = 1``), as in the samplers.

- **Progressive** (Salimans & Ho 2022, Algorithm 2): on the student's ``K``-step grid, one student
  DDIM step ``t -> t''`` must land where two teacher DDIM steps ``t -> t' -> t''`` of the ``2K``-step
  grid land. The student's clean-image target solves ``DDIM(x_t, x0~) = z_t''`` for ``x0~`` (eq. 8).
- **Consistency** (Song et al. 2023, Algorithm 2, with the stop-gradient target of Song & Dhariwal
  2023): the student's clean image at ``x_t`` must equal its own (no gradient) clean image at the point
  one teacher DDIM step down the probability-flow ODE; on the last step the target is the teacher's
  own clean image, which anchors the chain.

With guidance folded in (Meng et al. 2023) the teacher is ``cfg(teacher, w)`` and the student is
trained unguided: one network evaluation per step then samples what two per step sampled before.
"""

from __future__ import annotations

import torch

from ..errors import UsageError
from .schedule import Schedule


def alpha_sigma(schedule: Schedule, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sqrt(ab), sqrt(1 - ab))`` for a batch of steps ``t`` (``-1``: the clean state), shaped to broadcast."""
    t = t.detach().to("cpu").long()
    ab = torch.where(t < 0, torch.ones((), dtype=torch.float64), schedule.alpha_bar[t.clamp(min=0)])
    ab = ab.to(device=like.device, dtype=torch.float32).view(-1, *([1] * (like.dim() - 1)))
    return ab.sqrt(), (1 - ab).sqrt()


def clean_prediction(model, schedule: Schedule, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None,
                     prediction: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_hat, eps_hat)`` of the network at ``(x, t)`` whatever it predicts (every ``t >= 0``);
    ``prediction`` defaults to the network's ``prediction`` attribute (a DDP wrapper has none: pass it)."""
    out = model(x, t.to(x.device), context).float()
    a, s = alpha_sigma(schedule, t, x)
    kind = prediction or getattr(model, "prediction", "eps")
    if kind == "v":  # x = a·x0 + s·eps, v = a·eps - s·x0
        return a * x - s * out, s * x + a * out
    if kind == "x0":
        return out, (x - a * out) / s
    return (x - s * out) / a, out  # eps: undefined at alpha_bar = 0, which the teacher's check refuses


def ddim_step(model, schedule: Schedule, x: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
              context: torch.Tensor | None) -> torch.Tensor:
    """One deterministic DDIM step ``t -> t_prev`` per image (Song et al. 2021, eq. 12 with eta = 0)."""
    x0_hat, eps_hat = clean_prediction(model, schedule, x, t, context)
    a_prev, s_prev = alpha_sigma(schedule, t_prev, x)
    return a_prev * x0_hat + s_prev * eps_hat


def step_target(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, z_end: torch.Tensor,
                t_end: torch.Tensor) -> torch.Tensor:
    """The clean image ``x0~`` whose DDIM step from ``(x_t, t)`` lands exactly on ``z_end`` at ``t_end``
    (Salimans & Ho 2022, eq. 8): ``x0~ = (z_end - (s''/s)·x_t) / (a'' - (s''/s)·a)``; at ``t_end = -1`` it is
    ``z_end`` itself. The denominator is positive because the signal-to-noise ratio falls with ``t``."""
    a, s = alpha_sigma(schedule, t, x_t)
    a_end, s_end = alpha_sigma(schedule, t_end, x_t)
    ratio = s_end / s
    return (z_end - ratio * x_t) / (a_end - ratio * a)


def progressive_pairs(schedule: Schedule, steps: int) -> tuple[list[int], list[int], list[int]]:
    """``(t, t', t'')`` of every student step: the student's ``steps``-grid and, between each pair, the
    teacher's ``2·steps``-grid point. Refused when the student's grid is not every other teacher point."""
    fine = schedule.timesteps(2 * steps) + [-1]
    coarse = schedule.timesteps(steps) + [-1]
    if fine[::2] != coarse:
        raise UsageError(f"the {steps}-step grid of T={schedule.T} is not every other step of the {2 * steps}-step "
                         f"grid, so two teacher steps cannot be folded into one; choose --steps that divides T")
    return coarse[:-1], fine[1::2], coarse[1:]


def progressive_loss(student, teacher, schedule: Schedule, x0: torch.Tensor, context: torch.Tensor | None, *,
                     steps: int, prediction: str = "v", p_uncond: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error, in the network's ``v`` (the clean-image error times ``1 + SNR``), between the
    student's one step and the teacher's two, at one random step of the student's grid per image."""
    x_t, t, context = _noisy(schedule, x0, context, schedule.timesteps(steps), p_uncond, generator)
    starts, mids, ends = (torch.tensor(v) for v in progressive_pairs(schedule, steps))
    k = (starts[:, None] == t[None, :]).float().argmax(0)  # each image's step on the grid
    with torch.no_grad():
        z_mid = ddim_step(teacher, schedule, x_t, t, mids[k], context)
        z_end = ddim_step(teacher, schedule, z_mid, mids[k], ends[k], context)
        target = step_target(schedule, x_t, t, z_end, ends[k])
    x0_hat, _ = clean_prediction(student, schedule, x_t, t, context, prediction)
    _, s = alpha_sigma(schedule, t, x_t)
    return (((x0_hat - target) / s) ** 2).mean()


def consistency_loss(student, teacher, schedule: Schedule, x0: torch.Tensor, context: torch.Tensor | None, *,
                     steps: int, prediction: str = "v", p_uncond: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Squared clean-image error, weighted by ``1 + SNR`` as the progressive loss (the network's ``v`` error),
    between the student at ``x_t`` and its stop-gradient self one teacher DDIM step later on the ``steps``-grid
    (the teacher's clean image after the grid's last step). Unweighted, the small-noise steps, whose clean
    image is nearly ``x_t``, barely count and drift (measured: noisy samples at every step count)."""
    grid = schedule.timesteps(steps)
    x_t, t, context = _noisy(schedule, x0, context, grid, p_uncond, generator)
    nxt = dict(zip(grid, grid[1:] + [-1]))
    t_prev = torch.tensor([nxt[int(v)] for v in t])
    with torch.no_grad():
        x_prev = ddim_step(teacher, schedule, x_t, t, t_prev, context)  # lands on the teacher's x0 at t_prev = -1
        inner = t_prev >= 0
        target = x_prev.clone()
        if inner.any():
            i = inner.nonzero().flatten()
            c = None if context is None else context[i.to(context.device)]
            target[i.to(x_prev.device)] = clean_prediction(student, schedule, x_prev[i.to(x_prev.device)],
                                                           t_prev[i], c, prediction)[0]
    x0_hat, _ = clean_prediction(student, schedule, x_t, t, context, prediction)
    _, s = alpha_sigma(schedule, t, x_t)
    return (((x0_hat - target) / s) ** 2).mean()


def _noisy(schedule: Schedule, x0: torch.Tensor, context: torch.Tensor | None, grid: list[int], p_uncond: float,
           generator: torch.Generator | None):
    """``(x_t, t, context)``: one uniformly drawn grid step per image, the forward process at it, and the
    context dropped to the null one with probability ``p_uncond`` (the student keeps the unconditional model)."""
    B, device = x0.shape[0], x0.device
    t = torch.tensor(grid)[torch.randint(0, len(grid), (B,), generator=generator)]
    noise = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    if context is not None and p_uncond > 0:
        keep = (torch.rand(B, generator=generator) >= p_uncond).to(device=device, dtype=context.dtype)
        context = context * keep[:, None]
    return x_t, t, context


OBJECTIVES = {"progressive": progressive_loss, "consistency": consistency_loss}
