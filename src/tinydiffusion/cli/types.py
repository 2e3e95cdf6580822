"""Argument types shared by the command-line modules (standard library only: ``--help`` must not import torch).

A non-finite number is refused by argparse itself (exit 2, ``argument --guidance: expected a finite
number, got 'nan'``) before any config is built; the config dataclasses check the ranges.
"""

from __future__ import annotations

import argparse
import math


def finite_float(text: str) -> float:
    """``type=finite_float``: a float option that refuses ``nan``, ``inf`` and non-numbers."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def finite_floats(text: str) -> tuple[float, ...]:
    """``type=finite_floats``: comma-separated finite numbers such as ``0,0.5,1``."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                values.append(finite_float(part))
            except argparse.ArgumentTypeError:
                raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers such as 0,0.5,1, "
                                                 f"got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers such as 0,0.5,1, got {text!r}")
    return tuple(values)


def int_list(text: str) -> tuple[int, ...]:
    """``type=int_list``: comma-separated integers such as ``1,16,64``."""
    try:
        values = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,16,64, got {text!r}")
    return values
