"""Where a training run stands: ``RunState``, the only thing the training loop changes besides the weights.

It holds the position (step, epoch, place in the epoch's image order), rank 0's clock and the counters that
``metrics.csv`` reports, and it owns the one file that makes a run resumable: ``save`` writes the position with
the network, its EMA copy and the optimizer as one atomic training state (format 2, read with
``weights_only=True``), ``resume`` puts a saved one back, ``log`` writes a metrics row. Data order and every
random draw are derived from (seed, epoch) and (seed, step, rank), so this position is all a resume needs to
continue bitwise as if the run had never stopped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..runtime import dist
from ..store.checkpoint import STATE_FORMAT, save_state
from .config import TrainConfig
from .posthoc_ema import PowerEMAs
from .runlog import MetricsLog, Notes

_DATA, _LOSS = 1, 2  # stream tags: data order per epoch; timesteps, noise, flips and dropout per step


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite; the last good state is kept, nothing is exported."""


@dataclass(frozen=True)
class Networks:
    """What a training state saves besides the position, and how the loop reaches the network."""

    model: torch.nn.Module  # the trained network, as the optimizer and the state see it
    ema: torch.nn.Module  # its exponential moving average: previews, export
    net: torch.nn.Module  # the network as the loss calls it (wrapped for DistributedDataParallel under torchrun)
    optimizer: torch.optim.Optimizer
    posthoc: PowerEMAs | None = None  # the power-function EMAs whose snapshots choose an EMA length afterwards


@dataclass
class Window:
    """The steps since the last metrics row: their finite losses and their time (previews and saves not counted)."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


@dataclass
class RunState:
    """The run's position and counters; the loop advances it, ``save`` and ``resume`` carry it across stops."""

    out: Path
    config: TrainConfig
    world: int  # processes; the state records it so that a resume on another count can say so
    main: bool  # global rank 0: the only writer
    objective: dict | None = None  # the objective's identity (distillation); a resume must bring the same
    step: int = 0
    epoch: int = 0
    pos: int = 0  # images of this epoch's order already used (a global count, the same on every rank)
    elapsed: float = 0.0  # seconds trained on rank 0's clock, over every resume
    nonfinite: int = 0  # steps skipped for a non-finite loss or gradient, over every resume
    restarts: int = 0  # resumes behind this run
    saved_step: int | None = None  # the step of the state on disk; None before the first save
    # False from the optimizer's update until the step is counted: weights a step ahead must not be saved
    consistent: bool = True
    saving: bool = False  # a save that fails is not tried again (the previous state stays)
    window: Window = field(default_factory=Window)

    def resume(self, saved: dict[str, Any], nets: Networks, note: Notes) -> None:
        """Continue from the training state ``saved`` (read and checked by ``read_training_state``)."""
        try:
            nets.model.load_state_dict(saved["model"])
            nets.ema.load_state_dict(saved["ema"])
            nets.optimizer.load_state_dict(saved["optimizer"])
            if nets.posthoc is not None:
                nets.posthoc.load_state_dict(saved["posthoc"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UsageError(f"training state {self.out / 'state.pt'} does not fit this run's model: "
                             f"{str(e)[:300]}") from None
        self.step, self.epoch, self.pos, self.elapsed = saved["step"], saved["epoch"], saved["pos"], saved["elapsed"]
        self.nonfinite, self.restarts = saved["nonfinite_total"], saved["restarts"] + 1
        self.saved_step = self.step
        note(f"resuming {self.out} at step {self.step} ({self.elapsed:.0f} s trained)")

    def count(self, finite: bool) -> None:
        """Book one step: its images used, its skip counted if it was not ``finite``; weights and step agree again."""
        self.step, self.pos = self.step + 1, self.pos + self.config.batch_size
        if not finite:
            self.nonfinite += 1
        self.consistent = True

    def save(self, nets: Networks) -> None:
        """Rank 0 writes this position with the weights (which must belong to it) as the training state, atomically;
        never non-finite weights (``TrainingDiverged``: the previous state stays)."""
        if not self.main:
            return
        self.saving = True
        if not (_finite(nets.model) and _finite(nets.ema)):
            raise TrainingDiverged(f"the weights became non-finite by step {self.step} (is --lr too high?); "
                                   f"{self.kept(self.saved_step)}; no model was exported")
        kept = f"the previous state at step {self.saved_step} is intact" if self.saved_step is not None else \
            "no earlier state existed"
        position = {"step": self.step, "epoch": self.epoch, "pos": self.pos, "elapsed": self.elapsed,
                    "nonfinite_total": self.nonfinite}
        save_state(self.out / "state.pt", {"format": STATE_FORMAT, "config": asdict(self.config), **position,
                                           "world": self.world, "global_batch": self.config.batch_size,
                                           "restarts": self.restarts, "model": nets.model.state_dict(),
                                           "objective": self.objective, "ema": nets.ema.state_dict(),
                                           "optimizer": nets.optimizer.state_dict(),
                                           "posthoc": nets.posthoc.state_dict() if nets.posthoc else None},
                   kept=kept)
        self.saving, self.saved_step = False, self.step

    def save_on_failure(self, nets: Networks, note: Notes) -> None:
        """Keep the last consistent step on disk when the loop fails; never hide the first error."""
        if not self.consistent or self.saving:  # weights a step ahead, or the save itself failed
            return
        try:
            self.save(nets)
        except Exception as e:  # e.g. non-finite weights: the previous state stays, the first error is reported
            if not isinstance(e, TrainingDiverged):
                note(f"could not save the state after the error: {e}")

    def log(self, metrics: MetricsLog | None, bar, lr: float, info: dist.DistInfo) -> float:
        """One metrics row for the steps of the window, which starts anew; returns their mean loss over all ranks
        (a collective: every rank calls it alike)."""
        w = self.window
        mean = dist.all_mean(sum(w.losses) / len(w.losses) if w.losses else math.nan, info)
        rate = w.steps * self.config.batch_size / max(w.seconds, 1e-9)
        if metrics:
            metrics.write(self.step, self.epoch, mean, lr, rate, self.elapsed, self.nonfinite, self.restarts)
        bar.set_postfix(loss=f"{mean:.4f}", img_s=f"{rate:.0f}", step=self.step, refresh=False)
        self.window = Window()
        return mean

    def kept(self, step: int | None) -> str:
        """What a diverged run leaves to resume from, for its message."""
        return f"the last good state (step {step}) is kept in {self.out / 'state.pt'}" if step is not None else \
            "no state had been saved yet"


def _finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.state_dict().values() if p.is_floating_point())


# ---------------------------------------------------------------------- random streams, derived rather than stored
def _stream_seed(seed: int, tag: int, *counters: int) -> int:
    """A 63-bit seed for one random stream, derived from the run's seed and where it is used."""
    state = np.random.SeedSequence([seed, tag, *counters]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of one step's draws on one rank: timesteps, noise, flips and context dropout."""
    return _stream_seed(seed, _LOSS, step, rank)


def epoch_order(n: int, weights: torch.Tensor | None, seed: int, epoch: int) -> torch.Tensor:
    """The image order of one epoch, the same on every rank and after any resume."""
    generator = torch.Generator().manual_seed(_stream_seed(seed, _DATA, epoch))
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-image weights so that every class is drawn equally often (terrain dominates the sprites)."""
    labels = torch.from_numpy(labels)
    return (1.0 / torch.bincount(labels).double())[labels]
