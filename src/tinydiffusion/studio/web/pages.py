"""The two pages: the studio itself at ``/`` (``studio/static/``) and the offline API description at ``/docs``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from . import apidocs

STATIC = Path(str(resources.files("tinydiffusion") / "studio" / "static"))

router = APIRouter(include_in_schema=False)


@router.get("/")
def index():
    if (STATIC / "index.html").is_file():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
    return HTMLResponse("<!doctype html><title>tinydiffusion studio</title><p>The page is missing from this "
                        "install; the API is at <a href='/docs'>/docs</a>.</p>")


@router.get("/docs")
def docs(request: Request):
    return HTMLResponse(apidocs.page(request.app.openapi()))
