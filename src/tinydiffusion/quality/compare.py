"""Samplers side by side: ``compare(CompareConfig) -> list[dict]`` (what ``tinydiffusion compare`` runs).

Every setting (sampler × steps) starts from the same seeded noise; each is timed and scored
(FD-domain, conditional accuracy) and the results are written as JSON, CSV, two plots and one
image with a row per setting and a column per seed.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .. import checks
from ..errors import bad_value
from ..runtime import shard
from ..runtime.dist import DistInfo, agree
from ..sampling.card import parse_setting
from ..sampling.pipeline import load
from ..sampling.plans import counting_evaluations
from ..store.files import write_bytes, write_json, write_text
from ..store.pictures import grid, save_picture, to_uint8
from .evaluate import check_class_model, check_memory, check_sampling_settings, real_reference, score
from .featurenet import load_evaluator

DEFAULT_SETTINGS = ("ddpm:500", "ddpm:250", "ddpm:100", "ddim:10", "ddim:20", "ddim:50", "ddim:100", "ddim:250",
                    "ddim:500", "dpmpp_2m:5", "dpmpp_2m:10", "dpmpp_2m:20", "dpmpp_2m:50")


@dataclass(frozen=True)
class CompareConfig:
    model: str
    settings: tuple[str, ...] = DEFAULT_SETTINGS
    evaluator: str | None = None  # None: the shipped sprites evaluator
    data: str | None = None
    per_class: int = 50
    guidance: float | None = None  # None: the model card's; a student always samples with its own
    guidance_interval: tuple[float, float] | None = None  # None: the card's (students: none)
    guide: str | None = None  # autoguidance's guide model; None: the card's; "none": none (students: none)
    guide_scale: float | None = None  # the guide beside classifier-free guidance, at this scale; None: the card's
    students: tuple[str, ...] = ()  # distilled students (model or distill folders) added at their step counts
    seed: int = 1000
    batch_size: int = 128
    precision: str = "fp32"  # "bf16" autocasts the network while sampling
    out: str = "runs/compare"
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        """Every setting that needs no model is checked here, so the library refuses what the CLI refuses."""
        check_sampling_settings(self)
        if isinstance(self.settings, str) or not isinstance(self.settings, (tuple, list)) or not self.settings:
            raise bad_value("settings", self.settings, "a non-empty list of SAMPLER:STEPS such as ddim:50")
        for text in self.settings:
            parse_setting(text)
        if isinstance(self.students, str) or not isinstance(self.students, (tuple, list)) or \
                not all(isinstance(s, str) and s.strip() for s in self.students):
            raise bad_value("students", self.students, "a list of model or distill folders")
        checks.output_path("out", self.out, folder=True)


def student_models(paths) -> list[Path]:
    """Model folders of distilled students: a distill folder (with ``distill.json``) gives every stage's
    student, fewest steps last; a model folder is itself."""
    out = []
    for path in map(Path, paths):
        if (path / "distill.json").is_file():
            stages = sorted((p for p in (path / "stages").glob("*/model") if (p / "config.json").is_file()),
                            key=lambda p: -int(p.parent.name))
            if not stages:
                raise bad_value("students", str(path), "a distill folder with at least one finished stage")
            out += stages
        else:
            out.append(path)
    return out


def compare(config: CompareConfig) -> list[dict]:
    """Every setting from the same seeded noise, timed and scored; files written into ``config.out``.
    Under torchrun the ranks share each setting's batches; rank 0 scores and writes; all return the rows."""
    with shard.processes(config.device) as info:
        return _compare(config, info)


def _compare(config: CompareConfig, info: DistInfo) -> list[dict]:
    from tqdm.auto import tqdm

    pipe = load(config.model, device=info.device)
    texts = config.settings
    if pipe.distilled and tuple(texts) == DEFAULT_SETTINGS:  # a student: its own sampler at its step counts
        texts = [f"{pipe.distilled['sampler']}:{k}" for k in pipe.distilled["steps"]]
    settings = [parse_setting(s) for s in texts]
    ev = load_evaluator(config.evaluator or "sprites")
    check_class_model(pipe, ev, "compare")
    names, K = list(pipe.context.names), len(pipe.context.names)
    entries = []  # (row label, line label, pipeline, plan)
    for name, steps in settings:  # a bad step count or a size that cannot fit is refused before any work
        if steps > pipe.schedule.T:
            raise bad_value("settings", f"{name}:{steps}", f"STEPS in 1..{pipe.schedule.T} (the model's T)")
        plan = pipe.plan(names, n=config.per_class, seed=config.seed, sampler=name, steps=steps,
                         guidance=config.guidance, guidance_interval=config.guidance_interval, guide=config.guide,
                         guide_scale=config.guide_scale, batch_size=config.batch_size, precision=config.precision)
        entries.append((f"{name}:{steps}", name, pipe, plan))
    for path in student_models(config.students):
        student = load(path, device=info.device)
        d = student.distilled
        if not d:
            raise bad_value("students", str(path), "a distilled student (its config.json has a 'distilled' section)")
        check_class_model(student, ev, "compare")
        for k in d["steps"]:
            plan = student.plan(names, n=config.per_class, seed=config.seed, sampler=d["sampler"], steps=k,
                                batch_size=config.batch_size, precision=config.precision)
            entries.append((f"{d['method']}:{k}", f"{d['method']} student", student, plan))
    for _, _, p, plan in entries:
        check_memory(p, plan, ev, config.per_class, info)
    data, found = config.data or pipe.config.get("training", {}).get("data", "sprites"), []
    agree(lambda: found.append(real_reference(ev, data, pipe.image_size)), info)  # a refusal on rank 0 is every rank's
    real = found[0] if found else None
    labels = torch.arange(K).repeat_interleave(config.per_class)
    rows, strips = [], []
    for label, line, p, plan in tqdm(entries, desc="compare", disable=not config.progress or not info.is_main):
        with counting_evaluations(p.model, plan.guide) as evaluated:  # autoguidance's guide counts too
            t0 = time.perf_counter()
            samples = shard.sample(p, plan, info)
            seconds = time.perf_counter() - t0
        if not info.is_main:
            continue
        result = score(samples, labels, ev, real)
        result.pop("_memo")
        nfe = evaluated[0] // plan.images_in(shard.my_batches(plan.batches, info))  # per image, both guided halves
        rows.append({"setting": label, "sampler": line, "steps": plan.steps, "nfe": nfe,
                     "guidance": p.resolve(None, None, config.guidance)[2] if p is pipe else p.distilled["guidance"],
                     **plan.levers, "seconds": round(seconds, 3), "images_per_second": round(len(samples) / seconds, 2), **result})
        strips.append(to_uint8(samples[[k * config.per_class + j for j in range(2) for k in range(K)]]))
    if info.is_main:
        _speedups(rows)
        _write(rows, strips, config, K, pipe.image_size)
    return shard.broadcast(rows, info)


def _write(rows: list[dict], strips: list, config: CompareConfig, K: int, size: int) -> None:
    """compare.json/.csv, the grid and the plots, each written atomically."""
    out = Path(config.out)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "compare.csv", text.getvalue())
    save_picture(out / "compare_grid.png", grid(np.concatenate(strips), 2 * K, scale=max(1, 64 // size)), format="PNG")
    _plots(rows, out)
    write_json(out / "compare.json", {"settings": asdict(config), "rows": rows})


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
    evaluations, fd, spread = "network evaluations per image", "FD-domain (lower is better)", "fd_domain_bootstrap_std"
    for x_key, x_label, y_key, y_label, name in (
            ("nfe", evaluations, "fd_domain", fd, "compare_steps.png"),
            ("seconds", "wall time (s)", "fd_domain", fd, "compare_seconds.png"),
            ("nfe", evaluations, "conditional_accuracy", "conditional accuracy", "compare_accuracy.png")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for sampler in dict.fromkeys(r["sampler"] for r in rows):
            pts = sorted((r[x_key], r[y_key], r[spread] if y_key == "fd_domain" else 0.0)
                         for r in rows if r["sampler"] == sampler)
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=sampler)
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")  # into memory, then written atomically
        plt.close(fig)
        write_bytes(out / name, buffer.getvalue())


def table(rows: list[dict]) -> str:
    """The printed summary: one line per setting."""
    lines = [f"{'setting':<14}{'NFE':>5}{'seconds':>9}{'FD-domain':>13}{'cond. acc':>10}{'speed-up':>10}"]
    for r in rows:
        speed = f"{r['speedup_vs_ddpm500']:.1f}×" if r["speedup_vs_ddpm500"] is not None else "—"
        lines.append(f"{r['setting']:<14}{r['nfe']:>5}{r['seconds']:>9.1f}{r['fd_domain']:>8.2f}±{r['fd_domain_bootstrap_std']:<4.2f}"
                     f"{r['conditional_accuracy']:>10.1%}{speed:>10}")
    return "\n".join(lines)
