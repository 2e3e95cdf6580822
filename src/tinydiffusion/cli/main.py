"""The command line: parse → config dataclass → one library call. Owns printing and exit codes.

Each command lives in the module of its concept (train, sample, data, quality); this one builds the parser,
runs the chosen handler, turns errors into exit codes, and holds ``serve``. Only the standard library is
imported at module level, so ``--help`` answers without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .types import DEVICE_HELP, EXIT_INTERRUPTED, EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from ..errors import UsageError

    try:
        return args.handler(args) or 0
    except UsageError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, RuntimeError) as e:
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from . import data, export, finetune, quality, sample, train

    parser = argparse.ArgumentParser(prog="tinydiffusion", description="Train context-conditioned image diffusion "
                                     "models and sample them with DDPM and DDIM.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in (train.add_train, sample.add_sample, data.add_data, _add_serve, quality.add_eval, quality.add_compare,
                quality.add_evaluator, sample.add_edit, sample.add_interpolate, quality.add_bench, train.add_distill,
                train.add_ema, finetune.add_finetune, export.add_export):
        add(commands)  # in this order in --help
    return parser


def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="the studio: a local web page to steer, watch and compare sampling",
                            description="Start the studio (needs the 'serve' extra): a web page and JSON API to sample "
                                        "the shipped models and the models exported under --runs, watch denoising "
                                        "live, compare samplers and follow training runs. Binds 127.0.0.1 by default.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; another address, e.g. "
                                                      "0.0.0.0, exposes the studio to the network, with a warning, "
                                                      "and then every request needs the token in the printed URL)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port, printed)")
    p.add_argument("--runs", nargs="+", action="extend", metavar="DIR",
                   help="folders of training runs to list and monitor (default: runs, if it exists)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--queue", type=int, default=8, help="jobs that may wait for the worker before requests are "
                                                        "told 429 (default 8)")
    p.set_defaults(handler=_serve)


def _serve(args) -> int:
    from ..studio.web.server import serve

    runs = args.runs if args.runs is not None else (["runs"] if os.path.isdir("runs") else [])
    serve(args.host, args.port, runs, args.device, args.queue)
    return 0


def _version() -> str:
    from .. import __version__

    return f"tinydiffusion {__version__}"
