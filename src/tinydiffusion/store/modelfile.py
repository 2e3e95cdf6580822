"""The schema of an exported folder's ``config.json``: typed fields, ranges, no unknown keys.

Written out as small explicit tables (``MODEL``, ``SCHEDULE``, ``CONTEXT``, ``TOP``, ``EVALUATOR``)
of ``field: (required, check)``. A check returns the value or raises ``UsageError`` naming the field,
the value and what is allowed; ``check_config`` prefixes the file's name. The JSON itself is read
strictly: ``NaN``/``Infinity`` (which Python's ``json`` accepts), numbers that overflow to infinity
and duplicate keys are refused, so what passes is exactly what the tables say.
The ``from_dict`` of ``ModelConfig``, ``Schedule`` and ``ContextSpec`` validate their section here
too, so library callers get the same checks as files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from ..checks import MAX_IMAGE_SIZE, finite, integer
from ..errors import UsageError, bad_value

MODEL_FORMAT, EVALUATOR_FORMAT = "tinydiffusion-model", "tinydiffusion-evaluator"
MAX_CONFIG_BYTES = 1 << 20  # ours are ~2 KB; a bigger file is not a config
MAX_T = 100_000  # diffusion steps: 1000 is usual, 4000 rare
MAX_WIDTH = 16_384  # context vector width (text encoders: 384 to 4096)
MAX_NAMES = 10_000  # class names
NULL_WORDS = ("", "none", "null", "uncond", "unconditional")  # what ContextSpec.parse reads as "no context"
NAME_SEPARATORS = (",", "+", "=")  # what ContextSpec.parse splits mixtures on
SAMPLER_NAMES = ("ddpm", "ddim", "dpmpp_2m", "euler", "consistency")  # the keys of samplers.SAMPLERS (a test keeps them equal)

Check = Callable[[str, Any], Any]
Section = dict[str, tuple[bool, Check]]  # field -> (required, check)


# ---------------------------------------------------------------------- checks
def whole(low: int, high: int, multiple_of: int = 1) -> Check:
    """An integer (not a bool, not ``16.0``, not ``"16"``) in ``low..high``."""
    allowed = f"an integer in {low}..{high}" + (f" that is a multiple of {multiple_of}" if multiple_of > 1 else "")

    def check(name: str, value: Any) -> int:
        value = integer(name, value, low=low, high=high, allowed=allowed)
        if value % multiple_of:
            raise bad_value(name, value, allowed)
        return value
    return check


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Check:
    """A finite JSON number in the range (ints are numbers too)."""
    allowed = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}" \
        if low is not None and high is not None else None

    def check(name: str, value: Any) -> float:
        v = finite(name, value, low=low, high=high, low_open=low_open, allowed=allowed)
        if high_open and v >= high:
            raise bad_value(name, value, allowed)
        return v
    return check


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad_value(name, value, "true or false")
    return value


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 1000:
        raise bad_value(name, value, "a string (at most 1000 characters)")
    return value


def one_of(*options: str) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in options:  # isinstance first: a list is unhashable
            raise bad_value(name, value, f"one of {', '.join(map(repr, options))}")
        return value
    return check


def exactly(expected: Any, allowed: str) -> Check:
    def check(name: str, value: Any) -> Any:
        if type(value) is not type(expected) or value != expected:  # 3.0 and True are not 3
            raise bad_value(name, value, allowed)
        return value
    return check


def maybe(inner: Check) -> Check:
    """``null`` or what ``inner`` allows."""
    return lambda name, value: None if value is None else inner(name, value)


def list_of(item: Check, low: int = 0, high: int = 64, *, distinct: bool = False) -> Check:
    def check(name: str, value: Any) -> list:
        if not isinstance(value, (list, tuple)) or not low <= len(value) <= high:  # tuples: from Python callers
            raise bad_value(name, value if not isinstance(value, (list, tuple)) else f"a list of {len(value)}",
                            f"a JSON list of {low} to {high} items")
        out = [item(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if distinct and len(set(map(repr, out))) != len(out):
            raise bad_value(name, value, "distinct items")
        return out
    return check


def class_name(name: str, value: Any) -> str:
    """A class name that ``--context`` can address: not empty, no ``, + =``, not a word meaning "none"."""
    allowed = (f"a class name that --context can address: a non-empty string without surrounding spaces, "
               f"without {' '.join(NAME_SEPARATORS)} (mixture syntax), and not one of {', '.join(NULL_WORDS[1:])}")
    if not isinstance(value, str) or value != value.strip() or value.lower() in NULL_WORDS or \
            any(s in value for s in NAME_SEPARATORS) or len(value) > 200:
        raise bad_value(name, value, allowed)
    return value


def any_object(name: str, value: Any) -> dict:
    """A JSON object whose contents are free (e.g. the training settings kept for the record)."""
    if not isinstance(value, dict):
        raise bad_value(name, value, "a JSON object")
    return value


def mapping_of(item: Check) -> Check:
    def check(name: str, value: Any) -> dict:
        return {k: item(f"{name}.{k}", v) for k, v in any_object(name, value).items()}
    return check


def section(fields: Section) -> Check:
    """A nested JSON object with exactly these fields (the required ones present, no others)."""
    return lambda name, value: validate(value, fields, name)


def example(name: str, value: Any) -> Any:
    """A grid row of a model card: a class name, or ``[image index, caption]``."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return [whole(0, 2**53)(f"{name}[0]", value[0]), text(f"{name}[1]", value[1])]
    raise bad_value(name, value, "a class name or an [image index, caption] pair")


def validate(d: Any, fields: Section, where: str) -> dict[str, Any]:
    """``d`` checked against ``fields``: a dict with every required field, no unknown one, each value valid."""
    label = f"the {where} section" if where else "the file"
    if not isinstance(d, dict):
        raise UsageError(f"{label} is {_kind(d)}{_shown(d)}; expected a JSON object with the fields "
                         f"{', '.join(fields)}")
    unknown = [k for k in d if k not in fields]
    if unknown:
        raise UsageError(f"{label} has unknown field{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; allowed: {', '.join(fields)}")
    missing = [k for k, (required, _) in fields.items() if required and k not in d]
    if missing:
        raise UsageError(f"{label} lacks the required field{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(repr, missing))}")
    return {k: fields[k][1](f"{where}.{k}" if where else k, v) for k, v in d.items()}


def _shown(value: Any) -> str:
    """`` (value)`` after a kind such as "a list", unless the kind says it all (null)."""
    return "" if value is None else f" ({_short(value)})"


def _short(value: Any) -> str:
    text_ = json.dumps(value, default=repr) if not isinstance(value, float) else repr(value)
    return text_ if len(text_) <= 60 else text_[:57] + "..."


# ---------------------------------------------------------------------- the tables
# ``models.ARCHS`` and ``context.KINDS`` (a test keeps them equal; this module imports no torch)
ARCHS = ("unet", "course")
KINDS = ("none", "class", "text", "vector")
PREDICTIONS = ("eps", "x0", "v")

MODEL: Section = {
    "arch": (True, one_of(*ARCHS)),
    "image_size": (True, whole(4, MAX_IMAGE_SIZE)),
    "channels": (True, exactly(3, "3 (RGB: every image reader and writer here assumes it)")),
    "context_width": (True, whole(0, MAX_WIDTH)),
    "base": (True, whole(8, 1024)),
    "mults": (True, list_of(whole(1, 16), 1, 8)),
    "blocks": (True, whole(1, 16)),
    "attention": (False, list_of(whole(1, 8), 0, 8)),
    "dropout": (False, number(0, 1, high_open=True)),
    "T": (False, whole(1, MAX_T)),
}
SCHEDULE: Section = {
    "kind": (True, one_of("linear", "cosine")),
    "T": (True, whole(1, MAX_T)),
    "beta_start": (False, number(0, 1, low_open=True, high_open=True)),
    "beta_end": (False, number(0, 1, low_open=True, high_open=True)),
    "s": (False, number(0, 1)),
    "zero_terminal_snr": (False, flag),
}
CONTEXT: Section = {
    "kind": (True, one_of(*KINDS)),
    "width": (True, whole(0, MAX_WIDTH)),
    "names": (False, list_of(class_name, 0, MAX_NAMES, distinct=True)),
    "encoder": (False, maybe(text)),
}
RECOMMENDED: Section = {  # the model card's sampling settings: what sample, Pipeline.sample and the studio use
    "sampler": (True, one_of(*SAMPLER_NAMES)),
    "steps": (True, whole(1, MAX_T)),
    "guidance": (True, number(0, 100)),
}
DISTILLED: Section = {  # a few-step student (distill.py): what it was distilled for, which sample enforces
    "method": (True, one_of("progressive", "consistency")),
    "sampler": (True, one_of(*SAMPLER_NAMES)),
    "steps": (True, list_of(whole(1, MAX_T), 1, 64, distinct=True)),
    "guidance": (True, number(0, 100)),
    "teacher": (False, text),
    "teacher_sampler": (False, one_of(*SAMPLER_NAMES)),
    "teacher_steps": (False, whole(1, MAX_T)),
}
TOP: Section = {
    "format": (False, one_of(MODEL_FORMAT)),
    "version": (False, text),
    "model": (True, section(MODEL)),
    "schedule": (True, section(SCHEDULE)),
    "context": (False, section(CONTEXT)),
    "prediction": (False, one_of(*PREDICTIONS)),
    "examples": (False, list_of(example, 0, 64)),
    "training": (False, any_object),  # the run's settings, kept for the record; only "data" is read back
    "shipped_as": (False, text),
    "recommended": (False, section(RECOMMENDED)),
    "distilled": (False, section(DISTILLED)),
}
EVALUATOR: Section = {
    "format": (True, one_of(EVALUATOR_FORMAT)),
    "version": (False, text),
    "class_names": (True, list_of(text, 1, MAX_NAMES, distinct=True)),
    "size": (True, whole(8, MAX_IMAGE_SIZE)),
    "width": (True, whole(8, 1024, multiple_of=8)),  # GroupNorm(8, width)
    "members": (True, whole(1, 64)),
    "holdout_accuracy": (False, mapping_of(number(0, 1))),
    "holdout_count": (False, whole(0, 2**53)),
    "train_seconds": (False, number(0, 1e9)),
    "training": (False, any_object),
    "weights_dtype": (False, one_of("float32", "float16", "bfloat16")),
}


# ---------------------------------------------------------------------- whole files
def read_json(file: Path, what: str = "model config") -> dict[str, Any]:
    """A JSON object from ``file``, strictly: UTF-8, at most 1 MiB, finite numbers, no duplicate keys."""
    try:
        size = file.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise UsageError(f"{what} {file} is {size:,} bytes; expected a config.json of at most "
                             f"{MAX_CONFIG_BYTES:,} bytes")
        raw = file.read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {file} could not be read: {e.strerror or e}") from None
    try:
        config = json.loads(raw.decode("utf-8-sig"), parse_constant=_refuse_constant, parse_float=_finite_float,
                            object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UsageError(f"{what} {file} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{what} {file} holds {_kind(config)}{_shown(config)}; expected a JSON object")
    return config


def check_config(config: dict[str, Any], file: Path) -> dict[str, Any]:
    """A model's or an evaluator's config (by its ``format``), with the file named in every refusal."""
    try:
        if config.get("format") == EVALUATOR_FORMAT:
            return validate(config, EVALUATOR, "")
        config = validate(config, TOP, "")
        _consistent(config)
        return config
    except UsageError as e:
        raise UsageError(f"model config {file}: {e}") from None


def _consistent(config: dict[str, Any]) -> None:
    """What the sections must agree on: the network's context width and step count."""
    model, schedule = config["model"], config["schedule"]
    context = config.get("context", {"kind": "none", "width": 0})
    if model["context_width"] != context["width"]:
        raise UsageError(f"model.context_width={model['context_width']} disagrees with "
                         f"context.width={context['width']}; expected the same width in both")
    if "T" in model and model["T"] != schedule["T"]:
        raise UsageError(f"model.T={model['T']} disagrees with schedule.T={schedule['T']}; "
                         f"expected the same number of diffusion steps in both")
    steps = config.get("recommended", {}).get("steps")
    if steps is not None and steps > schedule["T"]:
        raise bad_value("recommended.steps", steps, f"at most schedule.T = {schedule['T']}")
    distilled, card = config.get("distilled"), config.get("recommended")
    if distilled:
        if max(distilled["steps"]) > schedule["T"]:
            raise bad_value("distilled.steps", distilled["steps"], f"step counts of at most schedule.T = {schedule['T']}")
        if card and (card["sampler"] != distilled["sampler"] or card["steps"] not in distilled["steps"]
                     or card["guidance"] != distilled["guidance"]):
            raise UsageError(f"recommended {card} disagrees with distilled (sampler {distilled['sampler']}, steps "
                             f"{distilled['steps']}, guidance {distilled['guidance']}); expected settings it was "
                             f"distilled for")


def _kind(value: Any) -> str:
    return "null" if value is None else {list: "a list", str: "a string", bool: "a boolean", int: "a number",
                                         float: "a number"}.get(type(value), type(value).__name__)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number (NaN and Infinity are refused)")


def _finite_float(text_: str) -> float:
    value = float(text_)
    if not math.isfinite(value):
        raise ValueError(f"{text_} overflows to infinity")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice in one object (which one counts is ambiguous)")
        seen[key] = value
    return seen
