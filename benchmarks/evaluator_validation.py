"""Choose the evaluator's training settings without looking at its held-out test images.

    .venv/bin/python benchmarks/evaluator_validation.py --epochs 60 100 --width 32 48 --seeds 1

The held-out split of `tinydiffusion evaluator train` (20 % per class, seed 0) is the test set: its
accuracy is what the evaluator records and ships with. Settings are compared here instead on a
validation split carved out of the training split (20 % of it per class, seed 100); each setting
trains one member on the rest. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from tinydiffusion.data.batches import as_tensor
from tinydiffusion.data.load import load_dataset
from tinydiffusion.quality.featurenet import Ensemble, Evaluator, EvaluatorConfig, _train_member, holdout_accuracy, split


def validation_split(labels, config: EvaluatorConfig) -> tuple:
    """``(fit, validation)`` indices: the training split of ``evaluator train``, divided again."""
    train_idx, _ = split(labels, config.holdout, config.seed)  # the test images stay out of both parts
    fit, val = split(labels[train_idx], 0.2, 100)
    return train_idx[fit], train_idx[val]


def validation_accuracy(config: EvaluatorConfig, seed: int) -> dict:
    data = load_dataset(config.data, size=config.size)
    fit, val = validation_split(data.labels, config)
    images, labels = as_tensor(data.images), torch.from_numpy(data.labels)
    torch.manual_seed(seed)
    net = Ensemble(len(data.class_names), config.width, members=1)
    t0 = time.perf_counter()
    _train_member(net.members[0], images, labels, fit, config, seed, desc=f"epochs {config.epochs} width {config.width}")
    acc = holdout_accuracy(Evaluator(net, data.class_names, config.size, {}), images, labels, val, config.low_size)
    return {"epochs": config.epochs, "width": config.width, "seed": seed, "validation_accuracy": acc,
            "fit_images": int(len(fit)), "validation_images": int(len(val)),
            "seconds": round(time.perf_counter() - t0), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[60, 100])
    parser.add_argument("--width", type=int, nargs="+", default=[32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--data", default="sprites")
    args = parser.parse_args()
    base = EvaluatorConfig(data=args.data, progress=False)
    for epochs in args.epochs:
        for width in args.width:
            for seed in args.seeds:
                print(json.dumps(validation_accuracy(replace(base, epochs=epochs, width=width), seed)), flush=True)


if __name__ == "__main__":
    main()
