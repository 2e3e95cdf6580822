"""The studio's FastAPI app: the page at ``/``, the JSON API under ``/api/`` (``docs/studio_api.md``), ``/docs``.

Errors: see ``responses.py``. The stream reports its errors as an ``error`` event instead of an HTTP
status, since a browser's ``EventSource`` cannot read the body of a failed response.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from ..errors import UsageError
from . import apidocs, encode
from .catalog import Catalog, ModelEntry
from .edits import MAX_EDIT_BODY, checked_edit, parse_edit
from .errors import NotFound, QueueFull
from .jobs import Job, JobQueue
from .params import KEYS, SampleParams, for_model, parse, resolve, settings
from .responses import CatchAll, error_parts, events, install_handlers, single_event, sse_response
from .runfiles import latest_sample, read_metrics
from .runner import Pipelines, Runner

log = logging.getLogger("tinydiffusion.studio")
MAX_BODY = 64 * 1024  # bytes of a JSON request body
STATIC = Path(str(resources.files("tinydiffusion") / "studio" / "static"))
_PARAM_DOCS = {"model": "a listed model name", "context": "CLI syntax: hero, hero=1,item=0.6, none, or a prompt; "
               "repeat for more rows", "context_to": "blend the context towards this one", "mix": "blend weight 0..1",
               "sampler": "ddpm, ddim, dpmpp_2m, euler or consistency (a distilled student: only its own)",
               "steps": "1..T (a distilled student: its step counts)",
               "guidance": "finite, >= 0 (a distilled student: only the scale folded into it)",
               "guidance_rescale": "0..1", "eta": "0..1, ddim only", "seed": "int >= 0", "n": "images per row, 1..64"}
_EDIT_DOCS = {"image": "PNG/JPEG data URL (at most 2 MB), centre-cropped to the model's size",
              "mask": "optional PNG/JPEG data URL: white = keep, black = generate (inpainting, RePaint over DDPM)",
              "strength": "(0, 1]; default 0.6 (img2img) or 1 (inpainting)", "n": "images per row, 1..16"}
_EXAMPLE = {"model": "sprites", "context": ["hero", "hero=1,item=0.6"], "sampler": "dpmpp_2m", "steps": 10,
            "guidance": 3, "seed": 0, "n": 4}


@dataclass
class Studio:
    catalog: Catalog
    pipelines: Pipelines
    jobs: JobQueue


def create_app(runs: Sequence[str | Path] = (), device: str = "cpu", queue_size: int = 8,
               models: dict[str, str | Path] | None = None, cache_size: int = 4) -> FastAPI:
    """The app. ``runs``: folders whose runs (``metrics.csv``) and exported models (``RUN/model``) are listed;
    ``models``: name → model folder instead of the shipped ``sprites`` and ``emoji`` (tests); ``queue_size``:
    jobs that may wait for the worker before requests get 429."""
    from .. import __version__
    from ..runtime.dist import resolve_device

    catalog = Catalog(runs, models)
    pipelines = Pipelines(resolve_device(device), cache_size)
    studio = Studio(catalog, pipelines, JobQueue(Runner(pipelines), queue_size, name=str(pipelines.device)))

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        studio.jobs.close()

    app = FastAPI(title="tinydiffusion studio", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, description="Steer, watch and compare diffusion sampling; follow training runs. "
                                              "The page at / uses this API; see docs/studio_api.md.")
    app.state.studio = studio
    app.add_middleware(CatchAll)
    install_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        if (STATIC / "index.html").is_file():
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
        return HTMLResponse("<!doctype html><title>tinydiffusion studio</title><p>The page is missing from this "
                            "install; the API is at <a href='/docs'>/docs</a>.</p>")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return HTMLResponse(apidocs.page(app.openapi()))

    @app.get("/api/models", summary="the models this server lists, with their cards")
    def models(rescan: bool = False) -> list[dict]:
        if rescan:
            catalog.rescan()
        return [entry.card() for entry in catalog.models()]

    @app.get("/api/models/{name:path}", summary="one model's card")
    def model(name: str) -> dict:
        return catalog.model(name).card()

    @app.post("/api/sample", summary="sample a grid: image/png, or JSON with base64 images (Accept: application/json)",
              openapi_extra=_body_docs(_EXAMPLE))
    async def sample(request: Request):
        p = parse(await _json(request))
        want_json = "application/json" in request.headers.get("accept", "")
        job = Job("sample", p, _checked(studio, p), want_images=want_json)
        studio.jobs.submit(job)
        event, data = await job.outcome(request, lambda: studio.jobs.cancel(job.id))
        if event == "error":
            return JSONResponse({"error": data["error"]}, status_code=data.get("status", 500))
        if want_json:
            return JSONResponse(data)
        return Response(job.result.grid_png, media_type="image/png",
                        headers={"X-Job": job.id, "X-Seconds": str(data["seconds"]), "X-NFE": str(data["nfe"])})

    @app.get("/api/stream", summary="sample with live frames (Server-Sent Events: queued, frame…, done | error)",
             openapi_extra={"parameters": [{"name": k, "in": "query", "description": v, "schema": {"type": "string"}}
                                           for k, v in _PARAM_DOCS.items()]})
    async def stream(request: Request):
        try:
            raw: dict[str, Any] = {}
            for key, value in request.query_params.multi_items():
                if key == "context":
                    raw.setdefault(key, []).append(value)
                else:
                    raw[key] = value
            p = parse(raw, from_query=True)
            job = Job("stream", p, _checked(studio, p))
            position = studio.jobs.submit(job)
        except (UsageError, QueueFull) as e:
            status, body, _ = error_parts(e)
            return sse_response(single_event("error", {**body, "status": status}))
        return sse_response(events(request, studio.jobs, job, position))

    @app.post("/api/edit/stream", summary="edit an image (img2img, or inpainting with a mask) with live frames "
                                          "(Server-Sent Events: queued, frame…, done | error)",
              openapi_extra=_body_docs({**_EXAMPLE, "n": 2, "image": "data:image/png;base64,…", "mask": None,
                                        "strength": 0.6}, edit=True))
    async def edit_stream(request: Request):
        raw = await _json(request, MAX_EDIT_BODY, "a JSON object with model, image, mask, strength and sampling "
                                                  "parameters")
        entry = _checked(studio, parse_edit(raw)[0])
        job = Job("edit", checked_edit(raw, entry), entry)
        position = studio.jobs.submit(job)  # QueueFull: 429 JSON, like the other POSTs
        return sse_response(events(request, studio.jobs, job, position))

    @app.post("/api/compare", summary="the same seeds through 2–4 SAMPLER:STEPS settings",
              openapi_extra=_body_docs({**_EXAMPLE, "settings": ["ddpm:500", "dpmpp_2m:10"]}))
    async def compare(request: Request):
        raw = await _json(request)
        p = parse(raw, allow=("settings",))
        entry = _checked(studio, replace(p, sampler=None, steps=None, eta=None))
        T = entry.config["schedule"]["T"]
        chosen = settings(raw.get("settings") if isinstance(raw, dict) else None, T)
        _student_settings(entry, p, chosen)
        job = Job("compare", p, entry, settings=chosen)
        studio.jobs.submit(job)
        event, data = await job.outcome(request, lambda: studio.jobs.cancel(job.id))
        if event == "error":
            return JSONResponse({"error": data["error"]}, status_code=data.get("status", 500))
        return JSONResponse(data)

    @app.get("/api/jobs/{job}", summary="a job's state (queued, running, done, error, cancelled)")
    def job_status(job: str) -> dict:
        return studio.jobs.get(job).status()

    @app.post("/api/jobs/{job}/cancel", summary="stop a queued or running job")
    def cancel(job: str) -> dict:
        return {"job": job, "cancelled": studio.jobs.cancel(job)}

    @app.get("/api/jobs/{job}/grid.png", summary="a finished job's grid")
    def grid_png(job: str):
        return _download(_result(studio, job).grid_png, "image/png", f"tinydiffusion-{job}.png")

    @app.get("/api/jobs/{job}/samples.npz", summary="a finished job's raw images, contexts, labels, metadata")
    def samples_npz(job: str):
        r = _result(studio, job)
        return _download(encode.npz(r.images, r.contexts, r.labels, r.metadata), "application/octet-stream",
                         f"tinydiffusion-{job}.npz")

    @app.get("/api/jobs/{job}/anim.gif", summary="a finished job's denoising animation")
    def anim_gif(job: str):
        r = _result(studio, job)
        return _download(encode.gif(r.frames + [r.images], r.ncol), "image/gif", f"tinydiffusion-{job}.gif")

    @app.get("/api/runs", summary="training runs (folders with a metrics.csv) under --runs")
    def runs() -> list[dict]:
        return catalog.runs()

    @app.get("/api/runs/{name:path}/metrics", summary="a run's loss, images/s and time per logged step")
    def metrics(name: str) -> dict:
        return read_metrics(catalog.run(name) / "metrics.csv")

    @app.get("/api/runs/{name:path}/samples/latest.png", summary="a run's newest sample grid")
    def latest(name: str):
        return Response(latest_sample(catalog.run(name)), media_type="image/png", headers={"Cache-Control": "no-store"})

    return app


# ---------------------------------------------------------------------- helpers
def _checked(studio: Studio, p: SampleParams) -> ModelEntry:
    """The listed model of ``p`` (404 otherwise) with what its config can check (422)."""
    entry = studio.catalog.model(p.model)
    if not entry.available:
        raise UsageError(f"model={entry.name!r} is not available here: {entry.reason}")
    for_model(p, entry.config, len(entry.default_rows))
    return entry


def _student_settings(entry: ModelEntry, p: SampleParams, chosen: list[tuple[str, int]]) -> None:
    """Compare's settings against a distilled student's limits (its sampler and step counts), refused by name."""
    from ..sampling.pipeline import check_distilled

    _, _, guidance = resolve(p, entry.config)
    for sampler, steps in chosen:
        try:
            check_distilled(entry.config.get("distilled"), sampler, steps, guidance, p.guidance_rescale)
        except UsageError as e:
            raise UsageError(f"settings={f'{sampler}:{steps}'!r}: {e}") from None


async def _json(request: Request, limit: int = MAX_BODY,
                expected: str = "a small JSON object of sampling parameters") -> Any:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise UsageError(f"the request body is over {limit} bytes; expected {expected}")
    try:
        return json.loads(data or b"{}")
    except ValueError as e:
        raise UsageError(f"the request body is not valid JSON ({e}); expected an object with keys like "
                         f"{', '.join(KEYS[:4])}") from None


def _result(studio: Studio, job_id: str):
    job = studio.jobs.get(job_id)
    if job.result is None:
        raise NotFound(f"job {job.id} has no results to download (it is {job.state})")
    return job.result


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _body_docs(example: dict, edit: bool = False) -> dict:
    docs = {**_PARAM_DOCS, **(_EDIT_DOCS if edit else {})}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "properties": {k: {"description": v} for k, v in docs.items()}},
        "example": example}}}}
