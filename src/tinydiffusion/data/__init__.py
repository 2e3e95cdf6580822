"""Data sets: uint8 ``[N, H, W, 3]`` images with their labels, class names, captions and paths.

Rooms, bottom first (each imports only those above it in this list):
    sources.py   the embedded sets, ``.npz``, the course's arrays, image folders; the array, label and name checks
    load.py      ``load_dataset``: which source ``--data`` names; packed sets read back memory-mapped
    pack.py      ``data pack``: any source into one ``.npy`` plus its sidecar (the writer only)
    batches.py   uint8 rows → float ``[-1, 1]`` batches with flips, vectorised
"""

from __future__ import annotations

from .load import load_dataset
from .sources import Dataset

__all__ = ["Dataset", "load_dataset"]
