"""The studio's Edit: ``POST /api/edit/stream`` takes the sampling parameters plus ``image`` (and ``mask``) as
base64 PNG/JPEG data URLs and ``strength``, checks them all before queueing (the library's messages), and runs
``edit_plans.plan_img2img``/``plan_inpaint`` and ``run_edit`` on the worker with live frames like ``/api/stream``.

Pictures are decoded like ``tinydiffusion edit`` reads files (``imagefile.read_image``: PNG/JPEG only, the
header checked against decompression bombs before any pixel is decoded, centre-cropped to the model's size);
the mask is white = keep, black = generate (grey >= 128 keeps), resized with nearest-neighbour.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from ... import checks
from ...core.edit import check_keeps_input, check_strength, repaint_nfe, tail_length
from ...errors import UsageError, bad_value
from ...sampling.card import check_inpaintable
from ...sampling.edit_plans import plan_img2img, plan_inpaint, run_edit
from ...sampling.outputs import context_arrays
from ...store.imagefile import BadImageFile, read_image
from ...store.pictures import beside, mask_picture, to_float, to_uint8
from . import encode
from .frames import Frames, rows
from .jobs import Result
from .params import MAX_IMAGES, SampleParams, for_model, levers_used, parse, resolve

MAX_PICTURE = 2 * 2**20  # bytes of one decoded image or mask file
MAX_EDIT_BODY = 6 * 2**20  # bytes of the JSON body: two base64 pictures and the parameters
MAX_EDIT_IMAGES = 16  # images per row of an edit
EDIT_KEYS = ("image", "mask", "strength")
_DATA_URL = re.compile(r"data:[\w/+.-]{0,40};base64,", re.I)  # any type: the decoder says what it is


@dataclass(frozen=True)
class EditParams:
    p: SampleParams
    picture: np.ndarray  # uint8 [S, S, 3]
    keep: np.ndarray | None  # bool [S, S]: true = keep
    strength: float

    @property
    def model(self) -> str:
        return self.p.model


def parse_edit(raw: Mapping[str, Any], config: dict | None = None) -> tuple[SampleParams, dict]:
    """The sampling part (``params.parse``) and the edit's own raw values, shape-checked; ``n`` <= 16."""
    if not isinstance(raw, Mapping):
        raise UsageError(f"the request body is {type(raw).__name__}; expected a JSON object with model, image, ...")
    p = parse({k: v for k, v in raw.items() if k not in EDIT_KEYS}, allow=())
    checks.integer("n", p.n, low=1, high=MAX_EDIT_IMAGES,
                   allowed=f"an integer number of images per row in 1..{MAX_EDIT_IMAGES} for an edit")
    if raw.get("image") is None:
        raise bad_value("image", None, "a PNG or JPEG picture as a data URL (data:image/png;base64,...)")
    strength = raw.get("strength")
    if strength is not None:
        strength = check_strength(strength)
    return p, {"image": raw["image"], "mask": raw.get("mask"), "strength": strength}


def decode(name: str, value: Any, size: int, *, mask: bool = False) -> np.ndarray:
    """uint8 ``[size, size, 3]`` (or for the mask bool ``[size, size]``, true = keep) from a data URL."""
    if not isinstance(value, str):
        raise bad_value(name, type(value).__name__, "a PNG or JPEG picture as a data URL (data:image/png;base64,...)")
    head = _DATA_URL.match(value[:80])
    text = value[head.end():] if head else value
    if len(text) > 4 * (MAX_PICTURE // 3 + 1):
        raise bad_value(name, f"a picture of about {len(text) * 3 // 4:,} bytes",
                        f"a PNG or JPEG file of at most {MAX_PICTURE // 2**20} MB")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_value(name, value[:40] + ("…" if len(value) > 40 else ""),
                        "a PNG or JPEG picture as a base64 data URL (data:image/png;base64,...)") from None
    side = size
    if mask:  # read at its own (cropped) side, then nearest-neighbour: a painted mask keeps its hard edges
        try:
            with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as im:
                side = max(1, min(min(im.size), 4096))
        except Exception:  # noqa: BLE001 - unreadable: read_image below says why
            side = size
    try:
        picture = read_image(io.BytesIO(data), side)
    except BadImageFile as e:
        reason = str(e).split(" could not be read (", 1)[-1].split("); fix or remove it")[0]
        raise UsageError(f"{name}: the picture could not be read ({reason}); expected a PNG or JPEG image") from None
    if not mask:
        return picture
    grey = Image.fromarray(picture).convert("L").resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(grey) >= 128


def checked_edit(raw: Any, entry) -> EditParams:
    """Every value of an edit request checked against the listed model's config (422 with the message)."""
    p, extra = parse_edit(raw)
    for_model(p, entry.config, len(entry.default_rows))
    size = int(entry.config["model"]["image_size"])
    picture = decode("image", extra["image"], size)
    keep = None if extra["mask"] in (None, "") else decode("mask", extra["mask"], size, mask=True)
    if keep is not None and keep.all():
        raise bad_value("mask", "a mask that keeps every pixel (all white)", "some painted (black) pixels to "
                                                                             "generate, or no mask (img2img)")
    if keep is not None and not keep.any():
        raise bad_value("mask", "a mask that generates every pixel (all black)", "some kept (white) pixels; with "
                                                                                 "none, omit the mask (img2img)")
    strength = extra["strength"]
    if strength is None:
        strength = 1.0 if keep is not None else 0.6
    if keep is not None:
        check_inpaintable(entry.config.get("distilled"))  # RePaint walks DDPM steps: not what a student learnt
    if keep is not None and p.sampler not in (None, "ddpm"):  # inpainting is RePaint over DDPM steps
        p = replace(p, sampler="ddpm", eta=None)
    steps = resolve(p, entry.config)[1] or 1
    if keep is None:
        check_keeps_input(strength, steps)  # plan_img2img's rule, before queueing
    return EditParams(p, picture, keep, strength)


def walked(settings: dict[str, Any]) -> int:
    """The sampler steps an edit walks (one callback, one frame each): the tail ``round(strength · steps)`` of the
    grid, plus RePaint's jumps back. Not ``nfe``, which counts a guided step's two halves."""
    k = tail_length(settings["strength"], settings["steps"])
    return repaint_nfe(k, settings["jump_length"], settings["resample"]) if "jump_length" in settings else k


def run(job, pipe, levers: dict[str, Any] | None = None) -> dict[str, Any]:
    """The worker's part: plan (the library's checks), run with live frames, keep the downloads. ``levers``: the
    guidance interval and guide as ``Pipeline.plan`` takes them (``Runner.levers``)."""
    e: EditParams = job.params
    p = e.p
    names, context = rows(pipe, p)
    sampler, steps, guidance = resolve(p, pipe.config)
    if e.keep is not None:
        sampler, steps = "ddpm", p.steps  # plan_inpaint: RePaint's own default steps unless given
    options = p.options() if sampler == "ddim" else {}
    shared = dict(strength=e.strength, n=p.n, seed=p.seed, sampler=sampler, steps=steps, guidance=guidance,
                  guidance_rescale=p.guidance_rescale, batch_size=MAX_IMAGES, **(levers or {}), **options)
    plan = plan_img2img(pipe, to_float(e.picture), context, **shared) if e.keep is None else \
        plan_inpaint(pipe, to_float(e.picture), torch.from_numpy(e.keep), context, **shared)
    s = plan.settings
    frames = Frames(job, walked(s), p.n, stream=True, renumber=True)
    x, seconds = frames.run(partial(run_edit, pipe, plan), plan.plan)
    images = to_uint8(x)  # [R·n, S, S, 3]
    shown = [e.picture] + ([] if e.keep is None else [mask_picture(e.keep)])
    used = levers_used(p, pipe.config, plan.plan.levers)
    metadata = {**p.metadata(), "sampler": s["sampler"], "steps": s["steps"], "guidance": s["guidance"], **used,
                "strength": s["strength"], "rows": names, "nfe": s["nfe"], "seconds": round(seconds, 3),
                "inpaint": e.keep is not None, "job": job.id}
    ncol = p.n + len(shown)
    grid = encode.png(beside(images, shown, p.n), ncol, text={"tinydiffusion": json.dumps(metadata)})
    arrays = context_arrays(names, plan.plan.rows, p.n, pipe.context, len(images))
    job.result = Result(images, arrays["contexts"], arrays.get("labels"), metadata, frames.kept, grid, p.n)
    return {"job": job.id, "grid": encode.data_url(grid), "seconds": round(seconds, 3), "nfe": s["nfe"],
            "sampler": s["sampler"], "steps": s["steps"], "guidance": s["guidance"], **used, "strength": s["strength"],
            "inpaint": e.keep is not None, "rows": names, "n": p.n, "ncol": ncol, "downloads": job.download_urls}
