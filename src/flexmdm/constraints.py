"""Frozen tokens and where insertions are allowed.

Frozen tokens (a prompt, maze subgoals, an infilling prefix and suffix) are present from t = 0,
never masked and never removed. They cut a sequence into *regions*: region r is the stretch after
the r-th frozen token (region 0 precedes the first one). A task says in which regions insertions
may happen with ``allowed_regions [B, R]`` (R >= number of frozen tokens + 1; extra columns are
ignored). Gap i of a state lies in region ``#frozen tokens among slots < i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Prompt", "gap_regions", "allowed_gaps", "pad_sequences"]


def gap_regions(frozen: Tensor) -> Tensor:
    """Region of every gap slot.

    Args:
        frozen: ``[B, n]`` bool, frozen flags of a state (False at padding).

    Returns:
        ``[B, n + 1]`` long: number of frozen tokens before gap slot i.
    """
    counts = torch.cumsum(frozen.long(), dim=1)
    return torch.cat([counts.new_zeros(frozen.shape[0], 1), counts], dim=1)


def allowed_gaps(frozen: Tensor, lengths: Tensor, allowed_regions: Tensor | None) -> Tensor:
    """Which gap slots exist and may receive insertions.

    Args:
        frozen: ``[B, n]`` bool frozen flags.
        lengths: ``[B]`` state lengths; slots ``0..lengths[b]`` exist.
        allowed_regions: ``[B, R]`` bool, or None for "everywhere".

    Returns:
        ``[B, n + 1]`` bool.
    """
    batch, n = frozen.shape
    exists = torch.arange(n + 1, device=frozen.device) <= lengths[:, None]
    if allowed_regions is None:
        return exists
    regions = gap_regions(frozen).clamp(max=allowed_regions.shape[1] - 1)
    return exists & torch.gather(allowed_regions.bool(), 1, regions)


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-align integer sequences in a ``[B, max_len]`` tensor filled with ``pad_id``.

    Returns:
        ``(tokens [B, L], lengths [B])``.
    """
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(sequences) else 0
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return tokens, lengths


@dataclass
class Prompt:
    """Frozen tokens a FlexMDM sampler starts from, and where it may insert.

    Attributes:
        tokens: ``[B, P]`` long, the frozen tokens left-aligned, PAD after ``lengths``.
        lengths: ``[B]`` number of frozen tokens of each sequence.
        allowed_regions: ``[B, P + 1]`` bool; region r follows the r-th frozen token.
    """

    tokens: Tensor
    lengths: Tensor
    allowed_regions: Tensor

    def __post_init__(self) -> None:
        batch, width = self.tokens.shape
        if self.lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape [{batch}], got {list(self.lengths.shape)}")
        if self.allowed_regions.shape != (batch, width + 1):
            raise ValueError(
                f"allowed_regions must have shape [{batch}, {width + 1}], "
                f"got {list(self.allowed_regions.shape)}"
            )
        if not bool(self.allowed_regions.any(dim=1).all()):
            raise ValueError("every sequence needs at least one region where insertion is allowed")

    def to(self, device: torch.device | str) -> Prompt:
        """The same prompt with its tensors on ``device``."""
        return Prompt(self.tokens.to(device), self.lengths.to(device), self.allowed_regions.to(device))

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    @property
    def frozen(self) -> Tensor:
        """``[B, P]`` bool: True on the prompt tokens, False on padding."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device) < self.lengths[:, None]

    @classmethod
    def unconditional(cls, batch_size: int, pad_id: int) -> Prompt:
        """Start from the empty string; insert anywhere."""
        return cls(
            tokens=torch.full((batch_size, 0), pad_id, dtype=torch.long),
            lengths=torch.zeros(batch_size, dtype=torch.long),
            allowed_regions=torch.ones(batch_size, 1, dtype=torch.bool),
        )

    @classmethod
    def prefix(cls, prefixes: Sequence[Sequence[int]], pad_id: int) -> Prompt:
        """Continue each prefix: insertions only after it."""
        tokens, lengths = pad_sequences(prefixes, pad_id)
        regions = torch.arange(tokens.shape[1] + 1)
        return cls(tokens, lengths, regions[None, :] == lengths[:, None])

    @classmethod
    def infill(
        cls,
        prefixes: Sequence[Sequence[int]],
        suffixes: Sequence[Sequence[int]],
        pad_id: int,
    ) -> Prompt:
        """Fill between each prefix and suffix: insertions only between them."""
        if len(prefixes) != len(suffixes):
            raise ValueError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
        joined = [list(p) + list(s) for p, s in zip(prefixes, suffixes)]
        tokens, lengths = pad_sequences(joined, pad_id)
        prefix_lengths = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
        regions = torch.arange(tokens.shape[1] + 1)
        return cls(tokens, lengths, regions[None, :] == prefix_lengths[:, None])

    @classmethod
    def subgoals(cls, subgoals: Sequence[Sequence[int]], pad_id: int) -> Prompt:
        """Connect subgoals g1..gK in order: insertions only between consecutive subgoals."""
        if any(len(g) < 2 for g in subgoals):
            raise ValueError("every subgoal sequence needs at least a start and a goal")
        tokens, lengths = pad_sequences(subgoals, pad_id)
        regions = torch.arange(tokens.shape[1] + 1)
        allowed = (regions[None, :] >= 1) & (regions[None, :] < lengths[:, None])
        return cls(tokens, lengths, allowed)
