"""Copy a trained model into the package as a shipped model: fp16 weights, config, and a model card.

    python scripts/ship_model.py RUN/model NAME --card "how it was trained" [--eval eval.json]

Run by a developer once per release; users get the result with ``tinydiffusion sample NAME``.
The weights are stored in fp16 (half the size); ``tinydiffusion.load`` computes in fp32.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ASSETS = Path(__file__).resolve().parents[1] / "src" / "tinydiffusion" / "assets" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("name")
    parser.add_argument("--card", required=True, help="Markdown: command, seed, duration, hardware")
    parser.add_argument("--eval", type=Path, help="an eval.json of this model, quoted in the card")
    args = parser.parse_args()
    out = ASSETS / args.name
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in load_file(args.model / "model.safetensors").items()}
    save_file(weights, out / "model.safetensors")
    config = json.loads((args.model / "config.json").read_text())
    config["shipped_as"] = args.name
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = [f"# Shipped model `{args.name}`", "", args.card.strip(), ""]
    if args.eval:
        r = json.loads(args.eval.read_text())
        s = r["settings"]
        card += ["## Evaluation (`tinydiffusion eval`)", "",
                 f"{r['samples']} samples ({s['per_class']} per class), {s['sampler']} {s['steps']} steps, "
                 f"guidance {s['guidance']}, evaluator `{s['evaluator']}`:", "",
                 "| FD-domain | KID | precision | recall | conditional accuracy | memorised share |",
                 "|---:|---:|---:|---:|---:|---:|",
                 f"| {r['fd_domain']:.2f} ± {r['fd_domain_bootstrap_std']:.2f} | {r['kid']:.4f} | {r['precision']:.3f} "
                 f"| {r['recall']:.3f} | {r['conditional_accuracy']:.1%} | {r['memorised_share']:.1%} |", ""]
    (out / "README.md").write_text("\n".join(card))
    print(f"shipped {args.name}: {sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB in {out}")


if __name__ == "__main__":
    main()
