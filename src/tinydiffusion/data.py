"""Datasets as uint8 ``[N, H, W, 3]``: the embedded sets, ``.npz`` files like them, the course's arrays,
image folders, and packed sets that stay on disk.

Every file is checked before it is trusted: arrays by their header (no pickled objects, the right
dtype and shape, sizes that fit in memory) before their data is read, images by their header (PNG
or JPEG, at most ``MAX_PIXELS``) before their pixels are decoded, labels for being integer class
indices in range, one per image. A packed set (``data pack``) is an uncompressed ``.npy`` read
memory-mapped, with its labels in a sidecar ``NAME.meta.npz``; ``make_batch`` gathers only the rows
of a batch from it. Scaling to ``[-1, 1]`` and flips happen per batch, vectorised.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import checks
from .errors import UsageError, bad_value
from .files import atomic_write, save_npz
from .modelfile import class_name

EMBEDDED = {"sprites": "sprites.npz", "emoji": "emoji.npz"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
IMAGE_FORMATS = ("PNG", "JPEG")  # the only parsers user files reach (JPEG covers MPO from phone cameras)
MAX_PIXELS = 2**26  # 64 megapixels: a larger header is refused before decoding (decompression bombs)
FOLDER_SIZE = 32  # images from a folder are resized to this unless a size is given
PACK_FORMAT = "tinydiffusion-packed-1"
SOURCES = f"an embedded set ({', '.join(EMBEDDED)}), a folder of class sub-folders, an .npz, or an images .npy"
# What Pillow's decoders raise on a broken or hostile file (each plugin has its own habits)
_DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
                  struct.error, zlib.error, MemoryError, Image.DecompressionBombError)


@dataclass(frozen=True, eq=False)
class Dataset:
    images: np.ndarray  # uint8 [N, H, W, 3]; an np.memmap for a packed set
    labels: np.ndarray | None  # int64 [N] indices into class_names, or None (unlabelled)
    class_names: tuple[str, ...]
    captions: np.ndarray | None = None  # str [N]
    paths: np.ndarray | None = None  # str [N], where each image came from
    name: str = ""
    skipped: int = 0  # bad files skipped while loading

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

    def resized(self, size: int) -> "Dataset":
        """Every image resized to ``size × size`` (box filter for whole-number shrink factors), in RAM."""
        if size == self.size and self.images.shape[2] == size:
            return self
        hint = f" (pack it at that size, `tinydiffusion data pack ... --image-size {size}`, to train from disk)"
        _fits("image_size", size, len(self) * size * size * 3, f"{len(self)} resized images", hint)
        out = np.empty((len(self), size, size, 3), np.uint8)
        for i in range(len(self)):  # row by row: a memory-mapped set is read once, never held whole
            out[i] = np.asarray(resize_square(Image.fromarray(np.asarray(self.images[i])), size))
        return replace(self, images=out)


def load_dataset(source: str, *, labels: str | None = None, class_names: list[str] | None = None,
                 size: int | None = None, skip_bad_files: bool = False) -> Dataset:
    """``sprites``/``emoji`` (embedded), an ``.npz`` like them, the course's ``images.npy`` with
    ``labels=labels.npy``, a packed ``.npy`` (memory-mapped), or a folder with one sub-folder per class.
    ``size`` resizes (in RAM); every refusal is a ``UsageError`` naming the parameter or file."""
    dataset = _load(source, labels, class_names, size, skip_bad_files, mmap_arrays=False)
    return dataset.resized(size) if size else dataset


def _load(source: Any, labels: str | None, class_names: Any, size: int | None, skip_bad_files: bool,
          mmap_arrays: bool) -> Dataset:
    source = _check_source(source)
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


def _check_source(source: Any) -> str:
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
            _fits("data", str(path), sum(_member_bytes(d.zip, info, where) for info in d.zip.infolist()), "arrays")
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
    class_names, captions and paths (one string per image). Other arrays are ignored."""
    if images is None:
        if "images" not in arrays:
            raise UsageError(f"{where} has no 'images' array (it has {sorted(arrays)})")
        images = check_images(arrays["images"], where)
    n = len(images)
    names = _check_names(arrays["class_names"], where) if "class_names" in arrays else ()
    labels = arrays.get("labels")
    if labels is not None:
        if not names:
            raise UsageError(f"{where} has 'labels' but no 'class_names'; expected both (labels index the names)")
        labels = check_labels(labels, n, len(names), where)
    captions, paths = (_check_strings(arrays.get(k), n, k, where) for k in ("captions", "paths"))
    return Dataset(images, labels, names, captions, paths, name)


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
    _check_names(np.array(names), "class_names")
    return Dataset(images, one_hot.argmax(axis=1).astype(np.int64), names, name=images_path.stem)


def read_array(path: Path, param: str, *, mmap_arrays: bool = False) -> np.ndarray:
    """One ``.npy`` array, its header checked first: a real ``.npy``, no pickled objects, fits in memory
    (unless memory-mapped). Refusals name ``param`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise bad_value(param, str(path), "an existing .npy file")
    shape, dtype = npy_header(path, param)
    if not mmap_arrays:
        _fits(param, str(path), int(np.prod(shape, dtype=np.float64)) * dtype.itemsize, "array")
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


def _check_names(names: np.ndarray, where: str) -> tuple[str, ...]:
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


# ---------------------------------------------------------------------- image folders
def load_folder(root: Path, size: int, *, skip_bad_files: bool = False) -> Dataset:
    """One sub-folder per class, PNG/JPEG inside, each centre-cropped to a square and resized."""
    files, names = folder_files(root)
    _fits("data", str(root), len(files) * size * size * 3, f"{len(files)} images at {size}×{size}")
    images = np.empty((len(files), size, size, 3), np.uint8)
    labels, paths, skipped = [], [], 0
    for file, k in files:
        try:
            images[len(labels)] = read_image(file, size)
        except BadImageFile:
            if not skip_bad_files:
                raise
            skipped += 1
            continue
        labels.append(k)
        paths.append(str(file.relative_to(root)))
    if not labels:
        raise UsageError(f"data folder {root} holds no readable PNG or JPEG images")
    return Dataset(images[:len(labels)], np.array(labels, dtype=np.int64), names, paths=np.array(paths),
                   name=root.name, skipped=skipped)


def folder_files(root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """``[(file, class index)]`` of the PNG/JPEG files under each class sub-folder, and the class names."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UsageError(f"data folder {root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    names = _check_names(np.array([d.name for d in class_dirs]), f"data folder {root} (its sub-folder names)")
    files = [(file, k) for k, class_dir in enumerate(class_dirs) for file in sorted(class_dir.rglob("*"))
             if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("._")]
    return files, names


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
        reason = "not a PNG or JPEG image" if isinstance(e, UnidentifiedImageError) else _reason(e)
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


# ---------------------------------------------------------------------- packed sets (on disk)
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
    if "fingerprint" in meta and str(meta["fingerprint"]) != _fingerprint(images.shape, lambda i: images[i].tobytes()):
        raise UsageError(f"{where}: the images do not match the sidecar (one of the two was replaced); pack it again")
    return from_arrays(meta, where, path.stem, images=images)


def pack_dataset(source: str, out: str | Path, *, labels: str | None = None, class_names: list[str] | None = None,
                 size: int | None = None, skip_bad_files: bool = False, overwrite: bool = False) -> Dataset:
    """Write any source ``load_dataset`` reads as an uncompressed uint8 ``N×S×S×3`` ``.npy`` at ``out``
    and its labels, class names, captions and paths in ``sidecar(out)``; return it, memory-mapped.

    Streams: a folder is decoded image by image, an images ``.npy`` read memory-mapped, so packing never
    holds the set in RAM (an ``.npz`` is compressed and is read whole). The ``.npy`` is written to a temp
    file beside ``out`` and renamed into place; the sidecar carries a fingerprint of the images, so a
    pair that does not belong together is refused when loaded.
    """
    source = _check_source(source)
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
        dataset = _load(source, labels, class_names, None, skip_bad_files, mmap_arrays=True)
        size, n = size or dataset.size, len(dataset)
        rows = _array_rows(dataset.images, size)
        meta = {k: v for k, v in (("class_names", dataset.class_names), ("labels", dataset.labels),
                                  ("captions", dataset.captions), ("paths", dataset.paths)) if v is not None and len(v)}
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
    fingerprint = _fingerprint((count, size, size, 3),  # read back from the temp file (opened read-write)
                               lambda i: os.pread(f.fileno(), row_bytes, offset + i * row_bytes))
    if found["labels"]:
        meta = {**meta, "labels": np.array(found["labels"], np.int64), "paths": np.array(found["paths"])}
    arrays = {"format": np.array(PACK_FORMAT), "count": np.array(count), "size": np.array(size),
              "fingerprint": np.array(fingerprint), **{k: np.asarray(v) for k, v in meta.items()}}
    save_npz(sidecar(out), arrays)


def _fingerprint(shape: tuple[int, ...], row) -> str:
    """sha256 over the shape and 16 rows (``row(i)``: bytes) spread through the set: cheap at every load."""
    h = hashlib.sha256(repr(tuple(int(v) for v in shape)).encode())
    for i in np.unique(np.linspace(0, shape[0] - 1, 16).round().astype(np.int64)):
        h.update(row(int(i)))
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------- shared helpers
def _fits(param: str, value: Any, nbytes: float, what: str, hint: str = "") -> None:
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


# ---------------------------------------------------------------------- batches
def as_tensor(images: np.ndarray):
    """uint8 ``[N, H, W, 3]`` to a contiguous uint8 tensor ``[N, 3, H, W]`` (still 1 byte per value)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def batch_images(images: np.ndarray, idx):
    """uint8 ``[B, 3, H, W]`` (CPU) of the rows ``idx`` of uint8 ``[N, H, W, 3]`` images, typically a
    memory-mapped packed set: only those rows are read, in file order (sorted), then put back in order."""
    import torch

    idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64).reshape(-1)
    order = np.argsort(idx, kind="stable")
    rows = images[idx[order]]  # [B, H, W, 3] in file order: one pass front to back through the file
    out = torch.empty((len(idx), images.shape[3], images.shape[1], images.shape[2]), dtype=torch.uint8)
    out.numpy()[order] = rows.transpose(0, 3, 1, 2)  # back to the order asked for, channels first
    return out


def make_batch(images, idx, *, flip: bool = False, generator=None):
    """Float ``[B, 3, H, W]`` in ``[-1, 1]`` for the indices ``idx``; half of them mirrored if ``flip``.

    ``images`` is the uint8 tensor ``[N, 3, H, W]`` of ``as_tensor`` (in RAM or on a GPU), or the
    uint8 ``[N, H, W, 3]`` array of a packed set (``Dataset.mapped``): then only the batch's rows are
    read from disk, and the batch lands on ``idx``'s device. Same values and flips either way.
    """
    import torch

    if isinstance(images, np.ndarray):
        device = idx.device if isinstance(idx, torch.Tensor) else torch.device("cpu")
        x = batch_images(images, idx).to(device).float().div_(127.5).sub_(1.0)
    else:
        x = images[idx].float().div_(127.5).sub_(1.0)
    if flip:
        mirror = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)  # [B]
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x
