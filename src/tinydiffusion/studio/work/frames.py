"""What a job's sampler callback does on the worker (``Frames``), and the context rows of a request (``rows``).

Below both ``runner.py`` (sample, compare) and ``edits.py`` (img2img, inpainting), which use them alike. The
``x_t`` snapshots for the GIF are kept by the library's recorder (``sampling.outputs.Frames``, as
``tinydiffusion sample --gif`` keeps them); this module adds what only the studio does: stop a cancelled job,
count network evaluations, and send live frames to a stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ...sampling.outputs import MAX_GIF_FRAMES
from ...sampling.outputs import Frames as Recorder
from ...sampling.plans import SamplePlan
from ...store.pictures import to_uint8
from . import encode
from .jobs import Job
from .params import MAX_ROWS, SampleParams

Walk = Callable[[Iterable[int], Callable], Iterator[tuple[int, torch.Tensor]]]  # (batches, callback) -> (b, x)


def rows(pipe, p: SampleParams) -> tuple[list[str], torch.Tensor | None]:
    """Row names and context rows ``[K, D]`` (None: one unconditional row), as ``tinydiffusion sample`` makes them."""
    if p.context_to is not None:
        start = p.context[0]
        return [f"{start} → {p.context_to} @ {p.mix:g}"], pipe.context.mix(start, p.context_to, [p.mix])
    names = list(p.context) if p.context is not None else pipe.default_rows()[:MAX_ROWS]
    return names, pipe.contexts(names) if names else None


class Frames:
    """The sampler callback ``(i, t, x_t, x0_hat)`` of a job: stops a cancelled job, counts network evaluations,
    records ``x_t`` for the GIF (``keep``) and, for a ``stream``, sends at most ``MAX_GIF_FRAMES`` frames: every
    ``stride``-th step and always the last. ``progress`` (compare) sends the same steps as ``progress`` events
    without pictures, with these fields added. ``renumber``: steps are numbered by call, since an edit's RePaint
    walks back and forth on the time grid."""

    def __init__(self, job: Job, steps: int | None, ncol: int, *, stream: bool, keep: bool = True,
                 renumber: bool = False, progress: dict | None = None):
        self.job, self.steps, self.ncol, self.stream, self.renumber = job, steps, ncol, stream, renumber
        self.progress = progress
        self.stride = max(1, -(-(steps or 1) // MAX_GIF_FRAMES))
        self.recorder = Recorder() if keep else None
        if self.recorder is not None:
            self.recorder.stride = self.stride  # the GIF keeps the streamed steps (its own bound still holds)
        self.calls, self.first, self.t0, self.evaluated = 0, 0, time.perf_counter(), 0
        self.plan: SamplePlan | None = None

    @property
    def evaluations(self) -> int:
        """Network evaluations per image so far: 2 per guided step (both halves, or the model and its guide), 1 per
        step unguided or outside the guidance interval (the library's count, ``SamplePlan.evaluations``)."""
        return self.evaluated

    @property
    def kept(self) -> list[np.ndarray]:
        """The recorded ``x_t`` snapshots for the GIF: uint8 ``[N, H, W, 3]`` each, at most ``MAX_GIF_FRAMES``."""
        return self.recorder.gather() if self.recorder is not None else []

    def run(self, walk: Walk, plan: SamplePlan) -> tuple[torch.Tensor, float]:
        """The images ``[N, C, H, W]`` of ``walk(batches, callback)`` (``partial(pipe.run, plan)``, or
        ``partial(run_edit, pipe, edit)`` for an edit over ``plan``) batch by batch with this callback, and the
        seconds they took."""
        self.t0, self.plan = time.perf_counter(), plan
        parts = []
        for b in range(plan.batches):
            if self.recorder is not None:
                self.recorder.batch = b
            self.first = self.calls
            parts += [x for _, x in walk([b], self)]
        return torch.cat(parts), time.perf_counter() - self.t0

    def __call__(self, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        self.job.check()
        i = self.calls - self.first if self.renumber else i
        self.calls += 1
        self.evaluated += self.plan.evaluations([int(t)]) if self.plan is not None else 1
        if self.recorder is not None:
            self.recorder(i, t, x_t, x0_hat)
        last = self.steps is not None and i == self.steps - 1
        if not (self.stream or self.progress is not None) or (i % self.stride and not last):
            return
        step = {"job": self.job.id, "step": i + 1, "steps": self.steps, "t": int(t), "nfe": self.evaluations,
                "elapsed_ms": round(1000 * (time.perf_counter() - self.t0))}
        if self.progress is not None:
            self.job.emit("progress", {**step, **self.progress})
            return
        self.job.emit("frame", {**step, "x_t": encode.data_url(encode.png(to_uint8(x_t), self.ncol, fast=True)),
                                "x0": encode.data_url(encode.png(to_uint8(x0_hat), self.ncol, fast=True))})
