"""How the network is spread over the ranks (``train.strategy``): DDP replicas or FSDP2 shards.

- ``ddp``: every rank holds the whole network; :class:`~torch.nn.parallel.DistributedDataParallel`
  averages the gradients.
- ``fsdp``: :func:`torch.distributed.fsdp.fully_shard` makes every transformer block
  (:func:`shard_units`) a unit and the rest one root unit; parameters, gradients, AdamW moments and
  the EMA are sharded over the ranks, each unit gathered only while it runs. Checkpoints are
  written by every rank with :mod:`torch.distributed.checkpoint` (resharded on load).

In a world of one neither wraps anything. With ``train.activation_checkpointing`` each unit keeps
only its input for the backward pass and recomputes its activations there (same results; the
parameter names do not change). Every function here is a collective under ``fsdp``: every rank
calls it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.distributed._composable import checkpoint
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

__all__ = ["Strategy", "full_state_dict", "gradient_sync", "local_value", "meta_copy", "shard_units", "wrap"]

Strategy = Literal["ddp", "fsdp"]


def shard_units(network: nn.Module) -> list[nn.Module]:
    """The FSDP units besides the root: the children of every module named ``blocks``."""
    return [block for name, module in network.named_modules() if name.split(".")[-1] == "blocks"
            for block in module.children()]


def wrap(model: nn.Module, strategy: Strategy, device: torch.device, world_size: int,
         activation_checkpointing: bool = False) -> nn.Module:
    """The module the training step calls: ``model`` itself (a world of one, or sharded in place by
    FSDP), or its DDP wrapper."""
    if activation_checkpointing:
        for unit in shard_units(model):
            checkpoint(unit)
    if world_size == 1:
        return model
    if strategy == "fsdp":
        for unit in shard_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@contextlib.contextmanager
def gradient_sync(network: nn.Module, enabled: bool) -> Iterator[None]:
    """Reduce gradients over ranks in the backward passes inside, or only accumulate them locally."""
    if enabled:
        yield
    elif isinstance(network, DistributedDataParallel):
        with network.no_sync():
            yield
    elif isinstance(network, FSDPModule):
        network.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            network.set_requires_gradient_sync(True)
    else:
        yield


def local_value(tensor: Tensor) -> Tensor:
    """A replicated result (e.g. the gradient norm over sharded gradients) as a plain tensor."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The whole state dict: ``model.state_dict()`` (its live tensors) when unsharded; when sharded,
    gathered unit by unit into CPU tensors on rank 0 (the other ranks get an empty dict)."""
    if not isinstance(model, FSDPModule):
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree with every parameter and buffer on the meta device (no
    storage): load a state into it with ``load_state_dict(state, assign=True)``."""
    memo: dict[int, Any] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(model, memo)
