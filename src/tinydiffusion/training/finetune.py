"""``finetune(FinetuneConfig) -> FinetuneResult``: teach a trained model a new class (or a new caption) from ~20
pictures, in minutes on a CPU, without forgetting the rest.

Methods (``vocab.FINETUNE_METHODS``; the measurements behind the default are in docs/finetune.md):

- ``lora`` (default): a new context column for the class plus LoRA (rank ``rank``) on every convolution and
  linear layer (``models/adapters.py``), the base frozen; old images replayed in each batch against forgetting.
- ``column``: the new context column only (128 numbers for the shipped models); the old classes and the
  unconditional model are exactly the base's, so it cannot forget, and needs no replay.
- ``full``: every weight, with replay.

The two adapter methods export an adapter folder (``models/adapter_file.py``): the base model is named (and its
weights' sha256 recorded), never copied or changed; ``load``, ``sample``, ``eval`` and the studio merge it
in. A fine-tune is an ordinary training run (``train`` with an ``Objective``: its own network, loss and export)
in ``OUT/train`` (EMA, atomic state, exact resume, ``--minutes``/``--steps``, progress, ``metrics.csv``, grids
with the new class beside the old ones); ``OUT/model`` is its export, ``OUT/data.npz`` the training mix
(``finetune_data.py``), ``OUT/finetune.json`` the record a resume must match, and ``OUT/report.*`` the measured
report (``finetune_report.py``).
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from .. import checks
from ..conditioning.spec import ContextSpec
from ..core.loss import diffusion_loss
from ..errors import UsageError, bad_value
from ..models import PRESETS, ModelConfig, build_model
from ..models.adapter_file import export_adapter, weights_sha256
from ..models.adapters import adapt, widen
from ..runtime.dist import native_bf16, resolve_device
from ..sampling.pipeline import SHIPPED, Pipeline, load, resolve_model
from ..store.files import AtomicFolder, save_npz
from ..store.schema import class_name
from ..vocab import ADAPTER_METHODS, FINETUNE_METHODS, FINETUNE_MINUTES, PRECISIONS
from . import runlock
from .config import Objective, TrainConfig, recorded_config
from .finetune_data import REPLAY_PER_CLASS, Concept, base_data, check_base, mix, read_concept, replay_rows
from .finetune_report import Measure, report
from .train import train

DEFAULTS = {"lora": {"lr": 2e-3, "replay": 0.5}, "column": {"lr": 3e-3, "replay": 0.0},
            "full": {"lr": 2e-4, "replay": 0.5}}  # measured in benchmarks/finetune_study.py (docs/finetune.md)
RECORD, DATA = "finetune.json", "data.npz"
# settings a resumed fine-tune takes from this call rather than from its record
RESUME_OVERRIDES = ("out", "device", "progress", "steps", "minutes", "holdout", "report_samples", "evaluator")


@dataclass(frozen=True)
class FinetuneConfig:
    base: str  # a shipped model's name or an exported model folder
    data: str  # a folder of pictures of the concept, or an .npz with an 'images' array
    out: str = "runs/finetune"
    name: str | None = None  # the new class (class models; required there); a text model's concept, for reports
    prompt: str | None = None  # text models: the caption of every picture
    captions: str | None = None  # text models: a JSON file {picture file name: caption}
    method: str = "lora"
    rank: int = 4  # LoRA's rank
    alpha: float | None = None  # LoRA's alpha (the update is scaled by alpha/rank); None: the rank (scale 1)
    steps: int | None = None
    minutes: float | None = None  # neither: FINETUNE_MINUTES
    replay: float | None = None  # share of each batch replayed from the base's training data; None: the method's
    replay_data: str | None = None  # what is replayed; None: the data the base was trained on (its card's)
    holdout: str | None = None  # pictures of the concept kept aside, for the report's recognition figure
    batch_size: int = 32
    lr: float | None = None  # None: the method's default
    warmup: int = 20
    ema_decay: float = 0.99
    sample_every: int = 100
    checkpoint_every: int = 100
    report_samples: int = 50  # per class; 0: no report
    evaluator: str = "sprites"
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 where it runs natively (2× fp32 on such a CPU), else fp32
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("base", "data", "out"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key).strip():
                raise bad_value(key, getattr(self, key), {"base": "a shipped model or a model folder", "data":
                                "a folder of pictures or an .npz", "out": "a folder path for the fine-tune"}[key])
        checks.choice("method", self.method, FINETUNE_METHODS)
        checks.choice("precision", self.precision, ("auto", *PRECISIONS))
        if self.name is not None:
            class_name("class", self.name)
        if self.prompt is not None and (not isinstance(self.prompt, str) or not self.prompt.strip()):
            raise bad_value("prompt", self.prompt, "a non-empty caption")
        if self.prompt is not None and self.captions is not None:
            raise bad_value("captions", self.captions, "either --prompt or --captions, not both")
        checks.integer("rank", self.rank, low=1, high=256)
        for key, low, high in (("batch_size", 1, 65_536), ("warmup", 0, 10**9), ("sample_every", 1, 10**12),
                               ("checkpoint_every", 1, 10**12), ("report_samples", 0, 100_000)):
            checks.integer(key, getattr(self, key), low=low, high=high)
        checks.seed("seed", self.seed, max(1, self.report_samples))
        if self.steps is not None:
            checks.integer("steps", self.steps, low=1, high=10**12)
        for key in ("minutes", "alpha", "lr"):
            if getattr(self, key) is not None:
                checks.finite(key, getattr(self, key), low=0, high=1e9, low_open=True, allowed="a positive number")
        if self.replay is not None:
            checks.finite("replay", self.replay, low=0, high=1, allowed="a share of each batch in [0, 1)")
            if self.replay >= 1:
                raise bad_value("replay", self.replay, "a share of each batch in [0, 1) (the rest is the concept)")
        checks.finite("ema_decay", self.ema_decay, low=0, high=1, allowed="a number in [0, 1)")
        if self.ema_decay >= 1:
            raise bad_value("ema_decay", self.ema_decay, "a number in [0, 1)")


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    model_dir: Path
    step: int
    seconds: float
    report: dict | None
    interrupted: bool = False


@dataclass(frozen=True, eq=False)
class _Plan:
    """Everything a fine-tune reads and checks before it claims its folder."""

    base: Pipeline
    concept: Concept
    holdout: Concept | None
    real: Any  # data.sources.Dataset: the base's training data
    data_name: str
    spec: ContextSpec  # the fine-tuned model's context
    row: str  # what draws the concept: the new class's name, or the prompt
    arrays: dict  # the training mix (finetune_data.mix)
    base_ref: str  # the base as the adapter names it: a shipped name or an absolute folder
    sha: str  # sha256 of the base's weights
    settings: dict  # the config with every default resolved: what the record keeps


def finetune(config: FinetuneConfig, *, resume: bool | str = False, overwrite: bool = False,
             notify: Callable[[str], None] | None = None) -> FinetuneResult:
    """Fine-tune ``config.base`` into ``config.out``; ``resume`` and ``overwrite`` as for ``train``. Every input is
    read and checked before the folder is claimed: a refusal leaves nothing behind."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UsageError("finetune runs in one process (not under torchrun); use --device cuda for a GPU")
    note = notify or (lambda text: None)
    plan = _prepare(config)
    record = runlock.RunRecord(RECORD, "fine-tune", "finetune", {"finetune": plan.settings, "base": plan.base_ref},
                               overrides=RESUME_OVERRIDES, parts=("train", DATA))
    holder: list[runlock.RunLock] = []
    runlock.claim_run(Path(config.out), resume, overwrite, holder, note, record)
    try:
        return _run(config, plan, record, note)
    finally:
        holder[-1].release()


def _prepare(config: FinetuneConfig) -> _Plan:
    """The base, the pictures, the replayed data and the training mix, each checked; nothing written."""
    base = load(config.base, device="cpu", backend="torch")  # refuses a bad folder before anything is written
    name = check_base(base, config.base, config.name, config.method, config.prompt or config.captions)
    text = base.context.kind == "text"
    concept = read_concept(config.data, base.image_size, prompt=config.prompt, captions=config.captions)
    if text and concept.captions is None:
        raise UsageError(f"model {config.base} is a text model: give the pictures' caption with --prompt \"…\" (or "
                         f"one per picture with --captions FILE); the prompt then draws the concept")
    concept = concept if text else replace(concept, captions=None)
    holdout = read_concept(config.holdout, base.image_size, param="holdout", minimum=2) if config.holdout else None
    real, data_name = base_data(base, config.base, config.replay_data)
    method = DEFAULTS[config.method]
    share = method["replay"] if config.replay is None else config.replay
    if text:
        names, new, spec = [name, *(real.class_names or ["base"])], 0, base.context
    else:
        names, new = [*base.context.names, name], base.context.width
        spec = ContextSpec.classes(names)
    arrays = mix(concept, real if share > 0 else None, replay_rows(real, REPLAY_PER_CLASS, config.seed), share, names,
                 new, config.batch_size)
    base_ref = config.base if config.base in SHIPPED and not Path(config.base).exists() else \
        str(resolve_model(config.base).resolve())
    sha = weights_sha256(resolve_model(config.base))
    settings = {**asdict(config), "name": name, "replay": share, "lr": config.lr or method["lr"],
                "precision": _precision(config), "base_sha256": sha, "data_sha256": concept.digest()}
    row = config.prompt or concept.captions[0] if text else name
    return _Plan(base, concept, holdout, real, data_name, spec, row, arrays, base_ref, sha, settings)


def _run(config: FinetuneConfig, plan: _Plan, record: runlock.RunRecord, note) -> FinetuneResult:
    """In the claimed folder: the training mix written, the training run, the export copied, the report."""
    out = Path(config.out)
    if not (out / DATA).is_file():
        save_npz(out / DATA, plan.arrays)
    objective = _objective(plan.base, config, plan.spec, plan.base_ref, plan.sha, plan.settings["data_sha256"])
    result = train(_train_config(plan.base, config, out, plan.settings),
                   resume="auto" if (out / "train").exists() else False, notify=note, objective=objective)
    if result.interrupted:
        return FinetuneResult(out, out / "model", result.step, result.seconds, None, True)
    with AtomicFolder(out / "model") as tmp:
        for item in (out / "train" / "model").iterdir():
            shutil.copy2(item, tmp / item.name)
    measured = None
    if config.report_samples:
        note(f"measuring the fine-tuned model ({config.report_samples} samples per class)")
        measured = report(out, out / "model", plan.base, plan.sha, plan.concept, plan.holdout, plan.row, plan.real,
                          plan.data_name, Measure(config.report_samples, 1000 + config.seed, config.evaluator))
    record.write(out, {"result": {"steps": result.step, "seconds": round(result.seconds, 1), "report": measured}})
    return FinetuneResult(out, out / "model", result.step, result.seconds, measured)


def _precision(config: FinetuneConfig) -> str:
    if config.precision != "auto":
        return config.precision
    return "bf16" if native_bf16(resolve_device(config.device)) else "fp32"


def _objective(base: Pipeline, config: FinetuneConfig, spec: ContextSpec, base_ref: str, sha: str,
               digest: str) -> Objective:
    """The adapted network (base frozen per the method), the diffusion loss with the base's settings, the card."""
    width = base.context.width
    model_config = ModelConfig.from_dict({**base.config["model"], "context_width": spec.width})
    template = build_model(model_config)
    template.load_state_dict(widen(base.model.state_dict(), spec.width - width))
    if config.method != "full":
        adapt(template, width, rank=config.rank if config.method == "lora" else None, alpha=config.alpha,
              seed=config.seed)
    p_uncond = float(((base.config.get("training") or {}).get("config") or {}).get("p_uncond", 0.1))
    prediction, anchored = base.prediction, spec.kind == "class"

    def loss(net, schedule, x0, context, generator):
        if anchored:  # the new class's rows keep their context: the unconditional model learns the old data only
            net = _keep_rows(net, context, context[:, -1:] > 0)
        return diffusion_loss(net, schedule, x0, context, p_uncond=p_uncond, prediction=prediction, generator=generator)

    sampler, steps, guidance = base.resolve(None, None, None)
    preview = {"sampler": sampler, "steps": steps, "guidance": guidance}
    card: dict[str, Any] = {"recommended": preview}
    if config.method in ADAPTER_METHODS:
        card["adapter"] = {"base": base_ref, "base_sha256": sha, "method": config.method,
                           "new_classes": list(spec.names[width:]) if spec.kind == "class" else []}
        if config.method == "lora":
            card["adapter"].update(rank=config.rank, alpha=float(config.alpha or config.rank))
    return Objective(loss=loss, model_config=model_config, schedule=base.schedule,
                     weights={k: v.contiguous() for k, v in template.state_dict().items()}, context=spec.to_dict(),
                     card=card, preview=preview, identity={"finetune": config.method, "base_sha256": sha,
                                                           "data_sha256": digest, "rank": config.rank},
                     network=lambda: copy.deepcopy(template),
                     export=export_adapter if config.method in ADAPTER_METHODS else None)


def _keep_rows(net, context, keep):
    """``net`` with the context of the rows ``keep`` (``[B, 1]``) never dropped for guidance."""
    return lambda x_t, t, c: net(x_t, t, torch.where(keep, context, c))


def _train_config(base: Pipeline, config: FinetuneConfig, out: Path, settings: dict) -> TrainConfig:
    """The base's training settings (context, size, schedule, prediction, flips) with this fine-tune's data,
    optimisation and budget."""
    saved = (base.config.get("training") or {}).get("config")
    recorded = recorded_config(saved, f"model {config.base}") if isinstance(saved, dict) else TrainConfig()
    encoder = base.context.encoder if base.context.kind == "text" else recorded.encoder
    budget = {"steps": config.steps, "minutes": config.minutes} if config.steps or config.minutes else \
        {"steps": None, "minutes": FINETUNE_MINUTES}
    return replace(recorded, out=str(out / "train"), data=str(out / DATA), labels=None, class_names=None,
                   context=base.context.kind, encoder=encoder, context_file=None, image_size=base.image_size,
                   model=recorded.model if recorded.model in PRESETS else "small", T=base.schedule.T,
                   schedule=base.config["schedule"]["kind"], zero_terminal_snr=None, prediction=base.prediction,
                   snr_gamma=None, batch_size=config.batch_size, lr=settings["lr"], warmup=config.warmup,
                   weight_decay=0.0, grad_clip=1.0, ema_decay=config.ema_decay, balance=False, epochs=None, **budget,
                   sample_every=config.sample_every, checkpoint_every=config.checkpoint_every, log_every=10,
                   seed=config.seed, device=config.device, precision=settings["precision"], progress=config.progress)


__all__ = ["FinetuneConfig", "FinetuneResult", "finetune"]
