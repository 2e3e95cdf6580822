"""What a training run writes and shows as it goes: ``metrics.csv`` and the tqdm progress bar."""

from __future__ import annotations

import csv
import time
from pathlib import Path


class MetricsLog:
    """``metrics.csv``: one row every ``log_every`` steps; appended to when a run resumes."""

    COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", "elapsed_s")

    def __init__(self, path: Path, append: bool):
        self.path = path
        if not append or not path.exists():
            path.write_text(",".join(self.COLUMNS) + "\n")

    def write(self, step: int, epoch: int, loss: float, lr: float, rate: float, elapsed: float) -> None:
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([step, epoch, f"{loss:.6f}", f"{lr:.6g}", f"{rate:.1f}", f"{elapsed:.2f}"])


def progress_bar(total_steps: int | None, budget_s: float | None, step: int, elapsed: float, enabled: bool):
    """Counts steps for a step budget and seconds for a time budget, so the ETA is right for both."""
    from tqdm.auto import tqdm

    by_steps = budget_s is None
    if by_steps:
        bar = tqdm(total=total_steps, initial=step, unit="step", disable=not enabled)
    else:
        bar = tqdm(total=round(budget_s), initial=round(elapsed), unit="s", disable=not enabled,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]")
    bar.by_steps, bar.last_t = by_steps, time.perf_counter()
    return bar
