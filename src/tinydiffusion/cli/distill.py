"""``tinydiffusion distill``: a few-step student from an exported model (standard library at import)."""

from __future__ import annotations

import sys

from ..vocab import DISTILL_METHODS, PRECISIONS
from .types import finite_float

EXIT_INTERRUPTED = 130


def add_command(commands, given) -> None:
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
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts teacher and student (default fp32)")
    p.add_argument("--resume", nargs="?", const="yes", choices=["yes", "auto"],
                   help="continue the distillation in --out where it stopped")
    p.add_argument("--overwrite", action="store_true", help="move an existing --out aside and start anew")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.set_defaults(handler=lambda args: _distill(args, given))


def _distill(args, given) -> int:
    from ..training.distill import DistillConfig, distill

    config = DistillConfig(**given(args, DistillConfig))
    resume = {"yes": True, "auto": "auto", None: False}[args.resume]
    result = distill(config, resume=resume, overwrite=args.overwrite,
                     notify=lambda text: print(text, file=sys.stderr, flush=True))
    for stage in result.stages:
        print(f"  stage {stage['steps']:>3} step(s): {stage['iterations']} iterations, {stage['seconds']:.0f} s "
              f"training ({stage['wall_seconds']:.0f} s wall)  {stage['model']}")
    if result.interrupted:
        print(f"interrupted: the state is saved; continue with: tinydiffusion distill {config.teacher} --out "
              f"{result.out} --resume")
        return EXIT_INTERRUPTED
    print(f"student: {result.model_dir}   (sample it: tinydiffusion sample {result.model_dir})")
    return 0
