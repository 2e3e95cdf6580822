"""Samplers side by side: ``compare(CompareConfig) -> list[dict]`` (what ``tinydiffusion compare`` runs).

Every setting (sampler × steps) starts from the same seeded noise; each is timed and scored
(FD-domain, conditional accuracy) and the results are written as JSON, CSV, two plots and one
image with a row per setting and a column per seed.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .dist import resolve_device
from .errors import UsageError, bad_value
from .evaluate import real_reference, score
from .evaluator import load_evaluator
from .images import grid, to_uint8
from .pipeline import get_sampler, load

DEFAULT_SETTINGS = ("ddpm:500", "ddpm:250", "ddpm:100", "ddim:10", "ddim:20", "ddim:50", "ddim:100", "ddim:250",
                    "ddim:500", "dpmpp_2m:5", "dpmpp_2m:10", "dpmpp_2m:20", "dpmpp_2m:50")


@dataclass(frozen=True)
class CompareConfig:
    model: str
    settings: tuple[str, ...] = DEFAULT_SETTINGS
    evaluator: str = "sprites"
    data: str | None = None
    per_class: int = 50
    guidance: float = 1.0
    seed: int = 1000
    batch_size: int = 128
    precision: str = "fp32"  # "bf16" autocasts the network while sampling
    out: str = "runs/compare"
    device: str = "auto"
    progress: bool = True


def parse_setting(text: str) -> tuple[str, int]:
    name, _, steps = text.partition(":")
    get_sampler(name, {})
    try:
        return name, int(steps)
    except ValueError:
        raise bad_value("setting", text, "SAMPLER:STEPS such as ddim:50 or dpmpp_2m:10") from None


def compare(config: CompareConfig) -> list[dict]:
    from tqdm.auto import tqdm

    settings = [parse_setting(s) for s in config.settings]
    pipe = load(config.model, device=resolve_device(config.device))
    if pipe.context.kind != "class":
        raise UsageError(f"compare scores per class and needs a class-conditional model, not {pipe.context.kind!r}")
    for _, steps in settings:
        pipe.schedule.timesteps(steps)  # refuse a bad step count before any work
    ev = load_evaluator(config.evaluator)
    real = real_reference(ev, config.data or pipe.config.get("training", {}).get("data", "sprites"), pipe.image_size)
    names, K = list(pipe.context.names), len(pipe.context.names)
    labels = torch.arange(K).repeat_interleave(config.per_class)
    rows, strips = [], []
    calls = [0]
    hook = pipe.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        for name, steps in tqdm(settings, desc="compare", disable=not config.progress):
            calls[0] = 0
            t0 = time.perf_counter()
            samples = pipe.sample(names, n=config.per_class, seed=config.seed, sampler=name, steps=steps,
                                  guidance=config.guidance, batch_size=config.batch_size,
                                  precision=config.precision)
            seconds = time.perf_counter() - t0
            chunks = -(-len(samples) // config.batch_size)
            result = score(samples, labels, ev, real)
            result.pop("_memo")
            rows.append({"setting": f"{name}:{steps}", "sampler": name, "steps": steps, "nfe": calls[0] // chunks,
                         "seconds": round(seconds, 3), "images_per_second": round(len(samples) / seconds, 2), **result})
            strips.append(to_uint8(samples[[k * config.per_class + j for j in range(2) for k in range(K)]]))
    finally:
        hook.remove()
    _speedups(rows)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"settings": asdict(config), "rows": rows}, indent=2) + "\n")
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    grid(np.concatenate(strips), 2 * K, scale=max(1, 64 // pipe.image_size)).save(out / "compare_grid.png")
    _plots(rows, out)
    return rows


def _speedups(rows: list[dict]) -> None:
    """Speed-up over DDPM-500 for each setting whose FD-domain is equal (within the reference's
    bootstrap spread) or better; None for the others."""
    ref = next((r for r in rows if r["setting"] == "ddpm:500"), None)
    for r in rows:
        ok = ref is not None and r["fd_domain"] <= ref["fd_domain"] + ref["fd_domain_bootstrap_std"]
        r["speedup_vs_ddpm500"] = round(ref["seconds"] / r["seconds"], 1) if ok else None


def _plots(rows: list[dict], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'tinydiffusion[plot]'): plots skipped")
        return
    for x_key, label, name in (("nfe", "network evaluations per image", "compare_steps.png"),
                               ("seconds", "wall time (s)", "compare_seconds.png")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r[x_key], r["fd_domain"], r["fd_domain_bootstrap_std"]) for r in rows if r["sampler"] == sampler)
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=sampler)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("FD-domain (lower is better)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)


def table(rows: list[dict]) -> str:
    """The printed summary: one line per setting."""
    lines = [f"{'setting':<14}{'NFE':>5}{'seconds':>9}{'FD-domain':>13}{'cond. acc':>10}{'speed-up':>10}"]
    for r in rows:
        speed = f"{r['speedup_vs_ddpm500']:.1f}×" if r["speedup_vs_ddpm500"] is not None else "—"
        lines.append(f"{r['setting']:<14}{r['nfe']:>5}{r['seconds']:>9.1f}{r['fd_domain']:>8.2f}±{r['fd_domain_bootstrap_std']:<4.2f}"
                     f"{r['conditional_accuracy']:>10.1%}{speed:>10}")
    return "\n".join(lines)
