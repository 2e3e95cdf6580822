"""What the command-line modules share: argparse types, ``given``, exit codes (standard library only: ``--help``
must not import torch).

A non-finite number is refused by argparse itself (exit 2, ``argument --guidance: expected a finite
number, got 'nan'``) before any config is built; the config dataclasses check the ranges.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import fields
from typing import Any, Callable

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
DEVICE_HELP = "auto (default), cpu, cuda or cuda:N"


def given(args: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """The options the user set (argparse defaults are None), keyed by the config's field names."""
    names = {f.name for f in fields(config_type)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def add_run_options(p, what: str, resume_help: str | None = None) -> None:
    """The options of every command that writes a resumable run folder (train, distill, finetune): --seed,
    --device, --resume, --overwrite and --no-progress, spelled and defaulted alike."""
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--resume", nargs="?", const="yes", choices=["yes", "auto"],
                   help=resume_help or f"continue the {what} in --out where it stopped")
    p.add_argument("--overwrite", action="store_true",
                   help="if --out already holds a run, move it aside (to OUT.old-<time>) and start a new one")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")


def reports() -> bool:
    """Under torchrun the ranks share the work and the first one reports."""
    return os.environ.get("RANK", "0") == "0"


def help_handler(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The handler of a command group given no command: its help, and the usage exit code."""
    def handler(args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    return handler


def one_of(choices: tuple[str, ...]) -> str:
    """``a, b or c``: choices in a help text."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else "".join(choices)


SNAP_HELP = ("text models: move each prompt toward the nearest caption the model was trained on, 0 (the prompt as "
             "typed) to 1 (that caption); the nearest caption is printed (default: the model card's, else 0)")


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


def name_list(text: str) -> tuple[str, ...]:
    """``type=name_list``: comma-separated names such as ``hero,item`` (blanks dropped)."""
    return tuple(n.strip() for n in text.split(",") if n.strip())
