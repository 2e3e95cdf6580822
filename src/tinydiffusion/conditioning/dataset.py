"""Context rows for a whole data set: one-hot labels, caption embeddings (cached), or vectors from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.load import sidecar
from ..data.sources import Dataset, npy_header, read_array
from ..errors import UsageError, bad_value
from ..vocab import CAPTION_SEPARATOR, MAX_WIDTH
from .spec import ContextSpec
from .text import default_cache_dir, embed_captions


def dataset_contexts(dataset: Dataset, kind: str, *, data: str, encoder: str = "minilm", context_file: str | None = None,
                     progress: bool = True, tokens: int = 0) -> tuple[ContextSpec, torch.Tensor | None, list]:
    """The context spec, one context row per image ``[N, D]`` (or None), and example rows for grids:
    class names, or ``[index, caption]`` pairs of one image per class for text and vector contexts. ``tokens``: a
    text context's token rows after its pooled row (0: pooled only)."""
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
        spec = ContextSpec.text(encoder, tokens)
        rows = embed_captions([str(c) for c in dataset.captions], spec.encoder, default_cache_dir(data),
                              progress=progress, tokens=spec.tokens)
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


def caption_alternatives(dataset: Dataset, spec: ContextSpec, data: str, progress: bool = True
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Every image's alternative captions embedded, for a text model to see a different one each time it draws the
    image: ``(rows [M, D], start [N], count [N])``, image ``i``'s rows being ``rows[start[i] : start[i] + count[i]]``.
    ``None`` unless the set has ``alt_captions`` and the context is text."""
    if spec.kind != "text" or dataset.alt_captions is None:
        return None
    sets = [[c for c in str(text).split(CAPTION_SEPARATOR) if c.strip()] or [str(dataset.captions[i])]
            for i, text in enumerate(dataset.alt_captions)]
    count = torch.tensor([len(s) for s in sets])
    start = torch.cumsum(count, 0) - count
    rows = embed_captions([c for s in sets for c in s], spec.encoder, default_cache_dir(data), progress=progress,
                          tokens=spec.tokens)
    return rows, start, count


def draw_contexts(rows: torch.Tensor, alternatives, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Context rows ``[B, D]`` of the images ``idx``: with ``alternatives`` one of each image's captions, drawn
    uniformly with ``generator`` (a function of the step, so a resume draws the same); else its one row."""
    if alternatives is None:
        return rows[idx]
    table, start, count = alternatives
    pick = (torch.rand(len(idx), generator=generator) * count[idx.cpu()]).long()  # [B] in 0 … count-1
    return table[(start[idx.cpu()] + pick).to(table.device)]
