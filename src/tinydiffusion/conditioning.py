"""Context rows for a whole data set: one-hot labels, caption embeddings (cached), or vectors from a file."""

from __future__ import annotations

import numpy as np
import torch

from .context import ContextSpec
from .data import Dataset
from .errors import UsageError, bad_value


def dataset_contexts(dataset: Dataset, kind: str, *, data: str, encoder: str = "minilm", context_file: str | None = None,
                     progress: bool = True) -> tuple[ContextSpec, torch.Tensor | None, list]:
    """The context spec, one context row per image ``[N, D]`` (or None), and example rows for grids:
    class names, or ``[index, caption]`` pairs of one image per class for text and vector contexts."""
    labels = dataset.labels
    if kind == "none":
        return ContextSpec(), None, []
    if kind == "class":
        if labels is None:
            raise UsageError(f"data {data!r} has no class labels; train with --context none or give --labels")
        spec = ContextSpec.classes(dataset.class_names)
        return spec, spec.one_hot(torch.from_numpy(labels)), list(spec.names)
    first = [int(np.flatnonzero(labels == k)[0]) for k in np.unique(labels)] if labels is not None else []
    first = (first or list(range(min(5, len(dataset)))))[:8]
    if kind == "text":
        from .text import default_cache_dir, embed_captions

        if dataset.captions is None:
            raise UsageError(f"data {data!r} has no captions; --context text needs images with captions "
                             f"(the embedded sprites and emoji have them)")
        spec = ContextSpec.text(encoder)
        rows = embed_captions([str(c) for c in dataset.captions], spec.encoder, default_cache_dir(data),
                              progress=progress)
        return spec, rows, [[i, str(dataset.captions[i])] for i in first]
    rows = torch.from_numpy(load_vectors(context_file, len(dataset)))
    return ContextSpec("vector", rows.shape[1]), rows, [[i, f"row {i}"] for i in first]


def load_vectors(path: str, n: int) -> np.ndarray:
    try:
        rows = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UsageError(f"context_file {path} could not be read as an .npy array: {e}") from None
    if rows.ndim != 2 or rows.shape[0] != n or not np.issubdtype(rows.dtype, np.floating):
        raise bad_value("context_file", f"array of shape {rows.shape} ({rows.dtype})",
                        f"a float array [N, D] with N = {n}, one row per image")
    return rows.astype(np.float32)
