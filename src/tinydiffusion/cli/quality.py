"""Measuring: ``eval``, ``compare``, ``evaluator train`` (quality) and ``bench`` (speed).

Standard library only at module level (``--help`` must not import torch).
"""

from __future__ import annotations

import argparse

from ..vocab import PRECISIONS
from .types import DEVICE_HELP, SNAP_HELP, finite_float, finite_floats, given, help_handler, int_list, name_list, reports


# ---------------------------------------------------------------------- eval
def add_eval(commands) -> None:
    p = commands.add_parser("eval", help="score a model: FD-domain, KID, precision/recall, conditional accuracy, "
                                         "memorisation; for a text model, prompt following",
                            description="A class model: generate --per-class seeded samples per class and score them "
                                        "in the domain evaluator's feature space; writes --out (JSON) and a grid of "
                                        "the samples closest to a training image beside it. A text model: generate "
                                        "--per-prompt samples for each held-out caption and each paraphrased prompt "
                                        "and report the share the evaluator recognises as the prompt's category, "
                                        "beside the ceiling (real images) and chance (shuffled prompts).")
    p.add_argument("model", help="an exported model folder")
    _common(p)
    p.add_argument("--snap", type=finite_float, metavar="S", help=SNAP_HELP)
    p.add_argument("--sampler", help="sampler (default: the model card's, e.g. dpmpp_2m for the shipped models)")
    p.add_argument("--steps", type=int, help="steps (default: the model card's with its sampler)")
    p.add_argument("--per-prompt", type=int, help="a text model: samples per prompt (default 8)")
    p.add_argument("--memorisation-threshold", type=finite_float,
                   help="RMS pixel distance in [-1, 1] units below which a sample counts as a copy (default 0.1)")
    p.add_argument("--memorisation-ratio", type=finite_float,
                   help="a copy must also be closer than this share of the mean distance to the sample's 50 "
                        "nearest training images (default 0.5)")
    p.add_argument("--out", help="report file (default eval.json)")
    p.set_defaults(handler=_eval)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--evaluator", help="a shipped evaluator name (sprites, emoji) or an evaluator folder (default: "
                                       "the one of the model's data)")
    p.add_argument("--data", help="the real data to compare with (default: what the model was trained on)")
    p.add_argument("--per-class", type=int, help="samples per class")
    p.add_argument("--guidance", type=finite_float, help="classifier-free guidance scale (default: the model card's; "
                                                         "a student always uses the one folded into it)")
    p.add_argument("--guidance-interval", type=finite_floats, metavar="LO,HI",
                   help="guide only where (t+1)/T is in (LO, HI]; 0,1 = everywhere (default: the model card's)")
    p.add_argument("--guide", metavar="MODEL", help="autoguidance by this weaker model; 'none': none (default: the "
                                                    "model card's)")
    p.add_argument("--guide-scale", type=finite_float, metavar="W",
                   help="with --guide: autoguidance at W beside classifier-free guidance at --guidance (default: the "
                        "model card's, else the guide replaces the unconditional branch)")
    p.add_argument("--seed", type=int, help="first seed (default 1000)")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default 128)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--precision", choices=PRECISIONS, help="bf16 autocasts the network while sampling "
                                                           "(default fp32)")


def _eval(args) -> int:
    from ..quality.evaluate import EvalConfig, evaluate

    r = evaluate(EvalConfig(**given(args, EvalConfig)))
    if not reports():
        return 0
    s = r["settings"]
    if "prompt_following" in r:
        return _prompt_report(r)
    levers = (f", on (t+1)/T in ({s['guidance_interval'][0]:g}, {s['guidance_interval'][1]:g}]"
              if s.get("guidance_interval") else "") + (f", autoguided by {s['guide']}" if s.get("guide") else "") + \
        (f" at {s['guide_scale']:g} beside it" if s.get("guide") and s.get("guide_scale") is not None else "")
    print(f"{r['samples']} samples ({s['per_class']} per class) with {s['sampler']}, {s['steps']} steps, guidance "
          f"{s['guidance']}{levers}, {s['precision']}: {r['seconds']:.1f} s ({r['images_per_second']:.1f} images/s)")
    print(f"  FD-domain             {r['fd_domain']:.3f} ± {r['fd_domain_bootstrap_std']:.3f} (bootstrap std)")
    print(f"  KID                   {r['kid']:.4f} ± {r['kid_std']:.4f}")
    print(f"  precision / recall    {r['precision']:.3f} / {r['recall']:.3f}")
    print(f"  conditional accuracy  {r['conditional_accuracy']:.1%}  (evaluator held-out: "
          f"{', '.join(f'{k} {v:.1%}' for k, v in r['evaluator_holdout_accuracy'].items())})")
    print(f"  memorised share       {r['memorised_share']:.1%}  (RMS pixel distance < {s['memorisation_threshold']} "
          f"and < {s['memorisation_ratio']} × the mean to the 50 nearest)")
    print(f"  wrote {s['out']}")
    return 0


def _prompt_report(r: dict) -> int:
    s = r["settings"]
    snap = f", prompts snapped {s['snap']:g} to the nearest training caption" if s.get("snap") else ""
    print(f"prompt following of {r['model']} with {s['sampler']}, {s['steps']} steps, guidance {s['guidance']}{snap}, "
          f"{s['per_prompt']} samples per prompt: {r['seconds']:.1f} s")
    for name, m in r["prompt_following"].items():
        print(f"  {name:<18} {m['accuracy']:.1%} recognised ({m['prompts']} prompts)  ceiling {m['ceiling']:.1%} "
              f"(real images; ratio {m['ratio_to_ceiling']:.2f})  chance {m['chance']:.1%} (shuffled prompts)")
    print(f"  wrote {s['out']}")
    return 0


# ---------------------------------------------------------------------- compare
def add_compare(commands) -> None:
    p = commands.add_parser("compare", help="samplers × steps from the same noise: quality vs steps and seconds",
                            description="Run a grid of SAMPLER:STEPS settings from the same seeded noise; writes "
                                        "compare.json/.csv, compare_steps.png, compare_seconds.png, compare_accuracy.png and "
                                        "compare_grid.png (a row per setting, a column per seed) into --out.")
    p.add_argument("model", help="an exported model folder")
    _common(p)
    p.add_argument("--settings", type=name_list,
                   help="comma-separated SAMPLER:STEPS (default: ddpm 500/250/100, ddim 10–500, dpmpp_2m 5–50; "
                        "for a distilled student, its own sampler at every step count it was distilled for)")
    p.add_argument("--students", nargs="+", action="extend", metavar="STUDENT",
                   help="distilled students to add beside MODEL's settings, each at every step count it was "
                        "distilled for: model folders, or distill folders (every stage's student)")
    p.add_argument("--out", help="output folder (default runs/compare)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(handler=_compare)


def _compare(args) -> int:
    from ..quality.compare import CompareConfig, compare, table

    values = given(args, CompareConfig)
    if "students" in values:
        values["students"] = tuple(values["students"])
    config = CompareConfig(**values)
    rows = compare(config)
    if not reports():
        return 0
    print(table(rows))
    print(f"  wrote {config.out}/compare.json, compare.csv, compare_steps.png, compare_seconds.png, compare_accuracy.png, compare_grid.png")
    return 0


# ---------------------------------------------------------------------- evaluator train
def add_evaluator(commands) -> None:
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
    t.add_argument("--device", help=DEVICE_HELP)
    t.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    t.set_defaults(handler=_evaluator_train)
    p.set_defaults(handler=help_handler(p))


def _evaluator_train(args) -> int:
    from ..quality.featurenet import EvaluatorConfig, train_evaluator

    config = EvaluatorConfig(**given(args, EvaluatorConfig))
    ev = train_evaluator(config)
    acc = ", ".join(f"{k} {v:.1%}" for k, v in ev.accuracy.items())
    print(f"evaluator for {list(ev.class_names)}: held-out accuracy {acc} on {ev.config['holdout_count']} images "
          f"({ev.config['train_seconds']:.0f} s)")
    print(f"  wrote {config.out}/config.json and model.safetensors")
    return 0


# ---------------------------------------------------------------------- bench
def add_bench(commands) -> None:
    p = commands.add_parser("bench", help="measure speed: matmul ceiling, our presets vs the course network and "
                                          "diffusers, training images/s, ms per network evaluation",
                            description="Measure on this machine and print ratios ours/theirs; writes --out JSON.")
    p.add_argument("--presets", type=name_list,
                   help="comma-separated presets (default small,tiny,course; the first also gets the "
                        "speed variants: channels-last, one thread, no inference_mode)")
    p.add_argument("--no-variants", dest="variants", action="store_false", default=None,
                   help="skip the speed variants")
    p.add_argument("--no-diffusers", dest="diffusers", action="store_false", default=None,
                   help="skip the diffusers UNet2DModel")
    p.add_argument("--image-size", type=int, help="pixels (default 16)")
    p.add_argument("--batch-size", type=int, help="training batch (default 64)")
    p.add_argument("--eval-batches", type=int_list,
                   help="batch sizes for ms per network evaluation (default 1,16,64)")
    p.add_argument("--seconds", type=finite_float, help="seconds per measurement (default 3)")
    p.add_argument("--compile", action="store_true", default=None, help="also torch.compile each network")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--out", help="JSON report (default bench.json)")
    p.set_defaults(handler=_bench)


def _bench(args) -> int:
    from ..quality.bench import BenchConfig, bench

    config = BenchConfig(**given(args, BenchConfig))
    report = bench(config)
    print(format_report(report))
    if config.out:
        from ..store.files import write_json

        write_json(config.out, report)
        print(f"  wrote {config.out}")
    return 0


def format_report(report: dict) -> str:
    """The bench table (Markdown), then ratios of our presets to the course network and to diffusers."""
    c = report["ceiling_gflops"]
    precisions = [p for p in PRECISIONS if f"train_images_per_s_{p}" in report["networks"][0]]
    batches = report["settings"]["eval_batches"]
    lines = [f"{report['machine']}, {report['date']}; {report['settings']['image_size']}×"
             f"{report['settings']['image_size']} images, training batch {report['settings']['batch_size']}",
             f"matmul ceiling: fp32 {c['fp32']:.0f} GFLOP/s, bf16 {c['bf16']:.0f} GFLOP/s", "",
             "| network | parameters | MFLOP/image | precision | train images/s | train GFLOP/s (share of ceiling) | "
             + " | ".join(f"ms/eval b{b}" for b in batches) + " |",
             "|---|---:|---:|---|---:|---:|" + "---:|" * len(batches)]
    for r in report["networks"]:
        for p in precisions:
            lines.append(f"| {r['network']} | {r['parameters']:,} | {r['flops_per_image'] / 1e6:.0f} | {p} | "
                         f"{r[f'train_images_per_s_{p}']:.0f} | {r[f'train_gflops_{p}']:.0f} "
                         f"({r[f'train_share_of_ceiling_{p}']:.0%}) | "
                         + " | ".join(f"{r[f'ms_per_eval_b{b}_{p}']:.1f}" for b in batches) + " |")
    overhead = report["sampler_overhead_ms_per_step"]
    lines += ["", "sampler overhead per step (batch 64, network excluded): "
              + ", ".join(f"{k} {v:.2f} ms" for k, v in overhead.items())]
    by_name = {r["network"]: r for r in report["networks"]}
    for theirs in ("course", "diffusers UNet2DModel"):
        if theirs not in by_name:
            continue
        t = by_name[theirs]
        for r in report["networks"]:
            if r["network"] in ("course", "diffusers UNet2DModel"):
                continue
            best_ours = max(r[f"train_images_per_s_{p}"] for p in precisions)
            best_theirs = max(t[f"train_images_per_s_{p}"] for p in precisions)
            ms_ours = min(r[f"ms_per_eval_b{batches[-1]}_{p}"] for p in precisions)
            ms_theirs = min(t[f"ms_per_eval_b{batches[-1]}_{p}"] for p in precisions)
            lines.append(f"ratio {r['network']} / {theirs}: training images/s ×{best_ours / best_theirs:.2f}, "
                         f"sampling speed (b{batches[-1]}) ×{ms_theirs / ms_ours:.2f} (best precision of each)")
    v = report.get("variants")
    if v:
        lines += ["", f"speed settings on {v['network']} (fp32; ratio to as is, > 1 is faster): "
                  + ", ".join(f"{r['variant']} training ×{r['train_ratio']:.2f} sampling ×{r['eval_ratio']:.2f}"
                              for r in v["rows"][1:])]
    lines += report.get("notes", [])
    return "\n".join(lines)
