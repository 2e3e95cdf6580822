"""Text-conditioning levers, each measured with prompt following (``tinydiffusion eval`` on a text model: category
accuracy on held-out captions and on paraphrased prompts, beside the real-image ceiling).

    .venv/bin/python benchmarks/text_levers.py --minutes 8 --image-size 16 --out runs/text-levers

Trains one emoji model per training lever from the same seed, data and wall-clock budget (so a lever's cost shows
as fewer images seen), evaluates each at its card's settings, then the sampling-time levers (guidance scale and
interval) on the first model. Writes ``levers.json`` and ``levers.md`` (a table: lever, accuracies, ceilings,
images seen, seconds). Quote the figures with the CPU they came from (``lscpu``); run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TRAINING = {  # name -> extra train flags (beyond the shared recipe)
    "pooled vector, one caption per emoji (the course's design)": ["--no-caption-alternatives"],
    "pooled vector, alternative captions": ["--caption-alternatives"],
    "tokens + cross-attention, alternative captions": ["--caption-alternatives", "--text-tokens", "8"],
    "pooled vector, alternative captions, condition dropout 0.2": ["--caption-alternatives", "--p-uncond", "0.2"],
    "tokens + cross-attention, one caption per emoji": ["--no-caption-alternatives", "--text-tokens", "8"],
}
SAMPLING = {  # name -> extra eval flags, on the model of the second training lever
    "guidance 2": ["--guidance", "2"], "guidance 5": ["--guidance", "5"],
    "guidance 3, interval (0.1, 0.75]": ["--guidance-interval", "0.1,0.75"],
    "guidance 5, interval (0.1, 0.75]": ["--guidance", "5", "--guidance-interval", "0.1,0.75"],
}
CLI = [sys.executable, "-m", "tinydiffusion"]


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(CLI + args, check=True)
    return time.perf_counter() - t0


def train(out: Path, extra: list[str], a) -> dict:
    if not (out / "model" / "config.json").is_file():
        run(["train", "--data", "emoji", "--context", "text", "--model", "small", "--image-size", str(a.image_size),
             "--batch-size", str(a.batch_size), "--precision", a.precision, "--minutes", str(a.minutes),
             "--sample-every", "100000", "--no-progress", "--out", str(out), "--resume", "auto", *extra])
    rows = (out / "metrics.csv").read_text().splitlines()[1:]
    step, _, _, _, _, elapsed = rows[-1].split(",")[:6]
    return {"steps": int(step), "images": int(step) * a.batch_size, "seconds": round(float(elapsed))}


def evaluate(model: Path, out: Path, extra: list[str], a) -> dict:
    if not out.is_file():
        run(["eval", str(model), "--per-prompt", str(a.per_prompt), "--out", str(out), *extra])
    return json.loads(out.read_text())["prompt_following"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/text-levers"))
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--per-prompt", type=int, default=8)
    p.add_argument("--only", nargs="*", help="train only these levers (by their index in TRAINING)")
    a = p.parse_args()
    results = []
    for i, (name, extra) in enumerate(TRAINING.items()):
        if a.only and str(i) not in a.only:
            continue
        folder = a.out / f"lever{i}"
        trained = train(folder, extra, a)
        results.append({"lever": name, **trained, **evaluate(folder / "model", folder / "eval.json", [], a)})
        print(json.dumps(results[-1]), flush=True)
    base = a.out / "lever1"
    if (base / "model" / "config.json").is_file():
        for j, (name, extra) in enumerate(SAMPLING.items()):
            found = evaluate(base / "model", base / f"eval_sampling{j}.json", extra, a)
            results.append({"lever": f"at sampling: {name}", **found})
            print(json.dumps(results[-1]), flush=True)
    (a.out / "levers.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["| lever | held-out captions (ceiling) | paraphrases (ceiling) | images seen | seconds |", "|---|---|---|---|---|"]
    for r in results:
        h, q = r["held-out captions"], r.get("paraphrases", {})
        lines.append(f"| {r['lever']} | {h['accuracy']:.1%} ({h['ceiling']:.1%}) | "
                     f"{q.get('accuracy', float('nan')):.1%} ({q.get('ceiling', float('nan')):.1%}) | "
                     f"{r.get('images', '')} | {r.get('seconds', '')} |")
    (a.out / "levers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
