"""JSON shape checks built from ``checks``: each returns the value or raises ``UsageError`` naming the field,
the value and what is allowed. ``validate`` applies a table ``{field: (required, check)}`` to an object, so the
model file's tables (``modelfile.py``) read as what they allow."""

from __future__ import annotations

import json
from typing import Any, Callable

from ..checks import finite, integer
from ..errors import UsageError, bad_value
from ..vocab import NAME_SEPARATORS, NULL_WORDS

Check = Callable[[str, Any], Any]
Section = dict[str, tuple[bool, Check]]  # field -> (required, check)


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
        raise UsageError(f"{label} is {kind_of(d)}{shown(d)}; expected a JSON object with the fields "
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


def shown(value: Any) -> str:
    """`` (value)`` after a kind such as "a list", unless the kind says it all (null)."""
    return "" if value is None else f" ({_short(value)})"


def _short(value: Any) -> str:
    text_ = json.dumps(value, default=repr) if not isinstance(value, float) else repr(value)
    return text_ if len(text_) <= 60 else text_[:57] + "..."


def kind_of(value: Any) -> str:
    return "null" if value is None else {list: "a list", str: "a string", bool: "a boolean", int: "a number",
                                         float: "a number"}.get(type(value), type(value).__name__)
