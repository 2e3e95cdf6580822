"""The studio's HTTP-level refusals, beside the library's ``UsageError`` (a bad value: 422)."""

from __future__ import annotations

from ..errors import UsageError


class NotFound(UsageError):
    """A name the server did not list (model, run, job, file): 404. Never a path lookup."""


class QueueFull(Exception):
    """The work queue is full: 429 with ``Retry-After`` (seconds)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(Exception):
    """Raised inside the sampler callback to stop a cancelled job (never reaches a client as a traceback)."""
