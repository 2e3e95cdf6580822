"""Training as one readable function: ``train(TrainConfig) -> TrainResult``.

AdamW with warm-up and cosine decay, gradient clipping, EMA weights (sampled and exported), a
step/epoch/minute budget, fixed-seed sample grids, ``metrics.csv``, an atomic training state
and an exact resume from any stop. Reads torchrun's environment; one process is the ordinary case.

Guarantees (README, "Design"): the state on disk is always one consistent step; every random
draw is a function of (seed, step, rank) or (seed, epoch), so a resume is bitwise equal to the
run that never stopped; every decision that depends on time or signals is taken once for all ranks.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..runtime import dist
from . import runlock
from ..store.checkpoint import STATE_FORMAT, export_model, read_training_state, save_state
from ..conditioning.dataset import dataset_contexts
from ..data.batches import as_tensor, make_batch
from ..data.sources import load_dataset
from ..runtime.dist import autocast
from ..errors import UsageError, bad_value
from ..store.files import clean_stale_temps, write_json
from ..store.pictures import save_grid, to_uint8
from ..runtime.interrupts import deferred_stop, test_fault
from ..core.loss import diffusion_loss
from ..models import build_model, count_parameters, preset
from .objective import Objective
from ..sampling.pipeline import Pipeline
from .runlog import MetricsLog, progress_bar
from ..core.schedule import Schedule
from .config import TrainConfig, check_memory, resumed_config

_DATA, _LOSS = 1, 2  # stream tags: data order per epoch; timesteps, noise, flips and dropout per step


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; the last good state is kept, nothing is exported."""


@dataclass(frozen=True)
class TrainResult:
    out: Path
    model_dir: Path
    step: int
    seconds: float
    loss: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def train(config: TrainConfig, *, resume: bool | str = False, overwrite: bool = False,
          notify: Callable[[str], None] | None = None, objective: Objective | None = None) -> TrainResult:
    """Train into ``config.out``. ``resume``: False (a new run), True (continue; the state must exist)
    or ``"auto"`` (continue when a state exists, else start fresh). ``overwrite`` moves an existing
    run aside instead of refusing. ``notify`` receives one-line notices as they happen. ``objective``
    replaces the diffusion loss and the random initial weights (distillation); ``None``: ordinary training."""
    if resume not in (False, True, "auto"):
        raise bad_value("resume", resume, "False, True or 'auto'")
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        if notify:
            notify(text)

    out = Path(config.out)
    info = dist.setup(config.device)
    if info.world > 1 and config.batch_size % info.world:
        raise bad_value("batch_size", config.batch_size, f"a multiple of the {info.world} processes (it is the "
                        f"global batch, split evenly across them)")
    if resume is False and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # torchrun restarted the workers: continue the run this job started
    holder: list = []
    existed = out.exists()
    mode = dist.agree(lambda: runlock.claim_run(out, resume, overwrite, holder, note), info)
    try:
        return _train(config, out, mode, info, holder, note, notes, objective)
    finally:
        if holder:
            holder[-1].release()
            if not existed:
                runlock.remove_empty(out)  # a run that failed before writing anything leaves no folder behind


def _train(config: TrainConfig, out: Path, mode: str, info: dist.DistInfo, locks: list, note, notes,
           objective: Objective | None) -> TrainResult:
    state = read_training_state(out / "state.pt") if mode == "resume" else None
    if state is not None:
        config = resumed_config(state["config"], config, str(out / "state.pt"))
        saved = state.get("objective")
        if saved != (objective.identity if objective else None):
            raise UsageError(f"training state {out / 'state.pt'} belongs to another objective ({saved or 'training'}); "
                             f"resume it with the settings it was started with")
        if state["world"] != info.world:
            note(f"resuming a run of {state['world']} process(es) on {info.world}: the global batch stays "
                 f"{config.batch_size} ({config.batch_size // info.world} per process); each process's random "
                 f"stream is derived from the seed, the step and its rank")
        if config.batch_size % info.world:
            raise bad_value("batch_size", config.batch_size, f"a multiple of the {info.world} processes")
    config = config.with_budget()
    check_memory(config, preset(config.model).base, info.device, info.world)  # before the data is loaded and resized

    # ---------------------------------------------------------------- data and model
    dataset = load_dataset(config.data, labels=config.labels, class_names=list(config.class_names or []) or None,
                           size=config.image_size, skip_bad_files=config.skip_bad_files)
    spec, contexts, examples = dataset_contexts(dataset, config.context, data=config.data, encoder=config.encoder,
                                                context_file=config.context_file, progress=config.progress)
    # uint8 [N, 3, H, W], the whole set in (GPU) memory; a packed set stays on disk, read batch by batch
    images = dataset.images if dataset.mapped else as_tensor(dataset.images).to(info.device)
    contexts = None if contexts is None else contexts.to(info.device)
    schedule = Schedule.linear(config.T) if config.schedule == "linear" else Schedule.cosine(config.T)
    zero_terminal = config.zero_terminal_snr if config.zero_terminal_snr is not None else config.prediction != "eps"
    schedule = schedule.rescale_zero_terminal_snr() if zero_terminal else schedule
    model_config = preset(config.model, image_size=config.image_size, context_width=spec.width, T=config.T)
    if objective is not None:
        if spec.to_dict() != objective.context:
            raise UsageError(f"the data {config.data!r} gives the context {spec.to_dict()}, but the network was "
                             f"trained on {objective.context}; pass the data it was trained on")
        schedule, model_config = objective.schedule, objective.model_config
    torch.manual_seed(config.seed)  # the initial weights
    model = build_model(model_config).to(info.device)
    if objective is not None:
        model.load_state_dict(objective.weights)
    if info.device.type == "cpu":
        # channels-last convolutions train as fast or faster on a CPU (16 px: equal in fp32; 32 px: 1.25× in fp32)
        # and let bf16 pay (32 px: 1.7× fp32's images/s, benchmarks/bf16.py); the weights' values are unchanged
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    net = dist.wrap(model, info)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    weights = _class_weights(dataset.labels) if config.balance and dataset.labels is not None else None
    step, epoch, pos, elapsed, nonfinite, restarts = 0, 0, 0, 0.0, 0, 0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UsageError(f"training state {out / 'state.pt'} does not fit this run's model: {str(e)[:300]}") from None
        step, epoch, pos, elapsed = state["step"], state["epoch"], state["pos"], state["elapsed"]
        nonfinite, restarts = state["nonfinite_total"], state["restarts"] + 1
        note(f"resuming {out} at step {step} ({elapsed:.0f} s trained)")
    order = _epoch_order(len(dataset), weights, config.seed, epoch)

    export_config = {"format": "tinydiffusion-model", "version": _version(), "model": model_config.to_dict(),
                     "schedule": schedule.to_dict(), "context": spec.to_dict(), "prediction": config.prediction,
                     "examples": examples, "recommended": _recommended(config, spec),
                     "training": {"data": config.data, "seed": config.seed, "config": asdict(config)},
                     **(objective.card if objective else {})}
    grid_settings = objective.preview if objective else {"sampler": "ddim", "steps": min(20, schedule.T), "guidance": 1.0}
    total_steps = _total_steps(config, len(dataset))
    budget_s = 60.0 * config.minutes if config.minutes else None
    B, main = config.batch_size, info.is_main
    if main:
        if mode == "overwrite":
            locks.append(runlock.replace_run(out, locks[-1], note))
        for folder in (out, out / "model", out / "samples"):
            clean_stale_temps(folder)  # left by a writer killed mid-write; we hold the lock, nobody else writes
        write_json(out / "config.json", {"train": asdict(config), "model": model_config.to_dict(), "world": info.world,
                                         "parameters": count_parameters(model), "dataset": dataset.counts()})
    metrics = MetricsLog(out / "metrics.csv", keep_until_step=step) if main else None
    bar = progress_bar(total_steps, budget_s, step, elapsed, enabled=main and config.progress)
    preview = Pipeline(ema, schedule, spec, export_config, config.prediction)
    saved_step = [step if state is not None else None]

    def position() -> dict:
        return {"step": step, "epoch": epoch, "pos": pos, "elapsed": elapsed, "nonfinite_total": nonfinite}

    def checkpoint(where: dict) -> None:
        """Rank 0 writes the state of ``where`` (the weights must belong to it); never non-finite weights."""
        if not main:
            return
        if not (_finite(model) and _finite(ema)):
            raise TrainingDiverged(f"the weights became non-finite by step {where['step']} (is --lr too high?); "
                                   f"{_kept(saved_step[0], out)}; no model was exported")
        kept = f"the previous state at step {saved_step[0]} is intact" if saved_step[0] is not None else \
            "no earlier state existed"
        save_state(out / "state.pt", {"format": STATE_FORMAT, "config": asdict(config), **where, "world": info.world,
                                      "global_batch": B, "restarts": restarts, "model": model.state_dict(),
                                      "objective": objective.identity if objective else None,
                                      "ema": ema.state_dict(), "optimizer": optimizer.state_dict()}, kept=kept)
        saved_step[0] = where["step"]

    # ---------------------------------------------------------------- the loop
    interrupted, consistent, saving, bad_run, last_loss = False, True, False, 0, math.nan
    window, window_steps, window_s = [], 0, 0.0
    last_save, t0, lr = elapsed, time.perf_counter() - elapsed, config.lr

    def log(at_elapsed: float) -> float:
        """One metrics row for the steps since the last one (a collective: every rank calls it alike)."""
        nonlocal window, window_steps, window_s
        mean = dist.all_mean(sum(window) / len(window) if window else math.nan, info)
        rate = window_steps * B / max(window_s, 1e-9)
        if metrics:
            metrics.write(step, epoch, mean, lr, rate, at_elapsed, nonfinite, restarts)
        bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}", step=step, refresh=False)
        window, window_steps, window_s = [], 0, 0.0
        return mean
    model.train()
    with deferred_stop() as stop:
        try:
            while True:
                # one clock (rank 0's) and one stop flag for every rank, agreed before each step
                elapsed, stopping = dist.all_max([time.perf_counter() - t0 if main else 0.0, float(bool(stop))], info)
                if stopping or _done(step, elapsed, total_steps, budget_s):
                    interrupted = bool(stopping)
                    break
                if pos + B > len(order):  # next epoch: a fresh order, the tail is dropped
                    epoch, pos = epoch + 1, 0
                    order = _epoch_order(len(dataset), weights, config.seed, epoch)
                test_fault(info.rank, step)
                t_start = time.perf_counter()
                idx = order[pos:pos + B][info.rank::info.world].to(info.device)
                g = torch.Generator().manual_seed(_stream_seed(config.seed, _LOSS, step, info.rank))
                progress = max(step / total_steps if total_steps else 0.0, elapsed / budget_s if budget_s else 0.0)
                lr = _learning_rate(config, step, progress)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x0 = make_batch(images, idx, flip=config.flip, generator=g)
                c = None if contexts is None else contexts[idx]
                with autocast(info.device, config.precision):
                    if objective is None:
                        loss = diffusion_loss(net, schedule, x0, c, p_uncond=config.p_uncond,
                                              prediction=config.prediction, snr_gamma=config.snr_gamma, generator=g)
                    else:
                        loss = objective.loss(net, schedule, x0, c, g)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # the gradient norm is the same on every rank (gradients are averaged, and a non-finite loss
                # anywhere makes them non-finite everywhere), so every rank skips alike
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
                consistent = False  # from here until the bookkeeping below, weights and step disagree
                if torch.isfinite(norm) and torch.isfinite(loss.detach()):
                    optimizer.step()
                    _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
                    bad_run = 0
                    window.append(loss.item())
                else:
                    nonfinite, bad_run = nonfinite + 1, bad_run + 1
                step, pos = step + 1, pos + B
                consistent = True
                if bad_run >= config.nonfinite_limit:
                    raise TrainingDiverged(f"{bad_run} consecutive steps (to step {step}) had a non-finite loss or "
                                           f"gradient and were skipped; {_kept(step, out)}; no model was exported "
                                           f"(lower --lr, or check the data and contexts)")
                now = time.perf_counter()
                window_s, window_steps = window_s + now - t_start, window_steps + 1  # previews/checkpoints not counted
                if step % config.log_every == 0:
                    last_loss = log(elapsed)
                bar.update(1 if bar.by_steps else max(0.0, min(now - bar.last_t, bar.total - bar.n)))
                bar.last_t = now
                if main and step % config.sample_every == 0:
                    _sample_grid(preview, out / "samples" / f"step_{step:06d}.png", config.seed, examples, contexts,
                                 grid_settings)
                if step % config.checkpoint_every == 0 or elapsed - last_save >= 60 * config.checkpoint_minutes:
                    saving = True
                    checkpoint(position())
                    saving, last_save = False, elapsed
        except BaseException as e:
            bar.close()
            if consistent and not saving:  # a failed save is not retried: the previous state stays
                _save_on_failure(checkpoint, position(), e, note)
            if not isinstance(e, KeyboardInterrupt):
                raise
            interrupted = True
        finally:
            bar.close()
    if interrupted and not consistent:  # a second Ctrl-C inside a step: the state on disk is the last one
        dist.teardown(info)
        return TrainResult(out, out / "model", saved_step[0] or 0, elapsed, last_loss, True, notes)
    if window_steps and not interrupted:  # the last, partial window of a finished run (the same on all ranks)
        last_loss = log(elapsed)
    checkpoint(position())
    if main:
        export_model(out / "model", ema, export_config)
        _sample_grid(preview, out / "samples" / "final.png", config.seed, examples, contexts, grid_settings)
    dist.barrier(info)
    dist.teardown(info)
    if interrupted:
        note(f"stopped by {stop.name or 'SIGINT'} after step {step}; state saved")
    return TrainResult(out, out / "model", step, elapsed, last_loss, interrupted, notes)


# ---------------------------------------------------------------------- helpers
def _save_on_failure(checkpoint, where: dict, error: BaseException, note) -> None:
    """Keep the last consistent step on disk when the loop fails; never hide the first error."""
    try:
        checkpoint(where)
    except Exception as e:  # e.g. non-finite weights: the previous state stays, the first error is reported
        if not isinstance(e, TrainingDiverged):
            note(f"could not save the state after the error: {e}")


def _kept(step: int | None, out: Path) -> str:
    return f"the last good state (step {step}) is kept in {out / 'state.pt'}" if step is not None else \
        "no state had been saved yet"


def _recommended(config: TrainConfig, spec) -> dict:
    """The model card's sampling settings: DPM-Solver++(2M) in 10 steps, guided (3) when the network also
    learned the unconditional model; the README's compare table and recipe study measured these best."""
    guided = spec.kind != "none" and config.p_uncond > 0
    return {"sampler": "dpmpp_2m", "steps": min(10, config.T), "guidance": 3.0 if guided else 1.0}


def _stream_seed(seed: int, tag: int, *counters: int) -> int:
    """A 63-bit seed for one random stream, derived from the run's seed and where it is used."""
    state = np.random.SeedSequence([seed, tag, *counters]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def _total_steps(config: TrainConfig, n: int) -> int | None:
    if config.steps:
        return config.steps
    if config.epochs:
        return max(1, math.ceil(config.epochs * n / config.batch_size))
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


def _epoch_order(n: int, weights: torch.Tensor | None, seed: int, epoch: int) -> torch.Tensor:
    """The image order of one epoch, the same on every rank and after any resume."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, _DATA, epoch))
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def _finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.state_dict().values() if p.is_floating_point())


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)  # e = decay·e + (1-decay)·p
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _sample_grid(preview: Pipeline, path: Path, seed: int, examples: list, contexts: torch.Tensor | None,
                 settings: dict) -> None:
    """One row per class (or example caption), eight fixed seeds, from the EMA with ``settings`` (sampler, steps,
    guidance): 20 deterministic DDIM steps, unguided, for ordinary training; the student's own for distillation."""
    if preview.context.kind == "class":
        rows = list(preview.context.names)
    else:  # the cached rows of the example images: no text encoder needed during training
        rows = None if contexts is None or not examples else contexts[[i for i, _ in examples]]
    images = preview.sample(rows, n=8, seed=min(seed, 2**62), **settings)
    save_grid(to_uint8(images), path, ncol=8)


def _version() -> str:
    from .. import __version__

    return __version__


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train", "replace"]
