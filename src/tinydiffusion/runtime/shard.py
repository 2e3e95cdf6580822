"""Sharing a sampling job among torchrun's processes: batches dealt round-robin, results gathered to rank 0.

The unit of work is a batch of the one-process order (``SamplePlan``: batch ``b`` holds images
``b·batch_size …``), so every image is computed in exactly the batch it would be in one process,
and what rank 0 gathers is bit-identical to the one-process result (a network's output may change
in its last bits with the batch around it; the seeds alone would not be enough). Rank ``r`` takes
batches ``r, r + world, …``, so rank 0 always has batch 0. Only rank 0 writes and prints.

In one process (no ``WORLD_SIZE``) nothing here creates a process group or communicates.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from ..store.files import AtomicFolder
from .dist import DistInfo, barrier, setup, teardown


@contextlib.contextmanager
def processes(device: str) -> Iterator[DistInfo]:
    """torchrun's processes (``dist.setup``); a process group started here is torn down afterwards."""
    started_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    info = setup(device)
    try:
        yield info
    finally:
        if not started_before:
            teardown(info)


def my_batches(total: int, info: DistInfo) -> range:
    """The batch indices this rank computes: ``rank, rank + world, …``."""
    return range(info.rank, total, info.world)


def gather(parts: list[tuple[int, Any]], info: DistInfo) -> list[Any] | None:
    """Rank 0: the values of every rank's ``(batch, value)`` pairs, in batch order; other ranks: None."""
    if info.world > 1:
        everyone = [None] * info.world if info.is_main else None
        torch.distributed.gather_object(parts, everyone, dst=0)  # pickled CPU tensors/arrays over gloo
        if not info.is_main:
            return None
        parts = [p for rank_parts in everyone for p in rank_parts]
    return [value for _, value in sorted(parts, key=lambda p: p[0])]


def sample(pipe, plan, info: DistInfo, *, callback: Callable | None = None,
           convert: Callable[[torch.Tensor], Any] | None = None) -> torch.Tensor | None:
    """``pipe.run(plan)`` shared among the ranks: rank 0 gets every image (after ``convert``, e.g.
    ``to_uint8``, applied per batch), concatenated in the one-process order; other ranks get None."""
    convert = convert or (lambda x: x)
    parts = [(b, convert(x)) for b, x in pipe.run(plan, my_batches(plan.batches, info), callback)]
    values = gather(parts, info)
    if values is None:
        return None
    return torch.cat(values) if isinstance(values[0], torch.Tensor) else _concatenate(values)


def broadcast(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank (a report, so that every process returns the same result)."""
    if info.world == 1:
        return value
    box = [value if info.is_main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def shared_folder(path: str | Path, info: DistInfo) -> Iterator[Path]:
    """An ``AtomicFolder`` that every rank writes into: rank 0 makes the hidden temp folder and sends its
    name; after the block every rank waits for the others, then rank 0 swaps the whole folder in."""
    if info.world == 1:
        with AtomicFolder(path) as tmp:
            yield tmp
        return
    folder = AtomicFolder(path) if info.is_main else None
    tmp = Path(broadcast(str(folder.__enter__()) if folder else None, info))
    try:
        yield tmp
    except BaseException as e:
        if folder:
            folder.__exit__(type(e), e, e.__traceback__)
        raise
    barrier(info)  # every rank's files are in the temp folder
    if folder:
        folder.__exit__(None, None, None)


def _concatenate(values: list) -> Any:
    import numpy as np

    return np.concatenate(values)
