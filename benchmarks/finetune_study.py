"""Fine-tuning study: teach the shipped ``sprites`` model the class ``smiley`` from the 20 pictures of
``benchmarks/smileys/teach`` with each method and budget, and measure every result with the fine-tune report
(recognised against the 82 held-out pictures, near copies of the 20, the old classes before and after).

    .venv/bin/python benchmarks/finetune_study.py --runs lora:75,150,300,450 column:450 full:450
    .venv/bin/python benchmarks/finetune_study.py --speed      # seconds per step of each method, 2 threads
    .venv/bin/python benchmarks/finetune_study.py --plot       # docs/finetune_curve.png from the results

Each run is ``finetune`` as the CLI runs it (``runs/finetune-study/METHOD-STEPS``), with a step budget so that a
busy machine changes the wall time, not the result; runs already done are skipped. The minutes of the plot are
the steps times the seconds per step that ``--speed`` measures on two threads (the training loop's own
``images_per_s`` on a shared machine is recorded beside them). Writes ``benchmarks/results/finetune_study.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from tinydiffusion.training.finetune import DEFAULTS, FinetuneConfig, finetune

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "finetune_study.json"
DATA = ROOT / "benchmarks" / "smileys"


def _read() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}, "speed": {}}


def _write(results: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def run(method: str, steps: int, out: Path, samples: int, extra: dict) -> dict:
    config = FinetuneConfig(base="sprites", data=str(DATA / "teach"), holdout=str(DATA / "holdout"), name="smiley",
                            out=str(out), method=method, steps=steps, report_samples=samples, progress=False,
                            sample_every=max(50, steps // 3), checkpoint_every=10**6, **extra)
    t0 = time.perf_counter()
    result = finetune(config, overwrite=True)
    rows = (out / "train" / "metrics.csv").read_text().splitlines()[1:]
    rate = [float(r.split(",")[4]) for r in rows]
    return {"method": method, "steps": result.step, "train_seconds": round(result.seconds, 1),
            "wall_seconds": round(time.perf_counter() - t0, 1), "images_per_s_median": sorted(rate)[len(rate) // 2],
            "settings": {k: v for k, v in json.loads((out / "finetune.json").read_text())["finetune"].items()
                         if k in ("lr", "replay", "rank", "batch_size", "precision", "ema_decay", "warmup")},
            "adapter_bytes": (out / "model" / "model.safetensors").stat().st_size, "report": result.report}


def remeasure(out: Path, samples: int) -> dict:
    """The report of a finished run, measured again with the current rules (same seeds, so the same samples)."""
    from tinydiffusion.data.load import load_dataset
    from tinydiffusion.models.adapter_file import weights_sha256
    from tinydiffusion.sampling.pipeline import load, resolve_model
    from tinydiffusion.training.finetune_data import read_concept
    from tinydiffusion.training.finetune_report import Measure, report

    base = load("sprites")
    teach, holdout = (read_concept(str(DATA / k), 32, minimum=2) for k in ("teach", "holdout"))
    return report(out, out / "model", base, weights_sha256(resolve_model("sprites")), teach, holdout, "smiley",
                  load_dataset("sprites", size=32), "sprites", Measure(samples, 1000, "sprites"))


def speed(method: str, batch: int = 32, repeats: int = 8) -> float:
    """Median seconds per optimizer step of ``method`` on the sprites model at 32 px, two threads, bf16."""
    from tinydiffusion.core.loss import diffusion_loss
    from tinydiffusion.models import ModelConfig, build_model
    from tinydiffusion.models.adapters import adapt, widen
    from tinydiffusion.sampling.pipeline import load

    torch.set_num_threads(2)
    base = load("sprites")
    net = build_model(ModelConfig.from_dict({**base.config["model"], "context_width": 6}))
    net.load_state_dict(widen(base.model.state_dict(), 1))
    if method != "full":
        adapt(net, 5, rank=4 if method == "lora" else None, alpha=None, seed=0)
    net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    c = torch.nn.functional.one_hot(torch.randint(0, 6, (batch,), generator=g), 6).float()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = diffusion_loss(net, base.schedule, x0, c, p_uncond=0.1, prediction="v", generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for method in DEFAULTS:
        runs = sorted((r for r in results["runs"].values() if r["method"] == method), key=lambda r: r["steps"])
        if not runs:
            continue
        minutes = [r["steps"] * results["speed"].get(method, float("nan")) / 60 for r in runs]
        old = [r["report"]["old_classes"] for r in runs]
        axes[0].plot(minutes, [100 * r["report"]["recognised"] for r in runs], "o-", label=method)
        axes[1].plot(minutes, [100 * (o["accuracy_after"] - o["accuracy_before"]) for o in old], "o-", label=method)
        axes[2].plot(minutes, [100 * (o["fd_domain_after"] / o["fd_domain_before"] - 1) for o in old], "o-",
                     label=method)
    ceiling = next(iter(results["runs"].values()))["report"]["recognised_ceiling"]
    axes[0].axhline(100 * ceiling, color="grey", ls=":", label="ceiling (held-out pictures)")
    axes[0].axhline(80, color="red", ls="--", lw=0.8, label="target")
    axes[1].axhline(-3, color="red", ls="--", lw=0.8)
    axes[2].axhline(10, color="red", ls="--", lw=0.8)
    for ax, title in zip(axes, ("smiley samples recognised (%)", "old classes' accuracy change (points)",
                                "old classes' FD-domain change (%)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minutes of training (2 CPU threads, bf16)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", default=[], help="METHOD:STEPS[,STEPS…] (e.g. lora:150,300)")
    parser.add_argument("--samples", type=int, default=50, help="report samples per class (default 50)")
    parser.add_argument("--lr", type=float, help="override the method's learning rate")
    parser.add_argument("--replay", type=float, help="override the method's replay share")
    parser.add_argument("--tag", default="", help="suffix of the run names (for variants)")
    parser.add_argument("--out", default="runs/finetune-study")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--remeasure", nargs="*", default=[], help="runs whose report to measure again")
    args = parser.parse_args()
    results = _read()
    if args.speed:
        results["speed"] = {m: round(speed(m), 3) for m in DEFAULTS}
        results["machine"] = {"cpu": platform.processor() or platform.machine(), "lscpu": subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines()[:12], "torch": torch.__version__}
        _write(results)
        print(results["speed"])
    extra = {k: v for k, v in (("lr", args.lr), ("replay", args.replay)) if v is not None}
    for spec in args.runs:
        method, _, steps = spec.partition(":")
        for k in (int(s) for s in steps.split(",")):
            key = f"{method}-{k}{args.tag}"
            if key in results["runs"]:
                continue
            results["runs"][key] = run(method, k, Path(args.out) / key, args.samples, extra)
            _write(results)
            r = results["runs"][key]
            print(key, r["train_seconds"], r["report"]["recognised"], r["report"]["near_copies"],
                  r["report"]["old_classes"].get("accuracy_after"), flush=True)
    for key in args.remeasure:
        results["runs"][key]["report"] = remeasure(Path(args.out) / key, args.samples)
        _write(results)
    if args.plot:
        plot(results, ROOT / "docs" / "finetune_curve.png")


if __name__ == "__main__":
    main()
