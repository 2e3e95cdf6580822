"""What the routes do first: get the shared ``Studio`` state (a parameter ``s: StudioDep``), read a JSON body
within its bound, and check the listed model of a request against its config before queueing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from ...errors import UsageError
from ..catalog import Catalog, ModelEntry
from ..work.jobs import JobQueue
from ..work.params import KEYS, SampleParams, for_model
from ..work.runner import Pipelines

MAX_BODY = 64 * 1024  # bytes of a JSON request body


@dataclass
class Studio:
    """What the routes share (``app.state.studio``): the listing, the loaded pipelines, the work queue."""

    catalog: Catalog
    pipelines: Pipelines
    jobs: JobQueue

    def checked(self, p: SampleParams) -> ModelEntry:
        """The listed model of ``p`` (404 otherwise) with what its config can check (422)."""
        entry = self.catalog.model(p.model)
        if not entry.available:
            raise UsageError(f"model={entry.name!r} is not available here: {entry.reason}")
        for_model(p, entry.config, len(entry.default_rows))
        return entry


async def studio(request: Request) -> Studio:
    """The app's ``Studio``, for ``Depends`` (async: resolved on the event loop, never in a worker thread)."""
    return request.app.state.studio


StudioDep = Annotated[Studio, Depends(studio)]  # a route's parameter ``s: StudioDep`` is the app's Studio


async def read_json(request: Request, limit: int = MAX_BODY,
                    expected: str = "a small JSON object of sampling parameters") -> Any:
    """The request body as JSON (``{}`` when empty), refused (422) beyond ``limit`` bytes or when not JSON."""
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
