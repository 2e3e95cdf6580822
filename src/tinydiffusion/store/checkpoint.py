"""Everything that touches disk for models: exported model folders and the training state.

An exported model is a folder with ``config.json`` and ``model.safetensors``. The training state
is one file written atomically (temp file in the same folder, fsync, ``os.replace``) and read only
with ``torch.load(weights_only=True)``. Nothing else in the package calls ``torch.save``/``load``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from .. import checks
from ..errors import UsageError
from .files import atomic_write
from .modelfile import EVALUATOR_FORMAT, MODEL_FORMAT, check_config, read_json

CONFIG, WEIGHTS = "config.json", "model.safetensors"
STATE_FORMAT = 2  # the training state's layout: step, epoch, pos, elapsed, world, weights, optimizer


def save_state(path: str | Path, state: dict[str, Any], kept: str | None = None) -> Path:
    """The training state, atomically. Serialised in memory first, so that a full disk surfaces as the
    operating system's "no space left" (torch's own writer would hide it) and the old file stays."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(path, lambda f: f.write(buffer.getbuffer()), kept=kept)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"training state {path} does not exist (nothing to resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which, never unpickle code
        raise UsageError(f"training state {path} could not be read safely: {e}") from None


def read_training_state(path: str | Path) -> dict[str, Any]:
    """``load_state`` plus a check of every field the trainer relies on (format, types, finite numbers)."""
    path = Path(path)
    state = load_state(path)
    need = {"format": int, "config": dict, "step": int, "epoch": int, "pos": int, "elapsed": float, "world": int,
            "nonfinite_total": int, "restarts": int, "model": dict, "ema": dict, "optimizer": dict}
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise UsageError(f"training state {path} is not a format-{STATE_FORMAT} tinydiffusion state (written by "
                         f"another version?); start a new run with --overwrite")
    for key, kind in need.items():
        if not isinstance(state.get(key), kind) or (kind in (int, float) and not math.isfinite(state[key])):
            raise UsageError(f"training state {path}: field {key!r} is missing or not a valid {kind.__name__}")
    return state


def export_model(directory: str | Path, model: torch.nn.Module, config: dict[str, Any]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (each atomically) into ``directory``.

    The config is checked against ``modelfile`` first: a folder this writes is one ``read_model`` reads.
    """
    return export_weights(directory, model.state_dict(), config)


def export_weights(directory: str | Path, weights: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    """``export_model`` for a network's ``state_dict`` ``weights``."""
    from safetensors.torch import save

    directory = Path(directory)
    try:
        text = json.dumps(config, indent=2, sort_keys=True, allow_nan=False, default=list) + "\n"
    except (TypeError, ValueError) as e:  # NaN, infinity, or an object JSON cannot hold
        raise UsageError(f"model config {directory / CONFIG} cannot be written as strict JSON: {e}") from None
    check_config(json.loads(text), directory / CONFIG)  # exactly as read_model will read it back
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    atomic_write(directory / WEIGHTS, lambda f: f.write(save(tensors)))
    atomic_write(directory / CONFIG, lambda f: f.write(text.encode()))
    return directory


def read_model(directory: str | Path, expect: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of an exported folder, each checked before it is trusted.

    ``config.json`` is read strictly and validated against ``modelfile`` (a model's or an evaluator's
    schema, by its ``format``; ``expect`` refuses the other kind); the weights come only from
    safetensors, must fit in memory and be finite. Shapes against the network: ``check_weights``.
    """
    directory = Path(directory)
    if not directory.is_dir() or not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        state = "that path does not exist" if not directory.exists() else \
            "it is not a folder" if not directory.is_dir() else f"it lacks {CONFIG} or {WEIGHTS}"
        raise UsageError(f"model {str(directory)!r} is not an exported model folder ({state}); expected a shipped "
                         f"model name or a folder holding {CONFIG} and {WEIGHTS}")
    config = read_json(directory / CONFIG)
    found = config.get("format", MODEL_FORMAT)
    if expect is not None and found != expect:
        what = {MODEL_FORMAT: "a diffusion model", EVALUATOR_FORMAT: "an evaluator"}
        raise UsageError(f"model config {directory / CONFIG}: format={found!r}, but {what.get(expect, expect)} "
                         f"was expected here (format {expect!r})")
    config = check_config(config, directory / CONFIG)
    return config, read_weights(directory / WEIGHTS)


def read_weights(file: Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file: refused (naming the file) when it is not one, when it would not
    fit in memory, or when a floating tensor holds NaN or infinity."""
    from safetensors.torch import load_file

    checks.memory("model", str(file.parent), file.stat().st_size, f"weights file {file.name}")
    try:
        weights = load_file(str(file))
    except Exception as e:  # truncated, garbage, bad header: the Rust reader says which
        raise UsageError(f"model weights {file} could not be read as safetensors: {str(e)[:300]}") from None
    for name, tensor in weights.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).sum().item()
            raise UsageError(f"model weights {file}: tensor {name!r} holds {bad} NaN or infinite value"
                             f"{'s' if bad > 1 else ''}; expected finite weights (the training diverged?)")
    return weights


def check_weights(file: str | Path, weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """Refuse ``weights`` unless they hold exactly the tensors of ``expected`` (a network's
    ``state_dict()``), each with its shape and a dtype of the same family (float or not)."""
    missing = [k for k in expected if k not in weights]
    extra = [k for k in weights if k not in expected]
    if missing or extra:
        parts = ([f"lack {_few(missing)}"] if missing else []) + ([f"hold unexpected {_few(extra)}"] if extra else [])
        raise UsageError(f"model weights {file} do not fit its {CONFIG}: they {' and '.join(parts)}")
    for name, want in expected.items():
        got = weights[name]
        if tuple(got.shape) != tuple(want.shape):
            raise UsageError(f"model weights {file} do not fit its {CONFIG}: tensor {name!r} has shape "
                             f"{list(got.shape)}, the config's network needs {list(want.shape)}")
        if got.is_floating_point() != want.is_floating_point():
            raise UsageError(f"model weights {file}: tensor {name!r} is {got.dtype}, expected "
                             f"{'a floating' if want.is_floating_point() else 'an integer'} dtype like {want.dtype}")


def _few(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:3]))
    return f"tensor{'s' if len(names) > 1 else ''} {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")
