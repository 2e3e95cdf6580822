"""What a training run writes and shows as it goes: ``metrics.csv``, the tqdm progress bar and one-line notes."""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..store.files import disk_error, write_text

LOG_INTERVAL_S = 10.0  # when stderr is a log file rather than a terminal: one progress line at most this often


@dataclass
class Notes:
    """One-line notices (a resume, a stale lock taken over, a stop): kept for the result, and handed to ``notify``
    as they happen so that the CLI prints them while the run goes on."""

    notify: Callable[[str], None] | None = None
    lines: list[str] = field(default_factory=list)

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        if self.notify:
            self.notify(text)


class MetricsLog:
    """``metrics.csv``: one row every ``log_every`` steps, appended.

    A resumed run first drops the rows after its state's step (those steps are done again, with the
    same numbers), so no step appears twice; ``restarts`` counts the resumes behind each row.
    """

    COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", "elapsed_s", "nonfinite_steps", "restarts")

    def __init__(self, path: Path, keep_until_step: int):
        self.path = path
        rows = self._rows() if keep_until_step > 0 else []
        kept = [r for r in rows if _int(r.get("step")) is not None and _int(r["step"]) <= keep_until_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.COLUMNS, extrasaction="ignore", restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        write_text(path, buffer.getvalue())  # atomic: a reader sees the old file or the trimmed one

    def _rows(self) -> list[dict]:
        try:
            with self.path.open(newline="") as f:
                return list(csv.DictReader(f))
        except (OSError, csv.Error, UnicodeDecodeError):
            return []

    def write(self, step: int, epoch: int, loss: float, lr: float, rate: float, elapsed: float, nonfinite: int,
              restarts: int) -> None:
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(
            [step, epoch, f"{loss:.6f}", f"{lr:.6g}", f"{rate:.1f}", f"{elapsed:.2f}", nonfinite, restarts])
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, line.getvalue().encode())  # one write of one whole line: readers never see half a row
            finally:
                os.close(fd)
        except OSError as e:
            raise UsageError(f"{disk_error(e) or e.strerror or e} while writing {self.path}; the rows before "
                             f"step {step} are intact") from None


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


class _LineWriter:
    """tqdm's output for a log file: each refresh becomes one plain line instead of a carriage return."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(total_steps: int | None, budget_s: float | None, step: int, elapsed: float, enabled: bool):
    """Counts steps for a step budget and seconds for a time budget, so the ETA is right for both.

    On a terminal it redraws in place; into a log file it prints a line every ``LOG_INTERVAL_S``.
    """
    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    options = {} if tty else {"file": _LineWriter(sys.stderr), "mininterval": LOG_INTERVAL_S, "maxinterval": 1e9,
                              "ascii": True, "ncols": 100}
    by_steps = budget_s is None
    if by_steps:
        bar = tqdm(total=total_steps, initial=step, unit="step", disable=not enabled, **options)
    else:
        bar = tqdm(total=round(budget_s), initial=round(elapsed), unit="s", disable=not enabled,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f}s [{elapsed}<{remaining}{postfix}]", **options)
    bar.by_steps, bar.last_t = by_steps, time.perf_counter()
    return bar
