"""Checks shared by every boundary (config dataclasses, loaders, the CLI): each failure is a
``UsageError`` naming the parameter, the value and what is allowed, raised before any work starts."""

from __future__ import annotations

import math
from typing import Any

from .errors import bad_value
from .vocab import GUIDANCE_EVERYWHERE, MAX_GUIDANCE, MAX_IMAGE_SIZE, MAX_SEED, UNGUIDED

MEMORY_LIMIT_FRACTION = 0.5  # refuse work whose own tensors would need more than half of this machine's RAM


def finite(name: str, value: Any, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, allowed: str | None = None) -> float:
    """``value`` as a float that is finite and inside ``[low, high]`` (``(low, high]`` when ``low_open``)."""
    what = allowed or _range_text(low, high, low_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_value(name, value, what)
    v = float(value)
    if not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) or \
            (high is not None and v > high):
        raise bad_value(name, value, what)
    return v


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None,
            allowed: str | None = None) -> int:
    """``value`` as an int (not a bool, not a float) inside ``[low, high]``."""
    what = allowed or _range_text(low, high, False, kind="an integer")
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low) or \
            (high is not None and value > high):
        raise bad_value(name, value, what)
    return value


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    """``value`` when it is one of ``options`` (a vocabulary tuple of ``vocab.py``)."""
    if not isinstance(value, str) or value not in options:  # isinstance first: a list is unhashable
        raise bad_value(name, value, f"one of {', '.join(options)}")
    return value


def guidance(value: Any, name: str = "guidance") -> float:
    """A classifier-free guidance scale in ``[0, MAX_GUIDANCE]``; ``UNGUIDED`` (1) is the conditional model itself."""
    return finite(name, value, low=0, high=MAX_GUIDANCE,
                  allowed=f"a number in [0, {MAX_GUIDANCE:g}] ({UNGUIDED:g} = no guidance, 2-5 typical)")


def snap(value: Any, name: str = "snap") -> float:
    """How far a text prompt moves toward its nearest training caption (``conditioning/snap.py``), in ``[0, 1]``."""
    return finite(name, value, low=0, high=1,
                  allowed="a number from 0 (the prompt as typed) to 1 (the nearest training caption)")


def guidance_interval(value: Any, name: str = "guidance_interval") -> tuple[float, float]:
    """A guidance interval ``(lo, hi)``: guidance acts where the diffusion time ``s = (t + 1) / T`` is in ``(lo, hi]``
    (``core/guidance.py``), ``0 <= lo <= hi <= 1``; ``GUIDANCE_EVERYWHERE`` is all of it, ``lo = hi`` none of it."""
    what = (f"two numbers LO,HI with 0 <= LO <= HI <= 1: guidance acts where the diffusion time (t+1)/T is in (LO, HI] "
            f"(1 = the noisiest step; {GUIDANCE_EVERYWHERE[0]:g},{GUIDANCE_EVERYWHERE[1]:g} = everywhere)")
    if not isinstance(value, (list, tuple)) or len(value) != 2 or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value) or \
            not 0 <= value[0] <= value[1] <= 1:
        raise bad_value(name, list(value) if isinstance(value, tuple) else value, what)
    return float(value[0]), float(value[1])


def seed(name: str, value: Any, count: int = 1) -> int:
    """A seed such that ``value … value + count - 1`` are all valid torch seeds."""
    return integer(name, value, low=0, high=MAX_SEED - max(0, count - 1),
                   allowed=f"an integer seed in 0..{MAX_SEED - max(0, count - 1)}")


def memory(name: str, value: Any, nbytes: float, what: str) -> None:
    """Refuse ``value`` when the ``what`` it asks for would need ``nbytes`` beyond the memory budget."""
    budget = available_memory() * MEMORY_LIMIT_FRACTION
    if nbytes > budget:
        raise bad_value(name, value, f"a size whose {what} fits in memory: it needs about {_gib(nbytes)}, "
                                     f"and the limit here is {_gib(budget)} (half of this machine's RAM)")


def available_memory() -> float:
    """Physical memory in bytes (the whole machine; cgroup limits when they are lower)."""
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return float(total)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _range_text(low, high, low_open, kind="a finite number") -> str:
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} <= {high:g}"
    return kind


def output_path(name: str, value: Any, *, suffixes: tuple[str, ...] | None = None, folder: bool = False):
    """``value`` as a ``Path`` an output can be written to, checked before any work: one of ``suffixes``
    (``""`` stands for none), no existing file where a folder must go, and no folder where a file must."""
    from pathlib import Path

    if not isinstance(value, (str, Path)) or not str(value).strip():
        raise bad_value(name, value, "a file or folder path")
    path = Path(value)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        kinds = [f"'{s}'" if s else "no suffix (a folder)" for s in suffixes]
        raise bad_value(name, str(value), f"a path ending in {' or '.join(kinds)}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise bad_value(name, str(value), f"a path inside a folder, but {parent} is a file")
    if folder and path.exists() and not path.is_dir():
        raise bad_value(name, str(value), "a folder, but it is an existing file")
    if not folder and path.is_dir():
        raise bad_value(name, str(value), "a file, but it is an existing folder")
    return path


def disk(name: str, value: Any, nbytes: float, path: Any, what: str) -> None:
    """Refuse ``value`` when the ``what`` it asks for would need more than the free space where ``path`` goes."""
    import shutil
    from pathlib import Path

    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise bad_value(name, value, f"a size whose {what} fits on disk: it needs about {_gib(nbytes)}, "
                                     f"and {folder} has {_gib(free)} free")


def image_size(name: str, value: Any, multiple_of: int = 1) -> int:
    """A square image side in pixels: an integer in ``1..MAX_IMAGE_SIZE``, a multiple of ``multiple_of``."""
    what = f"an integer number of pixels in 1..{MAX_IMAGE_SIZE}" + \
        (f" that is a multiple of {multiple_of}" if multiple_of > 1 else "")
    value = integer(name, value, low=1, high=MAX_IMAGE_SIZE, allowed=what)
    if value % multiple_of:
        raise bad_value(name, value, what)
    return value
