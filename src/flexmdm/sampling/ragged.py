"""Operations on a batch of sequences of different lengths (left-aligned, PAD after each end)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["insert_masks", "thin_counts", "compact"]


def thin_counts(counts: Tensor, allowance: Tensor, generator: torch.Generator | None) -> Tensor:
    """Keep at most ``allowance[b]`` of the insertions of row b, dropping a uniform random subset.

    Args:
        counts: ``[B, G]`` non-negative insertion counts per gap.
        allowance: ``[B]`` how many insertions each row may keep (>= 0).

    Returns:
        ``[B, G]`` thinned counts: rows within their allowance are unchanged; in the others every
        drawn insertion is equally likely to be dropped.
    """
    total = counts.sum(dim=1)
    over = total > allowance
    if not bool(over.any()):
        return counts
    rows = counts[over]
    # One entry per drawn insertion (row-wise, gap ids in order), ranked by a random key.
    width = int(rows.sum(dim=1).max())
    ends = torch.cumsum(rows, dim=1)
    slot = torch.arange(width, device=rows.device)
    gap_of = torch.searchsorted(ends, slot.expand(rows.shape[0], width).contiguous(), right=True)
    real = slot[None, :] < ends[:, -1:]
    keys = torch.where(real, torch.rand(real.shape, generator=generator, device=real.device), 2.0)
    ranks = torch.argsort(torch.argsort(keys, dim=1), dim=1)
    keep = real & (ranks < allowance[over][:, None])
    kept = torch.zeros_like(rows).scatter_add_(1, gap_of.clamp(max=rows.shape[1] - 1), keep.long())
    out = counts.clone()
    out[over] = kept
    return out


def insert_masks(
    tokens: Tensor,
    lengths: Tensor,
    frozen: Tensor,
    counts: Tensor,
    mask_id: int,
    pad_id: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Insert ``counts[b, i]`` MASKs before slot i of every sequence (slot ``lengths[b]`` = tail).

    Args:
        tokens: ``[B, n]`` state.
        lengths: ``[B]``.
        frozen: ``[B, n]`` bool.
        counts: ``[B, n + 1]`` non-negative, zero beyond ``lengths``.

    Returns:
        ``(tokens [B, n'], lengths [B], frozen [B, n'])`` with n' the new longest length.
    """
    batch, n = tokens.shape
    new_lengths = lengths + counts.sum(dim=1)
    width = int(new_lengths.max()) if batch else 0
    # Old token j moves right by the insertions in gaps 0..j.
    shift = torch.cumsum(counts[:, :n], dim=1)
    slots = torch.arange(n, device=tokens.device)[None, :]
    live = slots < lengths[:, None]
    target = torch.where(live, slots + shift, width)
    positions = torch.arange(width + 1, device=tokens.device)[None, :]
    out = torch.where(positions < new_lengths[:, None], mask_id, pad_id).expand(batch, width + 1)
    out = out.clone().scatter_(1, target, tokens)
    out_frozen = torch.zeros(batch, width + 1, dtype=torch.bool, device=frozen.device)
    out_frozen = out_frozen.scatter_(1, target, frozen & live)
    return out[:, :width], new_lengths, out_frozen[:, :width]


def compact(tokens: Tensor, keep: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pack the kept tokens of every row.

    Args:
        tokens: ``[B, n]``.
        keep: ``[B, n]`` bool.

    Returns:
        ``(tokens [B, n'], lengths [B])`` with n' the largest kept count.
    """
    lengths = keep.sum(dim=1)
    width = int(lengths.max()) if tokens.shape[0] else 0
    slot = torch.where(keep, torch.cumsum(keep.long(), dim=1) - 1, width)
    out = tokens.new_full((tokens.shape[0], width + 1), pad_id)
    return out.scatter_(1, slot, tokens)[:, :width], lengths
