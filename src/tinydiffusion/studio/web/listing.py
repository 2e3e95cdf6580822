"""What the server lists, by name: the models with their cards (``/api/models``) and the training runs with
their curves and newest sample grid (``/api/runs``). A name is looked up in the catalog, never joined to a path."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..runfiles import read_metrics
from .intake import StudioDep

router = APIRouter()


@router.get("/api/models", summary="the models this server lists, with their cards")
def models(s: StudioDep, rescan: bool = False) -> list[dict]:
    if rescan:
        s.catalog.rescan()
    return [s.catalog.card(entry) for entry in s.catalog.models()]


@router.get("/api/models/{name:path}", summary="one model's card")
def model(name: str, s: StudioDep) -> dict:
    return s.catalog.card(s.catalog.model(name))


@router.get("/api/runs", summary="training runs (folders with a metrics.csv) under --runs")
def runs(s: StudioDep) -> list[dict]:
    return s.catalog.runs()


@router.get("/api/runs/{name:path}/metrics", summary="a run's loss, images/s and time per logged step")
def metrics(name: str, s: StudioDep) -> dict:
    return read_metrics(s.catalog.run(name) / "metrics.csv")


@router.get("/api/runs/{name:path}/samples/latest.png", summary="a run's newest sample grid")
def latest(name: str, s: StudioDep):
    return Response(s.catalog.latest_sample(name), media_type="image/png", headers={"Cache-Control": "no-store"})
