"""The studio's server over raw sockets, as ``tinydiffusion serve`` runs it (``web/connections.py``): idle and slow
connections time out and never lock real clients out, a declared but unsent body does not hold a connection,
requests that could be smuggled are refused, and a foreign Host is refused on the wire too."""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("fastapi", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")
pytest.importorskip("uvicorn", reason="the studio needs the 'serve' extra: pip install 'tinydiffusion[serve]'")

from studio_helpers import TINY, app, root, serving  # noqa: E402,F401  (fixtures)
from tinydiffusion.studio.web import connections, intake  # noqa: E402

IDLE = 100  # idle connections held open while a real client is served


@pytest.fixture(scope="module")
def server(app):
    with serving(app) as (url, port):
        yield port


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def head(port: int, method: str = "GET", path: str = "/", extra: str = "", body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n").encode() + body


def answer(sock: socket.socket, timeout: float = 10) -> tuple[int, bytes]:
    """The status and the raw bytes of one answer (headers and what of the body arrived)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    length = next((int(line.split(b":")[1]) for line in data.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    while len(data.partition(b"\r\n\r\n")[2]) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0, data


def closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading and dropping what it sends), ``None`` if still open."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < limit:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def still_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock`` open (nothing to read, no end of stream)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(10)


def test_idle_connections_do_not_lock_anyone_out(server):
    """The review's 503 lock-out: ~63 silent sockets made every request 503 for as long as they were held."""
    idle = [connect(server) for _ in range(IDLE)]
    try:
        time.sleep(0.3)
        timings = []
        for path in ("/", "/api/models"):
            start = time.perf_counter()
            with connect(server) as sock:
                sock.sendall(head(server, path=path, extra="Connection: close\r\n"))
                status, _ = answer(sock)
            timings.append(time.perf_counter() - start)
            assert status == 200, path
        with connect(server) as sock:
            body = (b'{"model": "tiny", "context": "square", "n": 1, "steps": 2, "sampler": "ddim"}')
            sock.sendall(head(server, "POST", "/api/sample", f"Content-Type: application/json\r\nContent-Length: "
                                                              f"{len(body)}\r\nConnection: close\r\n", body))
            assert answer(sock, 60)[0] == 200
        print(f"\nwith {IDLE} idle connections open: GET / in {1000 * timings[0]:.0f} ms, "
              f"GET /api/models in {1000 * timings[1]:.0f} ms")
        assert max(timings) < 3.0
        assert sum(still_open(s) for s in idle) == IDLE  # they were really held while the others were served
    finally:
        for s in idle:
            s.close()


def test_idle_and_slow_request_heads_time_out(server, monkeypatch):
    monkeypatch.setattr(connections.Protocol, "head_timeout", 1.0)
    silent, trickle = connect(server), connect(server)
    try:
        start = time.monotonic()
        request = head(server)
        for k in range(8):  # a slow-loris: a byte every 0.25 s never finishes its head in time
            try:
                trickle.sendall(request[k:k + 1])
            except OSError:
                break
            time.sleep(0.25)
        assert closed_after(trickle, 3) is not None and time.monotonic() - start < 3.5
        assert closed_after(silent, 3) is not None
    finally:
        silent.close()
        trickle.close()


def test_a_kept_alive_connection_must_send_its_next_head_in_time(server, monkeypatch):
    monkeypatch.setattr(connections.Protocol, "head_timeout", 1.0)
    with connect(server) as sock:
        sock.sendall(head(server, path="/api/models"))
        assert answer(sock)[0] == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1")  # … and never the rest
        assert closed_after(sock, 4) < 3


def test_a_declared_but_unsent_body_does_not_hold_the_connection(server, monkeypatch):
    monkeypatch.setattr(connections.Protocol, "linger", 0.5)
    monkeypatch.setattr(intake, "BODY_IDLE", 1.0)
    # over the limit: refused from its declared length at once, the connection closed soon after
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(head(server, "POST", "/api/sample", "Content-Type: application/json\r\n"
                                                         "Content-Length: 100000000\r\n", b'{"model":'))
        status, data = answer(sock)
        assert status == 422 and b"over 65536 bytes" in data
        assert closed_after(sock, 5) is not None and time.monotonic() - start < 3
    # under the limit but never sent: 408 after BODY_IDLE s of silence, and closed
    with connect(server) as sock:
        start = time.monotonic()
        sock.sendall(head(server, "POST", "/api/sample", "Content-Type: application/json\r\n"
                                                         "Content-Length: 1000\r\n", b'{"model":'))
        status, data = answer(sock)
        assert status == 408 and b"stopped arriving" in data
        assert closed_after(sock, 5) is not None and time.monotonic() - start < 4


def test_a_body_nobody_reads_is_not_drained_forever(server, monkeypatch):
    monkeypatch.setattr(connections.Protocol, "linger", 0.5)
    with connect(server) as sock:
        sock.sendall(head(server, "GET", "/api/models", "Content-Length: 100000000\r\n", b"x" * 100))
        assert answer(sock)[0] == 200
        start = time.monotonic()
        for _ in range(10):  # the client keeps trickling the body the route never reads
            try:
                sock.sendall(b"x" * 10)
            except OSError:
                break
            time.sleep(0.2)
        assert closed_after(sock, 3) is not None and time.monotonic() - start < 3


@pytest.mark.parametrize("extra, body", [
    ("Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
    ("Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n", b"0\r\n\r\n"),
])
def test_content_length_with_transfer_encoding_is_refused(server, extra, body):
    with connect(server) as sock:
        sock.sendall(head(server, "POST", "/api/sample", extra, body))
        status, _ = answer(sock)
        assert status == 400
        assert closed_after(sock, 5) is not None


@pytest.mark.parametrize("raw, status", [
    (b"GET / HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n", 403),
    (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400), (b"GET / HTTP/1.0\r\n\r\n", 400),
    (b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403),
    (b"POST /api/sample HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}", 415),
    (b"POST /api/jobs/j1/cancel HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n"
     b"Content-Length: 0\r\n\r\n", 403),
    (b"GET /api/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", 200),
])
def test_raw_requests(server, raw, status):
    with connect(server) as sock:
        sock.sendall(raw.replace(b"{port}", str(server).encode()))
        got, data = answer(sock)
        assert got == status, data[:300]
        assert b"content-security-policy" in data.lower() or got == 400


def test_beyond_the_connection_cap_the_oldest_idle_one_goes(server, monkeypatch):
    monkeypatch.setattr(connections.Protocol, "max_connections", 20)
    idle = [connect(server) for _ in range(30)]
    try:
        time.sleep(0.5)
        assert not still_open(idle[0]) and still_open(idle[-1])
        with connect(server) as sock:
            sock.sendall(head(server, extra="Connection: close\r\n"))
            assert answer(sock)[0] == 200
    finally:
        for s in idle:
            s.close()
