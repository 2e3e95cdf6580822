"""What a job does on the worker thread: sample (with live frames for a stream) or compare settings.

Every value goes through ``Pipeline.plan``, so what the studio refuses the library refuses, with the same
messages. Frames come from the sampler's ``callback(i, t, x_t, x0_hat)``, which also stops a cancelled job.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..store.pictures import to_uint8
from . import encode
from .errors import NotFound
from .jobs import Job, Result
from .params import MAX_IMAGES, MAX_ROWS, SampleParams, resolve, sampler_options

MAX_FRAMES = 60  # frames streamed (and kept for the GIF) per job; the last step always among them


class Runner:
    def __init__(self, pipelines: Any):
        self.pipelines = pipelines

    def __call__(self, job: Job) -> dict[str, Any]:
        """The ``done`` event's data; the downloads go into ``job.result``."""
        pipe = self.pipelines.get(job.entry)
        job.check()
        if job.kind == "edit":
            from .edits import run

            return run(job, pipe)
        return self.compare(job, pipe) if job.kind == "compare" else self.sample(job, pipe)

    def sample(self, job: Job, pipe) -> dict[str, Any]:
        p: SampleParams = job.params
        names, context = rows(pipe, p)
        sampler, steps, guidance = resolve(p, pipe.config)
        plan = pipe.plan(context, n=p.n, seed=p.seed, sampler=sampler, steps=steps, batch_size=MAX_IMAGES,
                         guidance=guidance, guidance_rescale=p.guidance_rescale, **sampler_options(sampler, p))
        frames = Frames(job, steps, p.n, stream=job.kind == "stream")
        x, seconds = frames.run(pipe, plan)
        images = to_uint8(x)  # [N, H, W, 3]
        metadata = {**p.metadata(), "sampler": sampler, "steps": steps, "guidance": guidance, "rows": names,
                    "nfe": frames.evaluations, "seconds": round(seconds, 3), "model_prediction": pipe.prediction,
                    "schedule_used": pipe.schedule.to_dict(), "job": job.id}
        grid = encode.png(images, p.n, text={"tinydiffusion": json.dumps(metadata)})
        width = pipe.context.width
        contexts = np.zeros((len(images), width), np.float32) if context is None else \
            context.repeat_interleave(p.n, dim=0).numpy().astype(np.float32)
        labels = [pipe.context.label_of(r) for r in names]
        labels = np.repeat(np.array(labels, np.int64), p.n) if names and None not in labels else None
        job.result = Result(images, contexts, labels, metadata, frames.kept, grid, p.n)
        done = {"job": job.id, "grid": encode.data_url(grid), "seconds": round(seconds, 3), "nfe": frames.evaluations,
                "sampler": sampler, "steps": steps, "guidance": guidance, "rows": names, "n": p.n,
                "downloads": {"png": f"/api/jobs/{job.id}/grid.png", "npz": f"/api/jobs/{job.id}/samples.npz",
                              "gif": f"/api/jobs/{job.id}/anim.gif"}}
        if job.want_images:
            done["images"] = [encode.data_url(encode.png(image[None], 1)) for image in images]
        return done

    def compare(self, job: Job, pipe) -> dict[str, Any]:
        """The same seeds and contexts through each ``(sampler, steps)`` setting, one after the other."""
        p: SampleParams = job.params
        names, context = rows(pipe, p)
        _, _, guidance = resolve(p, pipe.config)
        out = []
        for sampler, steps in job.settings:
            options = {"eta": p.eta} if sampler == "ddim" and p.eta is not None else {}
            plan = pipe.plan(context, n=p.n, seed=p.seed, sampler=sampler, steps=steps, batch_size=MAX_IMAGES,
                             guidance=guidance, guidance_rescale=p.guidance_rescale, **options)
            counter = Frames(job, steps, p.n, stream=False, keep=False)
            x, seconds = counter.run(pipe, plan)
            out.append({"setting": f"{sampler}:{steps}", "sampler": sampler, "steps": steps,
                        "seconds": round(seconds, 3), "nfe": counter.evaluations,
                        "grid": encode.data_url(encode.png(to_uint8(x), p.n))})
        return {"job": job.id, "rows": out, "guidance": guidance, "contexts": names, "n": p.n, "seed": p.seed}


def rows(pipe, p: SampleParams) -> tuple[list[str], torch.Tensor | None]:
    """Row names and context rows ``[K, D]`` (None: one unconditional row), as ``tinydiffusion sample`` makes them."""
    if p.context_to is not None:
        start = p.context[0]
        return [f"{start} → {p.context_to} @ {p.mix:g}"], pipe.context.mix(start, p.context_to, [p.mix])
    names = list(p.context) if p.context is not None else pipe.default_rows()[:MAX_ROWS]
    return names, pipe.contexts(names) if names else None


class Frames:
    """The sampler callback: stops a cancelled job, counts network evaluations, keeps (and for a stream, sends)
    at most ``MAX_FRAMES`` snapshots: every ``stride``-th step and always the last."""

    def __init__(self, job: Job, steps: int | None, ncol: int, *, stream: bool, keep: bool = True):
        self.job, self.steps, self.ncol, self.stream, self.keep = job, steps, ncol, stream, keep
        self.stride = max(1, -(-(steps or 1) // MAX_FRAMES))
        self.kept: list[np.ndarray] = []
        self.calls, self.t0, self.per_step = 0, time.perf_counter(), 1

    @property
    def evaluations(self) -> int:
        """Network evaluations per image so far: 2 per guided step (both halves), 1 otherwise (the library's count)."""
        return self.calls * self.per_step

    def run(self, pipe, plan) -> tuple[torch.Tensor, float]:
        self.t0, self.per_step = time.perf_counter(), 2 if plan.guided else 1
        x = torch.cat([x for _, x in pipe.run(plan, callback=self)])
        return x, time.perf_counter() - self.t0

    def __call__(self, i: int, t: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        self.job.check()
        self.calls += 1
        last = self.steps is not None and i == self.steps - 1
        if not (self.keep or self.stream) or (i % self.stride and not last):
            return
        x_t8 = to_uint8(x_t)  # [N, H, W, 3]
        if self.keep:
            self.kept.append(x_t8)
        if self.stream:
            self.job.emit("frame", {
                "job": self.job.id, "step": i + 1, "steps": self.steps, "t": int(t), "nfe": self.evaluations,
                "elapsed_ms": round(1000 * (time.perf_counter() - self.t0)),
                "x_t": encode.data_url(encode.png(x_t8, self.ncol, fast=True)),
                "x0": encode.data_url(encode.png(to_uint8(x0_hat), self.ncol, fast=True))})


class Pipelines:
    """Loaded pipelines, the ``size`` most recently used; a re-exported model (new weights) is reloaded."""

    def __init__(self, device: Any, size: int = 4):
        self.device, self.size = device, size
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry):
        from ..sampling.pipeline import load

        if not entry.available:
            raise UsageError(f"model={entry.name!r} is not available here: {entry.reason}")
        try:
            key = (entry.name, str(entry.path), os.stat(entry.path / "model.safetensors").st_mtime_ns)
        except OSError:
            raise NotFound(f"model={entry.name!r} is no longer there (its folder was moved or deleted)") from None
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        pipe = load(entry.path, device=self.device)
        with self._lock:
            self._cache[key] = pipe
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return pipe
