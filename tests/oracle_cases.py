"""A small enumerable data distribution shared by the exactness tests."""

import itertools

import torch

from flexmdm.vocab import Vocab

VOCAB = Vocab(size=4, mask_id=2, pad_id=3)  # real tokens 0 and 1


def toy_distribution(max_length: int = 4, seed: int = 0) -> dict[tuple[int, ...], float]:
    """Every binary string up to ``max_length`` (the empty one included) with a random weight."""
    g = torch.Generator().manual_seed(seed)
    support = [s for n in range(max_length + 1) for s in itertools.product((0, 1), repeat=n)]
    weights = torch.rand(len(support), generator=g, dtype=torch.float64) + 0.2
    weights /= weights.sum()
    return dict(zip(support, weights.tolist()))


P1 = toy_distribution()
