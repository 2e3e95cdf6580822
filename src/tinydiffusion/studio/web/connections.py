"""The connections uvicorn keeps for the studio: idle and slow ones time out, and idle ones never lock anyone out.

uvicorn's own ``limit_concurrency`` counts open connections, idle ones included, and it has no timeout for a
connection that has not sent a whole request head: ~63 silent sockets answered every other request 503 for as
long as they were held. Here the limit counts requests in progress instead (``guard.MAX_ACTIVE``), and each
connection (``Protocol``, uvicorn's h11 protocol with three deadlines) is closed

- when it has not sent a whole request head within ``HEAD_TIMEOUT`` s (a fresh connection, or the next request
  on a kept-alive one, however slowly its bytes trickle in);
- ``LINGER`` s after its answer when the client is still sending a body nobody reads (a refused upload, a
  declared but unsent body); the app itself stops waiting for a body after ``intake.BODY_IDLE`` s of silence;
- ``KEEP_ALIVE`` s after an answer when nothing more comes (uvicorn's keep-alive timeout);

and beyond ``MAX_CONNECTIONS`` open connections each new one closes the oldest idle one.
"""

from __future__ import annotations

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0  # seconds to send a request head
LINGER = 2.0  # seconds to finish sending a body after the answer went out
KEEP_ALIVE = 5  # seconds an idle kept-alive connection stays open
MAX_CONNECTIONS = 1000  # open connections; beyond, the oldest idle one is closed


class Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and for unread bodies."""

    head_timeout, linger, max_connections = HEAD_TIMEOUT, LINGER, MAX_CONNECTIONS
    _deadline = None  # asyncio.TimerHandle of the pending deadline
    _waiting = ""  # what it waits for: "head" or "linger"

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._born = self.loop.time()
        self._arm("head", self.head_timeout)
        if len(self.connections) > self.max_connections:
            idle = [c for c in self.connections if c is not self and _idle(c)]
            if idle:
                min(idle, key=lambda c: getattr(c, "_born", 0.0))._expire()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if self._waiting == "head" and state is not h11.IDLE:  # a whole request head arrived
            self._disarm()
        elif self._waiting == "linger" and state is h11.IDLE:  # the unread body ended: wait for the next head
            self._arm("head", self.head_timeout)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            self._arm("head", self.head_timeout)
        elif self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY:
            self._arm("linger", self.linger)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._waiting, self._deadline = what, self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._waiting, self._deadline = "", None

    def _expire(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:  # mid-message: just close
                pass
            self.transport.close()


def _idle(connection) -> bool:
    """A connection with no request in progress (never sent one, or between requests)."""
    cycle = getattr(connection, "cycle", None)
    return getattr(connection, "_waiting", "") == "head" and (cycle is None or cycle.response_complete)


def config(app, *, log_level: str = "info") -> uvicorn.Config:
    """uvicorn's settings for the studio: this protocol, no connection-counting limit, short timeouts."""
    return uvicorn.Config(app, http=Protocol, ws="none", lifespan="on", log_level=log_level,
                          timeout_keep_alive=KEEP_ALIVE, limit_concurrency=None, timeout_graceful_shutdown=3)
