"""``tinydiffusion serve``: check the settings, bind the socket, warn about exposure, run the app on uvicorn.

Imported by the CLI's ``serve`` handler only. Without the ``serve`` extra (FastAPI, uvicorn) the app cannot be
imported; ``serve`` then raises a ``UsageError`` naming the missing module, before anything starts. The socket is
bound here, before uvicorn starts, so that a host that does not resolve or a port in use is a one-line error
naming ``--host``/``--port`` (exit 2), and so that ``--port 0`` prints the port it got.
"""

from __future__ import annotations

import errno
import importlib
import ipaddress
import logging
import secrets
import socket
import sys
from pathlib import Path
from typing import Sequence

from ... import checks
from ...errors import UsageError, bad_value

EXTRA_HINT = "the studio needs the optional extra: pip install 'tinydiffusion[serve]'"
EXTRA_MODULES = ("fastapi", "uvicorn")  # what the extra installs (FastAPI brings starlette and pydantic)

try:
    from . import connections
    from .app import create_app
except ModuleNotFoundError as e:  # the extra is missing: check_extra() says which module, serve() never starts
    if (e.name or "").split(".")[0] not in EXTRA_MODULES + ("starlette", "pydantic", "h11"):
        raise


def check_extra() -> None:
    for module in EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f"{EXTRA_HINT} (missing module {module!r})") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url(host: str, port: int, token: str | None = None) -> str:
    """The address to open in a browser (a wildcard bind is opened through the loopback address)."""
    if host in ("0.0.0.0", "", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port`` (port 0: any free one); a ``UsageError`` naming the option."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise UsageError(f"--host {host!r} could not be resolved ({getattr(e, 'strerror', None) or e}); expected "
                         f"an address or name of this machine, e.g. 127.0.0.1 (default) or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {port} is already in use on {host}; pick another --port (0: any free port)") \
                from None
        if e.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(f"--port {port}: not allowed to bind it here ({e.strerror}); use a port above 1023") \
                from None
        raise UsageError(f"--host {host!r} cannot be bound ({e.strerror}); expected an address of this machine, "
                         f"e.g. 127.0.0.1 (default) or 0.0.0.0") from None
    return sock


def serve(host: str = "127.0.0.1", port: int = 8000, runs: Sequence[str] = (), device: str = "auto",
          queue: int = 8, *, log_level: str = "info") -> None:
    """Run the studio until Ctrl-C. Every setting is checked before anything starts."""
    if not isinstance(host, str) or not host.strip():
        raise bad_value("host", host, "an address to bind, e.g. 127.0.0.1 (default) or 0.0.0.0 (every interface)")
    checks.integer("port", port, low=0, high=65535, allowed="a TCP port in 0..65535 (0: any free port)")
    checks.integer("queue", queue, low=1, high=256, allowed="1..256 jobs waiting for the worker")
    for folder in runs:
        if not Path(folder).is_dir():
            raise bad_value("runs", folder, "an existing folder of training runs (e.g. runs)")
    check_extra()
    import uvicorn  # the extra, present: check_extra() above

    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = None if is_loopback(host) else secrets.token_urlsafe(24)
    app = create_app(list(runs), device=device, queue_size=queue, host=host, token=token)
    if not logging.getLogger("tinydiffusion.studio").handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    if token is not None:
        print(f"warning: --host {host} makes the studio reachable from other machines: anyone who can reach this "
              f"port and has the token in the URL below can use this machine's CPU/GPU and see the listed models "
              f"and runs; the connection is not encrypted. Use the default 127.0.0.1 unless you mean it.",
              file=sys.stderr, flush=True)
    listed = ", ".join(e.name for e in app.state.studio.catalog.models())
    print(f"tinydiffusion studio: open {url(host, port, token)} in a browser (API docs: {url(host, port)}docs); "
          f"models: {listed}; Ctrl-C stops it", flush=True)
    try:
        uvicorn.Server(connections.config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
