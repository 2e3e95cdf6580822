"""RePaint over DDPM against RePaint over DDIM on the shipped sprites model: quality per network evaluation.

    .venv/bin/python benchmarks/inpaint_samplers.py                  # 100 sprites, 2 masks, 9 settings
    .venv/bin/python benchmarks/inpaint_samplers.py --per-class 4    # a quick look

Inputs: ``--per-class`` real sprites of each class from the shipped evaluator's held-out split (the evaluator has not
seen them). Each is inpainted under two masks (the centre 23×23 of 32×32, 51.7 % of the pixels, as in
``edit_tradeoff.py``; the left half) *unconditionally* (guidance 1, the null context), so the generated part can
only get its class from the kept part: that is what inpainting has to get right. Every setting uses the same
inputs and the same seeds (image ``i`` seed ``--seed + i``). Settings: DDPM 50 (today's default) and 25 steps,
DDIM 10/20/50 steps with eta 0 and 20 with eta 0.5 and 1, and resampling (r = 3, j = 5) on DDPM 25 and DDIM 20.

Metrics, per mask and setting:

- ``class_kept``: the share the evaluator assigns to the input's true class (``metrics.conditional_accuracy``,
  as ``tinydiffusion eval`` does); the unedited inputs score ``unedited.class_kept``.
- ``seam``: the mean absolute step ``|x_p - x_q|`` over the 4-neighbour pairs that straddle the mask boundary
  (``p`` kept, ``q`` generated), divided by the same on the real inputs: 1 = as smooth across the boundary as
  the real sprite, above 1 = a visible edge.
- ``texture``: the mean absolute neighbour step inside the generated part over the same on the real inputs:
  below 1 = smoother (blurrier) than real sprites.
- ``rms_to_real``: the RMS distance of the generated part to the real original (``[-1, 1]`` units; a plausible
  completion need not be the original, so lower is only "closer to it").
- ``nfe`` per image and wall ``seconds`` for the whole setting (all inputs).

Writes ``benchmarks/results/inpaint_samplers.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tinydiffusion.core import edit
from tinydiffusion.data.batches import as_tensor, make_batch
from tinydiffusion.data.load import load_dataset
from tinydiffusion.quality import metrics
from tinydiffusion.quality.featurenet import load_evaluator, split
from tinydiffusion.sampling.pipeline import load
from tinydiffusion.store.files import write_json

ROOT = Path(__file__).resolve().parents[1]
SIDE = 23  # the centre square: 23² / 32² = 51.7 % of the pixels, as benchmarks/edit_tradeoff.py
# (label, sampler, steps, eta, resample, jump_length)
SETTINGS = [("ddpm 50", "ddpm", 50, None, 1, 10), ("ddpm 25", "ddpm", 25, None, 1, 10),
            ("ddim 10", "ddim", 10, 0.0, 1, 10), ("ddim 20", "ddim", 20, 0.0, 1, 10),
            ("ddim 50", "ddim", 50, 0.0, 1, 10), ("ddim 20 eta .5", "ddim", 20, 0.5, 1, 10),
            ("ddim 20 eta 1", "ddim", 20, 1.0, 1, 10),
            ("ddpm 25 r3 j5", "ddpm", 25, None, 3, 5), ("ddim 20 r3 j5", "ddim", 20, 0.0, 3, 5)]


def masks(size: int = 32) -> dict[str, torch.Tensor]:
    """Keep-masks, bool ``[H, W]`` (true = keep)."""
    centre = torch.ones(size, size, dtype=torch.bool)
    lo = (size - SIDE) // 2
    centre[lo:lo + SIDE, lo:lo + SIDE] = False
    left = torch.ones(size, size, dtype=torch.bool)
    left[:, : size // 2] = False
    return {f"centre {SIDE}x{SIDE}": centre, "left half": left}


def held_out_inputs(ev, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` sprites of each class from the evaluator's held-out split, float ``[5K, 3, 32, 32]``, labels."""
    data = load_dataset("sprites", size=32)
    training = ev.config["training"]
    _, test_idx = split(data.labels, training["holdout"], training["seed"])
    picked = np.concatenate([test_idx[data.labels[test_idx] == k][:per_class] for k in range(len(ev.class_names))])
    return make_batch(as_tensor(data.images), torch.from_numpy(picked)), torch.from_numpy(data.labels[picked])


def steps_across(x: torch.Tensor, keep: torch.Tensor, boundary: bool) -> torch.Tensor:
    """Per image, the mean ``|x_p - x_q|`` over 4-neighbour pairs: straddling the mask boundary (``boundary``) or
    both generated."""
    total, count = torch.zeros(len(x), dtype=torch.float64), 0
    for dim in (-1, -2):
        a, b = x.narrow(dim, 0, x.shape[dim] - 1), x.narrow(dim, 1, x.shape[dim] - 1)
        ka, kb = keep.narrow(dim, 0, keep.shape[dim] - 1), keep.narrow(dim, 1, keep.shape[dim] - 1)
        pairs = (ka != kb) if boundary else (~ka & ~kb)  # [H, W'] or [H', W]
        total += (a - b).abs()[:, :, pairs].double().sum(dim=(1, 2))
        count += int(pairs.sum()) * x.shape[1]
    return total / count


def score(ev, out: torch.Tensor, real: torch.Tensor, y: torch.Tensor, keep: torch.Tensor) -> dict:
    _, logits = ev.run(out)
    gen = ~keep
    return {"class_kept": metrics.conditional_accuracy(logits, y),
            "seam": float(steps_across(out, keep, True).mean() / steps_across(real, keep, True).mean()),
            "texture": float(steps_across(out, keep, False).mean() / steps_across(real, keep, False).mean()),
            "rms_to_real": float((out - real)[:, :, gen].pow(2).mean(dim=(1, 2)).sqrt().mean())}


def inpaint_all(pipe, x: torch.Tensor, keep: torch.Tensor, setting: tuple, seed: int, batch_size: int) -> torch.Tensor:
    _, sampler, steps, eta, resample, jump_length = setting
    options = {} if eta is None else {"eta": eta}
    parts = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            s = slice(i, min(i + batch_size, len(x)))
            gens = [torch.Generator().manual_seed(seed + j) for j in range(s.start, s.stop)]
            noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens])  # as Pipeline.run draws x_T
            parts.append(edit.inpaint(pipe.model, pipe.schedule, x[s], keep, None, sampler=sampler, steps=steps,
                                      jump_length=jump_length, resample=resample, generator=gens, noise=noise,
                                      **options).clamp(-1, 1))
    return torch.cat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inpaint_samplers.json"))
    args = parser.parse_args()
    t_start = time.perf_counter()
    pipe, ev = load("sprites"), load_evaluator("sprites")
    x, y = held_out_inputs(ev, args.per_class)
    _, logits = ev.run(x)
    result = {"model": "sprites", "evaluator": "sprites", "inputs": len(x), "per_class": args.per_class,
              "guidance": 1.0, "context": "none (unconditional)", "seed": args.seed, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "unedited": {"class_kept": metrics.conditional_accuracy(logits, y)},
              "masks": {}}
    print(f"{len(x)} inputs; unedited class_kept {result['unedited']['class_kept']:.3f}", flush=True)
    for name, keep in masks().items():
        rows = []
        for setting in SETTINGS:
            t0 = time.perf_counter()
            out = inpaint_all(pipe, x, keep, setting, args.seed, args.batch_size)
            _, sampler, steps, eta, resample, jump_length = setting
            row = {"setting": setting[0], "sampler": sampler, "steps": steps, "eta": eta, "resample": resample,
                   "jump_length": jump_length, "nfe": edit.repaint_nfe(steps, jump_length, resample),
                   **score(ev, out, x, y, keep),
                   "known_pixels_exact": bool(torch.equal(out[:, :, keep], x[:, :, keep])),
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(f"{name:>12} | {row['setting']:>14} | nfe {row['nfe']:3d} | class {row['class_kept']:.3f} | "
                  f"seam {row['seam']:.2f} | texture {row['texture']:.2f} | rms {row['rms_to_real']:.3f} | "
                  f"{row['seconds']:6.1f} s", flush=True)
        result["masks"][name] = {"generated_share": float((~keep).double().mean()), "rows": rows}
        write_json(args.out, result)  # the first mask survives an interrupted run
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    write_json(args.out, result)
    print(json.dumps({"seconds": result["seconds"], "out": args.out}))


if __name__ == "__main__":
    main()
