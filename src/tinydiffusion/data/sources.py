"""Datasets as uint8 ``[N, H, W, 3]`` from their sources: the embedded sets, ``.npz`` files like them,
the course's arrays and image folders, and the checks every one of them passes.

Every file is checked before it is trusted: arrays by their header (no pickled objects, the right
dtype and shape, sizes that fit in memory) before their data is read, images by their header (PNG
or JPEG, at most ``MAX_PIXELS``) before their pixels are decoded, labels for being integer class
indices in range, one per image. Which source ``--data`` names, and packed sets, are ``load.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .. import checks
from ..errors import UsageError, bad_value
from ..store.imagefile import resize_square
from ..store.modelfile import class_name
from ..vocab import HELD_OUT

EMBEDDED = {"sprites": "sprites.npz", "emoji": "emoji.npz"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
FOLDER_SIZE = 32  # images from a folder are resized to this unless a size is given
SOURCES = f"an embedded set ({', '.join(EMBEDDED)}), a folder of class sub-folders, an .npz, or an images .npy"


@dataclass(frozen=True, eq=False)
class Dataset:
    images: np.ndarray  # uint8 [N, H, W, 3]; an np.memmap for a packed set
    labels: np.ndarray | None  # int64 [N] indices into class_names, or None (unlabelled)
    class_names: tuple[str, ...]
    captions: np.ndarray | None = None  # str [N]
    paths: np.ndarray | None = None  # str [N], where each image came from
    name: str = ""
    skipped: int = 0  # bad files skipped while loading
    alt_captions: np.ndarray | None = None  # str [N]: each image's captions (the first one too), "|" between them
    split: np.ndarray | None = None  # int8 [N]: HELD_OUT for images kept out of training (to measure on), else 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    @property
    def mapped(self) -> bool:
        """The images stay on disk (a packed ``.npy``): gather batches with ``make_batch``/``batch_images``."""
        return isinstance(self.images, np.memmap)

    def counts(self) -> dict[str, int]:
        if self.labels is None:
            return {}
        return {n: int(c) for n, c in zip(self.class_names, np.bincount(self.labels, minlength=len(self.class_names)))}

    def part(self, held_out: bool) -> "Dataset":
        """The images training sees (``held_out=False``: all of them when the set has no ``split``) or the ones it
        never sees, kept for measuring (``True``: none without a ``split``); a copy in RAM."""
        keep = (self.split == HELD_OUT) if self.split is not None else np.full(len(self), held_out)
        keep = keep if held_out else ~keep
        if keep.all():
            return self
        pick = np.flatnonzero(keep)
        take = (lambda a: None if a is None else a[pick])
        return replace(self, images=np.asarray(self.images[pick]), labels=take(self.labels),
                       captions=take(self.captions), paths=take(self.paths), alt_captions=take(self.alt_captions),
                       split=take(self.split))

    def resized(self, size: int) -> "Dataset":
        """Every image resized to ``size × size`` (box filter for whole-number shrink factors), in RAM."""
        if size == self.size and self.images.shape[2] == size:
            return self
        hint = f" (pack it at that size, `tinydiffusion data pack ... --image-size {size}`, to train from disk)"
        fits("image_size", size, len(self) * size * size * 3, f"{len(self)} resized images", hint)
        out = np.empty((len(self), size, size, 3), np.uint8)
        for i in range(len(self)):  # row by row: a memory-mapped set is read once, never held whole
            out[i] = np.asarray(resize_square(Image.fromarray(np.asarray(self.images[i])), size))
        return replace(self, images=out)


def check_source(source: Any) -> str:
    """``--data`` as a string, refused when empty or not a path (``load_dataset`` and ``pack_dataset`` share it)."""
    if not isinstance(source, (str, Path)) or not str(source).strip():  # '' would be the current folder
        raise bad_value("data", source, SOURCES)
    return str(source)


# ---------------------------------------------------------------------- arrays
def load_npz(path, name: str | None = None) -> Dataset:
    """The format of the embedded sets: ``images``, ``labels``, ``class_names``, ``captions``, ``paths``."""
    where = f"data file {path}"
    return from_arrays(read_npz(path, where), where, name or Path(str(path)).stem)


def read_npz(path, where: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, after checking it is a zip whose arrays fit in memory; never unpickles."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UsageError(f"{where} could not be read: {e.strerror or e}") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise UsageError(f"{where} is not an .npz archive (a zip of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as d:
            fits("data", str(path), sum(_member_bytes(d.zip, info, where) for info in d.zip.infolist()), "arrays")
            return {k: d[k] for k in d.files}
    except UsageError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, EOFError, OSError, ValueError: a truncated or foreign file
        raise UsageError(f"{where} could not be read as an .npz: {_reason(e)}") from None


def _member_bytes(archive, info, where: str) -> int:
    """What one member of an ``.npz`` takes in memory, from its ``.npy`` header (before reading it)."""
    if not info.filename.endswith(".npy"):
        return info.file_size
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise ValueError(f".npy format version {version} is not supported (1.0 or 2.0 are)")
        shape, _, dtype = read[version](member)
    if dtype.hasobject:
        raise UsageError(f"{where}: array {info.filename[:-4]!r} holds pickled Python objects ({dtype}); they are "
                         f"never loaded (unpickling can run code); expected arrays of numbers or strings")
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def from_arrays(arrays: dict[str, np.ndarray], where: str, name: str, images: np.ndarray | None = None) -> Dataset:
    """A Dataset from named arrays, each checked: images, labels (one class index per image),
    class_names, captions, paths and alt_captions (one string per image), split (0 or HELD_OUT per image). Other
    arrays are ignored."""
    if images is None:
        if "images" not in arrays:
            raise UsageError(f"{where} has no 'images' array (it has {sorted(arrays)})")
        images = check_images(arrays["images"], where)
    n = len(images)
    names = check_names(arrays["class_names"], where) if "class_names" in arrays else ()
    labels = arrays.get("labels")
    if labels is not None:
        if not names:
            raise UsageError(f"{where} has 'labels' but no 'class_names'; expected both (labels index the names)")
        labels = check_labels(labels, n, len(names), where)
    captions, paths, alts = (_check_strings(arrays.get(k), n, k, where) for k in ("captions", "paths", "alt_captions"))
    split = arrays.get("split")
    if split is not None and (split.shape != (n,) or split.dtype.kind not in "iu" or
                              not np.isin(split, (0, HELD_OUT)).all()):
        raise UsageError(f"split in {where} has shape {split.shape} and dtype {split.dtype}; expected one 0 (training) "
                         f"or {HELD_OUT} (held out) per image")
    return Dataset(images, labels, names, captions, paths, name, alt_captions=alts,
                   split=None if split is None else split.astype(np.int8))


def load_course_arrays(images_path: Path, labels_path: str | None, class_names: list[str] | None, *,
                       mmap_arrays: bool = False) -> Dataset:
    """The course's format: images ``N×H×W×3`` uint8 and labels ``N×K`` one-hot (any 0/1 numbers)."""
    images = check_images(read_array(images_path, "data", mmap_arrays=mmap_arrays), str(images_path))
    if labels_path is None:
        return Dataset(images, None, (), name=images_path.stem)
    one_hot = read_array(Path(labels_path), "labels")
    if one_hot.ndim != 2 or one_hot.shape[0] != images.shape[0] or one_hot.dtype.kind not in "biuf":
        raise bad_value("labels", f"{labels_path}: an array of shape {one_hot.shape} ({one_hot.dtype})",
                        f"an N×K array of 0/1 numbers with N = {images.shape[0]} (one one-hot row per image)")
    rows_ok = (np.isin(one_hot, (0, 1)).all(axis=1)) & (one_hot.sum(axis=1) == 1)
    if not rows_ok.all():
        bad = int(np.flatnonzero(~rows_ok)[0])
        raise UsageError(f"labels file {labels_path}: row {bad} is {one_hot[bad].tolist()[:10]}, not one-hot")
    K = one_hot.shape[1]
    names = tuple(str(n) for n in class_names) if class_names else tuple(f"class{k}" for k in range(K))
    if len(names) != K:
        raise bad_value("class_names", list(names), f"{K} names, one per label column")
    check_names(np.array(names), "class_names")
    return Dataset(images, one_hot.argmax(axis=1).astype(np.int64), names, name=images_path.stem)


def read_array(path: Path, param: str, *, mmap_arrays: bool = False) -> np.ndarray:
    """One ``.npy`` array, its header checked first: a real ``.npy``, no pickled objects, fits in memory
    (unless memory-mapped). Refusals name ``param`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise bad_value(param, str(path), "an existing .npy file")
    shape, dtype = npy_header(path, param)
    if not mmap_arrays:
        fits(param, str(path), int(np.prod(shape, dtype=np.float64)) * dtype.itemsize, "array")
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap_arrays else None)
    except Exception as e:  # truncated data: ValueError, EOFError, OSError
        raise UsageError(f"{_file(param)} {path} could not be read as a .npy array: {_reason(e)}") from None


def npy_header(path: Path, param: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from a ``.npy`` header, reading nothing else."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read:
                raise ValueError(f".npy format version {version} is not supported (1.0 or 2.0 are)")
            shape, _, dtype = read[version](f)
    except Exception as e:
        raise UsageError(f"{_file(param)} {path} is not a .npy array: {_reason(e)}") from None
    if dtype.hasobject:
        raise UsageError(f"{_file(param)} {path} holds pickled Python objects ({dtype}); they are never "
                         f"loaded (unpickling can run code); expected an array of numbers")
    return shape, dtype


def check_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise UsageError(f"images in {where} have shape {images.shape} and dtype {images.dtype}; "
                         f"expected uint8 N×H×W×3 with H = W")
    if images.shape[0] == 0 or images.shape[1] == 0:
        raise UsageError(f"images in {where} are empty (shape {images.shape}); expected at least one image")
    return images


def check_labels(labels: np.ndarray, n: int, k: int, where: str) -> np.ndarray:
    """int64 ``[n]`` class indices in ``0..k-1``: integers, or floats that are exactly whole numbers."""
    what = f"one integer class index in 0..{k - 1} per image (shape ({n},))"
    if labels.ndim != 1 or labels.shape[0] != n or labels.dtype.kind not in "iuf":
        raise UsageError(f"labels in {where} have shape {labels.shape} and dtype {labels.dtype}; expected {what}")
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(labels) | (labels != np.round(labels)) if labels.dtype.kind == "f" else np.zeros(n, bool)
        bad |= (labels < 0) | (labels >= k)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UsageError(f"labels in {where}: label {i} is {labels[i].item()!r}; expected {what}")
    return labels.astype(np.int64)


def check_names(names: np.ndarray, where: str) -> tuple[str, ...]:
    if names.ndim != 1 or names.dtype.kind not in "US" or not 1 <= len(names) <= 10_000:
        raise UsageError(f"class_names in {where} have shape {names.shape} and dtype {names.dtype}; "
                         f"expected a list of 1 to 10000 strings")
    out = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist())
    for i, name in enumerate(out):
        try:
            class_name(f"class name {i}", name)
        except UsageError as e:
            raise UsageError(f"class_names in {where}: {e}") from None
    if len(set(out)) != len(out):
        raise UsageError(f"class_names in {where} repeat a name ({out}); expected distinct names")
    return out


def _check_strings(values: np.ndarray | None, n: int, key: str, where: str) -> np.ndarray | None:
    if values is not None and (values.ndim != 1 or values.shape[0] != n or values.dtype.kind not in "US"):
        raise UsageError(f"{key} in {where} have shape {values.shape} and dtype {values.dtype}; "
                         f"expected one string per image (shape ({n},))")
    return values


# ---------------------------------------------------------------------- shared helpers
def fits(param: str, value: Any, nbytes: float, what: str, hint: str = "") -> None:
    """``checks.memory``, with a hint at packing: a set larger than RAM trains from disk."""
    try:
        checks.memory(param, value, nbytes, what)
    except UsageError as e:
        raise UsageError(f"{e}{hint or '; pack it with `tinydiffusion data pack` to train from disk'}") from None


def _file(param: str) -> str:
    """How a message names a file given as ``param``: "data file", "labels file", "context_file"."""
    return param if param.endswith("file") else f"{param} file"


def _reason(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "allow_pickle" in text or "pickled" in text:
        return "it holds pickled Python objects, which are never loaded (unpickling can run code)"
    return text[:300]
