"""``Objective``: what a training run minimises and how its network starts, when it is not the
ordinary diffusion loss from random weights (distillation, ``distill.py``). ``train`` takes one and
keeps everything else (data, EMA, atomic state, exact resume, budgets, metrics, grids, export)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True, eq=False)
class Objective:
    loss: Callable  # loss(net, schedule, x0, context, generator) -> a scalar tensor
    model_config: Any  # models.ModelConfig of the network
    schedule: Any  # schedule.Schedule
    weights: dict  # the network's initial state_dict
    context: dict  # the context spec the data must give (the teacher's), as ContextSpec.to_dict()
    card: dict  # config.json entries added to or replacing the trained ones ("recommended", "distilled")
    preview: dict  # {"sampler", "steps", "guidance"} of the fixed-seed sample grids
    identity: dict  # JSON-able; saved in the state, and a resume must bring the same
