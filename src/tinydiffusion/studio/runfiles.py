"""Reading what run and model folders hold, for the studio: regular files only (never through a symlink),
never more than a bounded number of bytes. Paths come from the catalog's listing, never from a request."""

from __future__ import annotations

import csv
import io
import os
import stat
from pathlib import Path

MAX_TEXT = 64 * 1024  # bytes of a model README shown on its card
MAX_METRICS = 32 * 2**20  # bytes of metrics.csv read (its end, when it is longer)
MAX_POINTS = 2000  # points of a metrics curve sent to the page (thinned, the last kept)
MAX_PICTURE = 32 * 2**20  # bytes of a sample grid served


def read_metrics(path: Path, max_points: int = MAX_POINTS, limit: int = MAX_METRICS) -> dict[str, list[float | None]]:
    """The curves of a ``metrics.csv`` (bad rows skipped, non-finite values as None; its last ``limit`` bytes),
    thinned to ``max_points`` with the last row kept."""
    columns = ("step", "loss", "images_per_s", "elapsed_s")
    out: dict[str, list[float | None]] = {c: [] for c in columns}
    lines = read_bounded(path, limit, tail=True).decode("utf-8", "replace").splitlines()
    if lines and not lines[0].startswith("step"):  # the tail of a long file: the header from its start
        lines = read_bounded(path, 4096).decode("utf-8", "replace").splitlines()[:1] + lines[1:]
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        try:
            values = [float(row[c]) for c in columns]
        except (KeyError, TypeError, ValueError):
            continue
        for c, v in zip(columns, values):
            out[c].append(v if v == v and abs(v) != float("inf") else None)
    stride = -(-len(out["step"]) // max_points) if out["step"] else 1
    if stride > 1:
        keep = list(range(0, len(out["step"]), stride))
        keep = keep if keep[-1] == len(out["step"]) - 1 else keep + [len(out["step"]) - 1]
        out = {c: [v[i] for i in keep] for c, v in out.items()}
    return out


def newest_png(folder: Path) -> Path | None:
    """The newest regular, non-hidden ``.png`` in ``folder`` (by modification time); ``None`` when there is none."""
    pictures = []
    try:
        for item in os.scandir(folder):
            info = item.stat(follow_symlinks=False)
            if item.name.endswith(".png") and not item.name.startswith(".") and stat.S_ISREG(info.st_mode):
                pictures.append((info.st_mtime, item.name))
    except OSError:
        pass
    return folder / max(pictures)[1] if pictures else None


def readme(folder: Path) -> str | None:
    path = folder / "README.md"
    return read_bounded(path, MAX_TEXT).decode("utf-8", "replace") if is_file(path) else None


def is_file(path: Path) -> bool:
    """A regular file, not a symlink to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_bounded(path: Path, limit: int, tail: bool = False) -> bytes:
    """At most ``limit`` bytes of a regular file (not a symlink): its start, or its end when ``tail``;
    ``b""`` when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b""
        if tail and info.st_size > limit:
            f.seek(info.st_size - limit)
        return f.read(limit)
