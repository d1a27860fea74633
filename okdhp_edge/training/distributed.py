"""torch.distributed helpers for runs under ``torchrun`` (gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Rank layout of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False  # in a process group (under torchrun, even with one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Under torchrun the run is distributed (process group, DistributedDataParallel) also
    with one process, so ``torchrun --nproc_per_node=1`` runs the same code as a larger
    job; a plain ``python -m`` start, without RANK in the environment, is not.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank, world, local, True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def _comm_device() -> torch.device:
    """Where a collective's tensor must live: nccl reduces CUDA tensors only (a CPU tensor
    fails with 'No backend type associated with device type cpu'), gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """Average a Python float over ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is True on any rank (e.g. a stop request)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
