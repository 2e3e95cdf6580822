"""The studio's FastAPI app: the page at ``/``, the JSON API under ``/api/`` (``docs/studio_api.md``), ``/docs``.

``create_app`` only assembles it: the shared ``Studio`` state, the guard that every request meets first
(``guard.py``: Host, Origin, token, content type, security headers), the error middleware and handlers
(``responses.py``), the static files and the routers (``pages``, ``listing``, ``submit``, ``downloads``, ``teach``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ... import __version__
from ...runtime.dist import resolve_device
from ..catalog import Catalog
from ..work.jobs import JobQueue
from ..work.runner import Pipelines, Runner
from ..work.teach import Teacher
from . import downloads, listing, pages, submit, teach
from .guard import Access, Guard
from .intake import Studio
from .responses import CatchAll, install_handlers

ROUTERS = (pages.router, listing.router, submit.router, downloads.router, teach.router)


def create_app(runs: Sequence[str | Path] = (), device: str = "cpu", queue_size: int = 8,
               models: dict[str, str | Path] | None = None, cache_size: int = 4, *, host: str = "127.0.0.1",
               token: str | None = None) -> FastAPI:
    """The app. ``runs``: folders whose runs (``metrics.csv``) and exported models (``RUN/model``) are listed;
    ``models``: name → model folder instead of the shipped ``sprites`` and ``emoji`` (tests); ``queue_size``:
    jobs that may wait for the worker before requests get 429; ``host``: the address served (``--host``: the
    Host names accepted); ``token``: required from every request when given (a non-loopback ``host``)."""
    catalog = Catalog(runs, models)
    pipelines = Pipelines(resolve_device(device), cache_size)
    jobs = JobQueue(Runner(pipelines), queue_size, name=str(pipelines.device), redact=catalog.redact)
    app = FastAPI(title="tinydiffusion studio", version=__version__, lifespan=_lifespan, docs_url=None,
                  redoc_url=None, description="Steer, watch and compare diffusion sampling; follow training runs. "
                                              "The page at / uses this API; see docs/studio_api.md.")
    app.state.studio = Studio(catalog, pipelines, jobs, Teacher(catalog))
    app.add_middleware(CatchAll)
    app.add_middleware(Guard, access=Access(host, token))  # added last: the outermost, every request meets it first
    install_handlers(app)
    app.mount("/static", StaticFiles(directory=pages.STATIC, check_dir=False), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.studio.jobs.close()
