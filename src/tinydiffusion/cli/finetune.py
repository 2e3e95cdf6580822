"""``tinydiffusion finetune``: teach a trained model a new class (or a new caption) from a folder of pictures.

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

import sys

from ..vocab import FINETUNE_METHODS, FINETUNE_MINUTES, PRECISIONS
from .types import EXIT_INTERRUPTED, add_run_options, finite_float, given


def add_finetune(commands) -> None:
    p = commands.add_parser("finetune", help="teach a model a new class from ~20 pictures, in minutes on a CPU",
                            description="Teach MODEL a new class (--class NAME) or, for a text model, what a caption "
                                        "means (--prompt), from a folder of pictures (20 is the measured case), "
                                        "replaying the model's own training data against forgetting. The training "
                                        "run is OUT/train (exact resume, metrics.csv, sample grids with the new class "
                                        "beside the old ones); OUT/model loads and samples like any model (an adapter: "
                                        "the base is named and never changed); OUT/report.md says how recognisable "
                                        "the concept is, how many samples copy the pictures, and what the old classes "
                                        "lost. docs/finetune.md has the measurements.")
    p.add_argument("base", metavar="MODEL", help="a shipped model (sprites, emoji) or an exported model folder")
    p.add_argument("--data", required=True, help="a folder of PNG/JPEG pictures of the concept (any size: centre-"
                                                 "cropped and resized as training does), or an .npz with 'images'")
    p.add_argument("--class", dest="name", metavar="NAME", help="the new class's name (class models)")
    p.add_argument("--prompt", help="text models: the caption of every picture (afterwards it draws the concept)")
    p.add_argument("--captions", metavar="FILE", help="text models: a JSON file {\"picture.png\": \"caption\", …}")
    p.add_argument("--out", default="runs/finetune", help="fine-tune folder (default: runs/finetune)")
    p.add_argument("--method", choices=FINETUNE_METHODS,
                   help="lora (default: a new context column and rank-4 LoRA on every convolution and linear layer), "
                        "column (the new column only: cannot forget) or full (every weight)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=finite_float, help=f"wall-clock minutes of training (default {FINETUNE_MINUTES:g})")
    g.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--replay", type=finite_float, help="share of each batch replayed from the model's training data "
                                                       "(default 0.5; 0 for --method column)")
    p.add_argument("--replay-data", help="what to replay (default: the data the model was trained on)")
    p.add_argument("--holdout", help="more pictures of the concept, not taught: the report's recognition is measured "
                                     "against them (else against the given pictures)")
    p.add_argument("--rank", type=int, help="LoRA rank (default 4)")
    p.add_argument("--alpha", type=finite_float, help="LoRA alpha: the update is scaled by alpha/rank (default: rank)")
    p.add_argument("--batch-size", type=int, help="images per optimizer step (default 32)")
    p.add_argument("--lr", type=finite_float, help="peak AdamW learning rate (default: the method's, docs/finetune.md)")
    p.add_argument("--sample-every", type=int, help="write a sample grid every N steps (default 100)")
    p.add_argument("--checkpoint-every", type=int, help="save the training state every N steps (default 100)")
    p.add_argument("--report-samples", type=int, help="samples per class the report scores (default 50; 0: none)")
    p.add_argument("--evaluator", help="the domain evaluator of the report (default: sprites)")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), help="auto (default): bf16 where the CPU or GPU runs "
                                                                      "it natively, else fp32")
    add_run_options(p, "fine-tune")
    p.set_defaults(handler=_finetune)
    c = commands.add_parser("compose", help="use several fine-tunes of one base together, each with a weight",
                            description="Write one adapter folder OUT from adapter folders made on the same base "
                                        "(finetune --method lora or column): their new classes side by side and "
                                        "their LoRA updates summed, each scaled by its weight. OUT loads and samples "
                                        "like any model; docs/finetune.md says how well it works.")
    c.add_argument("adapters", nargs="+", metavar="ADAPTER[=WEIGHT]",
                   help="a fine-tune's model folder (RUN/model), optionally =WEIGHT (default 1; at most 100 in size)")
    c.add_argument("--out", required=True, help="the composed model folder (must not exist)")
    c.set_defaults(handler=_compose)


def _finetune(args) -> int:
    from ..training.finetune import FinetuneConfig, finetune
    from ..training.finetune_report import lines

    config = FinetuneConfig(**given(args, FinetuneConfig))
    resume = {"yes": True, "auto": "auto", None: False}[args.resume]
    result = finetune(config, resume=resume, overwrite=args.overwrite,
                      notify=lambda text: print(text, file=sys.stderr, flush=True))
    if result.interrupted:
        print(f"interrupted: state saved at step {result.step}; continue with: tinydiffusion finetune {config.base} "
              f"--data {config.data} --out {result.out} … --resume")
        return EXIT_INTERRUPTED
    print(f"fine-tuned {result.step} steps in {result.seconds:.0f} s")
    print(f"  model:    {result.model_dir}   (sample it: tinydiffusion sample {result.model_dir} --context "
          f"{config.name or repr(config.prompt or 'PROMPT')})")
    print(f"  samples:  {result.out / 'train' / 'samples'}")
    print(f"  metrics:  {result.out / 'train' / 'metrics.csv'}")
    if result.report:
        print(f"  report:   {result.out / 'report.md'}")
        for line in lines(result.report):
            print(f"  {line}")
    return 0


def _compose(args) -> int:
    import argparse
    from pathlib import Path

    from ..errors import UsageError
    from ..models.adapter_file import compose
    from ..sampling.pipeline import resolve_model

    pairs = []
    for item in args.adapters:
        folder, _, weight = item.rpartition("=") if "=" in item else (item, "", "1")
        try:
            pairs.append((resolve_model(folder), finite_float(weight)))
        except argparse.ArgumentTypeError:
            raise UsageError(f"adapter weight {weight!r} in {item!r} is not allowed: expected ADAPTER=NUMBER, "
                             f"e.g. runs/finetune/model=0.5") from None
    if Path(args.out).exists():
        raise UsageError(f"--out {args.out} exists; expected a new folder for the composed model")
    out = compose(pairs, args.out)
    print(f"composed {len(pairs)} adapters into {out}   (sample it: tinydiffusion sample {out})")
    return 0
