"""Snapping a prompt to what the model knows: move its text vector toward the nearest caption it was trained on.

A text model has seen one vector per training caption and nothing between them; a prompt a user types ("a cute
cat") lands between those points, where the network's answer is a blend it never learnt to draw. ``snap`` moves
each prompt's vector ``c`` toward its nearest training caption's ``c*`` (cosine similarity of the pooled parts):
``c' = (1 − s)·c + s·c*``, renormalised as the network saw them (``ContextSpec.renormalise``). ``s = 0`` is the
prompt itself; ``s = 1`` is the caption's own vector. The null context (unconditional) is never moved. What it
costs: the model's reach beyond its captions (``s = 1`` draws the nearest thing it was trained on). Measured on
``emoji`` in docs/text.md.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import bad_value
from ..vocab import MAX_CAPTIONS
from .spec import ContextSpec


def training_captions(captions: Sequence[str] | None) -> list[str] | None:
    """The distinct captions of a training set, in first-seen order, as a card lists them; ``None`` when there are
    none or more than ``MAX_CAPTIONS`` (too many to list: such a model does not snap)."""
    if captions is None:
        return None
    seen = list(dict.fromkeys(str(c) for c in captions))
    return seen if 0 < len(seen) <= MAX_CAPTIONS else None


def snap(spec: ContextSpec, rows: torch.Tensor, bank: torch.Tensor, strength: float
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(rows', nearest [K], cosine [K])``: each context row ``[K, D]`` moved by ``strength`` toward its nearest
    row of ``bank`` ``[M, D]`` (the training captions' vectors), the index of that caption and its cosine
    similarity. Null rows stay null (their ``nearest`` is -1)."""
    if spec.kind != "text":
        raise bad_value("snap", strength, f"0 for a {spec.kind!r} context: snapping moves text prompts")
    w = spec.pooled_width
    pooled = rows[:, :w] / rows[:, :w].norm(dim=1, keepdim=True).clamp(min=1e-12)
    cosine, nearest = (pooled @ bank[:, :w].T).max(dim=1)
    null = ~rows.bool().any(dim=1)
    moved = spec.renormalise((1 - strength) * rows + strength * bank[nearest])
    return torch.where(null[:, None], rows, moved), torch.where(null, -1, nearest), cosine
