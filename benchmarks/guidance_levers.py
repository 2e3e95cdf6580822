"""The guidance levers on a class model, scored by the domain evaluator (a table, no assertion).

    .venv/bin/python benchmarks/guidance_levers.py sprites [--guide GUIDE_MODEL] [--evaluator sprites]
        [--per-class 100] [--intervals 0.1,0.75 0.2,0.9 0,0.5] [--scales 1.5 2 2.5 3] [--out runs/guidance_levers]

Rows, every one from the same seeds with the model card's sampler and steps (``eval``'s machinery,
``quality/evaluate.py``):
- plain classifier-free guidance at the card's scale, everywhere (``guidance_interval=(0, 1)``, no guide);
- the same scale with each guidance interval (``(t+1)/T`` in ``(lo, hi]``; ``docs/sampling.md``);
- with ``--guide``: autoguidance at each scale, everywhere and with the first interval, and beside classifier-free
  guidance at the card's scale at each ``--guide-scales`` (``guide_scale``: four evaluations per step).

The network evaluations per image are counted on both networks (the guide's are a second network). A guide is
the same family trained about 1/16 as long (Karras et al. 2024): the model's own training settings with
``--steps N/16`` into another ``--out``, or a smaller ``--model`` preset on the same data and schedule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tinydiffusion.quality.evaluate import EvalConfig, evaluate
from tinydiffusion.quality.featurenet import load_evaluator
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.sampling.plans import counting_evaluations

EVERYWHERE, NO_GUIDE = (0.0, 1.0), "none"


def interval(text: str) -> tuple[float, float]:
    lo, hi = (float(v) for v in text.split(","))
    return lo, hi


def settings(args, card_scale: float) -> list[tuple[str, dict]]:
    """``(label, EvalConfig overrides)`` for every row."""
    rows = [(f"cfg {card_scale:g}", {"guidance": card_scale, "guidance_interval": EVERYWHERE, "guide": NO_GUIDE})]
    rows += [(f"cfg {card_scale:g} on ({lo:g}, {hi:g}]", {"guidance": card_scale, "guidance_interval": (lo, hi),
                                                          "guide": NO_GUIDE}) for lo, hi in args.intervals]
    if args.guide:
        for w in args.scales:
            rows.append((f"autoguidance {w:g}", {"guidance": w, "guidance_interval": EVERYWHERE, "guide": args.guide}))
            if args.intervals:
                lo, hi = args.intervals[0]
                rows.append((f"autoguidance {w:g} on ({lo:g}, {hi:g}]",
                             {"guidance": w, "guidance_interval": (lo, hi), "guide": args.guide}))
        for w in args.guide_scales:  # the guide beside the unconditional branch: cfg over autoguidance
            rows.append((f"cfg {card_scale:g} + autoguidance {w:g}", {"guidance": card_scale, "guide_scale": w,
                                                                     "guidance_interval": EVERYWHERE,
                                                                     "guide": args.guide}))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="a class-conditional model (shipped name or folder)")
    p.add_argument("--guide", help="autoguidance's guide: a weaker model of the same data, size and schedule")
    p.add_argument("--evaluator", default="sprites")
    p.add_argument("--data", help="the real data (default: the model's training data)")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--intervals", type=interval, nargs="*", default=[(0.1, 0.75), (0.2, 0.9), (0.0, 0.5)],
                   help="LO,HI pairs; (0.1, 0.75] is the paper's EDM2 sigma interval (0.28, 5.42] on the shipped "
                        "schedule")
    p.add_argument("--scales", type=float, nargs="*", default=[1.5, 2.0, 2.5, 3.0], help="autoguidance scales")
    p.add_argument("--guide-scales", type=float, nargs="*", default=[2.0],
                   help="autoguidance scales beside classifier-free guidance at the card's scale (guide_scale)")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/guidance_levers")
    args = p.parse_args()

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pipe, ev = load(args.model, device=device), load_evaluator(args.evaluator)
    guide = pipe.load_guide(args.guide) if args.guide else None  # loaded (and checked) once, reused by every row
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    print(f"{'setting':<34}{'NFE':>5}{'(guide)':>8}{'FD-domain':>15}{'cond. acc':>10}{'prec/rec':>12}{'s':>7}")
    for label, over in settings(args, pipe.recommended["guidance"]):
        name = label.replace(" ", "_").replace(",", "").replace("(", "").replace("]", "")
        config = EvalConfig(str(args.model), evaluator=args.evaluator, data=args.data, per_class=args.per_class,
                            seed=args.seed, device=device, out=str(out / f"{name}.json"), **over)
        with counting_evaluations(pipe.model, guide.model if guide is not None else None) as seen:
            r = evaluate(config, pipeline=pipe, evaluator=ev)
        nfe, nfe_guide = seen[0] // r["samples"], (seen[2] // r["samples"] if len(seen) > 2 else 0)
        results.append({"setting": label, **over, "nfe": nfe, "nfe_guide": nfe_guide,
                        **{k: r[k] for k in ("fd_domain", "fd_domain_bootstrap_std", "conditional_accuracy",
                                             "precision", "recall", "kid", "seconds")}})
        print(f"{label:<34}{nfe:>5}{nfe_guide:>8}{r['fd_domain']:>9.2f}±{r['fd_domain_bootstrap_std']:<5.2f}"
              f"{r['conditional_accuracy']:>10.1%}{r['precision']:>6.2f}/{r['recall']:<5.2f}{r['seconds']:>7.1f}")
    (out / "guidance_levers.json").write_text(json.dumps({"model": str(args.model), "guide": args.guide,
                                                          "rows": results}, indent=1) + "\n")
    print(f"wrote {out / 'guidance_levers.json'}")


if __name__ == "__main__":
    main()
