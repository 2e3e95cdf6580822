"""How the studio answers: Server-Sent Events, and every error as JSON ``{"error": "..."}`` (404 for a name
the server did not list, 422 for a bad value with the library's message, 408 for a body that did not arrive,
429 with ``Retry-After`` when the queue is full, 500 with no details: the traceback goes to the server log).
Messages name folders as the listing does, never by an absolute server path (``Catalog.redact``)."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from ...errors import UsageError
from ..catalog import NotFound
from ..work.jobs import INTERNAL, Job, JobQueue, QueueFull

log = logging.getLogger("tinydiffusion.studio")


async def events(request: Request, jobs: JobQueue, job: Job, position: int):
    finished = False
    try:
        yield sse("queued", {"job": job.id, "position": position})
        while True:
            event = await job.next_event(request)
            if event is None:  # the client went away: stop its work
                break
            yield sse(*event)
            if event[0] in ("done", "error"):
                finished = True
                break
    finally:
        if not finished:
            jobs.cancel(job.id)


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_response(events) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def error_parts(e: Exception, redact=str) -> tuple[int, dict, dict]:
    if isinstance(e, QueueFull):
        return 429, {"error": str(e), "retry_after": e.retry_after}, {"Retry-After": str(e.retry_after)}
    status = getattr(e, "status", None) or (404 if isinstance(e, NotFound) else 422)
    return status, {"error": redact(str(e))}, ({"Connection": "close"} if status == 408 else {})


def install_handlers(app: FastAPI) -> None:
    async def known(request: Request, e: Exception) -> JSONResponse:
        status, body, headers = error_parts(e, request.app.state.studio.catalog.redact)
        return JSONResponse(body, status_code=status, headers=headers)

    async def http(request: Request, e: HTTPException) -> JSONResponse:
        text = "not found (the API is described at /docs)" if e.status_code == 404 else str(e.detail)
        return JSONResponse({"error": text}, status_code=e.status_code, headers=getattr(e, "headers", None))

    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = (e.errors() or [{}])[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "path", "body"))
        return JSONResponse({"error": f"{where or 'request'}: {first.get('msg', 'invalid')}"}, status_code=422)

    app.add_exception_handler(UsageError, known)
    app.add_exception_handler(QueueFull, known)
    app.add_exception_handler(HTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)


class CatchAll:
    """Any other exception: logged with its traceback, answered 500 ``{"error": "internal error ..."}``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await JSONResponse({"error": INTERNAL}, status_code=500)(scope, receive, send)
