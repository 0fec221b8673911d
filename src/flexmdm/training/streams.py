"""Reproducible, shardable random streams of training data.

Every micro-batch draws its data, times and noise from its own generator,
``keyed_generator(seed, purpose, step, shard)``, where ``shard = rank * grad_accum + micro``
numbers the micro-batches of one global batch. A resumed run, a run with gradient accumulation
and a data-parallel run therefore see exactly the same global batches.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["keyed_generator"]


def keyed_generator(*key: int | str) -> torch.Generator:
    """A CPU generator seeded by a stable 63-bit hash of ``key`` (same key, same stream)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
