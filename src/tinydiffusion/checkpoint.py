"""Everything that touches disk for models: exported model folders and the training state.

An exported model is a folder with ``config.json`` and ``model.safetensors``. The training state
is one file written atomically (temp file in the same folder, fsync, ``os.replace``) and read only
with ``torch.load(weights_only=True)``. Nothing else in the package calls ``torch.save``/``load``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import UsageError

CONFIG, WEIGHTS = "config.json", "model.safetensors"


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write through ``write(file)`` so that ``path`` holds either the old or the new bytes, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    return atomic_write(path, lambda f: torch.save(state, f))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"training state {path} does not exist (nothing to resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, never unpickle code
        raise UsageError(f"training state {path} could not be read safely: {e}") from None


def export_model(directory: str | Path, model: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``."""
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda f: f.write(save(tensors)))
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write(directory / CONFIG, lambda f: f.write(text.encode()))
    return directory


def read_model(directory: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of an exported model; weights only from safetensors."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise UsageError(f"model {directory} is not an exported model folder (expected {CONFIG} and {WEIGHTS} inside)")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"model config {directory / CONFIG} is not valid JSON: {e}") from None
    try:
        weights = load_file(str(directory / WEIGHTS))
    except Exception as e:
        raise UsageError(f"model weights {directory / WEIGHTS} could not be read as safetensors: {e}") from None
    return config, weights
