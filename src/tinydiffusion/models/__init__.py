"""Networks and their presets. Every network follows ``model(x_t, t, context) -> eps_hat``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import bad_value
from ..store.modelfile import MODEL
from ..store.schema import validate
from ..vocab import ARCHS, MAX_TOKENS
from .course import CourseUNet
from .unet import UNet

# Sized for a 2-core CPU (tiny, small) and for a GPU (base). The measured parameter counts and
# images/s are in docs/models.md (benchmarks/presets.py).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"arch": "unet", "base": 16, "mults": (1, 2, 2), "blocks": 1},
    "small": {"arch": "unet", "base": 32, "mults": (1, 2, 2), "blocks": 1, "attention": (8,)},
    "base": {"arch": "unet", "base": 64, "mults": (1, 2, 2, 2), "blocks": 2, "attention": (8, 4)},
    "course": {"arch": "course", "base": 64},
}
# Where a network whose context carries token rows (``context_tokens > 0``, text models trained with --text-tokens)
# attends over them, unless ``cross_attention`` is given: at most 16×16 (the mid blocks too). The course network has
# none: it takes the pooled design only.
CROSS_ATTENTION: dict[str, tuple[int, ...]] = {"tiny": (8,), "small": (16, 8), "base": (16, 8)}
# ModelConfig fields written to config.json only when set, so a pooled-only model's config is what it always was
_OMITTED_AT_DEFAULT = ("context_tokens", "cross_attention")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "unet"
    image_size: int = 16
    channels: int = 3
    context_width: int = 5
    base: int = 32
    mults: tuple[int, ...] = (1, 2, 2)
    blocks: int = 1
    attention: tuple[int, ...] = field(default_factory=tuple)
    dropout: float = 0.0
    T: int = 500  # only the course network uses it (it is fed t/T)
    context_tokens: int = 0  # token rows after the pooled part: context = [pooled | token 1 | … | token L]
    cross_attention: tuple[int, ...] = field(default_factory=tuple)  # resolutions attending over the token rows

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise bad_value("arch", self.arch, f"one of {', '.join(ARCHS)}")
        if self.image_size < 4 or self.image_size % self.divisor:
            raise bad_value("image_size", self.image_size,
                            f"a multiple of {self.divisor} (the {self.arch} network halves it {self.divisor.bit_length() - 1} times)")
        if any(a > 8 for a in self.attention):
            raise bad_value("attention", list(self.attention), "resolutions of 8 or below (attention is quadratic in pixels)")
        self._check_tokens()
        if self.base < 8 or self.blocks < 1 or not self.mults:
            raise bad_value("base/blocks/mults", (self.base, self.blocks, self.mults), "base >= 8, blocks >= 1, mults non-empty")

    def _check_tokens(self) -> None:
        tokens = self.context_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_TOKENS:
            raise bad_value("context_tokens", tokens, f"a whole number of token rows from 0 to {MAX_TOKENS}")
        if tokens and self.arch != "unet":
            raise bad_value("context_tokens", tokens, f"0 for the {self.arch} network (it conditions on a pooled "
                            "vector only; token rows need the unet)")
        if tokens and (self.context_width < 1 + tokens or self.context_width % (1 + tokens)):
            raise bad_value("context_width", self.context_width, f"a multiple of 1 + context_tokens = {1 + tokens} "
                            "(a pooled row and the token rows, all of one width)")
        if any(a > 16 for a in self.cross_attention):
            raise bad_value("cross_attention", list(self.cross_attention), "resolutions of 16 or below")
        if self.cross_attention and not tokens:
            raise bad_value("cross_attention", list(self.cross_attention), "none without token rows "
                            "(context_tokens = 0: the pooled design)")

    @property
    def divisor(self) -> int:
        return 4 if self.arch == "course" else 2 ** (len(self.mults) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: v for k, v in d.items() if k not in _OMITTED_AT_DEFAULT or v}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "ModelConfig":
        """From the ``model`` section of a ``config.json``: typed and ranged by ``modelfile.MODEL`` first."""
        d = validate(d, MODEL, "model")
        for key in ("mults", "attention", "cross_attention"):
            if key in d:
                d[key] = tuple(d[key])
        return ModelConfig(**d)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset with overrides such as ``image_size`` and ``context_width``; with ``context_tokens`` it
    attends over them at the preset's ``CROSS_ATTENTION`` resolutions unless ``cross_attention`` is given."""
    if name not in PRESETS:
        raise bad_value("model", name, f"one of the presets {', '.join(PRESETS)}")
    if overrides.get("context_tokens") and "cross_attention" not in overrides:
        overrides["cross_attention"] = CROSS_ATTENTION.get(name, ())
    return replace(ModelConfig(**PRESETS[name]), **overrides) if overrides else ModelConfig(**PRESETS[name])


def build_model(config: ModelConfig):
    """An ``nn.Module`` from its config."""
    if config.arch == "course":
        return CourseUNet(config.image_size, config.channels, config.context_width, config.base, config.T)
    return UNet(config.image_size, config.channels, config.context_width, config.base, config.mults,
                config.blocks, config.attention, config.dropout, config.context_tokens, config.cross_attention)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
