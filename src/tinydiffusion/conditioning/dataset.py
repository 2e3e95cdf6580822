"""Context rows for a whole data set: one-hot labels, caption embeddings (cached), or vectors from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.load import sidecar
from ..data.sources import Dataset, npy_header, read_array
from ..errors import UsageError, bad_value
from ..vocab import MAX_WIDTH
from .spec import ContextSpec
from .text import default_cache_dir, embed_captions


def dataset_contexts(dataset: Dataset, kind: str, *, data: str, encoder: str = "minilm", context_file: str | None = None,
                     progress: bool = True) -> tuple[ContextSpec, torch.Tensor | None, list]:
    """The context spec, one context row per image ``[N, D]`` (or None), and example rows for grids:
    class names, or ``[index, caption]`` pairs of one image per class for text and vector contexts."""
    labels = dataset.labels
    if kind == "none":
        return ContextSpec(), None, []
    if kind == "class":
        if labels is None:
            hint = f" (its labels file {sidecar(data)}, written by data pack, is missing)" if \
                str(data).endswith(".npy") else ""
            raise UsageError(f"data {data!r} has no class labels{hint}; train with --context none or give --labels "
                             f"(the course's one-hot .npy)")
        try:
            spec = ContextSpec.classes(dataset.class_names)
        except UsageError as e:
            raise UsageError(f"data {data!r}: {e}") from None
        return spec, spec.one_hot(torch.from_numpy(labels)), list(spec.names)
    first = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)] if labels is not None else []
    first = (first or list(range(min(5, len(dataset)))))[:8]
    if kind == "text":
        if dataset.captions is None:
            raise UsageError(f"data {data!r} has no captions; --context text needs images with captions "
                             f"(the embedded sprites and emoji have them)")
        spec = ContextSpec.text(encoder)
        rows = embed_captions([str(c) for c in dataset.captions], spec.encoder, default_cache_dir(data),
                              progress=progress)
        return spec, rows, [[i, str(dataset.captions[i])] for i in first]
    rows = torch.from_numpy(load_vectors(context_file, len(dataset)))
    return ContextSpec("vector", rows.shape[1]), rows, [[i, f"row {i}"] for i in first]


def load_vectors(path: str, n: int | None, param: str = "context_file") -> np.ndarray:
    """float32 ``[N, D]`` context vectors from an ``.npy`` (``N = n`` when given): the header checked
    first (no pickled objects, numbers, 2-D, fits in memory), then every value finite; a refusal names
    ``param``, the file and the first bad row."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise bad_value(param, path, "an .npy file of context vectors [N, D]")
    path = Path(path)
    if not path.is_file():
        raise bad_value(param, str(path), "an existing .npy file of context vectors [N, D]")
    shape, dtype = npy_header(path, param)
    rows_wanted = f"N = {n}, one row per image" if n is not None else "N >= 1"
    if len(shape) != 2 or dtype.kind not in "iuf" or not 1 <= shape[1] <= MAX_WIDTH or \
            (shape[0] != n if n is not None else shape[0] < 1):
        raise bad_value(param, f"{path}: array of shape {shape} ({dtype})",
                        f"a float array [N, D] with {rows_wanted} and 1 <= D <= {MAX_WIDTH}")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        rows = read_array(path, param).astype(np.float32)
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise UsageError(f"{param} {path}: row {i} holds a non-finite value ({rows[i][~np.isfinite(rows[i])][0]}); "
                         f"expected finite numbers in every row ({int(bad.sum())} row(s) are not)")
    return rows
