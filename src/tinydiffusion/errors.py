"""The one exception type raised at the library and CLI boundary for bad input."""

from __future__ import annotations

from typing import Any


class UsageError(ValueError):
    """Bad input from a user: the message names the parameter, the value and what is allowed.

    The CLI prints it without a traceback and exits with status 2.
    """


def bad_value(param: str, value: Any, allowed: str) -> UsageError:
    """Build the standard message: ``steps=0 is not allowed: expected an integer in 1..500``."""
    return UsageError(f"{param}={value!r} is not allowed: expected {allowed}")
