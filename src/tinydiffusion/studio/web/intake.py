"""What the routes do first: get the shared ``Studio`` state (a parameter ``s: StudioDep``), read a JSON body
within its bounds (size, time, nesting), and check the listed model of a request against its config before
queueing. (``guard.py`` has already refused any body that is not ``Content-Type: application/json``.)"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.requests import ClientDisconnect

from ...errors import UsageError, bad_value
from ...sampling import card
from ...vocab import NO_GUIDE
from ..catalog import Catalog, ModelEntry, NotFound
from ..work.jobs import JobQueue
from ..work.params import KEYS, SampleParams, for_model
from ..work.runner import Pipelines
from ..work.teach import Teacher

MAX_BODY = 64 * 1024  # bytes of a JSON request body
MAX_DEPTH = 8  # nesting of a JSON body (a sampling request needs 2: an object holding a list of contexts)
BODY_IDLE = 10.0  # seconds a body may pause between two of its pieces …
BODY_TOTAL = 60.0  # … and take in all; then 408


class SlowBody(UsageError):
    """A body that stopped arriving (or arrives too slowly): 408, and the connection is closed."""

    status = 408


@dataclass
class Studio:
    """What the routes share (``app.state.studio``): the listing, the loaded pipelines, the work queue, the
    fine-tune of the Teach panel."""

    catalog: Catalog
    pipelines: Pipelines
    jobs: JobQueue
    teacher: Teacher

    def checked(self, p: SampleParams) -> ModelEntry:
        """The listed model of ``p`` (404 otherwise) with what its config can check (422)."""
        entry = self.catalog.model(p.model)
        if not entry.available:
            raise UsageError(f"model={entry.name!r} is not available here: {entry.reason}")
        for_model(p, entry.config, len(entry.default_rows))
        self.guide(p, entry)
        return entry

    def guide(self, p: SampleParams, entry: ModelEntry) -> ModelEntry | None:
        """The listed model ``p`` names as its autoguidance guide (``None``: none named, or ``"none"``), refused (422
        naming ``guide``) unless it is listed, available and fits ``entry`` (``card.check_guide``: an ordinary model
        of the same image size, context, schedule and prediction)."""
        if p.guide is None or p.guide == NO_GUIDE:
            return None
        try:
            guide = self.catalog.model(p.guide)
        except NotFound:
            raise bad_value("guide", p.guide, f"the name of a listed ordinary model (GET /api/models) or "
                                              f"{NO_GUIDE!r}; omit it for the model card's") from None
        if not guide.available:
            raise bad_value("guide", p.guide, f"a model that can be loaded here ({guide.reason})")
        card.check_guide(entry.config, guide.config, guide.name)
        return guide


async def studio(request: Request) -> Studio:
    """The app's ``Studio``, for ``Depends`` (async: resolved on the event loop, never in a worker thread)."""
    return request.app.state.studio


StudioDep = Annotated[Studio, Depends(studio)]  # a route's parameter ``s: StudioDep`` is the app's Studio


async def read_json(request: Request, limit: int = MAX_BODY,
                    expected: str = "a small JSON object of sampling parameters") -> Any:
    """The request body as JSON (``{}`` when empty), refused (422) beyond ``limit`` bytes (a declared length at
    once, before reading), nested deeper than ``MAX_DEPTH`` or not JSON; 408 when it stops arriving."""
    over = UsageError(f"the request body is over {limit} bytes; expected {expected}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise over
    data = await _body(request, limit, over)
    try:
        value = json.loads(data or b"{}")
    except RecursionError:
        value = None
    except ValueError as e:
        raise UsageError(f"the request body is not valid JSON ({e}); expected an object with keys like "
                         f"{', '.join(KEYS[:4])}") from None
    if value is None and data.strip() != b"null" or _depth(value) > MAX_DEPTH:
        raise UsageError(f"the request body nests JSON more than {MAX_DEPTH} levels deep; expected {expected}")
    return value


async def _body(request: Request, limit: int, over: UsageError) -> bytes:
    """The body's bytes, at most ``limit``; ``SlowBody`` after ``BODY_IDLE`` s of silence or ``BODY_TOTAL`` s."""
    loop = asyncio.get_running_loop()
    deadline, data, chunks = loop.time() + BODY_TOTAL, bytearray(), request.stream().__aiter__()
    while True:
        wait = min(BODY_IDLE, deadline - loop.time())
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), max(wait, 0.001))
        except StopAsyncIteration:
            return bytes(data)
        except ClientDisconnect:  # nobody is left to answer: no traceback in the log for it
            raise SlowBody(f"the client went away before its body arrived ({len(data)} bytes in)") from None
        except asyncio.TimeoutError:
            raise SlowBody(f"the request body stopped arriving ({len(data)} bytes in, after {wait:.0f} s without "
                           f"more); expected the whole body within {BODY_TOTAL:.0f} s") from None
        data += chunk
        if len(data) > limit:
            raise over


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iteratively: a bomb cannot exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest
