"""``distill(DistillConfig) -> DistillResult``: a few-step student from any exported model.

The student has the teacher's architecture and starts from its weights; guidance is folded in at one
fixed scale (the teacher's model card's, 3 for the shipped models), so a student step is one network
evaluation where a guided teacher step is two. One fixed scale rather than the scale as an extra input:
the student keeps the teacher's exact architecture and weights layout (an ordinary model folder, loaded
and sampled by everything else unchanged), and the studio's instant preview needs one good setting, not
a family. The two methods (``distill_loss.py``):

- ``progressive``: stages ``N -> N/2 -> … -> steps``; each stage's student runs DDIM on its grid and is
  the next stage's teacher. Every stage is exported (``OUT/stages/K/model``), so one run to 1 step
  leaves students for every step count on the way.
- ``consistency``: one stage on the teacher's ``N``-step grid; the student samples with the
  ``consistency`` sampler in any step count whose grid lies on that one (1, 2, 4, 8, 16 for N = 16).

Each stage is an ordinary training run (``train`` with an ``Objective``): EMA, atomic state, exact
resume, ``--minutes``/``--iterations``, progress bar, ``metrics.csv``, sample grids and export.
``OUT/model`` is the last stage's student; ``OUT/distill.json`` records the settings and each stage's wall time.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from .. import checks
from ..core.distill_loss import OBJECTIVES, progressive_pairs
from ..core.guidance import cfg
from ..errors import UsageError, bad_value
from ..models import ModelConfig
from ..runtime.dist import resolve_device
from ..sampling.pipeline import Pipeline, load
from ..store.files import AtomicFolder
from ..vocab import DISTILL_METHODS, PRECISIONS
from . import runlock
from .config import Objective, TrainConfig, recorded_config
from .train import train

SAMPLER_OF = {"progressive": "ddim", "consistency": "consistency"}
RECORD = "distill.json"
# settings a resumed distillation takes from this call rather than from its record
RESUME_OVERRIDES = ("out", "device", "progress", "iterations", "minutes")


@dataclass(frozen=True)
class DistillConfig:
    teacher: str  # a shipped model's name or an exported model folder
    out: str = "runs/distill"
    method: str = "progressive"
    steps: int = 4  # the student's network evaluations per image
    teacher_steps: int = 16  # the teacher's DDIM grid the first stage distils (progressive halves it per stage)
    guidance: float | None = None  # folded into the student; None: the teacher's model card (else 1)
    iterations: int | None = None  # optimizer steps per stage
    minutes: float | None = None  # wall-clock minutes for the whole distillation, shared equally by the stages
    data: str | None = None  # the images the student is noised from; None: what the teacher was trained on
    batch_size: int = 64
    lr: float = 3e-4
    ema_decay: float = 0.995
    warmup: int = 50
    sample_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    progress: bool = True

    def __post_init__(self) -> None:
        checks.choice("method", self.method, DISTILL_METHODS)
        checks.integer("steps", self.steps, low=1, high=4096)
        checks.integer("teacher_steps", self.teacher_steps, low=2, high=4096)
        if self.method == "progressive":
            n = self.teacher_steps // self.steps
            if self.teacher_steps % self.steps or n < 2 or n & (n - 1):
                raise bad_value("teacher_steps", self.teacher_steps, f"--steps ({self.steps}) times a power of two "
                                f"(2, 4, 8, …): each progressive stage halves the teacher's steps")
        elif self.steps > self.teacher_steps:
            raise bad_value("steps", self.steps, f"at most --teacher-steps ({self.teacher_steps}): a consistency "
                            f"student samples on grids that lie on the teacher's")
        if self.guidance is not None:
            checks.guidance(self.guidance)
        if self.iterations is not None:
            checks.integer("iterations", self.iterations, low=1, high=10**9)
        if self.minutes is not None:
            checks.finite("minutes", self.minutes, low=0, high=1e9, low_open=True, allowed="a positive number")
        if self.iterations is None and self.minutes is None:
            raise UsageError("give a budget: --iterations K (optimizer steps per stage) or --minutes M (the whole "
                             "distillation)")
        for name in ("batch_size", "warmup", "sample_every", "checkpoint_every"):
            checks.integer(name, getattr(self, name), low=0 if name == "warmup" else 1, high=10**9)
        checks.finite("lr", self.lr, low=0, high=10, low_open=True, allowed="a finite learning rate in (0, 10]")
        checks.finite("ema_decay", self.ema_decay, low=0, high=1, allowed="a number in [0, 1)")
        if self.ema_decay >= 1:
            raise bad_value("ema_decay", self.ema_decay, "a number in [0, 1)")
        checks.choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.out, str) or not self.out.strip():
            raise bad_value("out", self.out, "a folder path for the distillation")

    def stages(self) -> list[int]:
        """The student step counts, one per stage, in order."""
        if self.method == "consistency":
            return [self.teacher_steps]
        k, out = self.teacher_steps // 2, []
        while k >= self.steps:
            out.append(k)
            k //= 2
        return out


@dataclass(frozen=True)
class DistillResult:
    out: Path
    model_dir: Path
    stages: list[dict]  # {"steps", "seconds", "iterations", "model"} per stage
    interrupted: bool = False


def distill(config: DistillConfig, *, resume: bool | str = False, overwrite: bool = False,
            notify: Callable[[str], None] | None = None) -> DistillResult:
    """Distil ``config.teacher`` into ``config.out``; ``resume`` and ``overwrite`` as for ``train``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("distill runs in one process (it is not supported under torchrun); use --device cuda "
                         "for a GPU")
    note = notify or (lambda text: None)
    out = Path(config.out)
    teacher = load(config.teacher, device="cpu", backend="torch")  # trains from torch weights; refuses a bad folder before anything is written
    if teacher.config.get("distilled"):
        raise UsageError(f"model {config.teacher} is already a distilled student; distil its teacher instead")
    guidance = config.guidance if config.guidance is not None else teacher.recommended["guidance"]
    if teacher.context.kind == "none":
        guidance = 1.0  # nothing to guide toward
    teacher.schedule.timesteps(config.teacher_steps)  # at most T
    for k in config.stages():
        if config.method == "progressive":
            progressive_pairs(teacher.schedule, k)  # every stage's grids nest, or refuse now
    if config.method == "consistency" and config.steps not in _nested_steps(teacher.schedule, config.teacher_steps):
        raise bad_value("steps", config.steps, f"a step count whose grid lies on the teacher's {config.teacher_steps}-"
                        f"step grid: {', '.join(map(str, _nested_steps(teacher.schedule, config.teacher_steps)))}")
    base = _student_train_config(teacher, config)
    # the run folder is claimed as training's are: a resume must bring this record's settings
    record = runlock.RunRecord(RECORD, "distillation", "distill",
                               {"distill": {**asdict(config), "guidance": guidance}, "teacher_config": teacher.config},
                               overrides=RESUME_OVERRIDES, parts=("stages",))
    holder: list[runlock.RunLock] = []
    runlock.claim_run(out, resume, overwrite, holder, note, record)
    try:
        return _run(config, out, teacher, guidance, base, record, note)
    finally:
        holder[-1].release()


def _run(config: DistillConfig, out: Path, teacher: Pipeline, guidance: float, base: TrainConfig,
         record: runlock.RunRecord, note) -> DistillResult:
    stages = config.stages()
    minutes = config.minutes / len(stages) if config.minutes else None
    done: list[dict] = record.read(out).get("stages", [])
    prev_model: Path | None = None
    for i, k in enumerate(stages):
        folder = out / "stages" / str(k)
        finished = (folder / "model" / "config.json").is_file()
        if not finished:
            source = teacher if prev_model is None else load(prev_model, device="cpu", backend="torch")
            scale = guidance if prev_model is None else 1.0  # later teachers have it inside already
            objective = _objective(config, teacher, source, scale, guidance, k, stages)
            note(f"stage {i + 1}/{len(stages)}: {config.method} distillation to {k} step(s) "
                 f"({'teacher' if prev_model is None else f'the {2 * k}-step student'} as teacher)")
            t0 = time.perf_counter()
            result = train(replace(base, out=str(folder), steps=config.iterations, minutes=minutes,
                                   seed=config.seed + i), resume="auto", notify=note, objective=objective)
            if result.interrupted:
                return DistillResult(out, out / "model", done, True)
            done = [s for s in done if s["steps"] != k] + [{"steps": k, "iterations": result.step,
                                                             "seconds": round(result.seconds, 1),
                                                             "wall_seconds": round(time.perf_counter() - t0, 1),
                                                             "model": str(folder / "model")}]
            record.write(out, {"stages": done})
        prev_model = folder / "model"
    with AtomicFolder(out / "model") as tmp:
        for item in prev_model.iterdir():
            shutil.copy2(item, tmp / item.name)
    return DistillResult(out, out / "model", done, False)


def _objective(config: DistillConfig, teacher: Pipeline, source: Pipeline, scale: float, guidance: float,
               k: int, stages: list[int]) -> Objective:
    """The training objective of the stage that makes a ``k``-step student from ``source``."""
    net = copy.deepcopy(source.model).requires_grad_(False).eval()  # channels-last from load(): faster inference
    net.prediction = source.prediction
    guided = net if scale == 1.0 else cfg(net, scale)
    net.to(resolve_device(config.device))
    method = OBJECTIVES[config.method]
    prediction, p_uncond = teacher.prediction, float(teacher.config["training"]["config"].get("p_uncond", 0.1))

    def loss(student, schedule, x0, context, generator):
        return method(student, guided, schedule, x0, context, steps=k, prediction=prediction,
                      p_uncond=p_uncond if teacher.context.kind != "none" else 0.0, generator=generator)

    sampler = SAMPLER_OF[config.method]
    allowed = [k] if config.method == "progressive" else _nested_steps(teacher.schedule, k)
    student_steps = k if config.method == "progressive" else config.steps
    snap = {"snap": teacher.recommended["snap"]} if "snap" in teacher.recommended else {}  # acts on the prompt alone
    card = {"recommended": {"sampler": sampler, "steps": student_steps, "guidance": guidance, **snap},
            "distilled": {"method": config.method, "sampler": sampler, "steps": allowed, "guidance": guidance,
                          "teacher": str(config.teacher), "teacher_sampler": "ddim",
                          "teacher_steps": 2 * k if config.method == "progressive" else k}}
    return Objective(loss=loss, model_config=ModelConfig.from_dict(teacher.config["model"]),
                     schedule=teacher.schedule, weights={n: v.contiguous() for n, v in source.model.state_dict().items()},
                     context=teacher.context.to_dict(), card=card,
                     preview={"sampler": sampler, "steps": student_steps, "guidance": guidance},
                     identity={"distill": config.method, "steps": k, "guidance": guidance,
                               "teacher": str(config.teacher)})


def _nested_steps(schedule, n: int) -> list[int]:
    """The step counts whose grids lie on the ``n``-step grid (a consistency student was trained at those times)."""
    fine = set(schedule.timesteps(n))
    return [k for k in range(1, n + 1) if set(schedule.timesteps(k)) <= fine]


def _student_train_config(teacher: Pipeline, config: DistillConfig) -> TrainConfig:
    """The teacher's training settings (data, context, size, schedule, prediction) with this distillation's
    optimisation and budget."""
    saved = (teacher.config.get("training") or {}).get("config")
    if not isinstance(saved, dict):
        raise UsageError(f"model {config.teacher} does not record how it was trained (config.json 'training.config'); "
                         f"it cannot be distilled without its training data settings")
    base = recorded_config(saved, f"model {config.teacher}")
    return replace(base, data=config.data or base.data, batch_size=config.batch_size, lr=config.lr,
                   warmup=config.warmup, ema_decay=config.ema_decay, weight_decay=0.0, grad_clip=1.0,
                   snr_gamma=None, epochs=None, sample_every=config.sample_every,
                   checkpoint_every=config.checkpoint_every, log_every=10, seed=config.seed,
                   device=config.device, precision=config.precision, progress=config.progress)


__all__ = ["DistillConfig", "DistillResult", "distill"]
