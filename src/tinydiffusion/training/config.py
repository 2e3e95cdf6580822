"""``TrainConfig``: every training setting, checked where it comes in (library and CLI alike); ``Objective``:
what a run minimises when it is not the ordinary diffusion loss."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Collection

from .. import checks
from ..errors import UsageError, bad_value
from ..vocab import CONTEXT_KINDS, MAX_IMAGE_SIZE, MAX_T, MAX_TOKENS, PRECISIONS, PREDICTIONS, SCHEDULES

DEFAULT_MINUTES = 3.0
BUDGET = ("steps", "epochs", "minutes")
MAX_BATCH, MAX_COUNT = 65_536, 10**12
# settings a resumed run takes from the command line instead of its saved config
RESUME_OVERRIDES = ("out", "device", "progress")
# how often a resumed run writes grids, states and rows: this call's, when it sets one; else the saved run's
RESUME_CADENCE = ("sample_every", "checkpoint_every", "checkpoint_minutes", "log_every", "nonfinite_limit")
SHOWN_ON_RESUME = ("data", "context", "model", "image_size", "batch_size", "lr", "prediction", "precision", "seed")


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/train"
    data: str = "sprites"
    labels: str | None = None
    class_names: tuple[str, ...] | None = None
    skip_bad_files: bool = False
    context: str = "class"  # "class" (one-hot labels), "text" (caption embeddings), "vector" (a file), "none"
    encoder: str = "minilm"  # the text encoder for --context text ("minilm" or "hash")
    # --context text: 0 conditions on the pooled sentence vector only (the course's design: it scales every block);
    # L > 0 also gives the network the first L token states, attended over by cross-attention blocks (16×16 and 8×8)
    text_tokens: int = 0
    context_file: str | None = None  # for --context vector: an .npy array [N, D], one row per image
    caption_alternatives: bool = False  # --context text: one of each image's alt_captions per step (off: measured)
    model: str = "small"
    image_size: int = 16
    schedule: str = "linear"
    T: int = 500
    zero_terminal_snr: bool | None = None  # None: on for v and x0 prediction, off for eps
    prediction: str = "v"
    snr_gamma: float | None = None
    batch_size: int = 32  # the global batch: images per optimizer step, split evenly across processes
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0 turns clipping off
    ema_decay: float = 0.995
    # keep two power-function EMAs and snapshot them every N steps (0: off), so that any EMA length can be chosen
    # after training (`tinydiffusion ema`, training/posthoc_ema.py)
    ema_snapshot_every: int = 0
    p_uncond: float = 0.1
    flip: bool = True
    balance: bool = True
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    sample_every: int = 500
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0  # also save the state this often (rank 0's clock), so no run is lost whole
    log_every: int = 25
    nonfinite_limit: int = 10  # stop after this many consecutive steps with a non-finite loss or gradient
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "bf16": autocast the network (CPUs with bf16 support, and GPUs)
    progress: bool = True

    def __post_init__(self) -> None:
        for name, (low, high) in {"batch_size": (1, MAX_BATCH), "T": (2, MAX_T), "sample_every": (1, MAX_COUNT),
                                  "checkpoint_every": (1, MAX_COUNT), "log_every": (1, MAX_COUNT),
                                  "image_size": (4, MAX_IMAGE_SIZE), "warmup": (0, MAX_COUNT),
                                  "nonfinite_limit": (1, MAX_COUNT)}.items():
            checks.integer(name, getattr(self, name), low=low, high=high)
        checks.seed("seed", self.seed)
        checks.integer("ema_snapshot_every", self.ema_snapshot_every, low=0, high=MAX_COUNT)
        if self.steps is not None:
            checks.integer("steps", self.steps, low=1, high=MAX_COUNT)
        for name in ("epochs", "minutes"):
            if getattr(self, name) is not None:
                checks.finite(name, getattr(self, name), low=0, high=1e9, low_open=True,
                              allowed="a positive finite number")
        checks.finite("checkpoint_minutes", self.checkpoint_minutes, low=0, high=1e9, low_open=True,
                      allowed="a positive finite number of minutes")
        checks.finite("lr", self.lr, low=0, high=10, low_open=True, allowed="a finite learning rate in (0, 10]")
        checks.finite("weight_decay", self.weight_decay, low=0, high=10)
        checks.finite("grad_clip", self.grad_clip, low=0, allowed="a finite norm >= 0 (0 turns clipping off)")
        checks.finite("p_uncond", self.p_uncond, low=0, high=1, allowed="a probability in [0, 1)")
        if self.p_uncond >= 1:
            raise bad_value("p_uncond", self.p_uncond, "a probability in [0, 1)")
        checks.finite("ema_decay", self.ema_decay, low=0, high=1, allowed="a number in [0, 1)")
        if self.ema_decay >= 1:
            raise bad_value("ema_decay", self.ema_decay, "a number in [0, 1)")
        if self.snr_gamma is not None:
            checks.finite("snr_gamma", self.snr_gamma, low=0, low_open=True, allowed="a positive finite number")
        for name, allowed in (("prediction", PREDICTIONS), ("context", CONTEXT_KINDS), ("schedule", SCHEDULES),
                              ("precision", PRECISIONS)):
            checks.choice(name, getattr(self, name), allowed)
        checks.integer("text_tokens", self.text_tokens, low=0, high=MAX_TOKENS)
        if self.text_tokens and (self.context != "text" or self.model == "course"):
            raise bad_value("text_tokens", self.text_tokens, "0 unless --context text with a unet preset (tiny, "
                            "small, base): token rows are text's, and the course network has no cross-attention")
        if (self.context == "vector") != (self.context_file is not None):
            raise bad_value("context_file", self.context_file, "an .npy file exactly when --context vector")
        if self.zero_terminal_snr and self.prediction == "eps":
            raise bad_value("prediction", "eps", "v or x0 with --zero-terminal-snr (at zero SNR an eps "
                            "prediction says nothing about the image)")
        if not isinstance(self.out, str) or not self.out.strip():
            raise bad_value("out", self.out, "a folder path for the run")
        if not isinstance(self.data, str) or not self.data.strip():
            raise bad_value("data", self.data, "an embedded set (sprites, emoji), a folder, an .npz or an .npy")

    def with_budget(self) -> "TrainConfig":
        """The default budget (``DEFAULT_MINUTES``) when none of steps, epochs and minutes is set."""
        return self if any(getattr(self, k) for k in BUDGET) else replace(self, minutes=DEFAULT_MINUTES)


@dataclass(frozen=True, eq=False)
class Objective:
    """What a training run minimises and how its network starts, when it is not the ordinary diffusion loss from
    random weights (distillation, ``distill.py``; fine-tuning, ``finetune.py``, which also brings its own network
    and export). ``train`` takes one and keeps everything else (data, EMA, atomic
    state, exact resume, budgets, metrics, grids, export)."""

    loss: Callable  # loss(net, schedule, x0, context, generator) -> a scalar tensor
    model_config: Any  # models.ModelConfig of the network
    schedule: Any  # schedule.Schedule
    weights: dict  # the network's initial state_dict
    context: dict  # the context spec the data must give (the teacher's), as ContextSpec.to_dict()
    card: dict  # config.json entries added to or replacing the trained ones ("recommended", "distilled")
    preview: dict  # {"sampler", "steps", "guidance"} of the fixed-seed sample grids
    identity: dict  # JSON-able; saved in the state, and a resume must bring the same
    network: Callable | None = None  # network() -> the module that trains (fine-tuning: an adapted one)
    export: Callable | None = None  # export(folder, ema, card) instead of export_model (an adapter)


def recorded_config(saved: Any, where: str) -> TrainConfig:
    """A ``TrainConfig`` from settings saved as JSON or in a state (``where`` names them in a refusal): lists back
    to tuples, fields of other versions dropped, every value checked again."""
    if not isinstance(saved, dict):
        raise UsageError(f"{where} holds no valid training config")
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: (tuple(v) if k == "class_names" and v else v) for k, v in saved.items() if k in known}
    try:
        return TrainConfig(**saved)
    except UsageError as e:
        raise UsageError(f"{where} holds an invalid training config: {e}") from None


def resumed_config(saved: Any, given: TrainConfig, where: str, names: Collection[str] | None = None) -> TrainConfig:
    """The saved run's settings, with the budget and the run-handling settings of this call. A setting of this call
    that was set (``names``, default: those that differ from the defaults) and differs from the run's (another
    model, batch, size, data …) is refused by name: a resume continues the run it finds, so silently dropping it
    would train something other than asked."""
    config = recorded_config(saved, f"training state {where}")
    defaults = TrainConfig()
    given_values = {f.name: getattr(given, f.name) for f in fields(TrainConfig)
                    if (f.name in names if names is not None else getattr(given, f.name) != getattr(defaults, f.name))}
    changed = [k for k, v in given_values.items() if k not in RESUME_OVERRIDES + RESUME_CADENCE + BUDGET
               and v != getattr(config, k)]
    if changed:
        raise UsageError(f"training state {where} belongs to a run with other settings: "
                         + ", ".join(f"{k}={getattr(config, k)!r} there, {given_values[k]!r} here" for k in changed)
                         + "; resume it with its own settings (leave these out), or start a new run (--overwrite "
                           "moves this one aside, or choose another --out)")
    budget = {k: getattr(given, k) for k in BUDGET} if any(getattr(given, k) for k in BUDGET) else {}
    cadence = {k: given_values[k] for k in RESUME_CADENCE if k in given_values}
    return replace(config, **{k: getattr(given, k) for k in RESUME_OVERRIDES}, **cadence, **budget)


def describe(config: TrainConfig) -> str:
    """The settings a resumed run continues with, in one line."""
    return ", ".join(f"{k.replace('_', ' ')} {getattr(config, k)}" for k in SHOWN_ON_RESUME)


def check_memory(config: TrainConfig, width: int, device, world: int) -> None:
    """Refuse a batch whose activations cannot fit, before allocating them. Measured peak for a forward and
    backward pass: 5–17 KB per image pixel for the presets, about 300–470 bytes per channel of model width."""
    need = 500.0 * width * (config.batch_size // world) * config.image_size**2
    if device.type == "cuda":
        import torch

        have = torch.cuda.get_device_properties(device).total_memory
        if need > have:
            raise bad_value("batch_size", config.batch_size, f"a batch whose activations fit in the GPU's "
                            f"{have / 2**30:.0f} GiB (about {need / 2**30:.1f} GiB needed at --image-size "
                            f"{config.image_size})")
        return
    checks.memory("batch_size", config.batch_size, need,
                  f"training batch (its activations at --image-size {config.image_size})")
