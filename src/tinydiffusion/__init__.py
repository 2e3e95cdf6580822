"""tinydiffusion: train context-conditioned image diffusion models and sample them.

Names are imported lazily so that ``tinydiffusion --help`` answers without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "sampling.pipeline", "Pipeline": "sampling.pipeline",
    "Schedule": "core.schedule",
    "SAMPLERS": "core.samplers", "ddpm": "core.samplers", "ddim": "core.samplers",
    "ContextSpec": "conditioning.spec",
    "ModelConfig": "models", "build_model": "models", "preset": "models", "PRESETS": "models",
    "diffusion_loss": "core.loss",
    "TrainConfig": "training.train", "TrainResult": "training.train",  # the function: tinydiffusion.training.train.train
    "SampleConfig": "sampling.generate", "sample_to_files": "sampling.generate",
    "load_dataset": "data.load", "Dataset": "data.sources",
    "UsageError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tinydiffusion' has no attribute {name!r}")
