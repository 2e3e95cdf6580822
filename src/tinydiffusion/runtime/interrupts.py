"""Ctrl-C and SIGTERM during training: finish the step, then stop at a consistent point.

A signal landing inside ``optimizer.step()`` would leave weights half a step ahead of the
recorded step, so the first SIGINT/SIGTERM only raises a flag that the loop reads between steps.
A second SIGINT raises ``KeyboardInterrupt`` at once (the user insists); the loop then saves only
if its state is consistent at that moment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Iterator

FAULT_ENV = "TINYDIFFUSION_TEST_FAULT"


class StopFlag:
    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def request(self, signum: int) -> None:
        self.signal = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""


@contextlib.contextmanager
def deferred_stop() -> Iterator[StopFlag]:
    """Within the block SIGINT and SIGTERM set the yielded flag instead of killing the step."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield flag
        return

    def on_signal(signum, frame):
        if flag and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        flag.request(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_fault(rank: int, step: int) -> None:
    """Tests only: ``FAULT_ENV="RANK:STEP:ACTION"`` makes that rank fail before that step, on a job's first
    attempt (ACTION: raise, kill, or sleep=SECONDS), to prove what survives a failing or late process."""
    spec = os.environ.get(FAULT_ENV)
    if not spec or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        return
    want_rank, want_step, action = spec.split(":", 2)
    if (int(want_rank), int(want_step)) != (rank, step):
        return
    if action == "raise":
        raise RuntimeError(f"{FAULT_ENV}: rank {rank} fails at step {step}")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep="):
        time.sleep(float(action.split("=", 1)[1]))
