"""Adapters that teach a trained network something new: LoRA on its convolutions and linear layers, and new
columns of its context input (a new class). Modules for training, pure functions on weights for loading.

- **LoRA** (Hu et al. 2021, eq. 3): a frozen weight ``W`` gains a low-rank update ``W + (alpha/r)·B·A`` with
  ``A`` ``[r, fan_in]`` and ``B`` ``[out, r]``; ``B`` starts at zero, so the adapted network starts as the base.
  For a convolution ``A`` has the layer's own kernel (``[r, c_in, k, k]``) and ``B`` is a 1×1 convolution back
  (``[out, r, 1, 1]``), peft's layout; the update is ``B·A`` over the flattened kernel. The forward pass runs the
  layer's own operation once, with the updated weight (the update costs ``out·r·fan_in``, nothing per pixel).
- **New columns**: a class model's context is one-hot, so its first context layer's weight has one column per
  class. A new class is a new column, trained while the old ones stay frozen (textual inversion's idea, Gal et
  al. 2022, applied to a class embedding); zero at the start, i.e. the new class starts as the null context.

``merge`` and ``unmerge`` are exact inverses on weights (up to float rounding), so an adapter file holds only the
new columns and the low-rank factors; ``models/adapter_file.py`` reads and writes it.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

COLUMNS = "context_mlp.0"  # the UNet's first context layer: one input column per class
LORA_PREFIX, COLUMNS_PREFIX = "base_model.model.", "new_columns."  # adapter-file keys (peft's for LoRA)
COLUMN_GAIN = 10.0  # the new columns' learning rate over LoRA's (NewColumns)


def lora_delta(A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """``scale·B·A`` shaped like the layer's weight: ``A`` ``[r, *kernel]``, ``B`` ``[out, r]`` or ``[out, r, 1, 1]``."""
    return (scale * (B.flatten(1) @ A.flatten(1))).reshape(B.shape[0], *A.shape[1:])


class LoRA(nn.Module):
    """A frozen ``nn.Conv2d`` or ``nn.Linear`` plus a trainable low-rank update of its weight."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        self.layer, self.scale = layer.requires_grad_(False), alpha / rank
        shape = layer.weight.shape  # [out, in] or [out, in, k, k]
        self.lora_A = nn.Parameter(torch.empty(rank, *shape[1:]))
        self.lora_B = nn.Parameter(torch.zeros(shape[0], rank))
        bound = 1 / math.sqrt(self.lora_A[0].numel())  # kaiming_uniform(a=√5), as nn.Linear and peft initialise A
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.layer.weight + lora_delta(self.lora_A, self.lora_B, self.scale)  # W + (alpha/r)·B·A
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        c = self.layer
        return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)


class NewColumns(nn.Module):
    """A frozen ``nn.Linear`` of ``K`` inputs widened by ``n`` trainable input columns (new classes), stored divided
    by ``gain``: Adam's steps are about the learning rate whatever the gradient's scale, so the columns move
    ``gain`` times faster than LoRA's factors at one learning rate (one vector must travel as far as a class's
    column, ~0.23 per entry in the shipped sprites, while the factors make small corrections)."""

    def __init__(self, layer: nn.Linear, n: int, gain: float = COLUMN_GAIN):
        super().__init__()
        self.layer, self.gain = layer.requires_grad_(False), gain
        self.columns = nn.Parameter(torch.zeros(layer.out_features, n))

    def weight(self) -> torch.Tensor:
        return torch.cat([self.layer.weight, self.gain * self.columns], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.layer.bias)


# ---------------------------------------------------------------------- networks for training
def lora_targets(model: nn.Module) -> list[str]:
    """Every convolution and linear layer of ``model`` but the context input: what LoRA adapts."""
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and name != COLUMNS]


def adapt(model: nn.Module, base_width: int, *, rank: int | None, alpha: float | None, seed: int) -> nn.Module:
    """``model`` (a UNet whose context input is already widened, base weights loaded) frozen, with its new context
    columns (past ``base_width``) trainable and, with a ``rank``, LoRA on every other convolution and linear layer.
    Changed in place and returned; ``alpha`` defaults to ``rank`` (scale 1)."""
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    if rank is not None:
        for name in lora_targets(model):
            _replace(model, name, LoRA(model.get_submodule(name), rank, float(alpha or rank), generator))
    first = model.get_submodule(COLUMNS)
    if first.in_features > base_width:
        old = nn.Linear(base_width, first.out_features)
        with torch.no_grad():
            old.weight.copy_(first.weight[:, :base_width])
            old.bias.copy_(first.bias)
        columns = NewColumns(old, first.in_features - base_width)
        with torch.no_grad():
            columns.columns.copy_(first.weight[:, base_width:] / columns.gain)
        _replace(model, COLUMNS, columns)
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapted network learnt, under the adapter file's keys: ``new_columns.<layer>.weight`` ``[out, n]``
    and peft's ``base_model.model.<layer>.lora_A.weight`` / ``lora_B.weight`` (``B`` ``[out, r, 1, 1]`` for a
    convolution)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, NewColumns):
            out[f"{COLUMNS_PREFIX}{name}.weight"] = (m.gain * m.columns.detach()).contiguous()
        elif isinstance(m, LoRA):
            B = m.lora_B.detach()
            out[f"{LORA_PREFIX}{name}.lora_A.weight"] = m.lora_A.detach().contiguous()
            out[f"{LORA_PREFIX}{name}.lora_B.weight"] = B.reshape(*B.shape, *[1] * (m.lora_A.dim() - 2)).contiguous()
    return out


# ---------------------------------------------------------------------- weights (pure functions)
def widen(weights: dict[str, torch.Tensor], n: int, columns: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Base weights with ``n`` more context-input columns (``columns`` ``[out, n]``, default zeros: the null
    context's embedding for the new classes). A new dict; the inputs are not changed."""
    key = f"{COLUMNS}.weight"
    w = weights[key]
    extra = torch.zeros(w.shape[0], n, dtype=w.dtype) if columns is None else columns.to(w.dtype)
    return {**weights, key: torch.cat([w, extra], dim=1)}


def _pairs(adapter: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(layer, A, B)`` of every LoRA pair in an adapter's tensors."""
    for key in sorted(adapter):
        if key.startswith(LORA_PREFIX) and key.endswith(".lora_A.weight"):
            layer = key[len(LORA_PREFIX):-len(".lora_A.weight")]
            yield layer, adapter[key], adapter[f"{LORA_PREFIX}{layer}.lora_B.weight"]


def _columns(adapter: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(key[len(COLUMNS_PREFIX):], v) for key, v in sorted(adapter.items()) if key.startswith(COLUMNS_PREFIX)]


def check_adapter(adapter: dict[str, torch.Tensor]) -> None:
    """Raise ``KeyError``/``ValueError`` naming the first tensor an adapter file cannot hold."""
    for key in adapter:
        ok = key.startswith(COLUMNS_PREFIX) and key.endswith(".weight") or \
            key.startswith(LORA_PREFIX) and key.endswith((".lora_A.weight", ".lora_B.weight"))
        if not ok:
            raise KeyError(f"unexpected tensor {key!r} (expected new_columns.* or base_model.model.*.lora_A/B.weight)")
        if key.endswith(".lora_B.weight") and key.replace(".lora_B.", ".lora_A.") not in adapter:
            raise KeyError(f"tensor {key!r} has no lora_A partner")
    for layer, A, B in _pairs(adapter):
        if B.dim() < 2 or A.shape[0] != B.shape[1] or B.shape[2:].numel() != 1:
            raise ValueError(f"LoRA factors of {layer!r} do not pair: A {list(A.shape)}, B {list(B.shape)}")


def merge(base: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], scale: float,
          weight: float = 1.0) -> dict[str, torch.Tensor]:
    """The adapted network's weights: the new columns appended, ``W + weight·scale·B·A`` for every LoRA pair
    (``scale`` = alpha/r; ``weight`` scales an adapter when several are merged). A new dict."""
    out = dict(base)
    for layer, cols in _columns(adapter):
        out[layer] = torch.cat([out[layer], cols.to(out[layer].dtype)], dim=1)
    for layer, A, B in _pairs(adapter):
        key = f"{layer}.weight"
        delta = lora_delta(A.float(), B.float(), weight * scale)
        if delta.shape != out[key].shape:
            raise ValueError(f"LoRA update of {layer!r} is {list(delta.shape)}, the weight {list(out[key].shape)}")
        out[key] = (out[key].float() + delta).to(out[key].dtype)
    return out


def unmerge(merged: dict[str, torch.Tensor], adapter: dict[str, torch.Tensor], scale: float,
            weight: float = 1.0) -> dict[str, torch.Tensor]:
    """``merge`` undone: the new columns dropped, every LoRA update subtracted (the base, to float rounding)."""
    out = dict(merged)
    for layer, cols in _columns(adapter):
        out[layer] = out[layer][:, :out[layer].shape[1] - cols.shape[1]]
    for layer, A, B in _pairs(adapter):
        key = f"{layer}.weight"
        out[key] = (out[key].float() - lora_delta(A.float(), B.float(), weight * scale)).to(out[key].dtype)
    return out
