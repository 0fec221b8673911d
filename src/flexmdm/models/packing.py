"""Packed batches: sequences of different lengths run without padding.

A padded batch ``[B, n, …]`` whose rows hold ``lengths [B]`` live positions is *packed* into its
``T = Σ lengths`` live positions, in batch order, as ``[1, T, …]``: the token-wise layers
(embeddings, linears, norms, heads) do no work on padding. Per-sequence vectors (time and length
conditioning, adaLN modulations) are computed once per sequence and gathered to its tokens
(:meth:`Packing.spread`); rotary positions restart at 0 in every sequence
(:attr:`Packing.positions`).

**Attention** runs on *rows* of a fixed token budget (by default the longest sequence): whole
sequences are assigned to rows by first-fit decreasing, q, k and v are scattered into
``[R, H, budget, D]``, and SDPA runs with a block-diagonal mask, so that a sequence attends to
itself only and the attention work is ``R · budget²`` instead of ``B · n²``. Row tails hold no
token; they cost attention work only (not the token-wise layers). It runs wherever SDPA runs,
with autograd. FlexAttention with a document mask over the whole ``[1, T]`` sequence would skip
the off-diagonal blocks, but on CPU (torch 2.13) it has no backward, must be compiled, and its
block mask rebuilt for every new length; ``flexmdm bench speed`` times both forward.

The outputs are scattered back to the padded layout (:meth:`Packing.unpack`), so losses and
samplers see the tensors of the padded path: they agree up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Packing", "first_fit_decreasing"]


def first_fit_decreasing(lengths: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Assign items to bins of capacity ``budget``, longest first (ties: lower index first).

    Returns:
        ``(bin of each item, offset of each item in its bin)``.
    """
    fill: list[int] = []
    bins, offsets = [0] * len(lengths), [0] * len(lengths)
    for item in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, used in enumerate(fill) if used + lengths[item] <= budget), len(fill))
        if row == len(fill):
            fill.append(0)
        bins[item], offsets[item] = row, fill[row]
        fill[row] += lengths[item]
    return bins, offsets


class Packing:
    """The packed layout of a padded batch (see the module docstring).

    Args:
        lengths: ``[B]`` live positions of every row (``0 <= lengths <= width``).
        width: n, the padded width.
        budget: positions per attention row (default and minimum: the longest sequence).
        causal: attention also causal within each sequence.

    Attributes:
        segment: ``[T]`` the sequence of every packed position.
        positions: ``[T]`` its index in its sequence (rotary positions).
        rows: R, the number of attention rows.
        budget: positions per attention row.
        row_index: ``[T]`` where every packed position sits in the ``[R · budget]`` rows.
        mask: ``[R, 1, budget, budget]`` bool, True = may attend: same sequence (and causal). A
            row's tail attends to itself, so that no query is empty.
    """

    @torch.compiler.disable
    def __init__(self, lengths: Tensor, width: int, budget: int | None = None, causal: bool = False) -> None:
        device = lengths.device
        self.batch, self.width = lengths.shape[0], width
        self.valid = torch.arange(width, device=device)[None, :] < lengths[:, None]  # [B, n]
        self.where = self.valid.flatten().nonzero().squeeze(1)  # [T] packed -> padded flat index
        self.segment = torch.div(self.where, max(width, 1), rounding_mode="floor")
        self.positions = self.where - self.segment * width
        sizes = lengths.tolist()
        longest = max(sizes, default=0)
        self.budget = max(budget or 0, longest, 1)
        bins, offsets = first_fit_decreasing(sizes, self.budget)
        self.rows = max(bins, default=0) + 1
        start = torch.tensor([b * self.budget + o for b, o in zip(bins, offsets)], dtype=torch.long, device=device)
        self.row_index = start[self.segment] + self.positions
        row_segment = torch.full((self.rows * self.budget,), -1, dtype=torch.long, device=device)
        row_segment = row_segment.index_copy(0, self.row_index, self.segment).view(self.rows, self.budget)
        mask = row_segment[:, :, None] == row_segment[:, None, :]
        if causal:
            mask = mask & torch.ones(self.budget, self.budget, dtype=torch.bool, device=device).tril()
        self.mask = mask[:, None]

    @property
    def tokens(self) -> int:
        """T, the live positions."""
        return self.where.shape[0]

    def pack(self, x: Tensor) -> Tensor:
        """``[B, n, …] -> [1, T, …]``, the live positions in batch order."""
        return x.flatten(0, 1).index_select(0, self.where)[None]

    def unpack(self, y: Tensor, fill: float | int | bool = 0) -> Tensor:
        """``[1, T, …] -> [B, n, …]``, ``fill`` at the padding."""
        out = y.new_full((self.batch * self.width, *y.shape[2:]), fill)
        return out.index_copy(0, self.where, y[0]).view(self.batch, self.width, *y.shape[2:])

    def spread(self, per_sequence: Tensor) -> Tensor:
        """``[B, k] -> [1, T, k]``: every position gets its sequence's vector."""
        return per_sequence.index_select(0, self.segment)[None]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
        """Block-diagonal attention: ``q, k, v [1, H, T, D] -> [1, H, T, D]``."""
        heads, dim = q.shape[1], q.shape[3]

        def to_rows(x: Tensor) -> Tensor:
            rows = x.new_zeros(self.rows * self.budget, heads, dim).index_copy(0, self.row_index, x[0].transpose(0, 1))
            return rows.view(self.rows, self.budget, heads, dim).transpose(1, 2)

        a = F.scaled_dot_product_attention(to_rows(q), to_rows(k), to_rows(v), attn_mask=self.mask, dropout_p=dropout_p)
        a = a.transpose(1, 2).reshape(self.rows * self.budget, heads, dim).index_select(0, self.row_index)
        return a.transpose(0, 1)[None]
