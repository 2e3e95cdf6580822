"""The routes that queue work on the worker, all ``POST`` with a JSON body (a ``GET`` never starts work): a grid
(``/api/sample``), live frames (``/api/stream``), an edit with live frames (``/api/edit/stream``) and a comparison
of settings (``/api/compare``, with progress events when asked for ``text/event-stream``). Every value is checked
before the job is queued: a refusal is a JSON error with its status (422 with the library's message, 404, 429);
once queued, a stream reports what goes wrong as its ``error`` event.
"""

from __future__ import annotations

from dataclasses import replace

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ...errors import UsageError
from ...sampling import card
from ..catalog import ModelEntry
from ..work.edits import MAX_EDIT_BODY, checked_edit, parse_edit
from ..work.jobs import Job
from ..work.params import SampleParams, parse, resolve, settings
from .apidocs import EXAMPLE, body_docs
from .intake import StudioDep, read_json
from .responses import events, sse_response

router = APIRouter()


@router.post("/api/sample", summary="sample a grid: image/png, or JSON with base64 images (Accept: application/json)",
             openapi_extra=body_docs(EXAMPLE))
async def sample(request: Request, s: StudioDep):
    p = parse(await read_json(request))
    want_json = "application/json" in request.headers.get("accept", "")
    entry = s.checked(p)
    job = Job("sample", p, entry, want_images=want_json, guide=s.guide(p, entry))
    s.jobs.submit(job)
    event, data = await job.outcome(request, lambda: s.jobs.cancel(job.id))
    if event == "error":
        return JSONResponse({"error": data["error"]}, status_code=data.get("status", 500))
    if want_json:
        return JSONResponse(data)
    return Response(job.result.grid_png, media_type="image/png",
                    headers={"X-Job": job.id, "X-Seconds": str(data["seconds"]), "X-NFE": str(data["nfe"])})


@router.post("/api/stream", summary="sample with live frames (Server-Sent Events: queued, loading, frame…, "
                                     "done | error)", openapi_extra=body_docs(EXAMPLE))
async def stream(request: Request, s: StudioDep):
    p = parse(await read_json(request))
    entry = s.checked(p)
    job = Job("stream", p, entry, guide=s.guide(p, entry))
    position = s.jobs.submit(job)  # QueueFull: 429 JSON, like the other POSTs
    return sse_response(events(request, s.jobs, job, position))


@router.post("/api/edit/stream", summary="edit an image (img2img, or inpainting with a mask) with live frames "
                                         "(Server-Sent Events: queued, frame…, done | error)",
             openapi_extra=body_docs({**EXAMPLE, "n": 2, "image": "data:image/png;base64,…", "mask": None,
                                      "strength": 0.6}, edit=True))
async def edit_stream(request: Request, s: StudioDep):
    raw = await read_json(request, MAX_EDIT_BODY, "a JSON object with model, image, mask, strength and sampling "
                                                  "parameters")
    p = parse_edit(raw)[0]
    entry = s.checked(p)
    job = Job("edit", checked_edit(raw, entry), entry, guide=s.guide(p, entry))
    position = s.jobs.submit(job)  # QueueFull: 429 JSON, like the other POSTs
    return sse_response(events(request, s.jobs, job, position))


@router.post("/api/compare", summary="the same seeds through 2–4 SAMPLER:STEPS settings (JSON, or with Accept: "
                                      "text/event-stream: queued, loading, progress…, done | error)",
             openapi_extra=body_docs({**EXAMPLE, "settings": ["ddpm:500", "dpmpp_2m:10"]}))
async def compare(request: Request, s: StudioDep):
    raw = await read_json(request)
    p = parse(raw, allow=("settings",))
    entry = s.checked(replace(p, sampler=None, steps=None, eta=None))
    T = entry.config["schedule"]["T"]
    chosen = settings(raw.get("settings") if isinstance(raw, dict) else None, T)
    _student_settings(entry, p, chosen)
    job = Job("compare", p, entry, settings=chosen, guide=s.guide(p, entry))
    position = s.jobs.submit(job)
    if "text/event-stream" in request.headers.get("accept", ""):
        return sse_response(events(request, s.jobs, job, position))
    event, data = await job.outcome(request, lambda: s.jobs.cancel(job.id))
    if event == "error":
        return JSONResponse({"error": data["error"]}, status_code=data.get("status", 500))
    return JSONResponse(data)


def _student_settings(entry: ModelEntry, p: SampleParams, chosen: list[tuple[str, int]]) -> None:
    """Compare's settings against a distilled student's limits (its sampler and step counts), refused by name."""
    _, _, guidance = resolve(p, entry.config)
    for sampler, steps in chosen:
        try:
            card.check_distilled(entry.config.get("distilled"), sampler, steps, guidance, p.guidance_rescale)
        except UsageError as e:
            raise UsageError(f"settings={f'{sampler}:{steps}'!r}: {e}") from None
