"""Devices, precision and torchrun helpers. In one process (no ``WORLD_SIZE``) the torchrun ones are no-ops."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch


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
    from .errors import bad_value

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
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, dev)


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
