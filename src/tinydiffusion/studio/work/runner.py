"""What a job does on the worker thread: sample (with live frames for a stream), compare settings, or edit
(``edits.run``); and the cache of loaded pipelines.

Every value goes through ``Pipeline.plan``, so what the studio refuses the library refuses, with the same
messages. Frames come from the sampler's ``callback(i, t, x_t, x0_hat)``, which also stops a cancelled job. A
job that must first load its model (or, for prompts, the text encoder: seconds) says so with a ``loading``
event before its first frame.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from functools import partial
from typing import Any

from ...errors import UsageError
from ...sampling.outputs import context_arrays
from ...sampling.pipeline import load
from ...store.pictures import to_uint8
from ..catalog import NotFound
from . import edits, encode
from .frames import Frames, rows
from .jobs import Job, Result
from .params import MAX_IMAGES, SampleParams, levers_used, resolve, sampler_options


class Runner:
    def __init__(self, pipelines: Any):
        self.pipelines = pipelines
        self.encoders: set[str] = set()  # text encoders a job has loaded (they stay loaded: get_encoder caches)

    def __call__(self, job: Job) -> dict[str, Any]:
        """The ``done`` event's data; the downloads go into ``job.result``."""
        for what in self.loading(job.entry):
            job.emit("loading", {"job": job.id, "what": what, "model": job.entry.name})
        pipe = self.pipelines.get(job.entry)
        if job.guide is not None and not self.pipelines.has(job.guide):
            job.emit("loading", {"job": job.id, "what": "guide", "model": job.guide.name})
        job.check()
        if job.kind == "edit":
            return edits.run(job, pipe, self.levers(job, job.params.p))
        return self.compare(job, pipe) if job.kind == "compare" else self.sample(job, pipe)

    def levers(self, job: Job, p: SampleParams) -> dict[str, Any]:
        """The guidance levers as ``Pipeline.plan`` takes them: the interval given (``None``: the card's), and the
        guide: the listed model the request named, loaded through the cache, else ``"none"`` or ``None`` (the
        card's)."""
        guide = self.pipelines.get(job.guide) if job.guide is not None else p.guide
        return {"guidance_interval": p.guidance_interval, "guide": guide, "guide_scale": p.guide_scale,
                "snap": p.snap}

    def loading(self, entry) -> list[str]:
        """What a job on ``entry`` loads first: ``"model"`` (not in the cache), ``"text encoder"`` (prompts)."""
        out = [] if self.pipelines.has(entry) else ["model"]
        encoder = str(((entry.config or {}).get("context") or {}).get("encoder") or "")
        if (entry.config.get("context") or {}).get("kind") == "text" and not encoder.startswith("hash") and \
                encoder not in self.encoders:
            self.encoders.add(encoder)
            out.append("text encoder")
        return out

    def sample(self, job: Job, pipe) -> dict[str, Any]:
        p: SampleParams = job.params
        names, context = rows(pipe, p)
        sampler, steps, guidance = resolve(p, pipe.config)
        plan = pipe.plan(context, n=p.n, seed=p.seed, sampler=sampler, steps=steps, batch_size=MAX_IMAGES,
                         guidance=guidance, guidance_rescale=p.guidance_rescale, **self.levers(job, p),
                         **sampler_options(sampler, p))
        frames = Frames(job, steps, p.n, stream=job.kind == "stream")
        x, seconds = frames.run(partial(pipe.run, plan), plan)
        images = to_uint8(x)  # [N, H, W, 3]
        used = levers_used(p, pipe.config, plan.levers)
        metadata = {**p.metadata(), "sampler": sampler, "steps": steps, "guidance": guidance, **used, "rows": names,
                    "nfe": frames.evaluations, "seconds": round(seconds, 3), "model_prediction": pipe.prediction,
                    "schedule_used": pipe.schedule.to_dict(), "job": job.id}
        grid = encode.png(images, p.n, text={"tinydiffusion": json.dumps(metadata)})
        arrays = context_arrays(names, context, p.n, pipe.context, len(images))
        job.result = Result(images, arrays["contexts"], arrays.get("labels"), metadata, frames.kept, grid, p.n)
        done = {"job": job.id, "grid": encode.data_url(grid), "seconds": round(seconds, 3), "nfe": frames.evaluations,
                "sampler": sampler, "steps": steps, "guidance": guidance, **used, "rows": names, "n": p.n,
                "downloads": job.download_urls}
        if job.want_images:
            done["images"] = [encode.data_url(encode.png(image[None], 1)) for image in images]
        return done

    def compare(self, job: Job, pipe) -> dict[str, Any]:
        """The same seeds and contexts through each ``(sampler, steps)`` setting, one after the other."""
        p: SampleParams = job.params
        names, context = rows(pipe, p)
        _, _, guidance = resolve(p, pipe.config)
        out, levers, used = [], self.levers(job, p), {}
        for k, (sampler, steps) in enumerate(job.settings):
            options = {"eta": p.eta} if sampler == "ddim" and p.eta is not None else {}
            plan = pipe.plan(context, n=p.n, seed=p.seed, sampler=sampler, steps=steps, batch_size=MAX_IMAGES,
                             guidance=guidance, guidance_rescale=p.guidance_rescale, **levers, **options)
            used = levers_used(p, pipe.config, plan.levers)
            counter = Frames(job, steps, p.n, stream=False, keep=False,
                             progress={"setting": k, "settings": len(job.settings)})
            x, seconds = counter.run(partial(pipe.run, plan), plan)
            out.append({"setting": f"{sampler}:{steps}", "sampler": sampler, "steps": steps,
                        "seconds": round(seconds, 3), "nfe": counter.evaluations,
                        "grid": encode.data_url(encode.png(to_uint8(x), p.n))})
        return {"job": job.id, "rows": out, "guidance": guidance, **used, "contexts": names, "n": p.n, "seed": p.seed}


class Pipelines:
    """Loaded pipelines, the ``size`` most recently used; a re-exported model (new weights) is reloaded."""

    def __init__(self, device: Any, size: int = 4):
        self.device, self.size = device, size
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def has(self, entry) -> bool:
        """Whether ``entry``'s pipeline is loaded (a missing model counts as loaded: ``get`` says what is wrong)."""
        try:
            key = self._key(entry)
        except NotFound:
            return True
        with self._lock:
            return key in self._cache

    def _key(self, entry) -> tuple:
        try:
            return entry.name, str(entry.path), os.stat(entry.path / "model.safetensors").st_mtime_ns
        except OSError:
            raise NotFound(f"model={entry.name!r} is no longer there (its folder was moved or deleted)") from None

    def get(self, entry):
        if not entry.available:
            raise UsageError(f"model={entry.name!r} is not available here: {entry.reason}")
        key = self._key(entry)
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
