"""Data parallelism under ``torchrun``: process-group setup and the few collectives we use.

Launched with ``torchrun --nproc_per_node N -m flexmdm.cli train CONFIG``, every process reads
RANK, WORLD_SIZE and LOCAL_RANK from the environment and joins a process group (gloo on CPU,
nccl on CUDA). Launched plainly, it is a world of one and no process group is created.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistributedContext", "init_distributed"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 writes files).
        world_size: number of processes.
        device: the device this rank trains on.
    """

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in a world of one)."""
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place and return it."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_over_ranks(self, value: int) -> int:
        """The largest ``value`` over ranks (every rank gets the same answer; it travels as a tensor
        on this rank's device, as NCCL requires)."""
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def shutdown(self) -> None:
        """Leave the process group (if one was created).

        Garbage from training (a sharded model's reference cycles, which can hold a collective's
        pending work) is collected first, while the group is alive: freed later, at interpreter exit,
        it can abort the process after a successful run (``terminate called without an active
        exception``, seen once with gloo under load)."""
        if self.enabled and dist.is_initialized():
            gc.collect()
            dist.destroy_process_group()


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` job described by the environment, or run alone.

    Args:
        device: "auto", "cpu" or "cuda" (see ``train.device``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, device=chosen)
