"""Copy a trained evaluator into the package: fp16 weights, and its held-out accuracy measured again
with those fp16 weights (the figure `eval` reports and the tests check).

    python scripts/ship_evaluator.py runs/evaluator sprites

Run by a developer once per release; the model card (README.md beside the weights) is written by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tinydiffusion.data.batches import as_tensor
from tinydiffusion.data.load import load_dataset
from tinydiffusion.quality.featurenet import holdout_accuracy, holdout_split, load_evaluator

ASSETS = Path(__file__).resolve().parents[1] / "src" / "tinydiffusion" / "assets" / "evaluators"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluator", type=Path, help="the folder `tinydiffusion evaluator train` wrote")
    parser.add_argument("name")
    args = parser.parse_args()
    out = ASSETS / args.name
    staging = out.with_name(out.name + ".new")
    staging.mkdir(parents=True, exist_ok=True)
    weights = load_file(args.evaluator / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, staging / "model.safetensors")
    config = json.loads((args.evaluator / "config.json").read_text())
    config["weights_dtype"] = "float16"
    (staging / "config.json").write_text(json.dumps(config) + "\n")

    ev = load_evaluator(staging)  # fp16 weights, computed in fp32
    train_cfg = config["training"]
    data = load_dataset(train_cfg["data"], size=config["size"])
    _, test_idx = holdout_split(data, train_cfg["holdout"], train_cfg["seed"])
    accuracy = holdout_accuracy(ev, as_tensor(data.images), torch.from_numpy(data.labels), test_idx,
                                train_cfg["low_size"])
    print(f"held-out accuracy, fp32 weights: {config['holdout_accuracy']}; fp16 weights: {accuracy}")
    config["holdout_accuracy"] = accuracy
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if (out / "README.md").exists():
        shutil.copy(out / "README.md", staging / "README.md")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    print(f"shipped evaluator {args.name}: {sum(p.stat().st_size for p in out.iterdir()) / 1e6:.1f} MB in {out}")


if __name__ == "__main__":
    main()
