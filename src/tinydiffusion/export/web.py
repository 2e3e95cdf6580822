"""``tinydiffusion export MODEL --format web --out SITE``: a static site that generates in the browser.

SITE holds ``index.html``, ``app.js``, ``td.js`` (the schedule, samplers and noise ported from ``core/``),
``style.css``, ``model.onnx``, ``model.json`` (what the page needs: size, prediction, schedule, sampler, steps,
guidance, the context's names and, for a text model, the embedded prompts), onnxruntime-web under ``vendor/``
(``vendor.py``: pinned and checksummed) and the interop files (``README.md``, ``config.json``,
``scheduler_config.json``). Any static file server serves it; the page fetches only its own files.

The page runs ``ddim``, ``consistency`` and ``dpmpp_2m`` (``euler`` is ddim's ODE, run as ddim); a model whose card
recommends ``ddpm`` gets ddim in its default steps. A text model's prompts are embedded here, in PyTorch (the
text encoder does not go to the browser): the card's example captions, or the ``prompts`` given.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import UsageError, bad_value
from ..models.onnxnet import ONNX_FILE
from ..sampling.pipeline import Pipeline
from ..vocab import default_steps
from . import hub, vendor
from .onnx import ExportResult, check_out, interop_files, load_source, network_graph, parity, write_folder

SITE = Path(__file__).with_name("site")
PAGE_FILES = ("index.html", "app.js", "td.js", "style.css")
PAGE_SAMPLERS = ("ddim", "consistency", "dpmpp_2m")
MAX_PROMPTS = 32


def export_web(model: str | Path, out: str | Path, *, overwrite: bool = False, prompts: Sequence[str] = (),
               license: str | None = None, ort_web: str | Path | None = None) -> ExportResult:
    """Write the static site of ``model`` to ``out``; ``ort_web`` is a tarball of ``npm pack onnxruntime-web``
    for a machine without npm (else the cache or npm)."""
    t0 = time.perf_counter()
    target = check_out(out, overwrite)
    pipe, source = load_source(model)
    title = hub.title_of(pipe.config, source.name)
    page, notes = page_config(pipe, title, prompts)
    ort = vendor.ort_web_files(ort_web)  # before the slow work: a missing npm is said at once
    graph = network_graph(pipe, title, license)
    difference = parity(pipe, graph)
    files = {name: (SITE / name).read_bytes() for name in PAGE_FILES}
    files.update({ONNX_FILE: graph, "model.json": (json.dumps(page, indent=1) + "\n").encode()})
    files.update({f"vendor/{name}": data for name, data in ort.items()})
    files.update(interop_files(pipe, source, title, license, with_weights=False, extra=("index.html",)))
    write_folder(target, files)
    return ExportResult(target, tuple(sorted(files)), difference, time.perf_counter() - t0, tuple(notes))


def page_config(pipe: Pipeline, title: str, prompts: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """``model.json``: everything the page's JavaScript needs, and notes on what was chosen for the page."""
    sampler, steps, guidance = pipe.resolve(None, None, None)
    notes = []
    if sampler == "euler":
        sampler = "ddim"  # the same steps (core/samplers.py: euler is DDIM(eta=0) as an ODE solver)
    elif sampler not in PAGE_SAMPLERS:
        sampler, steps = "ddim", default_steps("ddim", pipe.schedule.T)
        notes.append(f"the page samples with ddim in {steps} steps: the card's {pipe.recommended['sampler']} is not "
                     f"one the page runs ({', '.join(PAGE_SAMPLERS)})")
    m = pipe.config["model"]
    page = {"format": "tinydiffusion-web", "title": title, "description": hub.description(pipe.config),
            "image_size": m["image_size"], "channels": m["channels"], "prediction": pipe.prediction,
            "schedule": pipe.schedule.to_dict(), "sampler": sampler, "steps": steps, "guidance": guidance,
            "student": bool(pipe.distilled), "guided": not pipe.distilled and guidance != 1.0,
            "context": page_context(pipe, prompts), "model": ONNX_FILE,
            "ort": {"version": vendor.VERSION, "wasm": "vendor/ort-wasm-simd-threaded.wasm"}}
    return page, notes


def page_context(pipe: Pipeline, prompts: Sequence[str]) -> dict[str, Any]:
    """The context the page offers: class names (one-hot rows, mixtures by weight), a text model's prompts as
    unit vectors embedded here, or nothing for an unconditional model."""
    spec, prompts = pipe.context, list(prompts)
    width = max(spec.width, 1)
    if spec.kind != "text" and prompts:
        raise bad_value("prompts", prompts[:3], f"no prompts: they are for a text-conditioned model, and this "
                                                f"model's context is {spec.kind!r}")
    if spec.kind == "class":
        return {"kind": "class", "width": width, "names": list(spec.names), "vectors": None}
    if spec.kind == "none":
        return {"kind": "none", "width": width, "names": [], "vectors": None}
    if spec.kind != "text":
        raise UsageError(f"format web offers classes, prompts or nothing to steer a model; this model's context is "
                         f"{spec.kind!r} (vectors from a file), which the page cannot offer; use --format onnx")
    prompts = prompts or pipe.default_rows()
    if not prompts or len(prompts) > MAX_PROMPTS or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise bad_value("prompts", prompts[:3], f"1 to {MAX_PROMPTS} non-empty prompts to embed for the page")
    vectors = pipe.contexts(prompts)  # [K, D]: unit rows (pooled, then any token rows) from the text encoder
    return {"kind": "text", "width": width, "names": prompts, "rows": 1 + int(getattr(spec, "tokens", 0)),
            "vectors": [[round(float(v), 6) for v in row] for row in vectors]}
