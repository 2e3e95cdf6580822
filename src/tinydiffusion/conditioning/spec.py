"""Context vectors that steer generation: categories (one-hot or mixtures), text, vectors, or nothing.

A context is a float vector of width ``D``. The all-zero vector is the null context: it means
"unconditional" and is what training substitutes when it drops the context for guidance. A text context
with ``tokens = L`` is still one vector: ``[pooled | token 1 | … | token L]`` (``conditioning.text``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..errors import UsageError, bad_value
from ..store.modelfile import CONTEXT
from ..store.schema import class_name, validate
from ..vocab import CONTEXT_KINDS, MAX_TOKENS, NULL_WORDS
from .text import encode, get_encoder, resolve_encoder

_TERM = re.compile(r"^\s*([^=]+?)\s*(?:=\s*(\S+)\s*)?$")


@dataclass(frozen=True)
class ContextSpec:
    """What a model's context vector means; stored in the model's ``config.json``."""

    kind: str = "none"  # "none" (unconditional), "class" (one weight per name), "text" or "vector"
    width: int = 0
    names: tuple[str, ...] = ()
    encoder: str | None = None  # the text encoder of "text" contexts (e.g. all-MiniLM-L6-v2)
    tokens: int = 0  # text: token rows after the pooled row, for cross-attention (0: the pooled design only)

    def __post_init__(self) -> None:
        if self.kind not in CONTEXT_KINDS:
            raise bad_value("context kind", self.kind, f"one of {', '.join(CONTEXT_KINDS)}")
        if self.kind == "class" and self.width != len(self.names):
            raise UsageError(f"class context width {self.width} does not match its {len(self.names)} names")
        if self.kind == "none" and self.width != 0:
            raise bad_value("context width", self.width, "0 for an unconditional model")
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or not 0 <= self.tokens <= MAX_TOKENS:
            raise bad_value("context tokens", self.tokens, f"a whole number from 0 to {MAX_TOKENS}")
        if self.tokens and (self.kind != "text" or self.width % (1 + self.tokens)):
            raise bad_value("context tokens", self.tokens, f"0 for a {self.kind!r} context of width {self.width} "
                            "(token rows are for text contexts, [pooled | tokens] of one width each)")

    @property
    def pooled_width(self) -> int:
        """The width of the pooled part: the whole vector unless the context carries token rows."""
        return self.width // (1 + self.tokens)

    @staticmethod
    def text(encoder: str, tokens: int = 0) -> "ContextSpec":
        """A text context of ``encoder``: its pooled vector, then ``tokens`` token rows when ``tokens > 0``."""
        name, width = resolve_encoder(encoder)
        return ContextSpec("text", (1 + tokens) * width, (), name, tokens)

    @staticmethod
    def classes(names: Sequence[str]) -> "ContextSpec":
        names = tuple(str(n) for n in names)
        if len(set(names)) != len(names) or not names:
            raise bad_value("class names", list(names), "a non-empty list of distinct names")
        for i, name in enumerate(names):  # each must be addressable by parse: no mixture syntax, not "none"
            class_name(f"class name {i}", name)
        return ContextSpec("class", len(names), names)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "width": self.width, "names": list(self.names), "encoder": self.encoder}
        return {**d, "tokens": self.tokens} if self.tokens else d  # a pooled-only spec: as it always was

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ContextSpec":
        """From the ``context`` section of a ``config.json``: typed by ``modelfile.CONTEXT``, then what the
        kinds need (class: one name per column; text: a known encoder of this width; vector: a width)."""
        d = validate(d, CONTEXT, "context")
        spec = ContextSpec(d["kind"], d["width"], tuple(d.get("names") or ()), d.get("encoder"), d.get("tokens", 0))
        if spec.kind != "class" and spec.names:
            raise bad_value("context.names", list(spec.names), f"no names for a {spec.kind!r} context")
        if spec.kind == "class" and not spec.names:
            raise bad_value("context.names", [], "at least one class name for a class context")
        if spec.kind == "vector" and spec.width < 1:
            raise bad_value("context.width", spec.width, "at least 1 for a vector context")
        if spec.kind == "text":
            if not spec.encoder:
                raise bad_value("context.encoder", spec.encoder, "the text encoder's name for a text context")
            name, width = resolve_encoder(spec.encoder)
            if (1 + spec.tokens) * width != spec.width:
                raise bad_value("context.width", spec.width, f"{(1 + spec.tokens) * width}, the width of the encoder "
                                f"{name}" + (f" times 1 + {spec.tokens} token rows" if spec.tokens else ""))
        elif spec.encoder is not None:
            raise bad_value("context.encoder", spec.encoder, f"null for a {spec.kind!r} context")
        return spec

    # ---------------------------------------------------------------- parsing
    def parse(self, text: str) -> torch.Tensor:
        """One context vector ``[D]`` from ``hero``, ``monster+spell``, ``hero=1,item=0.6`` or ``none``.

        Terms are separated by ``,`` or ``+``; a term is a class name with an optional ``=weight``
        (default 1), as in the course's mixtures. ``none`` (or an empty string) is the null context.
        """
        if text.strip().lower() in NULL_WORDS:
            return torch.zeros(self.width)
        if self.kind == "text":
            return self.encode([text])[0]
        if self.kind != "class":
            raise bad_value("context", text, "no context for an unconditional model (omit --context)"
                            if self.kind == "none" else "context vectors (a tensor or --context-file), not names")
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
        if self.kind == "text" and texts:  # one batched call to the encoder
            rows = self.encode([t for t in texts])
            null = [t.strip().lower() in NULL_WORDS for t in texts]
            return torch.where(torch.tensor(null)[:, None], torch.zeros_like(rows), rows)
        return torch.stack([self.parse(t) for t in texts]) if texts else torch.zeros(0, self.width)

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts to ``[N, D]`` rows with this spec's text encoder (loaded lazily): unit vectors, or with token
        rows ``[pooled | tokens]`` of unit rows and zero padding."""
        if self.kind != "text" or not self.encoder:
            raise bad_value("prompt", list(prompts)[:1], f"a class name or mixture: this model's context is {self.kind!r}")
        return encode(get_encoder(self.encoder), list(prompts), self.tokens)

    def mix(self, a: str, b: str, weights: Sequence[float]) -> torch.Tensor:
        """Rows interpolating prompt/context ``a`` to ``b``: ``(1-w)·c(a) + w·c(b)``, renormalised for text (the
        pooled row and each token row that is not padding in both)."""
        for w in weights:
            if not 0.0 <= w <= 1.0:
                raise bad_value("mix", w, "weights from 0 (the first prompt) to 1 (the second)")
        ca, cb = self.parse_many([a, b])
        rows = torch.stack([(1 - w) * ca + w * cb for w in weights])
        return self.renormalise(rows) if self.kind == "text" else rows

    def renormalise(self, rows: torch.Tensor) -> torch.Tensor:
        """Text rows ``[K, D]`` made unit again after mixing, as the network saw them: the pooled row and each token
        row (padding, all zero, stays zero)."""
        parts = rows.reshape(len(rows), 1 + self.tokens, self.pooled_width)
        return (parts / parts.norm(dim=2, keepdim=True).clamp(min=1e-12)).reshape(len(rows), self.width)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """``[N]`` integer labels to ``[N, D]`` one-hot contexts."""
        return torch.nn.functional.one_hot(labels.long(), self.width).float()

    def label_of(self, text: str) -> int | None:
        """The class index when ``text`` is a single class name, else ``None``."""
        return self.names.index(text) if self.kind == "class" and text in self.names else None
