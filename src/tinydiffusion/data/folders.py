"""Image folders as data sets: one sub-folder per class, PNG/JPEG inside, each read safely
(``store/imagefile.py``), centre-cropped to a square and resized."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..store.imagefile import BadImageFile, read_image
from .sources import IMAGE_SUFFIXES, Dataset, check_names, fits


def load_folder(root: Path, size: int, *, skip_bad_files: bool = False) -> Dataset:
    """One sub-folder per class, PNG/JPEG inside, each centre-cropped to a square and resized."""
    files, names = folder_files(root)
    fits("data", str(root), len(files) * size * size * 3, f"{len(files)} images at {size}×{size}")
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
    names = check_names(np.array([d.name for d in class_dirs]), f"data folder {root} (its sub-folder names)")
    files = [(file, k) for k, class_dir in enumerate(class_dirs) for file in sorted(class_dir.rglob("*"))
             if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES and not file.name.startswith("._")]
    return files, names
