"""``tinydiffusion serve``: check the settings, warn about exposure, run the app on uvicorn.

Imported by the CLI's ``serve`` handler only. Without the ``serve`` extra (FastAPI, uvicorn) the app cannot be
imported; ``serve`` then raises a ``UsageError`` naming the missing module, before anything starts.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Sequence

from ... import checks
from ...errors import UsageError, bad_value

EXTRA_HINT = "the studio needs the optional extra: pip install 'tinydiffusion[serve]'"
EXTRA_MODULES = ("fastapi", "uvicorn")  # what the extra installs (FastAPI brings starlette and pydantic)
MAX_CONNECTIONS = 64  # open connections uvicorn serves at once; beyond that it answers 503 itself

try:
    from .app import create_app
except ModuleNotFoundError as e:  # the extra is missing: check_extra() says which module, serve() never starts
    if (e.name or "").split(".")[0] not in EXTRA_MODULES + ("starlette", "pydantic"):
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


def url(host: str, port: int) -> str:
    """The address to open in a browser (a wildcard bind is opened through the loopback address)."""
    if host in ("0.0.0.0", "", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/"


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

    app = create_app(list(runs), device=device, queue_size=queue)
    if not logging.getLogger("tinydiffusion.studio").handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    if not is_loopback(host):
        print(f"warning: --host {host} makes the studio reachable from other machines: anyone who can reach "
              f"this port can use this machine's CPU/GPU and see the listed models and runs. It has no login; "
              f"use the default 127.0.0.1 unless you mean it.", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, limit_concurrency=MAX_CONNECTIONS,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    listed = ", ".join(e.name for e in app.state.studio.catalog.models())
    print(f"tinydiffusion studio: open {url(host, port)} in a browser (API docs: {url(host, port)}docs); "
          f"models: {listed}; Ctrl-C stops it", flush=True)
    server.run()
