"""``tinydiffusion data pack``: any source written as one uncompressed uint8 ``N×S×S×3`` ``.npy`` plus a
sidecar ``NAME.meta.npz`` (labels, class names, captions, paths), for data larger than RAM.

The writer only: ``load.py`` reads packed sets back (memory-mapped), so loading never imports this module.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from .. import checks
from ..errors import UsageError, bad_value
from ..store.files import atomic_write, save_npz
from ..store.imagefile import BadImageFile, read_image, resize_square
from .load import PACK_FORMAT, fingerprint, load_packed, load_source, sidecar
from .folders import folder_files
from .sources import EMBEDDED, FOLDER_SIZE, Dataset, check_source


def pack_dataset(source: str, out: str | Path, *, labels: str | None = None, class_names: list[str] | None = None,
                 size: int | None = None, skip_bad_files: bool = False, overwrite: bool = False) -> Dataset:
    """Write any source ``load_dataset`` reads as an uncompressed uint8 ``N×S×S×3`` ``.npy`` at ``out``
    and its labels, class names, captions and paths in ``sidecar(out)``; return it, memory-mapped.

    Streams: a folder is decoded image by image, an images ``.npy`` read memory-mapped, so packing never
    holds the set in RAM (an ``.npz`` is compressed and is read whole). The ``.npy`` is written to a temp
    file beside ``out`` and renamed into place; the sidecar carries a fingerprint of the images, so a
    pair that does not belong together is refused when loaded.
    """
    source = check_source(source)
    out = checks.output_path("out", out, suffixes=(".npy",))  # a .npy, not a folder, inside a folder
    taken = [p for p in (out, sidecar(out)) if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise bad_value("out", str(out), f"a file that does not exist yet ({taken[0]} exists; pass --overwrite "
                                         f"to replace it)")
    if any(p.is_dir() for p in taken):
        raise bad_value("out", str(out), "a file name, not a folder")
    if source not in EMBEDDED and Path(source).exists() and \
            Path(source).resolve() in (out.resolve(), sidecar(out).resolve()):
        raise bad_value("out", str(out), "a file other than the source")
    if size is not None:
        size = checks.image_size("image_size", size)
    path = Path(source)
    found: dict[str, Any] = {"labels": [], "paths": []}
    if source not in EMBEDDED and path.is_dir():
        if labels is not None or class_names is not None:
            raise bad_value("labels" if labels is not None else "class_names", labels or class_names,
                            "nothing for a folder (its sub-folders are the classes)")
        files, names = folder_files(path)
        size = size or FOLDER_SIZE
        rows, n, meta = _folder_rows(files, path, size, skip_bad_files, found), len(files), {"class_names": names}
    else:
        dataset = load_source(source, labels, class_names, None, skip_bad_files, mmap_arrays=True)
        size, n = size or dataset.size, len(dataset)
        rows = _array_rows(dataset.images, size)
        fields = ("class_names", "labels", "captions", "paths", "alt_captions", "split")
        meta = {k: getattr(dataset, k) for k in fields if getattr(dataset, k) is not None and len(getattr(dataset, k))}
    checks.disk("out", str(out), n * size * size * 3, out, f"packed set ({n} images at {size}×{size})")
    atomic_write(out, lambda f: _write_packed(f, rows, n, size, meta, found, out))
    return replace(load_packed(out), skipped=found.get("skipped", 0))


def _array_rows(images: np.ndarray, size: int, chunk: int = 1024) -> Iterator[np.ndarray]:
    """Chunks ``[k, size, size, 3]`` of an array (memory-mapped or not), resized image by image if needed."""
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk])
        if block.shape[1] != size:
            block = np.stack([np.asarray(resize_square(Image.fromarray(im), size)) for im in block])
        yield block


def _folder_rows(files, root: Path, size: int, skip_bad_files: bool, found: dict) -> Iterator[np.ndarray]:
    """Decoded images ``[1, size, size, 3]`` one at a time, noting each one's class and path (and skips)."""
    found["skipped"] = 0
    for file, k in files:
        try:
            row = read_image(file, size)
        except BadImageFile:
            if not skip_bad_files:
                raise
            found["skipped"] += 1
            continue
        found["labels"].append(k)
        found["paths"].append(str(file.relative_to(root)))
        yield row[None]


def _write_packed(f, rows: Iterator[np.ndarray], n: int, size: int, meta: dict, found: dict, out: Path) -> None:
    """The ``.npy`` header for ``n`` rows, the rows as they come (in chunks), then (when files were skipped) the header
    rewritten in place for the rows kept (numpy pads it so the count can change) and the file cut there.
    The sidecar is written last, after every row, so it only ever describes complete images."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False}
    np.lib.format.write_array_header_1_0(f, {**header, "shape": (n, size, size, 3)})
    offset, count = f.tell(), 0
    for chunk in rows:
        f.write(np.ascontiguousarray(chunk, dtype=np.uint8).tobytes())
        count += len(chunk)
    if count == 0:
        raise UsageError(f"nothing to pack into {out}: no readable images")
    if count != n:
        f.seek(0)
        np.lib.format.write_array_header_1_0(f, {**header, "shape": (count, size, size, 3)})
        assert f.tell() == offset, "numpy's .npy header changed length"
        f.truncate(offset + count * size * size * 3)
    f.flush()
    row_bytes = size * size * 3
    digest = fingerprint((count, size, size, 3),  # read back from the temp file (opened read-write)
                         lambda i: os.pread(f.fileno(), row_bytes, offset + i * row_bytes))
    if found["labels"]:
        meta = {**meta, "labels": np.array(found["labels"], np.int64), "paths": np.array(found["paths"])}
    arrays = {"format": np.array(PACK_FORMAT), "count": np.array(count), "size": np.array(size),
              "fingerprint": np.array(digest), **{k: np.asarray(v) for k, v in meta.items()}}
    save_npz(sidecar(out), arrays)
