"""Command-line parts for measuring quality: ``eval``, ``compare`` and ``evaluator train``.

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

import argparse
import os

from ..vocab import PRECISIONS
from .types import finite_float


def add_commands(commands, given) -> None:
    """Register the subcommands; ``given(args, ConfigType)`` picks the options the user set."""
    p = commands.add_parser("eval", help="score a class-conditional model: FD-domain, KID, precision/recall, "
                                         "conditional accuracy, memorisation",
                            description="Generate --per-class seeded samples per class and score them in the "
                                        "domain evaluator's feature space. Writes --out (JSON) and a grid of the "
                                        "samples closest to a training image beside it.")
    p.add_argument("model", help="an exported model folder")
    _common(p)
    p.add_argument("--sampler", help="sampler (default: the model card's, e.g. dpmpp_2m for the shipped models)")
    p.add_argument("--steps", type=int, help="steps (default: the model card's with its sampler)")
    p.add_argument("--memorisation-threshold", type=finite_float,
                   help="RMS pixel distance in [-1, 1] units below which a sample counts as a copy (default 0.1)")
    p.add_argument("--memorisation-ratio", type=finite_float,
                   help="a copy must also be closer than this share of the mean distance to the sample's 50 "
                        "nearest training images (default 0.5)")
    p.add_argument("--out", help="report file (default eval.json)")
    p.set_defaults(handler=lambda args: _eval(args, given))

    p = commands.add_parser("compare", help="samplers × steps from the same noise: quality vs steps and seconds",
                            description="Run a grid of SAMPLER:STEPS settings from the same seeded noise; writes "
                                        "compare.json/.csv, compare_steps.png, compare_seconds.png, compare_accuracy.png and "
                                        "compare_grid.png (a row per setting, a column per seed) into --out.")
    p.add_argument("model", help="an exported model folder")
    _common(p)
    p.add_argument("--settings", type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()),
                   help="comma-separated SAMPLER:STEPS (default: ddpm 500/250/100, ddim 10–500, dpmpp_2m 5–50; "
                        "for a distilled student, its own sampler at every step count it was distilled for)")
    p.add_argument("--students", nargs="+", action="extend", metavar="STUDENT",
                   help="distilled students to add beside MODEL's settings, each at every step count it was "
                        "distilled for: model folders, or distill folders (every stage's student)")
    p.add_argument("--out", help="output folder (default runs/compare)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(handler=lambda args: _compare(args, given))

    p = commands.add_parser("evaluator", help="train the domain classifier behind eval and compare")
    sub = p.add_subparsers(title="evaluator commands", metavar="COMMAND")
    t = sub.add_parser("train", help="train an evaluator on a labelled data set with a held-out split")
    t.add_argument("--data", help="labelled data (default sprites)")
    t.add_argument("--out", help="output folder (default runs/evaluator)")
    t.add_argument("--epochs", type=int, help="passes over the training split per member (default 100)")
    t.add_argument("--size", type=int, help="input size in pixels (default 32)")
    t.add_argument("--low-size", type=int, help="also train on images shrunk to this size (default 16)")
    t.add_argument("--holdout", type=finite_float, help="held-out fraction per class (default 0.2)")
    t.add_argument("--width", type=int, help="channels of the first block (default 32)")
    t.add_argument("--members", type=int, help="ensemble members, each from its own seed (default 3)")
    t.add_argument("--batch-size", type=int, help="images per step (default 64)")
    t.add_argument("--lr", type=finite_float, help="peak AdamW learning rate (default 2e-3)")
    t.add_argument("--seed", type=int, help="random seed (default 0)")
    t.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    t.set_defaults(handler=lambda args: _evaluator_train(args, given))
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--evaluator", help="a shipped evaluator name (sprites) or an evaluator folder")
    p.add_argument("--data", help="the real data to compare with (default: what the model was trained on)")
    p.add_argument("--per-class", type=int, help="samples per class")
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance scale (default: the model card's; "
                                                         "a student always uses the one folded into it)")
    p.add_argument("--seed", type=int, help="first seed (default 1000)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 128)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network while sampling "
                                                               "(default fp32)")


def _eval(args, given) -> int:
    from ..quality.evaluate import EvalConfig, evaluate

    r = evaluate(EvalConfig(**given(args, EvalConfig)))
    if not _reports():
        return 0
    s = r["settings"]
    print(f"{r['samples']} samples ({s['per_class']} per class) with {s['sampler']}, {s['steps']} steps, guidance "
          f"{s['guidance']}, {s['precision']}: {r['seconds']:.1f} s ({r['images_per_second']:.1f} images/s)")
    print(f"  FD-domain             {r['fd_domain']:.3f} ± {r['fd_domain_bootstrap_std']:.3f} (bootstrap std)")
    print(f"  KID                   {r['kid']:.4f} ± {r['kid_std']:.4f}")
    print(f"  precision / recall    {r['precision']:.3f} / {r['recall']:.3f}")
    print(f"  conditional accuracy  {r['conditional_accuracy']:.1%}  (evaluator held-out: "
          f"{', '.join(f'{k} {v:.1%}' for k, v in r['evaluator_holdout_accuracy'].items())})")
    print(f"  memorised share       {r['memorised_share']:.1%}  (RMS pixel distance < {s['memorisation_threshold']} "
          f"and < {s['memorisation_ratio']} × the mean to the 50 nearest)")
    print(f"  wrote {s['out']}")
    return 0


def _compare(args, given) -> int:
    from ..quality.compare import CompareConfig, compare, table

    values = given(args, CompareConfig)
    if "students" in values:
        values["students"] = tuple(values["students"])
    config = CompareConfig(**values)
    rows = compare(config)
    if not _reports():
        return 0
    print(table(rows))
    print(f"  wrote {config.out}/compare.json, compare.csv, compare_steps.png, compare_seconds.png, compare_accuracy.png, compare_grid.png")
    return 0


def _reports() -> bool:
    """Under torchrun the ranks share the sampling and the first one reports."""
    return os.environ.get("RANK", "0") == "0"


def _evaluator_train(args, given) -> int:
    from ..quality.featurenet import EvaluatorConfig, train_evaluator

    config = EvaluatorConfig(**given(args, EvaluatorConfig))
    ev = train_evaluator(config)
    acc = ", ".join(f"{k} {v:.1%}" for k, v in ev.accuracy.items())
    print(f"evaluator for {list(ev.class_names)}: held-out accuracy {acc} on {ev.config['holdout_count']} images "
          f"({ev.config['train_seconds']:.0f} s)")
    print(f"  wrote {config.out}/config.json and model.safetensors")
    return 0
