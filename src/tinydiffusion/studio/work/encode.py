"""Pictures and arrays as bytes for HTTP: PNG grids (nearest-neighbour enlarged), data URLs, GIF, .npz."""

from __future__ import annotations

import base64
import io
import json
from typing import Any, Sequence

import numpy as np
from PIL.PngImagePlugin import PngInfo

from ...store.pictures import display_scale, grid


def png(images: np.ndarray, ncol: int, *, fast: bool = False, text: dict[str, str] | None = None) -> bytes:
    """uint8 ``[N, H, W, 3]`` as one PNG grid, row by row, enlarged to about 64 px per image.

    ``fast`` (live frames) trades size for time: zlib level 1, no filter search."""
    picture = grid(images, ncol, scale=display_scale(images.shape[1]))
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info, **({"compress_level": 1} if fast else {}))
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def gif(frames: Sequence[np.ndarray], ncol: int, *, ms_per_frame: int = 60, hold_last_ms: int = 1500) -> bytes:
    """The denoising animation (``images.save_gif`` in memory): one grid per frame, the last one held."""
    scale = display_scale(frames[0].shape[1])
    pictures = [grid(f, ncol, scale=scale) for f in frames]
    durations = [ms_per_frame] * (len(pictures) - 1) + [hold_last_ms]
    buffer = io.BytesIO()
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0,
                     optimize=False)
    return buffer.getvalue()


def npz(images: np.ndarray, contexts: np.ndarray, labels: np.ndarray | None, metadata: dict[str, Any]) -> bytes:
    """The layout of ``tinydiffusion sample --out x.npz``: ``images`` uint8 ``[N, H, W, 3]``, ``contexts``
    float32 ``[N, D]``, ``labels`` int64 ``[N]`` when every row is a single class, ``metadata`` (JSON text)."""
    arrays = {"images": images, "contexts": contexts, "metadata": np.array(json.dumps(metadata))}
    if labels is not None:
        arrays["labels"] = labels
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
