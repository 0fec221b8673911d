"""Building blocks of the transformers: rotary positions, time features, adaLN-Zero blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexmdm.models.packing import Packing

__all__ = ["RotaryEmbedding", "TimeEmbedding", "Block", "Padded", "attention_mask"]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding; the cos/sin tables grow on demand."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.register_buffer("inv_freq", theta ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)

    def tables(self, length: int) -> tuple[Tensor, Tensor]:
        """``(cos, sin)``, each ``[length, head_dim / 2]``."""
        return self.at(torch.arange(length, device=self.inv_freq.device))

    def at(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """``(cos, sin)`` at the given ``positions [n]``, each ``[n, head_dim / 2]``."""
        angles = torch.outer(positions.float(), self.inv_freq)
        return angles.cos(), angles.sin()

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate ``x [B, H, n, D]`` pairwise (first half with second half)."""
        first, second = x.chunk(2, dim=-1)
        return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal features of ``t · scale`` followed by a two-layer MLP: ``[B] -> [B, d]``."""

    def __init__(self, d_model: int, scale: float, features: int = 256) -> None:
        super().__init__()
        self.scale = scale
        half = features // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half).float() / half), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(features, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: Tensor) -> Tensor:
        angles = (t.float() * self.scale)[:, None] * self.freqs[None, :]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


def attention_mask(lengths: Tensor, width: int, causal: bool = False) -> Tensor:
    """Boolean ``[B, 1, n, n]`` mask (True = may attend) for keys ``< lengths``.

    Padded query rows attend to the first key so that no row is empty (no NaN); their outputs
    are ignored downstream.
    """
    keys = torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]  # [B, n]
    mask = keys[:, None, None, :].expand(-1, 1, width, -1)
    if causal:
        mask = mask & torch.ones(width, width, dtype=torch.bool, device=lengths.device).tril()
    first = torch.zeros(width, dtype=torch.bool, device=lengths.device)
    if width:
        first[0] = True
    return mask | first


class Padded:
    """The padded layout of a batch, ``[B, n, …]`` with ``lengths [B]`` live positions per row.

    It shares its interface with :class:`flexmdm.models.packing.Packing` (the packed layout), so
    the networks run on either: ``pack`` / ``unpack`` leave tensors as they are, per-sequence
    vectors broadcast over their row, attention is masked by :func:`attention_mask`.
    """

    def __init__(self, lengths: Tensor, width: int, causal: bool = False) -> None:
        self.mask = attention_mask(lengths, width, causal)
        self.positions = torch.arange(width, device=lengths.device)

    def pack(self, x: Tensor) -> Tensor:
        return x

    def unpack(self, y: Tensor, fill: float | int | bool = 0) -> Tensor:
        return y

    def spread(self, per_sequence: Tensor) -> Tensor:
        """``[B, k] -> [B, 1, k]``."""
        return per_sequence[:, None]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, dropout_p: float = 0.0) -> Tensor:
        """``q, k, v [B, H, n, D] -> [B, H, n, D]``."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=dropout_p)


class Block(nn.Module):
    """Pre-norm transformer block; with ``conditioned`` its norms are modulated by a vector (adaLN-Zero).

    Under adaLN-Zero every residual branch is scaled by a gate that starts at zero, so the block
    starts as the identity.
    """

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: float, dropout: float, conditioned: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.conditioned = conditioned
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=not conditioned)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=not conditioned)
        hidden = int(mlp_ratio * d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model))
        if conditioned:
            self.modulation = nn.Linear(d_model, 6 * d_model)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)

    def forward(self, h: Tensor, rotary: tuple[Tensor, Tensor], layout: Padded | Packing,
                cond: Tensor | None = None) -> Tensor:
        """``h [B, n, d]`` in ``layout`` (packed: ``[1, T, d]``), ``rotary`` tables ``[n, D / 2]`` at
        its positions, ``cond [B, d]`` per sequence -> same shape as ``h``."""
        if self.conditioned:
            shift1, scale1, gate1, shift2, scale2, gate2 = layout.spread(self.modulation(F.silu(cond))).chunk(6, dim=-1)
        batch, n, d = h.shape
        x = self.norm1(h)
        if self.conditioned:
            x = x * (1 + scale1) + shift1
        q, k, v = self.qkv(x).view(batch, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        cos, sin = rotary
        q, k = RotaryEmbedding.rotate(q, cos, sin), RotaryEmbedding.rotate(k, cos, sin)
        p = self.dropout if self.training else 0.0
        a = layout.attend(q, k, v, p)
        a = F.dropout(self.out(a.transpose(1, 2).reshape(batch, n, d)), p, self.training)
        h = h + (gate1 * a if self.conditioned else a)
        x = self.norm2(h)
        if self.conditioned:
            x = x * (1 + scale2) + shift2
        m = F.dropout(self.mlp(x), p, self.training)
        return h + (gate2 * m if self.conditioned else m)
