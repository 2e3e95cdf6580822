"""tinydiffusion: train context-conditioned image diffusion models and sample them.

Names are imported lazily so that ``tinydiffusion --help`` answers without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "pipeline", "Pipeline": "pipeline",
    "Schedule": "schedule",
    "SAMPLERS": "samplers", "ddpm": "samplers", "ddim": "samplers",
    "ContextSpec": "context",
    "ModelConfig": "models", "build_model": "models", "preset": "models", "PRESETS": "models",
    "diffusion_loss": "loss",
    "TrainConfig": "train", "TrainResult": "train",  # the function: tinydiffusion.train.train
    "SampleConfig": "generate", "sample_to_files": "generate",
    "load_dataset": "data", "Dataset": "data",
    "UsageError": "errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'tinydiffusion' has no attribute {name!r}")
