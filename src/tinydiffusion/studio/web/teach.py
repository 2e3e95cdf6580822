"""Teach: fine-tune a listed model on the user's pictures from the page (``work/teach.py``), one at a time.

``POST /api/teach`` (a JSON body of at most ``MAX_TEACH_BODY`` bytes: the pictures as data URLs) answers 202 once
the fine-tune has passed the library's checks and claimed its folder (422 with the library's message when it does
not, 409 while another runs); ``GET /api/teach`` says how it goes; its curves and sample grids are those of the run
it names (``/api/runs/{run}/…``), and its model joins ``/api/models`` when it is done.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..work.teach import DEFAULT_MINUTES, MAX_TEACH_BODY, parse_teach
from .intake import StudioDep, read_json

router = APIRouter()
EXAMPLE = {"base": "sprites", "class": "slime", "images": ["data:image/png;base64,…", "…"], "minutes": DEFAULT_MINUTES}
DOCS = {"base": "a listed ordinary model (class or text) to fine-tune",
        "class": "the new class's name (class models)",
        "prompt": "text models: the caption of every picture", "images": "8..100 PNG/JPEG data URLs of the new class",
        "minutes": "0.1..30 minutes of training (default 2)", "steps": "optional: at most this many optimizer steps",
        "method": "lora (default), column or full", "report_samples": "0..50 samples per class for the report (20)"}


@router.get("/api/teach", summary="the fine-tune the studio runs (or ran last), and Teach's limits")
def teach_status(s: StudioDep) -> dict:
    return s.teacher.status()


@router.post("/api/teach", summary="fine-tune a listed model on pictures of a new class (202 once it trains; 409 "
                                   "while another runs)",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object", "properties": {k: {"description": v} for k, v in DOCS.items()}},
                 "example": EXAMPLE}}}})
async def teach(request: Request, s: StudioDep):
    raw = await read_json(request, MAX_TEACH_BODY, "a JSON object with base, class, images (PNG/JPEG data URLs) and "
                                                   "minutes")
    checked = await run_in_threadpool(parse_teach, raw, s.catalog, str(s.pipelines.device))
    await run_in_threadpool(s.teacher.start, checked)
    return JSONResponse(await s.teacher.started(), status_code=202)


@router.get("/api/teach/report.png", summary="the last fine-tune's report picture: its samples over their nearest "
                                             "given pictures")
def report_png(s: StudioDep):
    return Response(s.teacher.report_png(), media_type="image/png", headers={"Cache-Control": "no-store"})
