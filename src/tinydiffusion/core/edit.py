"""Editing with the same models: img2img (SDEdit), inpainting (RePaint) and seed interpolation (slerp).

Pure functions over ``(model, schedule, tensors)`` on top of the samplers (interpolation: ``slerp`` of the
starting noises, run by ``sampling/edit_plans.plan_interpolate``); nothing is stateful, nothing prints.

**Strength → time grid.** A sampler with ``steps = N`` walks its own descending grid
``g = grid(sampler, schedule, N, spacing)`` (``samplers.grid``; ``N`` defaults to the sampler's own).
Strength ``s`` in ``(0, 1]`` keeps its last ``k = max(1, floor(s·N + 1/2))`` steps (``s·N`` rounded half up,
at least one), so the run costs ``k`` network evaluations (of the guided model: one batched forward each) and
starts at ``t_start = g[N - k]``:

- ``k < N``: the input is noised to ``t_start`` by the forward process, ``x = q_sample(x0, t_start, noise)``;
- ``k = N`` (``s = 1``, or ``s`` within ``1/(2N)`` of it): the run is ``sample`` itself, from ``x = noise``,
  the input ignored, so it equals ``sample`` from the same seed bit for bit (on a zero-terminal-SNR schedule
  ``q_sample`` at ``T-1`` is that same noise).

``noise`` is the first draw of each image's generator, as ``x_T`` is in ``Pipeline.run``, and the same
generators feed the sampler's extra noise: an edit depends on its seed only, never on its batch.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .. import checks
from ..errors import bad_value
from ..vocab import INPAINT_SAMPLERS, MAX_T, VARIANCES
from .samplers import SAMPLERS, Callback, Generator, ddim_step, grid, noise_like, posterior, predict
from .schedule import Schedule


def tail_length(strength: float, steps: int) -> int:
    """``k``, the steps of an ``N = steps`` grid that strength ``s`` keeps: ``max(1, floor(s·N + 1/2))``."""
    strength = check_strength(strength)
    return max(1, min(steps, math.floor(strength * steps + 0.5)))


def check_keeps_input(strength: float, steps: int) -> None:
    """Refuse a strength below 1 that rounds to the whole ``steps``-step grid: the run would start from pure noise
    and silently ignore the input (every strength does on a 1-step grid, e.g. a 1-step student)."""
    if strength < 1 and tail_length(strength, steps) == steps:
        raise bad_value("strength", strength, "1 (the whole grid, from pure noise: sample) on a grid of one step, "
                                              "which cannot keep part of the input; edit with a model that takes "
                                              "more steps (a student's teacher)" if steps == 1 else
                        f"a strength below {(steps - 0.5) / steps:g} that keeps part of the input (with {steps} steps "
                        f"it rounds to all {steps}, which ignores the input), or 1 to sample from pure noise")


def check_strength(strength: float) -> float:
    return checks.finite("strength", strength, low=0, high=1, low_open=True,
                         allowed="a number in (0, 1]: 1 ignores the input, small values keep it")


MAX_RESAMPLE = 100  # RePaint's resampling r: the paper uses 10; each extra pass costs the whole walk again


def check_resampling(jump_length: int, resample: int) -> None:
    checks.integer("jump_length", jump_length, low=1, high=MAX_T, allowed=f"a number of steps in 1..{MAX_T}")
    checks.integer("resample", resample, low=1, high=MAX_RESAMPLE,
                   allowed=f"an integer in 1..{MAX_RESAMPLE} (1: no resampling; the paper's 10 harmonises well)")


def img2img(model, schedule: Schedule, x0: torch.Tensor, context: torch.Tensor | None = None, *,
            strength: float, sampler: str | Callable = "ddim", steps: int | None = None,
            generator: Generator = None, noise: torch.Tensor | None = None, callback: Callback | None = None,
            **options) -> torch.Tensor:
    """SDEdit (Meng et al. 2022, Alg. 1 in the VP form): noise the input ``x0`` ``[B, C, H, W]`` to the step
    that ``strength`` names, then run ``sampler`` over the tail of its own grid (the rule is the module's)."""
    fn, name = sampler_of(sampler)
    g = grid(name, schedule, steps, options.get("spacing", "trailing"))
    start = len(g) - tail_length(strength, len(g))
    noise = noise_like(x0, generator) if noise is None else noise  # [B, C, H, W]: each image's first draw
    if start == 0:  # the whole grid: sampling from pure noise, the input ignored (strength 1)
        x = noise
    else:  # perturb: x_t0 = sqrt(ab) x0 + sqrt(1 - ab) z (SDEdit Alg. 1 in the VP form of Ho et al. eq. 4)
        x = schedule.q_sample(x0, _steps_of(x0, g[start]), noise)
    # denoise from t0 with the sampler's own update, from its grid step `start` on (SDEdit Alg. 1, the reverse loop)
    return fn(model, schedule, x, context, steps=steps, generator=generator, callback=callback, start=start, **options)


def repaint_walk(levels: int, jump_length: int, resample: int) -> list[int]:
    """RePaint's time walk (Lugmayr et al. 2022, §4.2 and their code's jump schedule) over ``levels`` grid
    levels ``levels-1 … 0`` and the clean state ``-1``: down one level per step; at levels ``0, j, 2j, …``
    (below ``levels - j``) it jumps back up ``j`` levels, ``resample - 1`` times. ``resample = 1``: no jumps."""
    jumps = {level: resample - 1 for level in range(0, levels - jump_length, jump_length)}
    level, walk = levels, []
    while level >= 1:
        level -= 1
        walk.append(level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump_length):
                level += 1
                walk.append(level)
    return walk + [-1]


def repaint_nfe(levels: int, jump_length: int, resample: int) -> int:
    """Network evaluations of a walk: one per step down, ``levels + (r-1)·j·(jump points)``."""
    return levels + (resample - 1) * jump_length * len(range(0, levels - jump_length, jump_length))


def check_inpaint_sampler(sampler: str) -> str:
    """RePaint's sampler: a one-step update (``vocab.INPAINT_SAMPLERS``), else refused with the reason."""
    if sampler not in INPAINT_SAMPLERS:
        raise bad_value("sampler", getattr(sampler, "__name__", sampler),
                        "ddpm or ddim: RePaint pastes the known pixels into x_t after every step, which a one-step "
                        "update takes as it comes but which breaks the history of past predictions a multistep "
                        "solver (dpmpp_2m) extrapolates from; euler is ddim with eta 0 (take ddim), consistency is a "
                        "distilled student's")
    return sampler


@torch.no_grad()
def inpaint(model, schedule: Schedule, x0: torch.Tensor, mask: torch.Tensor, context: torch.Tensor | None = None,
            *, sampler: str = "ddpm", steps: int | None = None, spacing: str = "trailing", jump_length: int = 10,
            resample: int = 1, strength: float = 1.0, variance: str | None = None, eta: float | None = None,
            clip_x0: bool = False, generator: Generator = None, noise: torch.Tensor | None = None,
            callback: Callback | None = None) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1) over ``sampler``'s steps on its ``steps``-step grid: ``ddpm`` ancestral
    steps (``variance``, default large; default grid all ``T``) or ``ddim`` steps (Song et al. 2021, eq. 12 with
    ``eta``, default 0; default grid 50). ``mask`` (broadcastable to ``x0``; true or 1 = keep, 0 = generate) keeps
    the input's pixels, bit for bit in the result. ``strength < 1`` starts from the noised input as in ``img2img``."""
    step = _unknown_step(check_inpaint_sampler(sampler), variance, eta)
    check_resampling(jump_length, resample)
    keep = _keep_mask(mask, x0)  # bool [B, C, H, W]
    g = grid(sampler, schedule, steps, spacing)
    levels = tail_length(strength, len(g))  # the walk's levels l = levels-1 … 0 are the grid steps g[N-1-l]
    walk = repaint_walk(levels, jump_length, resample)
    if resample > 1 and len(walk) == levels + 1:
        raise bad_value("jump_length", jump_length, f"fewer steps than the {levels} steps walked, so that "
                                                    f"resample={resample} has room to jump back")
    t_of = {level: g[len(g) - 1 - level] for level in range(levels)} | {-1: -1}
    noise = noise_like(x0, generator) if noise is None else noise
    x = noise if levels == len(g) else schedule.q_sample(x0, _steps_of(x0, t_of[levels - 1]), noise)
    i = 0
    for here, there in zip(walk, walk[1:]):
        t, t_next = t_of[here], t_of[there]
        if there > here:  # jump back: x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta) x_{t-1}, beta I) (RePaint eq. 1)
            beta = 1.0 - schedule.ab(t_next) / schedule.ab(t)  # the beta of the jump over the skipped steps
            x = math.sqrt(1 - beta) * x + math.sqrt(beta) * noise_like(x, generator)
            continue
        eps_hat, x0_hat = predict(model, schedule, x, t, context, clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        i += 1
        x = step(schedule, x, eps_hat, x0_hat, t, t_next, generator)  # unknown part (RePaint eq. 8, second line)
        if t_next >= 0:
            # known part: x_{t-1} ~ N(sqrt(ab_{t-1}) x0, (1 - ab_{t-1}) I), the input noised (RePaint eq. 8, first line)
            known = schedule.q_sample(x0, _steps_of(x0, t_next), noise_like(x, generator))
        else:
            known = x0
        x = torch.where(keep, known, x)  # m ⊙ known + (1 - m) ⊙ unknown (RePaint eq. 8, third line)
    return torch.where(keep, x0, x)  # the known pixels exactly (the last step already pasted x0 itself)


def _unknown_step(sampler: str, variance: str | None, eta: float | None) -> Callable:
    """RePaint's step of the unknown part ``(schedule, x_t, eps_hat, x0_hat, t, t_next, generator) -> x_next``:
    DDPM's ``x_{t-1} ~ N(mu_theta(x_t, t), sigma_t² I)`` (eq. 7) or DDIM's eq. 12; each refuses the other's option."""
    if sampler == "ddpm":
        if eta is not None:
            raise bad_value("eta", eta, "no eta with ddpm (its noise is variance: 'large' or 'small'); eta is ddim's")
        variance = "large" if variance is None else variance
        if variance not in VARIANCES:
            raise bad_value("variance", variance, "'large' (beta_t) or 'small' (posterior beta~_t)")

        def ddpm_step(schedule, x, eps_hat, x0_hat, t, t_next, generator):
            x, var = posterior(schedule, x, x0_hat, t, t_next, variance)
            return x + math.sqrt(var) * noise_like(x, generator) if t_next >= 0 else x
        return ddpm_step
    if variance is not None:
        raise bad_value("variance", variance, "no variance with ddim (its noise is eta, 0 to 1; eta 1 is ddpm with "
                                              "variance 'small')")
    eta = 0.0 if eta is None else checks.finite("eta", eta, low=0, high=1,
                                                allowed="a number from 0 (deterministic) to 1 (DDPM-like)")

    def ddim(schedule, x, eps_hat, x0_hat, t, t_next, generator):
        x, sigma = ddim_step(schedule, x0_hat, eps_hat, t, t_next, eta)
        return x + sigma * noise_like(x, generator) if sigma > 0 else x
    return ddim


def frame_weights(frames: int) -> list[float]:
    """``frames`` evenly spaced weights from 0 (the first seed) to 1 (the second)."""
    frames = checks.integer("frames", frames, low=2, high=10_000, allowed="an integer number of frames in 2..10000")
    return [i / (frames - 1) for i in range(frames)]


def slerp(z_a: torch.Tensor, z_b: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985) of two noise tensors, ``[len(weights), *z_a.shape]``:
    ``sin((1-w)θ)/sin θ · z_a + sin(wθ)/sin θ · z_b`` with ``θ`` the angle between them, so every frame keeps
    the norm of a Gaussian draw (a straight line would shrink it to ``≈ 0.71×`` half-way). ``w = 0`` and
    ``w = 1`` return ``z_a`` and ``z_b`` themselves."""
    a, b = z_a.double().flatten(), z_b.double().flatten()
    cos = (a @ b / (a.norm() * b.norm()).clamp(min=1e-300)).clamp(-1, 1)
    theta = float(torch.arccos(cos))
    frames = []
    for w in weights:
        if w == 0 or w == 1:
            frames.append((z_a if w == 0 else z_b).clone())
            continue
        if math.sin(theta) < 1e-6:  # (anti)parallel: the great circle is not defined, a straight line is
            z = (1 - w) * a + w * b
        else:
            z = (math.sin((1 - w) * theta) * a + math.sin(w * theta) * b) / math.sin(theta)
        frames.append(z.view(z_a.shape).to(z_a.dtype))
    return torch.stack(frames)


# ---------------------------------------------------------------------- helpers
def sampler_of(sampler: str | Callable) -> tuple[Callable, str]:
    """``(function, name)`` of a registered sampler given by name or function."""
    for name, fn in SAMPLERS.items():
        if sampler == name or sampler is fn:
            return fn, name
    raise bad_value("sampler", getattr(sampler, "__name__", sampler), f"one of {', '.join(SAMPLERS)}")


def check_deterministic(name: str, options: dict) -> None:
    """Interpolation needs a sampler that adds no noise on the way, else neighbouring frames are unrelated."""
    if name == "ddpm" or options.get("eta", 0.0) != 0.0:
        raise bad_value("sampler", name if name == "ddpm" else f"ddim with eta={options['eta']}",
                        "a deterministic sampler (ddim with eta 0, dpmpp_2m or euler): noise added on the way "
                        "would make neighbouring frames unrelated")


def _steps_of(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


def _keep_mask(mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``mask`` as a bool tensor of ``x0``'s shape: true (or above 0.5) = keep."""
    if not isinstance(mask, torch.Tensor):
        raise bad_value("mask", type(mask).__name__, "a tensor: 1 (or True) = keep, 0 = generate")
    keep = mask if mask.dtype == torch.bool else mask > 0.5
    try:
        return torch.broadcast_to(keep.to(x0.device), x0.shape)
    except RuntimeError:
        raise bad_value("mask", f"tensor of shape {tuple(mask.shape)}",
                        f"a shape that broadcasts to the images' {tuple(x0.shape)}, e.g. [H, W]") from None
