"""Devices, precision and torchrun helpers. In one process (no ``WORLD_SIZE``) the torchrun ones are no-ops."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch

from ..errors import UsageError, bad_value

R = TypeVar("R")
# How long a collective waits for a rank that stopped answering before it raises (gloo and NCCL
# alike), so the other ranks exit with an error instead of hanging; TINYDIFFUSION_DIST_TIMEOUT overrides.
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise bad_value("device", name, "'cpu' or 'auto': this machine has no CUDA device")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise bad_value("device", name, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively here: any recent GPU, or a CPU with AVX-512 BF16 / AMX. Elsewhere
    PyTorch emulates it, about a hundred times slower than fp32 (measured by ``tinydiffusion bench``)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast(device: torch.device, precision: str):
    """bf16 autocast of the network's matrix work where asked (CPU and CUDA); fp32 is a no-op context."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def setup(device: str = "auto") -> DistInfo:
    """Read torchrun's environment; start the process group when there are several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if dev.type == "cuda":  # fixed shapes: let cuDNN pick its fastest kernels; TF32 for fp32 matrix work
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not torch.distributed.is_initialized():
        # NCCL only notices a dead peer with async error handling on (torch's default since 2.2; set it
        # anyway, it must be in the environment before the group exists); gloo raises on a closed socket
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        timeout = datetime.timedelta(seconds=timeout_seconds())
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = _attempt_store(world, timeout)
        if store is None:
            torch.distributed.init_process_group(backend, timeout=timeout)
        else:
            torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return DistInfo(rank, world, local_rank, dev)


def _attempt_store(world: int, timeout: datetime.timedelta):
    """Under torchrun's agent store, a store whose keys belong to this restart attempt only.

    After ``--max-restarts`` relaunches the workers, torch reuses the agent's store, which still
    holds the first attempt's gloo addresses; a restarted rank that reads one connects to a dead
    peer ("Connection refused", about 4 times in 5 on one machine). A per-attempt prefix avoids it.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                                       is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return torch.distributed.PrefixStore(f"tinydiffusion/attempt_{attempt}", store)


def timeout_seconds() -> float:
    text = os.environ.get("TINYDIFFUSION_DIST_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 86400:
        raise bad_value("TINYDIFFUSION_DIST_TIMEOUT", text, "seconds in [1, 86400]")
    return value


def wrap(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several processes."""
    if info.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def all_mean(value: float, info: DistInfo) -> float:
    if info.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    torch.distributed.all_reduce(t)
    return float(t) / info.world


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        torch.distributed.barrier()


def teardown(info: DistInfo) -> None:
    if info.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def agree(decide: Callable[[], R], info: DistInfo) -> R:
    """Run ``decide()`` on rank 0 only and hand every rank the same answer, or the same ``UsageError``.

    Decisions about files (is the folder free? is there a state to resume?) are made once, by the
    rank that writes, so no rank can go on alone while another refuses.
    """
    if info.world == 1:
        return decide()
    answer: list = [None]
    if info.is_main:
        try:
            answer[0] = (True, decide())
        except UsageError as e:
            answer[0] = (False, str(e))
    torch.distributed.broadcast_object_list(answer, src=0)
    ok, value = answer[0]
    if not ok:
        raise UsageError(value)
    return value


def all_max(values: Sequence[float], info: DistInfo) -> list[float]:
    """The element-wise maximum over ranks (one small all-reduce): how ranks share a clock and stop flags."""
    if info.world == 1:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=info.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()
