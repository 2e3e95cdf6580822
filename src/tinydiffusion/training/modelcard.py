"""What a trained model's ``config.json`` says: the model card a training run exports.

``exported_config`` assembles it in one place: everything ``load()`` needs to rebuild the model, how it was
trained, and the sampling settings it recommends (``sampling/card.for_training``: what ``sample``,
``Pipeline.sample`` and the studio use when a user gives none). A distillation's ``Objective``
adds or replaces entries (its own recommendation and the ``distilled`` card).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .. import __version__
from ..conditioning.spec import ContextSpec
from ..core.schedule import Schedule
from ..models import ModelConfig
from ..sampling import card
from ..store.modelfile import MODEL_FORMAT
from .config import Objective, TrainConfig


def exported_config(config: TrainConfig, model_config: ModelConfig, schedule: Schedule, spec: ContextSpec,
                    examples: list, objective: Objective | None = None, captions: list[str] | None = None
                    ) -> dict[str, Any]:
    """The exported model's ``config.json``: network, schedule, context spec with its example rows, prediction,
    package version, the recommended sampling and the training settings, a text model's distinct training
    ``captions`` (what ``snap`` moves prompts toward); then the ``objective``'s entries."""
    return {"format": MODEL_FORMAT, "version": __version__, "model": model_config.to_dict(),
            "schedule": schedule.to_dict(), "context": spec.to_dict(), "prediction": config.prediction,
            "examples": examples, "recommended": card.for_training(spec.kind, config.p_uncond, config.T),
            "training": {"data": config.data, "seed": config.seed, "config": asdict(config)},
            **({"captions": captions} if captions and spec.kind == "text" else {}),
            **(objective.card if objective else {})}
