"""Reading one user image safely: PNG or JPEG only, its header checked before any pixel is decoded,
any Pillow mode and bit depth to RGB on black, centre-cropped and resized to a square."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UsageError

IMAGE_FORMATS = ("PNG", "JPEG")  # the only parsers user files reach (JPEG covers MPO from phone cameras)
MAX_PIXELS = 2**26  # 64 megapixels: a larger header is refused before decoding (decompression bombs)
# What Pillow's decoders raise on a broken or hostile file (each plugin has its own habits)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
                  struct.error, zlib.error, MemoryError, Image.DecompressionBombError)


class BadImageFile(UsageError):
    """An image file that cannot be decoded (skipped and counted under ``--skip-bad-files``)."""


def read_image(file: Path, size: int) -> np.ndarray:
    """One PNG/JPEG file as uint8 ``[size, size, 3]``: its header checked (format, at most ``MAX_PIXELS``)
    before any pixel is decoded, then RGB on black, centre-cropped and resized."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we refuse those ourselves, below
            with Image.open(file, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > MAX_PIXELS or w < 1 or h < 1:
                    raise ValueError(f"its header claims {w}×{h} pixels, above the limit of {MAX_PIXELS:,} "
                                     f"(a decompression bomb?)")
                return np.asarray(resize_square(to_rgb(im), size))
    except _DECODE_ERRORS as e:
        reason = "not a PNG or JPEG image" if isinstance(e, UnidentifiedImageError) else (str(e) or type(e).__name__)[:300]
        raise BadImageFile(f"image file {file} could not be read ({reason}); fix or remove it, "
                           f"or pass --skip-bad-files to skip and count such files") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on black (as the embedded sprites are), from any Pillow mode.

    16-bit and 32-bit integer grey (``I;16*``, ``I``: 16-bit PNGs) keeps its high byte (``value >> 8``,
    so 65535 → 255) instead of being clipped to 255 (which turns it white); palette, grey and RGB
    transparency keys become alpha; float grey (``F``) is clipped to 0..255 as Pillow does.
    """
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        im = _wide_grey(im)
    if im.mode == "La":  # premultiplied grey + alpha has no direct path to RGBA
        im = im.convert("LA")
    rgba = im.convert("RGBA")  # any other mode Pillow cannot convert raises ValueError: a bad file
    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _wide_grey(im: Image.Image) -> Image.Image:
    """16/32-bit grey to 8-bit ``L`` (or ``LA`` when a transparency key is set) by the high byte."""
    values = np.asarray(im).astype(np.int64)
    grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)  # 65535 → 255, 257·k → k
    key = im.info.get("transparency")
    if isinstance(key, int):
        alpha = np.where(values == key, 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([grey, alpha], axis=-1), "LA")
    return Image.fromarray(grey, "L")


def resize_square(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    if w != h:
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if im.size[0] == size:
        return im
    whole = im.size[0] % size == 0 and im.size[0] > size  # pixel art shrinks cleanly with a box filter
    return im.resize((size, size), Image.Resampling.BOX if whole else Image.Resampling.LANCZOS)


def read_picture(path: str | Path, size: int, param: str) -> np.ndarray:
    """uint8 ``[size, size, 3]`` from a PNG/JPEG, as training data is read: RGB on black, centre-cropped, resized;
    a refusal names ``param``."""
    try:
        return read_image(Path(path), size)
    except BadImageFile as e:
        raise UsageError(f"{param}: {str(e).split('; fix or remove it')[0]}; expected a PNG or JPEG image") from None


def read_mask(path: str | Path, size: int) -> np.ndarray:
    """bool ``[size, size]`` (true = keep) from a PNG/JPEG of any size: white (grey >= 128) keeps, black (or
    transparent) generates; centre-cropped like the input, then resized with nearest-neighbour."""
    try:  # the header only, for the side to read it at unresampled; read_picture checks and decodes the file
        with Image.open(path, formats=IMAGE_FORMATS) as im:
            side = max(1, min(im.size))
    except Exception:  # noqa: BLE001 - unreadable: read_picture below says why, naming the file
        side = size
    grey = Image.fromarray(read_picture(path, side, "mask")).convert("L")
    return np.asarray(grey.resize((size, size), Image.Resampling.NEAREST)) >= 128
