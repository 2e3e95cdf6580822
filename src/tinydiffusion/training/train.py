"""Training as one readable function: ``train(TrainConfig) -> TrainResult``.

AdamW with warm-up and cosine decay, gradient clipping, EMA weights (sampled and exported), a
step/epoch/minute budget, fixed-seed sample grids, ``metrics.csv``, an atomic training state
and an exact resume from any stop. Reads torchrun's environment; one process is the ordinary case.

Guarantees (docs/training.md, "What survives what"): the state on disk is always one consistent step; every random
draw is a function of (seed, step, rank) or (seed, epoch), so a resume is bitwise equal to the
run that never stopped; every decision that depends on time or signals is taken once for all ranks.

Reading order (EDM's ``training_loop``): ``train`` claims the run folder; ``_train`` sets up (resume, data,
networks, the run state) and hands over to ``_loop``, one optimizer step per turn (``_step``), then ``_finish``
saves and exports. Everything the loop changes lives in ``state.RunState``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Collection

import torch

from ..conditioning.dataset import draw_contexts
from ..conditioning.snap import training_captions
from ..core.loss import diffusion_loss
from ..core.schedule import Schedule
from ..data.batches import make_batch
from ..errors import bad_value
from ..models import count_parameters, preset
from ..runtime import dist
from ..runtime.dist import autocast
from ..runtime.interrupts import deferred_stop, test_fault
from ..sampling.pipeline import Pipeline
from ..store.checkpoint import export_model, read_training_state
from ..store.pictures import save_grid, to_uint8
from . import runlock, setup
from .config import Objective, TrainConfig, check_memory
from .modelcard import exported_config
from .runlog import MetricsLog, Notes, progress_bar
from .state import Networks, RunState, TrainingDiverged, epoch_order, step_seed


@dataclass(frozen=True)
class TrainResult:
    out: Path
    model_dir: Path
    step: int
    seconds: float
    loss: float
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Run:
    """What the loop reads and never changes (what it changes is the ``RunState``)."""

    config: TrainConfig
    info: dist.DistInfo
    data: setup.Data
    schedule: Schedule
    nets: Networks
    objective: Objective | None
    card: dict  # the exported model's config.json
    preview: Pipeline  # the EMA network as the sample grids draw it
    grid: dict  # {"sampler", "steps", "guidance"} of the grids
    total_steps: int | None
    budget_s: float | None


def train(config: TrainConfig, *, resume: bool | str = False, overwrite: bool = False,
          notify: Callable[[str], None] | None = None, objective: Objective | None = None,
          given: Collection[str] | None = None) -> TrainResult:
    """Train into ``config.out``. ``resume``: False (a new run), True (continue; the state must exist)
    or ``"auto"`` (continue when a state exists, else start fresh). ``overwrite`` moves an existing
    run aside instead of refusing. ``notify`` receives one-line notices as they happen. ``objective``
    replaces the diffusion loss and the random initial weights (distillation); ``None``: ordinary training.
    ``given``: the settings the caller set (the CLI's flags); a resume refuses those that differ from the run's
    (default: the settings that differ from ``TrainConfig``'s defaults)."""
    if resume not in (False, True, "auto"):
        raise bad_value("resume", resume, "False, True or 'auto'")
    note = Notes(notify)
    out = Path(config.out)
    info = dist.setup(config.device)
    if info.world > 1 and config.batch_size % info.world:
        raise bad_value("batch_size", config.batch_size, f"a multiple of the {info.world} processes (it is the "
                        f"global batch, split evenly across them)")
    if resume is False and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # torchrun restarted the workers: continue the run this job started
    holder: list[runlock.RunLock] = []
    existed = out.exists()
    mode = dist.agree(lambda: runlock.claim_run(out, resume, overwrite, holder, note), info)
    try:
        return _train(config, out, mode, info, holder, note, objective, given)
    finally:
        if holder:
            holder[-1].release()
            if not existed:
                runlock.remove_empty(out)  # a run that failed before writing anything leaves no folder behind


def _train(config: TrainConfig, out: Path, mode: str, info: dist.DistInfo, locks: list[runlock.RunLock],
           note: Notes, objective: Objective | None, given: Collection[str] | None = None) -> TrainResult:
    """Set up (settings, data, networks, the run state), run the loop, save and export."""
    # ---------------------------------------------------------------- settings: a resume keeps the saved run's
    saved = read_training_state(out / "state.pt") if mode == "resume" else None
    config = setup.settings(config, saved, out, info, objective, note, given)
    check_memory(config, preset(config.model).base, info.device, info.world)  # before the data is loaded and resized

    # ---------------------------------------------------------------- data, networks, where the run stands
    data = setup.load_data(config, info)
    if data.held_out:
        note(f"{data.held_out} images of {config.data} are held out (its split) and never trained on: they measure "
             f"what the model makes of what it has not seen")
    schedule, model_config = setup.diffusion(config, data.spec, objective)
    nets = setup.networks(config, model_config, info, objective)
    state = RunState(out, config, info.world, info.is_main, objective.identity if objective else None)
    if saved is not None:
        state.resume(saved, nets, note)
    card = exported_config(config, model_config, schedule, data.spec, data.examples, objective,
                           training_captions(data.dataset.captions))
    if info.is_main:
        resolved = {"train": asdict(config), "model": model_config.to_dict(), "world": info.world,
                    "parameters": count_parameters(nets.model), "dataset": data.dataset.counts()}
        setup.open_folder(out, mode, locks, note, resolved)
    metrics = MetricsLog(out / "metrics.csv", keep_until_step=state.step) if info.is_main else None
    budget_s = 60.0 * config.minutes if config.minutes else None
    total_steps = _total_steps(config, len(data.dataset))
    bar = progress_bar(total_steps, budget_s, state.step, state.elapsed, enabled=info.is_main and config.progress)
    grid = objective.preview if objective else {"sampler": "ddim", "steps": min(20, schedule.T), "guidance": 1.0}
    run = _Run(config, info, data, schedule, nets, objective, card,
               Pipeline(nets.ema, schedule, data.spec, card, config.prediction), grid, total_steps, budget_s)

    # ---------------------------------------------------------------- the loop, then the export
    stopped, last_loss = _loop(run, state, metrics, bar, note)
    return _finish(run, state, stopped, last_loss, note)


def _loop(run: _Run, state: RunState, metrics: MetricsLog | None, bar, note: Notes) -> tuple[str | None, float]:
    """Optimizer steps until the budget is spent or a stop is asked for. Returns what stopped it (a signal's name;
    ``None``: the budget) and the last logged loss. On any failure the last consistent step is saved first."""
    config, info, B = run.config, run.info, run.config.batch_size
    order = epoch_order(len(run.data.dataset), run.data.weights, config.seed, state.epoch)
    interrupted, bad_run, last_loss, lr = False, 0, math.nan, config.lr
    last_save, t0 = state.elapsed, time.perf_counter() - state.elapsed
    run.nets.model.train()
    with deferred_stop() as stop:
        try:
            while True:
                # one clock (rank 0's) and one stop flag for every rank, agreed before each step
                state.elapsed, stopping = dist.all_max([time.perf_counter() - t0 if info.is_main else 0.0,
                                                        float(bool(stop))], info)
                if stopping or _done(state.step, state.elapsed, run.total_steps, run.budget_s):
                    interrupted = bool(stopping)
                    break
                if state.pos + B > len(order):  # next epoch: a fresh order, the tail is dropped
                    state.epoch, state.pos = state.epoch + 1, 0
                    order = epoch_order(len(run.data.dataset), run.data.weights, config.seed, state.epoch)
                test_fault(info.rank, state.step)
                t_start = time.perf_counter()
                progress = max(state.step / run.total_steps if run.total_steps else 0.0,
                               state.elapsed / run.budget_s if run.budget_s else 0.0)
                lr = _learning_rate(config, state.step, progress)
                finite = _step(run, state, order[state.pos:state.pos + B][info.rank::info.world], lr)
                bad_run = 0 if finite else bad_run + 1
                if bad_run >= config.nonfinite_limit:
                    raise TrainingDiverged(f"{bad_run} consecutive steps (to step {state.step}) had a non-finite loss "
                                           f"or gradient and were skipped; {state.kept(state.step)}; no model was "
                                           f"exported (lower --lr, or check the data and contexts)")
                now = time.perf_counter()
                state.window.steps += 1
                state.window.seconds += now - t_start  # previews and checkpoints not counted
                if state.step % config.log_every == 0:
                    last_loss = state.log(metrics, bar, lr, info)
                bar.update(1 if bar.by_steps else max(0.0, min(now - bar.last_t, bar.total - bar.n)))
                bar.last_t = now
                if info.is_main and config.ema_snapshot_every and state.step % config.ema_snapshot_every == 0:
                    run.nets.posthoc.snapshot(state.out, state.step, run.nets.model)
                if info.is_main and state.step % config.sample_every == 0:
                    _sample_grid(run, state.out / "samples" / f"step_{state.step:06d}.png")
                if state.step % config.checkpoint_every == 0 or \
                        state.elapsed - last_save >= 60 * config.checkpoint_minutes:
                    state.save(run.nets)
                    last_save = state.elapsed
        except BaseException as e:
            bar.close()
            state.save_on_failure(run.nets, note)  # not after a failed save, nor with weights a step ahead
            if not isinstance(e, KeyboardInterrupt):
                raise
            interrupted = True
        finally:
            bar.close()
    if state.window.steps and not interrupted:  # the last, partial window of a finished run (the same on all ranks)
        last_loss = state.log(metrics, bar, lr, info)
    return (stop.name or "SIGINT") if interrupted else None, last_loss


def _step(run: _Run, state: RunState, batch: torch.Tensor, lr: float) -> bool:
    """One optimizer step on this rank's share ``batch`` of the image indices; False when its loss or gradient was
    not finite and it was skipped (weights unchanged, the step counted)."""
    config, info, nets = run.config, run.info, run.nets
    idx = batch.to(info.device)
    g = torch.Generator().manual_seed(step_seed(config.seed, state.step, info.rank))
    for group in nets.optimizer.param_groups:
        group["lr"] = lr
    x0 = make_batch(run.data.images, idx, flip=config.flip, generator=g)
    c = None if run.data.contexts is None else draw_contexts(run.data.contexts, run.data.alternatives, idx, g)
    with autocast(info.device, config.precision):
        if run.objective is None:
            loss = diffusion_loss(nets.net, run.schedule, x0, c, p_uncond=config.p_uncond,
                                  prediction=config.prediction, snr_gamma=config.snr_gamma, generator=g)
        else:
            loss = run.objective.loss(nets.net, run.schedule, x0, c, g)
    nets.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # the gradient norm is the same on every rank (gradients are averaged, and a non-finite loss
    # anywhere makes them non-finite everywhere), so every rank skips alike
    norm = torch.nn.utils.clip_grad_norm_(nets.model.parameters(), config.grad_clip or math.inf)
    state.consistent = False  # from here until state.count, weights and step disagree
    finite = bool(torch.isfinite(norm) and torch.isfinite(loss.detach()))
    if finite:
        nets.optimizer.step()
        _ema_update(nets.ema, nets.model, min(config.ema_decay, (1 + state.step) / (10 + state.step)))
        if nets.posthoc is not None:
            nets.posthoc.update(nets.model, state.step + 1)
        state.window.losses.append(loss.item())
    state.count(finite)
    return finite


def _finish(run: _Run, state: RunState, stopped: str | None, last_loss: float, note: Notes) -> TrainResult:
    """Save the last step, export the EMA network with its final grid (rank 0), let the processes go."""
    out, info, config = state.out, run.info, run.config
    if stopped and not state.consistent:  # a second Ctrl-C inside a step: the state on disk is the last one
        dist.teardown(info)
        return TrainResult(out, out / "model", state.saved_step or 0, state.elapsed, last_loss, True, note.lines)
    state.save(run.nets)
    if info.is_main:
        if run.nets.posthoc is not None and not stopped and state.step % config.ema_snapshot_every:  # the last step
            run.nets.posthoc.snapshot(out, state.step, run.nets.model)
        export = run.objective.export if run.objective and run.objective.export else export_model
        export(out / "model", run.nets.ema, run.card)
        _sample_grid(run, out / "samples" / "final.png")
    dist.barrier(info)
    dist.teardown(info)
    if stopped:
        note(f"stopped by {stopped} after step {state.step}; state saved")
    return TrainResult(out, out / "model", state.step, state.elapsed, last_loss, stopped is not None, note.lines)


# ---------------------------------------------------------------------- helpers
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


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)  # e = decay·e + (1-decay)·p
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _sample_grid(run: _Run, path: Path) -> None:
    """One row per class (or example caption), eight fixed seeds, from the EMA with the grid settings: 20
    deterministic DDIM steps, unguided, for ordinary training; the student's own for distillation."""
    preview, data = run.preview, run.data
    if preview.context.kind == "class":
        rows = list(preview.context.names)
    else:  # the cached rows of the example images: no text encoder needed during training
        rows = None if data.contexts is None or not data.examples else data.contexts[[i for i, _ in data.examples]]
    images = preview.sample(rows, n=8, seed=min(run.config.seed, 2**62), **run.grid)
    save_grid(to_uint8(images), path, ncol=8)


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train", "replace"]
