"""The noise schedule: everything follows from ``alpha_bar`` (Ho et al. 2020, eq. 4).

``alpha_bar[t] = prod_{s<=t} (1 - beta_s)`` for the 0-based step ``t = 0 … T-1``; ``t = 0`` is
the least noisy step. Samplers write the clean state as ``t_prev = -1`` with ``alpha_bar = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UsageError, bad_value
from ..store.modelfile import SCHEDULE
from ..store.schema import validate
from ..vocab import SPACINGS


@dataclass(frozen=True, eq=False)
class Schedule:
    alpha_bar: torch.Tensor  # float64, CPU, [T], strictly decreasing in (0, 1]
    spec: dict[str, Any] = field(default_factory=dict)  # how to rebuild it (``to_dict``)

    # ----------------------------------------------------------------- factories
    @staticmethod
    def linear(T: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        """Betas spaced linearly from ``beta_start`` to ``beta_end`` (DDPM paper, section 4)."""
        _check_T(T)
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise bad_value("beta_start, beta_end", (beta_start, beta_end), "0 < beta_start <= beta_end < 1")
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)
        spec = {"kind": "linear", "T": T, "beta_start": beta_start, "beta_end": beta_end}
        return Schedule(torch.cumprod(1.0 - betas, dim=0), spec)

    @staticmethod
    def cosine(T: int = 500, s: float = 0.008) -> "Schedule":
        """Nichol & Dhariwal 2021, eq. 17: ``alpha_bar(t) = f(t)/f(0)``, betas clipped at 0.999."""
        _check_T(T)
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        return Schedule(torch.cumprod(1.0 - betas, dim=0), {"kind": "cosine", "T": T, "s": s})

    def rescale_zero_terminal_snr(self) -> "Schedule":
        """Lin et al. 2023, Algorithm 1: shift and scale ``sqrt(alpha_bar)`` so the last step is pure noise."""
        if self.spec.get("zero_terminal_snr"):
            return self
        sqrt_ab = self.alpha_bar.sqrt()
        first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
        sqrt_ab = (sqrt_ab - last) * first / (first - last)
        return Schedule(sqrt_ab**2, {**self.spec, "zero_terminal_snr": True})

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "Schedule":
        """From the ``schedule`` section of a ``config.json``: typed and ranged by ``modelfile.SCHEDULE``,
        only the settings of its kind, and a result that is a schedule (``alpha_bar`` finite, in
        ``[0, 1]``, strictly decreasing from above 0) or a refusal naming what is wrong."""
        d = validate(d, SCHEDULE, "schedule")
        kind = d.pop("kind")
        zero_terminal = d.pop("zero_terminal_snr", False)
        settings = {"linear": ("T", "beta_start", "beta_end"), "cosine": ("T", "s")}[kind]
        other = [k for k in d if k not in settings]
        if other:
            raise UsageError(f"schedule.{other[0]}={d[other[0]]!r} is not a setting of the {kind} schedule; "
                             f"it takes: {', '.join(settings)}, zero_terminal_snr")
        try:
            schedule = {"linear": Schedule.linear, "cosine": Schedule.cosine}[kind](**d)
        except UsageError as e:
            raise UsageError(f"schedule: {e}") from None
        schedule = schedule.rescale_zero_terminal_snr() if zero_terminal else schedule
        ab = schedule.alpha_bar
        if not torch.isfinite(ab).all() or ab[0] <= 0 or (ab > 1).any() or (ab < 0).any() or (ab[1:] >= ab[:-1]).any():
            raise bad_value("schedule", d | {"kind": kind, "zero_terminal_snr": zero_terminal},
                            "settings whose alpha_bar is finite, in [0, 1] and strictly decreasing from above 0 "
                            "(zero_terminal_snr needs T >= 2)")
        return schedule

    def to_dict(self) -> dict[str, Any]:
        return dict(self.spec)

    # ----------------------------------------------------------------- quantities
    @property
    def T(self) -> int:
        return int(self.alpha_bar.shape[0])

    @property
    def betas(self) -> torch.Tensor:
        ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bar[:-1]])
        return 1.0 - self.alpha_bar / ab_prev

    def ab(self, t: int) -> float:
        """``alpha_bar`` at one step as a Python float; ``t = -1`` is the clean state (1.0)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def _at(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[t.detach().to("cpu").long()]  # [B]
        return ab.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    # ------------------------------------------------------ forward process, conversions
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ab)·x0 + sqrt(1-ab)·eps`` (Ho et al. 2020, eq. 4): the square root on both terms."""
        ab = self._at(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def eps_to_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        ab = self._at(t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def x0_to_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        ab = self._at(t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``v = sqrt(ab)·eps - sqrt(1-ab)·x0`` (Salimans & Ho 2022, section 4)."""
        ab = self._at(t, x0)
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0

    def v_to_x0(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ab = self._at(t, x_t)
        return ab.sqrt() * x_t - (1 - ab).sqrt() * v

    def v_to_eps(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ab = self._at(t, x_t)
        return (1 - ab).sqrt() * x_t + ab.sqrt() * v

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar[t.detach().to("cpu").long()]
        return ab / (1 - ab)

    # ----------------------------------------------------------------- time grids
    def timesteps(self, steps: int, spacing: str = "trailing") -> list[int]:
        """Descending step indices for a sampler; the sampler appends the clean state ``-1``.

        ``trailing`` starts at ``T-1`` (always visits the noisiest step), ``leading`` is
        ``k·(T//steps)`` (the original DDIM grid, which misses the end), ``linspace`` rounds
        ``linspace(0, T-1, steps)``.
        """
        T = self.T
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise bad_value("steps", steps, f"an integer in 1..{T} (the schedule's T)")
        if spacing == "trailing":
            grid = [T - 1 - (i * T) // steps for i in range(steps)]
        elif spacing == "leading":
            grid = [(steps - 1 - i) * (T // steps) for i in range(steps)]
        elif spacing == "linspace":
            grid = [0] if steps == 1 else [math.floor(i * (T - 1) / (steps - 1) + 0.5) for i in range(steps)][::-1]
        else:
            raise bad_value("spacing", spacing, f"one of {', '.join(SPACINGS)}")
        return grid


def _check_T(T: int) -> None:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise bad_value("T", T, "a positive integer number of diffusion steps")
