"""Datasets held in RAM as uint8: the embedded sets, the course's arrays and image folders.

Scaling to ``[-1, 1]`` and flips happen per batch, vectorised, in ``make_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import UsageError, bad_value

EMBEDDED = {"sprites": "sprites.npz", "emoji": "emoji.npz"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass(frozen=True, eq=False)
class Dataset:
    images: np.ndarray  # uint8 [N, H, W, 3]
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

    def counts(self) -> dict[str, int]:
        if self.labels is None:
            return {}
        return {n: int(c) for n, c in zip(self.class_names, np.bincount(self.labels, minlength=len(self.class_names)))}

    def resized(self, size: int) -> "Dataset":
        """Every image resized to ``size × size`` (box filter for whole-number shrink factors)."""
        if size == self.size and self.images.shape[2] == size:
            return self
        return replace(self, images=np.stack([np.asarray(resize_square(Image.fromarray(im), size)) for im in self.images]))


def load_dataset(source: str, *, labels: str | None = None, class_names: list[str] | None = None,
                 size: int | None = None, skip_bad_files: bool = False) -> Dataset:
    """``sprites``/``emoji`` (embedded), an ``.npz`` like them, the course's ``images.npy`` with
    ``labels=labels.npy``, or a folder with one sub-folder per class. ``size`` resizes."""
    path = Path(source)
    if source in EMBEDDED:
        dataset = load_npz(resources.files("tinydiffusion") / "assets" / EMBEDDED[source], name=source)
    elif path.is_dir():
        dataset = load_folder(path, size or 32, skip_bad_files=skip_bad_files)
    elif path.suffix == ".npz" and path.is_file():
        dataset = load_npz(path)
    elif path.suffix == ".npy" and path.is_file():
        dataset = load_course_arrays(path, labels, class_names)
    elif not path.exists():
        raise bad_value("data", source, f"an embedded set ({', '.join(EMBEDDED)}), a folder, an .npz or an images .npy; that path does not exist")
    else:
        raise bad_value("data", source, "a folder of class sub-folders, an .npz, or an images .npy (with --labels)")
    if labels is not None and path.suffix != ".npy":
        raise bad_value("labels", labels, "only with an images .npy in the course's array format")
    return dataset.resized(size) if size else dataset


def load_npz(path, name: str | None = None) -> Dataset:
    """The format of the embedded sets: ``images``, ``labels``, ``class_names``, ``captions``, ``paths``."""
    try:
        with np.load(path, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"data file {path} could not be read as an .npz: {e}") from None
    if "images" not in arrays:
        raise UsageError(f"data file {path} has no 'images' array (it has {sorted(arrays)})")
    images = _check_images(arrays["images"], str(path))
    labels = arrays.get("labels")
    names = tuple(str(n) for n in arrays.get("class_names", []))
    if labels is not None:
        labels = labels.astype(np.int64)
        if len(labels) != len(images) or (len(labels) and not 0 <= labels.min() <= labels.max() < len(names)):
            raise UsageError(f"data file {path}: 'labels' must hold one index into 'class_names' per image")
    return Dataset(images, labels, names, arrays.get("captions"), arrays.get("paths"), name or Path(str(path)).stem)


def load_course_arrays(images_path: Path, labels_path: str | None, class_names: list[str] | None) -> Dataset:
    """The course's format: images ``N×H×W×3`` uint8 and labels ``N×K`` one-hot floats."""
    images = _check_images(_load_npy(images_path, "data"), str(images_path))
    if labels_path is None:
        if class_names:
            raise bad_value("class_names", class_names, "class names only together with --labels")
        return Dataset(images, None, (), name=images_path.stem)
    one_hot = _load_npy(Path(labels_path), "labels")
    if one_hot.ndim != 2 or one_hot.shape[0] != images.shape[0]:
        raise bad_value("labels", f"array of shape {one_hot.shape}", f"an N×K array with N = {images.shape[0]} (one row per image)")
    rows_ok = (np.isin(one_hot, (0, 1)).all(axis=1)) & (one_hot.sum(axis=1) == 1)
    if not rows_ok.all():
        bad = int(np.flatnonzero(~rows_ok)[0])
        raise UsageError(f"labels file {labels_path}: row {bad} is {one_hot[bad].tolist()}, not one-hot")
    K = one_hot.shape[1]
    names = tuple(class_names) if class_names else tuple(f"class{k}" for k in range(K))
    if len(names) != K:
        raise bad_value("class_names", list(names), f"{K} names, one per label column")
    return Dataset(images, one_hot.argmax(axis=1).astype(np.int64), names, name=images_path.stem)


def load_folder(root: Path, size: int, *, skip_bad_files: bool = False) -> Dataset:
    """One sub-folder per class, PNG/JPEG inside, each centre-cropped to a square and resized."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UsageError(f"data folder {root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    images, labels, paths, skipped = [], [], [], 0
    for k, class_dir in enumerate(class_dirs):
        for file in sorted(class_dir.rglob("*")):
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES or file.name.startswith("._"):
                continue
            try:
                with Image.open(file) as im:
                    images.append(np.asarray(resize_square(to_rgb(im), size)))
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
                if not skip_bad_files:
                    raise UsageError(f"image file {file} could not be read ({e}); fix or remove it, "
                                     f"or pass --skip-bad-files to skip and count such files") from None
                skipped += 1
                continue
            labels.append(k)
            paths.append(str(file.relative_to(root)))
    if not images:
        raise UsageError(f"data folder {root} holds no readable PNG or JPEG images")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), tuple(d.name for d in class_dirs),
                   paths=np.array(paths), name=root.name, skipped=skipped)


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on black (as the embedded sprites are)."""
    im = im.convert("RGBA")
    background = Image.new("RGBA", im.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, im).convert("RGB")


def resize_square(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    if w != h:
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if im.size[0] == size:
        return im
    whole = im.size[0] % size == 0 and im.size[0] > size  # pixel art shrinks cleanly with a box filter
    return im.resize((size, size), Image.Resampling.BOX if whole else Image.Resampling.LANCZOS)


def _load_npy(path: Path, param: str) -> np.ndarray:
    if not path.is_file():
        raise bad_value(param, str(path), "an existing .npy file")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"{param} file {path} could not be read as a .npy array: {e}") from None


def _check_images(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
        raise UsageError(f"images in {where} have shape {images.shape} and dtype {images.dtype}; "
                         f"expected uint8 N×H×W×3 with H = W")
    if images.shape[0] == 0:
        raise UsageError(f"images in {where} are empty")
    return images


# ---------------------------------------------------------------------- batches
def as_tensor(images: np.ndarray):
    """uint8 ``[N, H, W, 3]`` to a contiguous uint8 tensor ``[N, 3, H, W]`` (still 1 byte per value)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def make_batch(images, idx, *, flip: bool = False, generator=None):
    """Float ``[B, 3, H, W]`` in ``[-1, 1]`` for the indices ``idx``; half of them mirrored if ``flip``."""
    import torch

    x = images[idx].float().div_(127.5).sub_(1.0)
    if flip:
        mirror = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)  # [B]
        x = torch.where(mirror[:, None, None, None], x.flip(-1), x)
    return x
