"""A queued job afterwards (``/api/jobs/{job}``): its state, cancelling it, and a finished job's downloads (the
grid PNG, the raw ``.npz``, the denoising GIF), made from the results the queue keeps for the last jobs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ..catalog import NotFound
from ..work import encode
from ..work.jobs import Result
from .intake import Studio, StudioDep

router = APIRouter()


@router.get("/api/jobs/{job}", summary="a job's state (queued, running, done, error, cancelled)")
def job_status(job: str, s: StudioDep) -> dict:
    return s.jobs.get(job).status()


@router.post("/api/jobs/{job}/cancel", summary="stop a queued or running job")
def cancel(job: str, s: StudioDep) -> dict:
    return {"job": job, "cancelled": s.jobs.cancel(job)}


@router.get("/api/jobs/{job}/grid.png", summary="a finished job's grid")
def grid_png(job: str, s: StudioDep):
    return _download(_result(s, job).grid_png, "image/png", f"tinydiffusion-{job[:9]}.png")


@router.get("/api/jobs/{job}/samples.npz", summary="a finished job's raw images, contexts, labels, metadata")
def samples_npz(job: str, s: StudioDep):
    r = _result(s, job)
    return _download(encode.npz(r.images, r.contexts, r.labels, r.metadata), "application/octet-stream",
                     f"tinydiffusion-{job[:9]}.npz")


@router.get("/api/jobs/{job}/anim.gif", summary="a finished job's denoising animation")
def anim_gif(job: str, s: StudioDep):
    r = _result(s, job)
    return _download(encode.gif(r.frames + [r.images], r.ncol), "image/gif", f"tinydiffusion-{job[:9]}.gif")


def _result(s: Studio, job_id: str) -> Result:
    job = s.jobs.get(job_id)
    if job.result is None:
        raise NotFound(f"job {job.id} has no results to download (it is {job.state})")
    return job.result


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})
