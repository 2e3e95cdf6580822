"""Which source ``--data`` names, and packed sets read back memory-mapped.

``load_dataset`` checks the source and its options, then hands it to the reader of its kind in
``sources.py``, or to ``load_packed`` when an ``.npy`` has a sidecar. A packed set (``data pack``) is
an uncompressed ``.npy`` read memory-mapped, with its labels in a sidecar ``NAME.meta.npz``;
``make_batch`` gathers only the rows of a batch from it. The packed-set reader lives here, not beside
its writer in ``pack.py``, so that loading never needs the writer: ``pack → load → sources`` runs one way.
"""

from __future__ import annotations

import hashlib
import mmap
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks
from ..errors import UsageError, bad_value
from .folders import load_folder
from .sources import (EMBEDDED, FOLDER_SIZE, SOURCES, Dataset, check_images, check_source, from_arrays,
                      load_course_arrays, load_npz, npy_header, read_array, read_npz)

PACK_FORMAT = "tinydiffusion-packed-1"


def load_dataset(source: str, *, labels: str | None = None, class_names: list[str] | None = None,
                 size: int | None = None, skip_bad_files: bool = False) -> Dataset:
    """``sprites``/``emoji`` (embedded), an ``.npz`` like them, the course's ``images.npy`` with
    ``labels=labels.npy``, a packed ``.npy`` (memory-mapped), or a folder with one sub-folder per class.
    ``size`` resizes (in RAM); every refusal is a ``UsageError`` naming the parameter or file."""
    dataset = load_source(source, labels, class_names, size, skip_bad_files, mmap_arrays=False)
    return dataset.resized(size) if size else dataset


def load_source(source: Any, labels: str | None, class_names: Any, size: int | None, skip_bad_files: bool,
                mmap_arrays: bool) -> Dataset:
    """The dataset ``source`` names, unresized except a folder's images (decoded at ``size``). ``pack_dataset``
    calls it with ``mmap_arrays=True`` so that an images ``.npy`` is streamed, never read whole."""
    source = check_source(source)
    if size is not None:
        size = checks.image_size("image_size", size)
    path = Path(source)
    if labels is not None and (path.suffix != ".npy" or source in EMBEDDED):
        raise bad_value("labels", labels, "a labels .npy only together with an images .npy (the course's format)")
    if class_names is not None and labels is None:
        raise bad_value("class_names", list(class_names), "class names only together with --labels")
    if source in EMBEDDED:
        return load_npz(resources.files("tinydiffusion") / "assets" / EMBEDDED[source], name=source)
    if path.is_dir():
        return load_folder(path, size or FOLDER_SIZE, skip_bad_files=skip_bad_files)
    if path.suffix == ".npz" and path.is_file():
        return load_npz(path)
    if path.suffix == ".npy" and path.is_file():
        if sidecar(path).exists():
            if labels is not None:
                raise bad_value("labels", labels, f"no labels file: {path} is packed, its labels are in "
                                                  f"{sidecar(path)}")
            return load_packed(path)
        return load_course_arrays(path, labels, class_names, mmap_arrays=mmap_arrays)
    if not path.exists():
        raise bad_value("data", source, f"{SOURCES}; that path does not exist")
    raise bad_value("data", source, f"{SOURCES} (with --labels)")


# ---------------------------------------------------------------------- packed sets
def sidecar(path: str | Path) -> Path:
    """``data.npy`` → ``data.meta.npz``: the labels, class names, captions and paths of a packed set."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.npz")


def load_packed(path: Path) -> Dataset:
    """A packed set: the images memory-mapped (read-only, pages read on demand), the rest from the sidecar."""
    meta_file = sidecar(path)
    where = f"packed data {path} (with {meta_file.name})"
    meta = read_npz(meta_file, f"data file {meta_file}")
    if str(meta.get("format", "")) != PACK_FORMAT or "count" not in meta or "size" not in meta:
        raise UsageError(f"data file {meta_file} is not the sidecar of a packed set (format {PACK_FORMAT!r})")
    count, size = int(meta["count"]), int(meta["size"])
    shape, dtype = npy_header(path, "data")
    if dtype != np.uint8 or shape != (count, size, size, 3):
        raise UsageError(f"{where}: the images are {shape} {dtype}, the sidecar says ({count}, {size}, {size}, 3) "
                         f"uint8; pack it again")
    images = check_images(read_array(path, "data", mmap_arrays=True), where)
    try:  # batches read scattered rows: no read-around of pages nobody asked for (before the first read)
        images._mmap.madvise(mmap.MADV_RANDOM)
    except (AttributeError, OSError, ValueError):
        pass
    if "fingerprint" in meta and str(meta["fingerprint"]) != fingerprint(images.shape, lambda i: images[i].tobytes()):
        raise UsageError(f"{where}: the images do not match the sidecar (one of the two was replaced); pack it again")
    return from_arrays(meta, where, path.stem, images=images)


def fingerprint(shape: tuple[int, ...], row) -> str:
    """sha256 over the shape and 16 rows (``row(i)``: bytes) spread through the set: cheap at every load.
    The writer computes it from the file it wrote, the reader from the file it maps, so a swapped half shows."""
    h = hashlib.sha256(repr(tuple(int(v) for v in shape)).encode())
    for i in np.unique(np.linspace(0, shape[0] - 1, 16).round().astype(np.int64)):
        h.update(row(int(i)))
    return h.hexdigest()[:32]
