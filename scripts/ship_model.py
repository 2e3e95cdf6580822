"""Copy a trained model into the package as a shipped model: fp16 weights, config, a model card, interop files.

    python scripts/ship_model.py RUN/model NAME --card "how it was trained" [--eval eval.json] [--license mit]
    python scripts/ship_model.py --refresh NAME [--license mit]   # only the interop files of a shipped model

Run by a developer once per release; users get the result with ``tinydiffusion sample NAME``.
The weights are stored in fp16 (half the size); ``tinydiffusion.load`` computes in fp32. The interop files
(``tinydiffusion.export.hub``): ``scheduler_config.json`` for diffusers, the card's Hub front matter and
recommended settings, and model-spec keys in the safetensors header (the tensors themselves are not touched).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinydiffusion.export import hub

ASSETS = Path(__file__).resolve().parents[1] / "src" / "tinydiffusion" / "assets" / "models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("name", nargs="?")
    parser.add_argument("--card", help="Markdown: command, seed, duration, hardware")
    parser.add_argument("--eval", type=Path, help="an eval.json of this model, quoted in the card")
    parser.add_argument("--license", help="the Hub licence id of the weights (default: the card's, else mit)")
    parser.add_argument("--refresh", metavar="NAME", help="only rewrite the interop files of the shipped NAME")
    args = parser.parse_args()
    if args.refresh:
        write_interop(ASSETS / args.refresh, args.refresh, args.license)
        print(f"refreshed the interop files of {args.refresh}")
        return
    if args.model is None or args.name is None or not args.card:
        parser.error("MODEL NAME --card are required (or --refresh NAME)")
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
                 f"guidance {s['guidance']}, evaluator `{s['evaluator'] or 'sprites'}`:", "",
                 "| FD-domain | KID | precision | recall | conditional accuracy | memorised share |",
                 "|---:|---:|---:|---:|---:|---:|",
                 f"| {r['fd_domain']:.2f} ± {r['fd_domain_bootstrap_std']:.2f} | {r['kid']:.4f} | {r['precision']:.3f} "
                 f"| {r['recall']:.3f} | {r['conditional_accuracy']:.1%} | {r['memorised_share']:.1%} |", ""]
    (out / "README.md").write_text("\n".join(card))
    write_interop(out, args.name, args.license)
    print(f"shipped {args.name}: {sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB in {out}")


def write_interop(out: Path, name: str, license: str | None) -> None:
    """The interop files of a shipped folder, from its config.json; the safetensors keep their tensor bytes."""
    config = json.loads((out / "config.json").read_text())
    readme = (out / "README.md").read_text() if (out / "README.md").is_file() else ""
    license = license or hub.split_front_matter(readme)[0].get("license") or "mit"
    files = ("config.json", "model.safetensors", "README.md", "scheduler_config.json")
    (out / "README.md").write_text(hub.card(config, name, readme, license, files))
    (out / "scheduler_config.json").write_text(json.dumps(hub.scheduler_config(config), indent=2) + "\n")
    weights = (out / "model.safetensors").read_bytes()
    meta = hub.modelspec(config, name, license)
    (out / "model.safetensors").write_bytes(hub.safetensors_with_metadata(weights, meta))


if __name__ == "__main__":
    main()
