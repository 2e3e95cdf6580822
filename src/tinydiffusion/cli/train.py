"""``tinydiffusion train`` and ``tinydiffusion distill``: the commands that train a model.

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

import argparse
import sys

from ..vocab import CONTEXT_KINDS, DISTILL_METHODS, PRECISIONS, PREDICTIONS, SCHEDULES
from .types import EXIT_INTERRUPTED, add_run_options, finite_float, finite_floats, given, name_list, reports


# ---------------------------------------------------------------------- train
def add_train(commands) -> None:
    p = commands.add_parser("train", help="train a model (default: the embedded sprites, 3 minutes)",
                            description="Train a diffusion model. Everything of a run goes under --out; the EMA "
                                        "model is exported to OUT/model at the end (or on Ctrl-C).")
    p.add_argument("--out", default="runs/train", help="run folder (default: runs/train)")
    _data_options(p.add_argument_group("data"))
    _model_options(p.add_argument_group("model"))
    _optimisation_options(p.add_argument_group("optimisation"))
    _budget_options(p.add_argument_group("budget (the first reached stops training; default 3 minutes)"))
    _run_options(p.add_argument_group("run"))
    p.set_defaults(handler=_train)


def _data_options(g) -> None:
    g.add_argument("--data", help="'sprites' (default, embedded), 'emoji', a folder with one sub-folder per class, "
                                  "an .npz, or the course's images .npy")
    g.add_argument("--labels", help="the course's one-hot labels .npy (N×K) for an images .npy")
    g.add_argument("--class-names", type=name_list, help="comma-separated class names for --labels columns")
    g.add_argument("--skip-bad-files", action="store_true", default=None, help="skip and count unreadable images")
    g.add_argument("--context", choices=CONTEXT_KINDS,
                   help="condition on class labels (default), caption embeddings (text), vectors from "
                        "--context-file, or nothing")
    g.add_argument("--encoder", help="text encoder for --context text: minilm (default; needs the 'text' extra) "
                                     "or hash (a fast word-hashing stand-in)")
    g.add_argument("--text-tokens", type=int, metavar="L",
                   help="for --context text: also condition on the caption's first L token states through "
                        "cross-attention (e.g. 8); 0 (default): the pooled sentence vector only, the course's design")
    g.add_argument("--context-file", help="for --context vector: an .npy array [N, D], one row per image")
    g.add_argument("--caption-alternatives", action=argparse.BooleanOptionalAction, default=None,
                   help="--context text: draw one of each image's alternative captions per step (emoji: names, "
                        "CLDR keywords); default off: it lowered prompt following at the budgets measured "
                        "(docs/text.md)")
    g.add_argument("--no-flip", dest="flip", action="store_false", default=None, help="no horizontal flips")
    g.add_argument("--no-balance", dest="balance", action="store_false", default=None,
                   help="draw images uniformly instead of equally per class")


def _model_options(g) -> None:
    g.add_argument("--model", help="preset: tiny, small (default), base (GPU) or course")
    g.add_argument("--image-size", type=int, help="training resolution in pixels (default 16)")
    g.add_argument("--schedule", choices=SCHEDULES, help="noise schedule (default linear)")
    g.add_argument("--T", type=int, dest="T", help="diffusion steps (default 500)")
    g.add_argument("--prediction", choices=PREDICTIONS, help="network target (default v)")
    g.add_argument("--zero-terminal-snr", action=argparse.BooleanOptionalAction, default=None,
                   help="rescale the schedule so its last step is pure noise (default: on for v and x0, "
                        "off for eps, which cannot use it)")
    g.add_argument("--snr-gamma", type=finite_float, help="Min-SNR-gamma loss weighting (e.g. 5)")


def _optimisation_options(g) -> None:
    for flag, kind, text in [("--batch-size", int, "images per optimizer step, all processes together (the global "
                                                    "batch; under torchrun split evenly across them; default 32)"),
                             ("--lr", finite_float, "peak AdamW learning rate (default 2e-3)"),
                             ("--warmup", int, "warm-up steps (default 100)"),
                             ("--weight-decay", finite_float, "AdamW weight decay (default 0)"),
                             ("--grad-clip", finite_float, "gradient norm clip (default 1; 0 turns it off)"),
                             ("--ema-decay", finite_float, "EMA decay of the exported weights (default 0.995)"),
                             ("--ema-snapshot-every", int, "also keep two power-function EMAs and snapshot them "
                                                           "every N steps into OUT/ema, so that `tinydiffusion ema` "
                                                           "can choose the EMA length after training (default 0: "
                                                           "off)"),
                             ("--p-uncond", finite_float, "probability of dropping the context (default 0.1)")]:
        g.add_argument(flag, type=kind, help=text)


def _budget_options(g) -> None:
    g.add_argument("--steps", type=int, help="optimizer steps")
    g.add_argument("--epochs", type=finite_float, help="passes over the data")
    g.add_argument("--minutes", type=finite_float, help="wall-clock minutes")


def _run_options(g) -> None:
    g.add_argument("--sample-every", type=int, help="write a sample grid every N steps (default 500)")
    g.add_argument("--checkpoint-every", type=int, help="save the training state every N steps (default 500)")
    g.add_argument("--checkpoint-minutes", type=finite_float, help="and at least every M minutes (default 5)")
    g.add_argument("--nonfinite-limit", type=int, help="stop after N consecutive steps with a non-finite loss or "
                                                       "gradient (each is skipped; default 10)")
    g.add_argument("--log-every", type=int, help="metrics.csv row every N steps (default 25)")
    g.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network (default fp32)")
    add_run_options(g, "run", "continue the run in --out exactly where it stopped; '--resume auto' starts a fresh "
                              "run when there is no state yet (for torchrun --max-restarts)")


def _train(args) -> int:
    from ..training.train import TrainConfig, train

    values = given(args, TrainConfig)
    config = TrainConfig(**values)
    main_rank = reports()  # under torchrun only the first process reports
    notify = _notify if main_rank else None
    result = train(config, resume=_resume(args), overwrite=args.overwrite, notify=notify, given=set(values))
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


# ---------------------------------------------------------------------- distill
def add_distill(commands) -> None:
    p = commands.add_parser("distill", help="distil a model into a student that samples in 1–8 network evaluations",
                            description="Train a student, initialised from TEACHER, that samples in --steps network "
                                        "evaluations per image with the teacher's guidance folded in (one fixed "
                                        "scale). Each stage is an ordinary training run under OUT/stages/K (EMA, "
                                        "exact resume, metrics.csv, sample grids); the last stage's student is "
                                        "exported to OUT/model.")
    p.add_argument("teacher", help="a shipped model (sprites, emoji) or an exported model folder")
    p.add_argument("--out", default="runs/distill", help="distillation folder (default: runs/distill)")
    p.add_argument("--method", choices=DISTILL_METHODS,
                   help="progressive (default: halve the steps per stage, DDIM students) or consistency (one stage, "
                        "one student for every step count on the teacher's grid)")
    p.add_argument("--steps", type=int, help="the student's network evaluations per image (default 4)")
    p.add_argument("--teacher-steps", type=int, help="the teacher's DDIM steps the first stage distils (default 16)")
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance folded into the student "
                                                         "(default: the teacher's model card, 3 for the shipped models)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iterations", type=int, help="optimizer steps per stage")
    g.add_argument("--minutes", type=finite_float, help="wall-clock minutes for the whole distillation, shared "
                                                        "equally by its stages")
    p.add_argument("--data", help="images to noise (default: the data the teacher was trained on)")
    p.add_argument("--batch-size", type=int, help="images per optimizer step (default 64)")
    p.add_argument("--lr", type=finite_float, help="peak AdamW learning rate (default 3e-4)")
    p.add_argument("--ema-decay", type=finite_float, help="EMA decay of the exported student (default 0.995)")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts teacher and student (default fp32)")
    add_run_options(p, "distillation")
    p.set_defaults(handler=_distill)


def _distill(args) -> int:
    from ..training.distill import DistillConfig, distill

    config = DistillConfig(**given(args, DistillConfig))
    result = distill(config, resume=_resume(args), overwrite=args.overwrite, notify=_notify)
    for stage in result.stages:
        print(f"  stage {stage['steps']:>3} step(s): {stage['iterations']} iterations, {stage['seconds']:.0f} s "
              f"training ({stage['wall_seconds']:.0f} s wall)  {stage['model']}")
    if result.interrupted:
        print(f"interrupted: the state is saved; continue with: tinydiffusion distill {config.teacher} --out "
              f"{result.out} --resume")
        return EXIT_INTERRUPTED
    print(f"student: {result.model_dir}   (sample it: tinydiffusion sample {result.model_dir})")
    return 0


# ---------------------------------------------------------------------- ema
def add_ema(commands) -> None:
    p = commands.add_parser("ema", help="choose the EMA length after training: export a run averaged at any length",
                            description="Post-hoc EMA (EDM2): from the snapshots a run trained with "
                                        "--ema-snapshot-every N keeps in RUN/ema, reconstruct its network averaged "
                                        "over the last SIGMA_REL of the run (0.05: the last 5%%, about) and export "
                                        "it as a model folder, one per length; then compare them with eval.")
    p.add_argument("run", help="the run folder (with ema/ and model/)")
    p.add_argument("--sigma-rel", required=True, type=finite_floats, metavar="S[,S…]",
                   help="relative EMA lengths in (0, 0.28], e.g. 0.05,0.1,0.2")
    p.add_argument("--out", help="the model folder to write (one length only; default RUN/model-ema-S)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder written before")
    p.set_defaults(handler=_ema)


def _ema(args) -> int:
    from ..errors import bad_value
    from ..training.posthoc_ema import POOR_FIT, SIGMA_RELS, export_length

    if args.out and len(args.sigma_rel) > 1:
        raise bad_value("out", args.out, "left out when several --sigma-rel are given (each gets RUN/model-ema-S)")
    for target in args.sigma_rel:
        out, record = export_length(args.run, target, args.out, overwrite=args.overwrite)
        print(f"sigma_rel {target:g}: {out}   (from {record['snapshots']} snapshots to step {record['step']}; "
              f"profile fit residual {record['residual']:.3f})")
        if record["residual"] > POOR_FIT:
            print(f"  note: the snapshots make this length only roughly (residual above {POOR_FIT}): it lies outside "
                  f"the tracked {', '.join(f'{s:g}' for s in SIGMA_RELS)}, or the run kept too few snapshots")
    return 0


# ---------------------------------------------------------------------- shared
def _resume(args: argparse.Namespace) -> bool | str:
    """``--resume`` as the library takes it: True, "auto" (start fresh when there is no state) or False."""
    return {"yes": True, "auto": "auto", None: False}[args.resume]


def _notify(text: str) -> None:
    """Progress notes go to stderr, so stdout keeps only the results."""
    print(text, file=sys.stderr, flush=True)
