"""The CPU work goes through one bounded queue with one worker thread (per device): requests wait their
turn or are told 429 with ``Retry-After``; a cancelled job stops at its next sampler step; the results of
the last finished jobs stay in memory for download. Job ids are random (``secrets``): a job's state, its
cancel and its downloads are reachable only by whoever was told its id.

A job talks to the request that made it through an ``asyncio.Queue`` on that request's event loop (filled
with ``call_soon_threadsafe`` from the worker), so a waiting client costs no thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ...errors import UsageError
from ..catalog import NotFound

log = logging.getLogger("tinydiffusion.studio")
KEEP_JOBS = 32  # finished jobs whose results can be downloaded
KEEP_BYTES = 256 * 2**20  # and at most this much memory for them (the oldest go first)
INTERNAL = "internal error (see the server log)"


def new_id() -> str:
    """A job id no other page can guess: ``j`` and 96 random bits (URL-safe)."""
    return "j" + secrets.token_urlsafe(12)


class QueueFull(Exception):
    """The work queue is full: 429 with ``Retry-After`` (seconds)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside the sampler callback to stop a cancelled job (never reaches a client as a traceback)."""


@dataclass
class Result:
    """A finished sampling job: what its downloads are made from."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    contexts: np.ndarray  # float32 [N, D]
    labels: np.ndarray | None  # int64 [N] when every row is one class
    metadata: dict[str, Any]
    frames: list[np.ndarray]  # uint8 x_t snapshots (at most ~60) for the GIF
    grid_png: bytes
    ncol: int

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.contexts.nbytes + sum(f.nbytes for f in self.frames) + len(self.grid_png)


class Job:
    """One request's work: ``kind`` is ``sample``, ``stream``, ``compare`` or ``edit``."""

    def __init__(self, kind: str, params: Any, entry: Any, settings: list | None = None, want_images: bool = False,
                 guide: Any = None):
        self.id, self.kind, self.params, self.entry, self.settings = "", kind, params, entry, settings
        self.guide = guide  # the listed model named as the autoguidance guide (checked to fit), or None
        self.want_images = want_images
        self.loop = asyncio.get_running_loop()  # made by an async handler, on its loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.state = "queued"  # queued, running, done, error, cancelled
        self.result: Result | None = None
        self.created, self.seconds = time.time(), None

    def emit(self, event: str, data: dict[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (event, data))
        except RuntimeError:  # the request's loop is gone: nobody is listening
            pass

    def check(self) -> None:
        """Called by the sampler callback between steps: a cancelled job stops here."""
        if self.cancelled.is_set():
            raise Cancelled()

    async def next_event(self, request: Any = None, poll_s: float = 0.5) -> tuple[str, dict] | None:
        """The next event, or ``None`` once the client has disconnected (checked while waiting)."""
        while True:
            if request is not None and await request.is_disconnected():
                return None
            try:
                return await asyncio.wait_for(self.events.get(), poll_s)
            except asyncio.TimeoutError:
                continue

    async def outcome(self, request: Any = None, on_disconnect: Callable[[], Any] | None = None) -> tuple[str, dict]:
        """Wait for ``done`` or ``error`` (frames skipped); a disconnected client cancels the job."""
        while True:
            event = await self.next_event(request)
            if event is None:
                (on_disconnect or self.cancelled.set)()
                return "error", {"error": "the client disconnected", "status": 499}
            if event[0] in ("done", "error"):
                return event

    @property
    def download_urls(self) -> dict[str, str]:
        """Where a finished job's files are fetched (``web/downloads.py``), for its ``done`` event."""
        return {"png": f"/api/jobs/{self.id}/grid.png", "npz": f"/api/jobs/{self.id}/samples.npz",
                "gif": f"/api/jobs/{self.id}/anim.gif"}

    def status(self) -> dict[str, Any]:
        return {"job": self.id, "kind": self.kind, "state": self.state, "model": getattr(self.params, "model", None),
                "seconds": self.seconds, "downloads": self.result is not None}


class JobQueue:
    """A bounded FIFO of jobs and the worker thread that runs them in turn with ``work(job) -> done event``."""

    def __init__(self, work: Callable[[Job], dict], maxsize: int = 8, keep: int = KEEP_JOBS,
                 keep_bytes: int = KEEP_BYTES, name: str = "cpu", redact: Callable[[str], str] = str):
        self.work, self.maxsize, self.keep, self.keep_bytes, self.name = work, maxsize, keep, keep_bytes, name
        self.redact = redact  # an error message as a client may see it (no server paths)
        self._waiting: deque[Job] = deque()
        self._active: dict[str, Job] = {}
        self._done: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self._average_s = 2.0  # moving average of a job's duration, for Retry-After
        self._thread: threading.Thread | None = None
        self._closed = False
        self.current: Job | None = None

    def submit(self, job: Job) -> int:
        """Queue ``job`` and return how many jobs are ahead of it; ``QueueFull`` when ``maxsize`` wait already."""
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down", 5)
            if len(self._waiting) >= self.maxsize:
                wait = self.retry_after()
                raise QueueFull(f"the work queue is full ({self.maxsize} jobs waiting); try again in about {wait} s",
                                wait)
            job.id = new_id()
            self._waiting.append(job)
            self._active[job.id] = job
            ahead = len(self._waiting) - 1 + (self.current is not None)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"studio-worker-{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify()
        return ahead

    def retry_after(self) -> int:
        return max(1, min(600, math.ceil(self._average_s * (len(self._waiting) + 1))))

    def get(self, job_id: Any) -> Job:
        with self._cond:
            job = (self._active.get(job_id) or self._done.get(job_id)) if isinstance(job_id, str) else None
        if job is None:
            raise NotFound(f"job={str(job_id)[:40]!r} is not a job of this server (the last {self.keep} "
                           f"finished jobs are kept)")
        return job

    def cancel(self, job_id: Any) -> bool:
        """Stop a queued or running job; ``False`` when it had already finished."""
        job = self.get(job_id)
        with self._cond:
            if job.state not in ("queued", "running"):
                return False
            job.cancelled.set()
            if job in self._waiting:  # never started: finished here, the worker never sees it
                self._waiting.remove(job)
                self._finish(job, "cancelled", ("error", {"job": job.id, "error": f"job {job.id} was cancelled",
                                                          "cancelled": True, "status": 409}))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in list(self._waiting) + ([self.current] if self.current else []):
                job.cancelled.set()
            self._cond.notify_all()

    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"waiting": len(self._waiting), "running": int(self.current is not None), "kept": len(self._done)}

    # ---------------------------------------------------------------- the worker thread
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self.current = self._waiting.popleft()
                job.state = "running"
                behind = list(self._waiting)
            for k, other in enumerate(behind):  # everyone moved up one place
                other.emit("queued", {"job": other.id, "position": k + 1})
            start = time.perf_counter()
            state, event = self._run(job)
            with self._cond:
                job.seconds = round(time.perf_counter() - start, 3)
                self._average_s = 0.7 * self._average_s + 0.3 * job.seconds
                self.current = None
                self._finish(job, state, event)

    def _run(self, job: Job) -> tuple[str, tuple[str, dict]]:
        try:
            job.check()
            return "done", ("done", self.work(job))
        except Cancelled:
            return "cancelled", ("error", {"job": job.id, "error": f"job {job.id} was cancelled", "cancelled": True,
                                           "status": 409})
        except UsageError as e:  # a value only the loaded model could check (a prompt, the text encoder)
            log.info("job %s refused: %s", job.id, e)
            return "error", ("error", {"job": job.id, "error": self.redact(str(e)),
                                       "status": 404 if isinstance(e, NotFound) else 422})
        except Exception:
            log.exception("job %s (%s) failed", job.id, job.kind)
            return "error", ("error", {"job": job.id, "error": INTERNAL, "status": 500})

    def _finish(self, job: Job, state: str, event: tuple[str, dict]) -> None:
        """Under the lock: record the outcome, keep the job for its downloads, drop the oldest beyond the bounds."""
        job.state = state
        if state != "done":
            job.result = None
        self._active.pop(job.id, None)
        self._done[job.id] = job
        total = sum(j.result.nbytes for j in self._done.values() if j.result is not None)
        while len(self._done) > 1 and (len(self._done) > self.keep or total > self.keep_bytes):
            _, old = self._done.popitem(last=False)
            total -= old.result.nbytes if old.result is not None else 0
        job.emit(*event)
