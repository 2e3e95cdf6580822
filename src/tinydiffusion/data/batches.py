"""Training batches: uint8 images gathered by index, scaled to ``[-1, 1]`` and flipped, vectorised."""

from __future__ import annotations

import numpy as np


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
