"""Pictures people look at: sample grids (PNG) and denoising animations (GIF), via Pillow."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .files import atomic_write


def to_uint8(x) -> np.ndarray:
    """``[N, 3, H, W]`` floats in ``[-1, 1]`` to uint8 ``[N, H, W, 3]``.

    Values are clipped, not min–max stretched per image: stretching would hide colour errors.
    """
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu")
    return x.byte().permute(0, 2, 3, 1).numpy()


def to_float(picture: np.ndarray):
    """uint8 ``[S, S, 3]`` to float ``[1, 3, S, S]`` in ``[-1, 1]``, scaled as training batches are."""
    return torch.from_numpy(np.ascontiguousarray(picture.transpose(2, 0, 1)))[None].float().div_(127.5).sub_(1.0)


def beside(pictures: np.ndarray, shown: list[np.ndarray], n: int) -> np.ndarray:
    """uint8 ``[R·(k+n), S, S, 3]``: each row of ``n`` pictures after the ``k`` pictures ``shown`` (input, mask)."""
    rows = pictures.reshape(-1, n, *pictures.shape[1:])  # [R, n, S, S, 3]
    first = np.broadcast_to(np.stack(shown)[None], (len(rows), len(shown), *pictures.shape[1:]))
    return np.concatenate([first, rows], axis=1).reshape(-1, *pictures.shape[1:])


def mask_picture(keep: np.ndarray) -> np.ndarray:
    """uint8 ``[S, S, 3]`` of a bool mask: white where kept, black where generated."""
    return np.repeat((keep.astype(np.uint8) * 255)[..., None], 3, axis=-1)


def grid(images: np.ndarray, ncol: int, *, scale: int = 1, pad: int = 1, background: int = 40) -> Image.Image:
    """Tile uint8 ``[N, H, W, 3]`` images row by row into one picture, ``scale``× enlarged (nearest)."""
    n, h, w, _ = images.shape
    ncol = max(1, min(ncol, n))
    nrow = -(-n // ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), background, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, ncol)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[k]
    picture = Image.fromarray(canvas)
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST) if scale > 1 else picture


def display_scale(size: int) -> int:
    """Enlarge small images so a grid is comfortable to look at (about 64 px per image)."""
    return max(1, 64 // size)


def grid_bytes(count: int, size: int, ncol: int, *, pad: int = 1) -> int:
    """Memory of ``grid(...)`` for ``count`` images of ``size`` px: the canvas and its enlarged copy."""
    ncol = max(1, min(ncol, count))
    scale = display_scale(size)
    canvas = ((-(-count // ncol)) * (size + pad) + pad) * (ncol * (size + pad) + pad) * 3
    return canvas * (2 + scale * scale)  # the array, the picture made from it, the enlarged copy


def save_grid(images: np.ndarray, path: str | Path, ncol: int, text: dict[str, str] | None = None) -> Path:
    """A PNG grid, written atomically; ``text`` goes into the PNG's text chunks (how the images were made)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    return save_picture(path, grid(images, ncol, scale=display_scale(images.shape[1])), format="PNG", pnginfo=info)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, ncol: int, *, ms_per_frame: int = 60,
             hold_last_ms: int = 1500) -> Path:
    """One grid per frame, written atomically; the last frame (the result) is held longer."""
    scale = display_scale(frames[0].shape[1])
    pictures = [grid(f, ncol, scale=scale) for f in frames]
    durations = [ms_per_frame] * (len(pictures) - 1) + [hold_last_ms]
    return save_picture(path, pictures[0], format="GIF", save_all=True, append_images=pictures[1:], duration=durations,
                      loop=0, optimize=False)


def save_picture(path: str | Path, picture: Image.Image, *, format: str, **options) -> Path:
    """``picture`` in ``format`` whatever the suffix of ``path``, through ``files.atomic_write``."""
    return atomic_write(path, lambda f: picture.save(f, format=format, **options))
