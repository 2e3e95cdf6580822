"""Training as one readable function: ``train(TrainConfig) -> TrainResult``.

AdamW with warm-up and cosine decay, gradient clipping, EMA weights (sampled and exported), a
step/epoch/minute budget, fixed-seed sample grids, ``metrics.csv``, an atomic training state
and an exact ``resume``. Reads torchrun's environment; one process is the ordinary case.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from . import dist
from .dist import autocast
from .checkpoint import export_model, load_state, save_state
from .conditioning import dataset_contexts
from .data import as_tensor, load_dataset, make_batch
from .errors import bad_value
from .images import save_grid, to_uint8
from .loss import PREDICTIONS, diffusion_loss
from .models import build_model, count_parameters, preset
from .pipeline import Pipeline
from .runlog import MetricsLog, progress_bar
from .schedule import Schedule

DEFAULT_MINUTES = 3.0
CONTEXTS = ("class", "text", "vector", "none")
BUDGET = ("steps", "epochs", "minutes")


@dataclass(frozen=True)
class TrainConfig:
    out: str = "runs/train"
    data: str = "sprites"
    labels: str | None = None
    class_names: tuple[str, ...] | None = None
    skip_bad_files: bool = False
    context: str = "class"  # "class" (one-hot labels), "text" (caption embeddings), "vector" (a file), "none"
    encoder: str = "minilm"  # the text encoder for --context text ("minilm" or "hash")
    context_file: str | None = None  # for --context vector: an .npy array [N, D], one row per image
    model: str = "small"
    image_size: int = 16
    schedule: str = "linear"
    T: int = 500
    zero_terminal_snr: bool | None = None  # None: on for v and x0 prediction, off for eps
    prediction: str = "v"
    snr_gamma: float | None = None
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    p_uncond: float = 0.1
    flip: bool = True
    balance: bool = True
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    sample_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # "bf16": autocast the network (CPUs with bf16 support, and GPUs)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "T", "sample_every", "checkpoint_every", "log_every", "image_size"):
            if getattr(self, name) < 1:
                raise bad_value(name, getattr(self, name), "a positive integer")
        for name in BUDGET:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise bad_value(name, value, "a positive number")
        if not 0 <= self.p_uncond < 1:
            raise bad_value("p_uncond", self.p_uncond, "a probability in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise bad_value("ema_decay", self.ema_decay, "a number in [0, 1)")
        if self.prediction not in PREDICTIONS:
            raise bad_value("prediction", self.prediction, f"one of {', '.join(PREDICTIONS)}")
        if self.context not in CONTEXTS:
            raise bad_value("context", self.context, f"one of {', '.join(CONTEXTS)}")
        if (self.context == "vector") != (self.context_file is not None):
            raise bad_value("context_file", self.context_file, "an .npy file exactly when --context vector")
        if self.schedule not in ("linear", "cosine"):
            raise bad_value("schedule", self.schedule, "'linear' or 'cosine'")
        if self.zero_terminal_snr and self.prediction == "eps":
            raise bad_value("prediction", "eps", "v or x0 with --zero-terminal-snr (at zero SNR an eps "
                            "prediction says nothing about the image)")
        if self.precision not in ("fp32", "bf16"):
            raise bad_value("precision", self.precision, "'fp32' or 'bf16'")
        if self.lr <= 0:
            raise bad_value("lr", self.lr, "a positive learning rate")


@dataclass(frozen=True)
class TrainResult:
    out: Path
    model_dir: Path
    step: int
    seconds: float
    loss: float
    interrupted: bool = False


def train(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    out = Path(config.out)
    state = load_state(out / "state.pt") if resume else None
    if state is not None:
        config = _resumed_config(state["config"], config)
    if not any(getattr(config, k) for k in BUDGET):
        config = replace(config, minutes=DEFAULT_MINUTES)
    info = dist.setup(config.device)
    torch.manual_seed(config.seed)

    # ---------------------------------------------------------------- data and model
    dataset = load_dataset(config.data, labels=config.labels, class_names=list(config.class_names or []) or None,
                           size=config.image_size, skip_bad_files=config.skip_bad_files)
    spec, contexts, examples = dataset_contexts(dataset, config.context, data=config.data, encoder=config.encoder,
                                                context_file=config.context_file, progress=config.progress)
    images = as_tensor(dataset.images).to(info.device)  # uint8 [N, 3, H, W], the whole set in (GPU) memory
    contexts = None if contexts is None else contexts.to(info.device)
    schedule = Schedule.linear(config.T) if config.schedule == "linear" else Schedule.cosine(config.T)
    zero_terminal = config.zero_terminal_snr if config.zero_terminal_snr is not None else config.prediction != "eps"
    schedule = schedule.rescale_zero_terminal_snr() if zero_terminal else schedule
    model_config = preset(config.model, image_size=config.image_size, context_width=spec.width, T=config.T)
    model = build_model(model_config).to(info.device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = dist.wrap(model, info)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    g_data = torch.Generator().manual_seed(config.seed)  # the same data order on every rank
    g_loss = torch.Generator().manual_seed(config.seed * 1000 + 1 + info.rank)  # noise, steps, flips
    weights = _class_weights(dataset.labels) if config.balance and dataset.labels is not None else None
    order, pos, epoch, step, elapsed = _epoch_order(len(dataset), weights, g_data), 0, 0, 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        g_data.set_state(state["g_data"])
        g_loss.set_state(state["g_loss"])
        order, pos, epoch, step, elapsed = state["order"], state["pos"], state["epoch"], state["step"], state["elapsed"]

    export_config = {"format": "tinydiffusion-model", "version": _version(), "model": model_config.to_dict(),
                     "schedule": schedule.to_dict(), "context": spec.to_dict(), "prediction": config.prediction,
                     "examples": examples,
                     "training": {"data": config.data, "seed": config.seed, "config": asdict(config)}}
    total_steps = _total_steps(config, len(dataset), info.world)
    budget_s = 60.0 * config.minutes if config.minutes else None
    global_batch = config.batch_size * info.world
    main = info.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / "config.json", {"train": asdict(config), "model": model_config.to_dict(),
                                          "parameters": count_parameters(model), "dataset": dataset.counts()})
    metrics = MetricsLog(out / "metrics.csv", append=state is not None) if main else None
    bar = progress_bar(total_steps, budget_s, step, elapsed, enabled=main and config.progress)
    preview = Pipeline(ema, schedule, spec, export_config, config.prediction)

    def snapshot() -> dict:
        """Where the data and the random streams stand between two steps (a Ctrl-C mid-step resumes here)."""
        return {"step": step, "elapsed": elapsed, "epoch": epoch, "pos": pos, "order": order,
                "g_data": g_data.get_state(), "g_loss": g_loss.get_state()}

    def checkpoint(position: dict) -> None:
        if main:
            save_state(out / "state.pt", {"config": asdict(config), **position, "model": model.state_dict(),
                                          "ema": ema.state_dict(), "optimizer": optimizer.state_dict()})

    # ---------------------------------------------------------------- the loop
    interrupted, window, window_s, last_loss, t_last = False, [], 0.0, math.nan, time.perf_counter()
    model.train()
    position = snapshot()
    try:
        while not _done(step, elapsed, total_steps, budget_s):
            if pos + global_batch > len(order):  # next epoch: a fresh order, the tail is dropped
                order, pos, epoch = _epoch_order(len(dataset), weights, g_data), 0, epoch + 1
            t_start = time.perf_counter()
            idx = order[pos:pos + global_batch][info.rank::info.world]
            progress = max(step / total_steps if total_steps else 0.0, elapsed / budget_s if budget_s else 0.0)
            lr = _learning_rate(config, step, progress)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x0 = make_batch(images, idx.to(info.device), flip=config.flip, generator=g_loss)
            c = None if contexts is None else contexts[idx.to(info.device)]
            with autocast(info.device, config.precision):
                loss = diffusion_loss(net, schedule, x0, c, p_uncond=config.p_uncond, prediction=config.prediction,
                                      snr_gamma=config.snr_gamma, generator=g_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
            step, pos = step + 1, pos + global_batch
            now = time.perf_counter()
            window_s += now - t_start  # training time only: previews and checkpoints are not counted
            elapsed, t_last = elapsed + (now - t_last), now  # the budget counts everything
            position = snapshot()
            window.append(loss.item())
            if step % config.log_every == 0 or _done(step, elapsed, total_steps, budget_s):
                last_loss = dist.all_mean(sum(window) / len(window), info)
                rate = len(window) * global_batch / max(window_s, 1e-9)
                if metrics:
                    metrics.write(step, epoch, last_loss, lr, rate, elapsed)
                bar.set_postfix(loss=f"{last_loss:.4f}", img_s=f"{rate:.0f}", step=step, refresh=False)
                window, window_s = [], 0.0
            bar.update(1 if bar.by_steps else min(now - bar.last_t, bar.total - bar.n))  # never past the budget
            bar.last_t = now
            if main and step % config.sample_every == 0:
                _sample_grid(preview, out / "samples" / f"step_{step:06d}.png", config.seed, examples, contexts)
            if step % config.checkpoint_every == 0:
                checkpoint(position)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    checkpoint(position)
    if main:
        export_model(out / "model", ema, export_config)
        _sample_grid(preview, out / "samples" / "final.png", config.seed, examples, contexts)
    dist.barrier(info)
    dist.teardown(info)
    return TrainResult(out, out / "model", step, elapsed, last_loss, interrupted)


# ---------------------------------------------------------------------- helpers
def _resumed_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """The saved run's settings, with the budget, device and progress bar taken from this call."""
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: (tuple(v) if k == "class_names" and v else v) for k, v in saved.items() if k in known}
    config = TrainConfig(**saved)
    budget = {k: getattr(given, k) for k in BUDGET} if any(getattr(given, k) for k in BUDGET) else {}
    return replace(config, out=given.out, device=given.device, progress=given.progress, **budget)


def _total_steps(config: TrainConfig, n: int, world: int) -> int | None:
    if config.steps:
        return config.steps
    if config.epochs:
        return max(1, math.ceil(config.epochs * n / (config.batch_size * world)))
    return None


def _done(step: int, elapsed: float, total_steps: int | None, budget_s: float | None) -> bool:
    return (total_steps is not None and step >= total_steps) or (budget_s is not None and elapsed >= budget_s)


def _learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to a tenth by the end of the budget."""
    warm = min(1.0, (step + 1) / config.warmup) if config.warmup else 1.0
    return config.lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _class_weights(labels) -> torch.Tensor:
    """Per-image weights so that every class is drawn equally often (terrain dominates the sprites)."""
    labels = torch.from_numpy(labels)
    return (1.0 / torch.bincount(labels).double())[labels]


def _epoch_order(n: int, weights: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)  # e = decay·e + (1-decay)·p
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _sample_grid(preview: Pipeline, path: Path, seed: int, examples: list, contexts: torch.Tensor | None) -> None:
    """One row per class (or example caption), eight fixed seeds, 20 deterministic DDIM steps from the EMA."""
    if preview.context.kind == "class":
        rows = list(preview.context.names)
    else:  # the cached rows of the example images: no text encoder needed during training
        rows = None if contexts is None or not examples else contexts[[i for i, _ in examples]]
    images = preview.sample(rows, n=8, seed=seed, sampler="ddim", steps=min(20, preview.schedule.T))
    save_grid(to_uint8(images), path, ncol=8)


def _write_json(path: Path, data: dict) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, default=list) + "\n")


def _version() -> str:
    from . import __version__

    return __version__
