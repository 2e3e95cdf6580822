"""Context vectors that steer generation: categories (one-hot or mixtures) or nothing.

A context is a float vector of width ``D``. The all-zero vector is the null context: it means
"unconditional" and is what training substitutes when it drops the context for guidance.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import UsageError, bad_value

KINDS = ("none", "class", "vector")
_TERM = re.compile(r"^\s*([^=]+?)\s*(?:=\s*(\S+)\s*)?$")


@dataclass(frozen=True)
class ContextSpec:
    """What a model's context vector means; stored in the model's ``config.json``."""

    kind: str = "none"  # "none" (unconditional), "class" (one weight per name) or "vector"
    width: int = 0
    names: tuple[str, ...] = ()
    encoder: str | None = None  # what produced "vector" contexts, e.g. a text encoder's name

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise bad_value("context kind", self.kind, f"one of {', '.join(KINDS)}")
        if self.kind == "class" and self.width != len(self.names):
            raise UsageError(f"class context width {self.width} does not match its {len(self.names)} names")
        if self.kind == "none" and self.width != 0:
            raise bad_value("context width", self.width, "0 for an unconditional model")

    @staticmethod
    def classes(names: Sequence[str]) -> "ContextSpec":
        names = tuple(str(n) for n in names)
        if len(set(names)) != len(names) or not names:
            raise bad_value("class names", list(names), "a non-empty list of distinct names")
        return ContextSpec("class", len(names), names)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "names": list(self.names), "encoder": self.encoder}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ContextSpec":
        return ContextSpec(d.get("kind", "none"), int(d.get("width", 0)), tuple(d.get("names", ())), d.get("encoder"))

    # ---------------------------------------------------------------- parsing
    def parse(self, text: str) -> torch.Tensor:
        """One context vector ``[D]`` from ``hero``, ``monster+spell``, ``hero=1,item=0.6`` or ``none``.

        Terms are separated by ``,`` or ``+``; a term is a class name with an optional ``=weight``
        (default 1), as in the course's mixtures. ``none`` (or an empty string) is the null context.
        """
        if text.strip().lower() in ("", "none", "null", "uncond", "unconditional"):
            return torch.zeros(self.width)
        if self.kind != "class":
            raise bad_value("context", text, "no context for an unconditional model (omit --context)"
                            if self.kind == "none" else "a vector context, not a class name")
        vector = torch.zeros(self.width)
        for term in re.split(r"[,+]", text):
            match = _TERM.match(term)
            if not match:
                raise bad_value("context", text, f"terms like 'hero', 'hero=1,item=0.6' or 'monster+spell'; known classes: {', '.join(self.names)}")
            name, weight_text = match.group(1), match.group(2)
            if name not in self.names:
                raise bad_value("context", name, f"one of the known classes: {', '.join(self.names)}")
            try:
                weight = 1.0 if weight_text is None else float(weight_text)
            except ValueError:
                weight = math.nan
            if not math.isfinite(weight):
                raise bad_value(f"context weight of {name!r}", weight_text, "a finite number such as 0.6")
            vector[self.names.index(name)] = weight
        return vector

    def parse_many(self, texts: Sequence[str]) -> torch.Tensor:
        """Stack ``parse`` over several texts: ``[N, D]``."""
        return torch.stack([self.parse(t) for t in texts]) if texts else torch.zeros(0, self.width)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """``[N]`` integer labels to ``[N, D]`` one-hot contexts."""
        return torch.nn.functional.one_hot(labels.long(), self.width).float()

    def label_of(self, text: str) -> int | None:
        """The class index when ``text`` is a single class name, else ``None``."""
        return self.names.index(text) if self.kind == "class" and text in self.names else None
