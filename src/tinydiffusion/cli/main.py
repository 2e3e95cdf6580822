"""The command line: parse → config dataclass → one library call. Owns printing and exit codes.

Only the standard library is imported at module level, so ``--help`` answers without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from typing import Any, Sequence
from ..vocab import CONTEXT_KINDS, PRECISIONS, PREDICTIONS, SAMPLERS, SCHEDULES, SPACINGS, VARIANCES


EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


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
    parser = argparse.ArgumentParser(prog="tinydiffusion", description="Train context-conditioned image diffusion "
                                     "models and sample them with DDPM and DDIM.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_train(commands)
    _add_sample(commands)
    _add_data(commands)
    _add_serve(commands)
    from .quality import add_commands

    add_commands(commands, _given)
    from . import edit as cli_edit

    cli_edit.add_commands(commands, _given)
    from .bench import add_command

    add_command(commands, _given)
    from . import distill as cli_distill

    cli_distill.add_command(commands, _given)
    return parser


# ---------------------------------------------------------------------- train
def _add_train(commands) -> None:
    from .types import finite_float

    p = commands.add_parser("train", help="train a model (default: the embedded sprites, 3 minutes)",
                            description="Train a diffusion model. Everything of a run goes under --out; the EMA "
                                        "model is exported to OUT/model at the end (or on Ctrl-C).")
    p.add_argument("--out", default="runs/train", help="run folder (default: runs/train)")
    p.add_argument("--resume", nargs="?", const="yes", choices=["yes", "auto"],
                   help="continue the run in --out exactly where it stopped; '--resume auto' starts a fresh run "
                        "when there is no state yet (for torchrun --max-restarts)")
    p.add_argument("--overwrite", action="store_true",
                   help="if --out already holds a run, move it aside (to OUT.old-<time>) and start a new one")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="'sprites' (default, embedded), 'emoji', a folder with one sub-folder per class, "
                                  "an .npz, or the course's images .npy")
    g.add_argument("--labels", help="the course's one-hot labels .npy (N×K) for an images .npy")
    g.add_argument("--class-names", type=_names, help="comma-separated class names for --labels columns")
    g.add_argument("--skip-bad-files", action="store_true", default=None, help="skip and count unreadable images")
    g.add_argument("--context", choices=CONTEXT_KINDS,
                   help="condition on class labels (default), caption embeddings (text), vectors from "
                        "--context-file, or nothing")
    g.add_argument("--encoder", help="text encoder for --context text: minilm (default; needs the 'text' extra) "
                                     "or hash (a fast word-hashing stand-in)")
    g.add_argument("--context-file", help="for --context vector: an .npy array [N, D], one row per image")
    g.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no horizontal flips")
    g.add_argument("--no-balance", dest="balance", action="store_false", default=None,
                   help="draw images uniformly instead of equally per class")
    g = p.add_argument_group("model")
    g.add_argument("--model", help="preset: tiny, small (default), base (GPU) or course")
    g.add_argument("--image-size", type=int, help="training resolution in pixels (default 16)")
    g.add_argument("--schedule", choices=SCHEDULES, help="noise schedule (default linear)")
    g.add_argument("--T", type=int, dest="T", help="diffusion steps (default 500)")
    g.add_argument("--prediction", choices=PREDICTIONS, help="network target (default v)")
    g.add_argument("--zero-terminal-snr", action=argparse.BooleanOptionalAction, default=None,
                   help="rescale the schedule so its last step is pure noise (default: on for v and x0, "
                        "off for eps, which cannot use it)")
    g.add_argument("--snr-gamma", type=finite_float, help="Min-SNR-gamma loss weighting (e.g. 5)")
    g = p.add_argument_group("optimisation")
    for flag, kind, text in [("--batch-size", int, "images per optimizer step, all processes together (the global "
                                                    "batch; under torchrun split evenly across them; default 32)"),
                             ("--lr", finite_float, "peak AdamW learning rate (default 2e-3)"),
                             ("--warmup", int, "warm-up steps (default 100)"),
                             ("--weight-decay", finite_float, "AdamW weight decay (default 0)"),
                             ("--grad-clip", finite_float, "gradient norm clip (default 1; 0 turns it off)"),
                             ("--ema-decay", finite_float, "EMA decay of the exported weights (default 0.995)"),
                             ("--p-uncond", finite_float, "probability of dropping the context (default 0.1)")]:
        g.add_argument(flag, type=kind, help=text)
    g = p.add_argument_group("budget (the first reached stops training; default 3 minutes)")
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--epochs", type=finite_float, help="passes over the data")
    g.add_argument("--minutes", type=finite_float, help="wall-clock minutes")
    g = p.add_argument_group("run")
    g.add_argument("--sample-every", type=int, help="write a sample grid every N steps (default 500)")
    g.add_argument("--checkpoint-every", type=int, help="save the training state every N steps (default 500)")
    g.add_argument("--checkpoint-minutes", type=finite_float, help="and at least every M minutes (default 5)")
    g.add_argument("--nonfinite-limit", type=int, help="stop after N consecutive steps with a non-finite loss or "
                                                       "gradient (each is skipped; default 10)")
    g.add_argument("--log-every", type=int, help="metrics.csv row every N steps (default 25)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    g.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network (default fp32)")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.set_defaults(handler=_train)


def _train(args) -> int:
    from ..training.train import TrainConfig, train

    config = TrainConfig(**_given(args, TrainConfig))
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only the first process reports
    notify = (lambda text: print(text, file=sys.stderr, flush=True)) if main_rank else None
    resume = {"yes": True, "auto": "auto", None: False}[args.resume]
    result = train(config, resume=resume, overwrite=args.overwrite, notify=notify)
    if not main_rank:
        return EXIT_INTERRUPTED if result.interrupted else 0
    print(f"trained {result.step} steps in {result.seconds:.0f} s (last loss {result.loss:.4f})")
    print(f"  model:    {result.model_dir}   (sample it: tinydiffusion sample {result.model_dir})")
    print(f"  samples:  {result.out / 'samples'}")
    print(f"  metrics:  {result.out / 'metrics.csv'}")
    print(f"  state:    {result.out / 'state.pt'}")
    if result.interrupted:
        print(f"interrupted: state saved at step {result.step}; continue with: tinydiffusion train --out "
              f"{result.out} --resume")
        return EXIT_INTERRUPTED
    return 0


# ---------------------------------------------------------------------- sample
def _add_sample(commands) -> None:
    from .types import finite_float, finite_floats

    p = commands.add_parser("sample", help="sample a trained model",
                            description="Sample a model folder. By default one row per class, --n images each.")
    p.add_argument("model", help="a shipped model (sprites, emoji) or an exported model folder (e.g. runs/train/model)")
    p.add_argument("--sampler", choices=SAMPLERS, help="ddpm, ddim, dpmpp_2m, euler or consistency (default: the model "
                                                            "card's recommendation, e.g. dpmpp_2m for the shipped models)")
    p.add_argument("--steps", type=int, help="network evaluations (default: the model card's with its sampler; "
                                             "else all T for ddpm, 50 for ddim and "
                                             "euler, 20 for dpmpp_2m)")
    p.add_argument("--eta", type=finite_float, help="ddim noise, 0 (deterministic, default) to 1")
    p.add_argument("--variance", choices=VARIANCES, help="ddpm noise level: beta_t (large) or beta~_t")
    p.add_argument("--no-extra-noise", dest="extra_noise", action="store_false", default=None,
                   help="ddpm without the added noise (shows the collapse to the data average)")
    p.add_argument("--spacing", choices=SPACINGS, help="time grid (default trailing)")
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance scale (1 = none; 2–5 typical; default: "
                                                             "the model card's)")
    p.add_argument("--guidance-rescale", type=finite_float, help="guidance rescale phi in [0, 1] (default 0)")
    p.add_argument("--clip-x0", action="store_true", default=None, help="clip each predicted x0 to [-1, 1]")
    p.add_argument("--prediction", choices=PREDICTIONS,
                   help="refuse the model unless it was trained for this target")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="refuse the model unless it was trained with this schedule")
    p.add_argument("--context", dest="contexts", action="append",
                   help="class name or mixture ('hero', 'hero=1,item=0.6', 'monster+spell', 'none'); "
                        "repeat for more rows (default: every class)")
    p.add_argument("--prompt", dest="contexts", action="append",
                   help="a text prompt for a text-conditioned model (same as --context); repeat for more rows")
    p.add_argument("--prompt-to", help="interpolate from the one --prompt to this prompt, at the --mix weights")
    p.add_argument("--mix", type=finite_floats, help="comma-separated weights for --prompt-to, e.g. 0,0.25,0.5,0.75,1")
    p.add_argument("--context-file", help="an .npy of context vectors [K, D] for a vector-conditioned model")
    p.add_argument("--n", type=int, help="images per row (default 8)")
    p.add_argument("--seed", type=int, help="seed of the first column (default 0)")
    p.add_argument("--out", help="a .png grid (default samples.png), an .npz of raw images, or a folder")
    p.add_argument("--gif", help="also write the denoising animation to this .gif")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 64)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network (default fp32)")
    p.set_defaults(handler=_sample)


def _sample(args) -> int:
    from ..sampling.generate import SampleConfig, sample_to_files

    values = _given(args, SampleConfig)
    for key in ("contexts", "mix"):
        if key in values:
            values[key] = tuple(values[key])
    result = sample_to_files(SampleConfig(**values))
    if os.environ.get("RANK", "0") != "0":  # under torchrun the ranks share the work; the first one reports
        return 0
    per_image = result.seconds / result.count
    used = result.settings
    carded = [k for k in ("sampler", "guidance") if k not in values]
    if carded:
        steps = "" if used["steps"] is None else f", {used['steps']} steps"
        other = "a distilled student: it samples only in the settings it was distilled for" if result.distilled else \
            "the textbook DDPM over all steps: --sampler ddpm --guidance 1"
        print(f"the model card's recommendation for {' and '.join(carded)}: {used['sampler']}{steps}, guidance "
              f"{used['guidance']:g} ({other})")
    print(f"{result.count} images with {used['sampler']}, {result.nfe} network evaluations each: "
          f"{result.seconds:.2f} s wall time ({per_image * 1000:.1f} ms per image)")
    for path in result.paths:
        print(f"  wrote {path}")
    return 0


# ---------------------------------------------------------------------- data
def _add_data(commands) -> None:
    p = commands.add_parser("data", help="inspect data sets")
    sub = p.add_subparsers(title="data commands", metavar="COMMAND")
    info = sub.add_parser("info", help="count images per class")
    info.add_argument("data", nargs="?", default="sprites", help="as for train --data (default: sprites)")
    info.add_argument("--labels", help="the course's one-hot labels .npy")
    info.add_argument("--class-names", type=_names, help="comma-separated class names")
    info.add_argument("--skip-bad-files", action="store_true", help="skip and count unreadable images")
    info.set_defaults(handler=_data_info)
    pack = sub.add_parser("pack", help="write a data set as one uncompressed .npy that training reads from disk",
                          description="Pack any data source into an uncompressed uint8 N×S×S×3 .npy (OUT) with its "
                                      "labels, class names and captions beside it (data.npy → data.meta.npz). "
                                      "--data data.npy then reads it memory-mapped: batches read only their own "
                                      "rows, so a set larger than RAM trains from disk. A folder is read image by "
                                      "image and an images .npy memory-mapped, so packing never holds the set whole.")
    pack.add_argument("data", help="as for train --data: sprites, emoji, a folder of class sub-folders, an .npz, "
                                   "or an images .npy (with --labels)")
    pack.add_argument("--out", required=True, help="the .npy to write, e.g. data.npy (refused if it exists)")
    pack.add_argument("--image-size", "--size", dest="image_size", type=int,
                      help="side of the packed images in pixels (default: the source's; 32 for a folder); "
                           "train with the same --image-size to read them from disk")
    pack.add_argument("--labels", help="the course's one-hot labels .npy for an images .npy")
    pack.add_argument("--class-names", type=_names, help="comma-separated class names for --labels columns")
    pack.add_argument("--skip-bad-files", action="store_true", help="skip and count unreadable images")
    pack.add_argument("--overwrite", action="store_true", help="replace OUT (and its .meta.npz) if they exist")
    pack.set_defaults(handler=_data_pack)
    p.set_defaults(handler=lambda args: (p.print_help(), EXIT_USAGE)[1])


def _data_info(args) -> int:
    from ..data.sources import load_dataset

    d = load_dataset(args.data, labels=args.labels, class_names=args.class_names, skip_bad_files=args.skip_bad_files)
    print(f"{d.name}: {len(d)} images, {d.size}×{d.size} RGB" + (f", {d.skipped} bad files skipped" if d.skipped else "")
          + (" (packed: read from disk, memory-mapped)" if d.mapped else ""))
    counts = d.counts()
    width = max([len(n) for n in counts] + [5])
    for name, count in counts.items():
        print(f"  {name:<{width}}  {count:>6}")
    if not counts:
        print("  (no class labels)")
    if d.captions is not None:
        print(f"  captions, e.g.: {', '.join(repr(str(c)) for c in d.captions[:: max(1, len(d) // 4)][:4])}")
    return 0


def _data_pack(args) -> int:
    from ..data.pack import pack_dataset, sidecar

    d = pack_dataset(args.data, args.out, labels=args.labels, class_names=args.class_names, size=args.image_size,
                     skip_bad_files=args.skip_bad_files, overwrite=args.overwrite)
    megabytes = d.images.nbytes / 2**20
    print(f"packed {len(d)} images, {d.size}×{d.size} RGB ({megabytes:.0f} MiB) into {args.out}"
          + (f", {len(d.class_names)} classes" if d.labels is not None else ", no class labels")
          + (f", {d.skipped} bad files skipped" if d.skipped else ""))
    print(f"  labels, class names, captions: {sidecar(args.out)}")
    print(f"  train from disk: tinydiffusion train --data {args.out} --image-size {d.size}")
    return 0


# ---------------------------------------------------------------------- serve
def _add_serve(commands) -> None:
    p = commands.add_parser("serve", help="the studio: a local web page to steer, watch and compare sampling",
                            description="Start the studio (needs the 'serve' extra): a web page and JSON API to sample "
                                        "the shipped models and the models exported under --runs, watch denoising "
                                        "live, compare samplers and follow training runs. Binds 127.0.0.1 by default.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 exposes the "
                                                      "studio to the network, with a warning)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--runs", nargs="+", action="extend", metavar="DIR",
                   help="folders of training runs to list and monitor (default: runs, if it exists)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--queue", type=int, default=8, help="jobs that may wait for the worker before requests are "
                                                        "told 429 (default 8)")
    p.set_defaults(handler=_serve)


def _serve(args) -> int:
    from ..studio.server import serve

    runs = args.runs if args.runs is not None else (["runs"] if os.path.isdir("runs") else [])
    serve(args.host, args.port, runs, args.device, args.queue)
    return 0


# ---------------------------------------------------------------------- helpers
def _given(args: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """The options the user set (argparse defaults are None), keyed by the config's field names."""
    names = {f.name for f in fields(config_type)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _version() -> str:
    from .. import __version__

    return f"tinydiffusion {__version__}"

