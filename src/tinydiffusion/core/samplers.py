"""Samplers: plain functions with one signature, no state, no printing.

``sampler(model, schedule, x_T, context=None, *, steps=None, generator=None, callback=None, **options)``

Every sampler walks an explicit, descending time grid from ``schedule.timesteps`` and zips it
into ``(t, t_prev)`` pairs, with the clean state written as ``t_prev = -1`` (``alpha_bar = 1``),
so the last step lands exactly on the predicted ``x0``. ``generator`` is ``None``, one
``torch.Generator`` or a list with one generator per image (then each image's noise depends
only on its own generator, not on the batch it is in). ``callback(i, t, x_t, x0_hat)`` sees the
state entering step ``i`` and that step's prediction of the clean image. ``start = k`` skips the
first ``k`` steps of the grid: ``x_T`` is then the state at ``grid[k]`` (img2img, ``edit.py``).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import torch

from .. import checks
from ..errors import UsageError, bad_value
from ..vocab import SPACINGS, VARIANCES
from ..vocab import default_steps as steps_when_none
from .schedule import Schedule

Generator = torch.Generator | Sequence[torch.Generator] | None
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def ddpm(model, schedule: Schedule, x_T: torch.Tensor, context: torch.Tensor | None = None, *,
         steps: int | None = None, generator: Generator = None, callback: Callback | None = None,
         variance: str = "large", extra_noise: bool = True, spacing: str = "trailing",
         clip_x0: bool = False, start: int = 0) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2), on any sub-grid of the ``T`` steps.

    ``variance="large"`` uses ``sigma² = beta_t``, ``"small"`` the posterior's ``beta~_t`` (eq. 7).
    ``extra_noise=False`` drops the added noise: samples then collapse toward the data average.
    """
    if variance not in VARIANCES:
        raise bad_value("variance", variance, "'large' (beta_t) or 'small' (posterior beta~_t)")
    x = x_T
    for i, (t, t_prev) in enumerate(time_pairs(schedule, steps, spacing, default_steps("ddpm", schedule), start)):
        eps_hat, x0_hat = predict(model, schedule, x, t, context, clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x, var = posterior(schedule, x, x0_hat, t, t_prev, variance)  # mu~_t(x_t, x0_hat) and sigma_t², eq. 7
        if t_prev >= 0 and extra_noise:
            x = x + math.sqrt(var) * noise_like(x, generator)  # + sigma_t z, z ~ N(0, I)
    return x


@torch.no_grad()
def ddim(model, schedule: Schedule, x_T: torch.Tensor, context: torch.Tensor | None = None, *,
         steps: int | None = None, generator: Generator = None, callback: Callback | None = None,
         eta: float = 0.0, spacing: str = "trailing", clip_x0: bool = False, start: int = 0) -> torch.Tensor:
    """Song et al. 2021, eq. 12: jump to ``t_prev`` through the predicted ``x0``; ``eta`` scales the noise."""
    if not 0.0 <= eta <= 1.0:
        raise bad_value("eta", eta, "a number from 0 (deterministic) to 1 (DDPM-like)")
    x = x_T
    for i, (t, t_prev) in enumerate(time_pairs(schedule, steps, spacing, default_steps("ddim", schedule), start)):
        eps_hat, x0_hat = predict(model, schedule, x, t, context, clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        x, sigma = ddim_step(schedule, x0_hat, eps_hat, t, t_prev, eta)
        if sigma > 0:
            x = x + sigma * noise_like(x, generator)
    return x


@torch.no_grad()
def dpmpp_2m(model, schedule: Schedule, x_T: torch.Tensor, context: torch.Tensor | None = None, *,
             steps: int | None = None, generator: Generator = None, callback: Callback | None = None,
             spacing: str = "trailing", clip_x0: bool = False, start: int = 0) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): data prediction, second-order multistep in
    ``lambda = log(alpha/sigma)``; first order on the first step and on the final step to the clean state."""
    x, x0_last, h_last = x_T, None, None
    for i, (t, t_prev) in enumerate(time_pairs(schedule, steps, spacing, default_steps("dpmpp_2m", schedule), start)):
        _, x0_hat = predict(model, schedule, x, t, context, clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        ab_t, ab_prev = schedule.ab(t), schedule.ab(t_prev)
        alpha_prev, sigma_t, sigma_prev = math.sqrt(ab_prev), math.sqrt(1 - ab_t), math.sqrt(1 - ab_prev)
        h = _lam(ab_prev) - _lam(ab_t)  # step size in half-log-SNR
        exp_neg_h = sigma_prev * math.sqrt(ab_t) / (alpha_prev * sigma_t)  # e^{-h}, finite when alpha_bar_t = 0
        if x0_last is None or t_prev < 0:
            D = x0_hat  # DPM-Solver++(1) = DDIM; on the last step it lands exactly on x0_hat
        else:
            r = h_last / h  # ratio of the previous step to this one
            D = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_last  # linear extrapolation of x0 (Alg. 2)
        x = (sigma_prev / sigma_t) * x + alpha_prev * (1 - exp_neg_h) * D
        x0_last, h_last = x0_hat, h
    return x


@torch.no_grad()
def euler(model, schedule: Schedule, x_T: torch.Tensor, context: torch.Tensor | None = None, *,
          steps: int | None = None, generator: Generator = None, callback: Callback | None = None,
          spacing: str = "trailing", clip_x0: bool = False, start: int = 0) -> torch.Tensor:
    """Euler steps on the probability-flow ODE ``dx/dsigma = (x - x0_hat)/sigma`` in the variance-exploding
    variables ``x/alpha``, ``sigma/alpha`` (Karras et al. 2022, eq. 3 and Alg. 1 as first order).

    It is DDIM(eta=0) written as an ODE solver: the two agree to rounding, which the tests check.
    """
    x = x_T
    for i, (t, t_prev) in enumerate(time_pairs(schedule, steps, spacing, default_steps("euler", schedule), start)):
        eps_hat, x0_hat = predict(model, schedule, x, t, context, clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        ab_t, ab_prev = schedule.ab(t), schedule.ab(t_prev)
        s_prev = math.sqrt((1 - ab_prev) / ab_prev)  # the VE noise level sigma/alpha at t_prev
        if t_prev < 0:  # sigma_prev = 0: the step ends on x0_hat (written out, so it is exact in floating point)
            x = x0_hat
            continue
        if ab_t == 0.0:  # infinite sigma (zero terminal SNR): the step's limit is x0_hat + s_prev · eps_hat
            x_ve = x0_hat + s_prev * eps_hat
        else:
            s_t = math.sqrt((1 - ab_t) / ab_t)
            d = (x / math.sqrt(ab_t) - x0_hat) / s_t  # dx/dsigma of the ODE
            x_ve = x / math.sqrt(ab_t) + (s_prev - s_t) * d
        x = math.sqrt(ab_prev) * x_ve
    return x


@torch.no_grad()
def consistency(model, schedule: Schedule, x_T: torch.Tensor, context: torch.Tensor | None = None, *,
                steps: int | None = None, generator: Generator = None, callback: Callback | None = None,
                spacing: str = "trailing", clip_x0: bool = False, start: int = 0) -> torch.Tensor:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): each step takes the network's clean
    image and noises it afresh to the next grid time, ``x_t' = sqrt(ab_t')·x0_hat + sqrt(1 - ab_t')·z``.

    It is the sampler of consistency-distilled students (``distill.py``), whose clean image at any ``x_t``
    is the end of the ODE through it; for an ordinary network it is a crude ancestral sampler.
    """
    x = x_T
    for i, (t, t_prev) in enumerate(time_pairs(schedule, steps, spacing, default_steps("consistency", schedule), start)):
        _, x0_hat = predict(model, schedule, x, t, context, clip_x0)
        if callback is not None:
            callback(i, t, x, x0_hat)
        if t_prev < 0:
            x = x0_hat
        else:
            ab_prev = schedule.ab(t_prev)
            x = math.sqrt(ab_prev) * x0_hat + math.sqrt(1 - ab_prev) * noise_like(x, generator)
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddpm": ddpm, "ddim": ddim, "dpmpp_2m": dpmpp_2m, "euler": euler,
                                                    "consistency": consistency}


_OPTION_CHOICES = {"variance": VARIANCES, "spacing": SPACINGS}


def get_sampler(name: str, options: dict[str, Any]) -> Callable:
    """The registered sampler, after checking that it takes every option given, with a valid value."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise bad_value("sampler", name, f"one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[name]
    params = inspect.signature(fn).parameters
    for key, value in options.items():
        if key not in params:
            allowed = [p for p, v in params.items() if v.kind == v.KEYWORD_ONLY and p not in ("steps", "generator",
                                                                                               "callback")]
            raise UsageError(f"{key}={value!r} is not an option of the {name} sampler; it takes: {', '.join(allowed)}")
        if key == "eta":
            checks.finite("eta", value, low=0, high=1, allowed="a number from 0 (deterministic) to 1 (DDPM-like)")
        elif key in _OPTION_CHOICES:
            checks.choice(key, value, _OPTION_CHOICES[key])
        elif key in ("extra_noise", "clip_x0") and not isinstance(value, bool):
            raise bad_value(key, value, "True or False")
    return fn


def default_steps(name: str, schedule: Schedule) -> int:
    """The steps sampler ``name`` takes when given ``steps=None`` (``vocab.DEFAULT_STEPS``, never more than ``T``)."""
    return steps_when_none(name, schedule.T)


def grid(name: str, schedule: Schedule, steps: int | None = None, spacing: str = "trailing") -> list[int]:
    """The whole descending grid sampler ``name`` walks for ``steps`` (without the clean state ``-1``)."""
    return schedule.timesteps(default_steps(name, schedule) if steps is None else steps, spacing)


def time_pairs(schedule: Schedule, steps: int | None, spacing: str, default: int,
               start: int = 0) -> list[tuple[int, int]]:
    """``[(t, t_prev), …]`` from one explicit grid, from its step ``start`` on; the last ``t_prev`` is the
    clean state ``-1``."""
    grid = schedule.timesteps(default if steps is None else steps, spacing)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < len(grid):
        raise bad_value("start", start, f"a step index of the {len(grid)}-step grid (0..{len(grid) - 1})")
    return list(zip(grid, grid[1:] + [-1]))[start:]


def posterior(schedule: Schedule, x: torch.Tensor, x0_hat: torch.Tensor, t: int, t_prev: int,
              variance: str = "large") -> tuple[torch.Tensor, float]:
    """``(mu~, sigma²)`` of the step ``t -> t_prev`` (Ho et al. 2020, eq. 7): the ancestral step's mean and its
    variance, ``beta_t`` (``"large"``) or the posterior's ``beta~_t`` (``"small"``)."""
    ab_t, ab_prev = schedule.ab(t), schedule.ab(t_prev)
    beta = 1.0 - ab_t / ab_prev  # the beta of the jump t -> t_prev (eq. 2 over skipped steps)
    # posterior mean mu~_t(x_t, x0_hat), eq. 7
    mean = (math.sqrt(ab_prev) * beta / (1 - ab_t)) * x0_hat + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t)) * x
    return mean, beta if variance == "large" else (1 - ab_prev) / (1 - ab_t) * beta


def ddim_step(schedule: Schedule, x0_hat: torch.Tensor, eps_hat: torch.Tensor, t: int, t_prev: int,
              eta: float = 0.0) -> tuple[torch.Tensor, float]:
    """``(x, sigma)`` of DDIM's step ``t -> t_prev`` (Song et al. 2021, eq. 12) before its noise ``sigma·z``, with
    ``sigma = eta·sqrt(beta~)`` (eq. 16): ``eta = 1`` is DDPM's posterior step with the ``"small"`` variance."""
    ab_t, ab_prev = schedule.ab(t), schedule.ab(t_prev)
    sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))  # eq. 16
    # "predicted x0" + "direction pointing to x_t" (+ the caller's random noise), eq. 12
    return math.sqrt(ab_prev) * x0_hat + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps_hat, sigma


def predict(model, schedule: Schedule, x: torch.Tensor, t: int, context: torch.Tensor | None,
            clip_x0: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_hat, x0_hat)`` at one step for the whole batch, whatever the network predicts.

    A network's output is ``eps`` unless it carries ``prediction = "x0"`` or ``"v"``; the schedule
    converts. With ``clip_x0`` the prediction is clipped to ``[-1, 1]`` and ``eps_hat`` made to agree.
    """
    t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    out = model(x, t_batch, context).to(x.dtype)
    kind = getattr(model, "prediction", "eps")
    if kind == "eps":
        if schedule.ab(t) == 0.0:
            raise UsageError("this schedule has zero terminal SNR (alpha_bar = 0 at the last step), where a network "
                             "that predicts eps says nothing about x0; train it with --prediction v or x0")
        eps_hat, x0_hat = out, schedule.eps_to_x0(x, t_batch, out)
    elif kind == "x0":
        eps_hat, x0_hat = schedule.x0_to_eps(x, t_batch, out), out
    elif kind == "v":
        eps_hat, x0_hat = schedule.v_to_eps(x, t_batch, out), schedule.v_to_x0(x, t_batch, out)
    else:
        raise bad_value("prediction", kind, "one of eps, x0, v")
    if clip_x0:
        x0_hat = x0_hat.clamp(-1, 1)
        eps_hat = schedule.x0_to_eps(x, t_batch, x0_hat)
    return eps_hat, x0_hat


def _lam(ab: float) -> float:
    """Half log-SNR ``lambda = log(alpha / sigma)``, infinite at the ends."""
    if ab <= 0.0:
        return -math.inf
    if ab >= 1.0:
        return math.inf
    return 0.5 * math.log(ab / (1 - ab))


def noise_like(x: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Gaussian noise shaped like ``x``; with a list of generators, image ``i`` uses generator ``i``.

    Noise is drawn on the CPU and moved, so a seed gives the same image on every device.
    """
    if generator is None or isinstance(generator, torch.Generator):
        z = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    else:
        if len(generator) != x.shape[0]:
            raise bad_value("generator", f"{len(generator)} generators", f"one per image ({x.shape[0]})")
        z = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generator])
    return z.to(device=x.device, dtype=x.dtype)
