"""The bidirectional diffusion transformer (DiT) and its FlexMDM and MDM heads.

The trunk embeds tokens, adds a learned vector on frozen tokens (prompts, subgoals), applies
adaLN-Zero blocks conditioned on the time (and, with ``length_conditioning``, the state length)
and rotary positions, and ignores padding through the attention mask. Its cost scales with the
width ``n`` it is given: callers crop batches to the longest live sequence. With ``packed=True``
the heads' forward passes run on the live positions only (:mod:`flexmdm.models.packing`): the
cost follows the live tokens, the outputs are the padded ones up to float rounding.

**Gap head.** FlexMDM needs n + 1 outputs for a state of length n. The model appends one learned
END token at slot ``lengths[b]`` of every row; the hidden state at slot i predicts the expected
number of tokens to insert before slot i (slot ``lengths[b]``, the END token, predicts the
tail), through a softplus. Slots past a row's END are returned as 0.

**Count head** (``count_cap`` C > 0). The same slots also give log-probabilities of each gap's
remaining count over 0 … C; slots past a row's END are certain to receive 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexmdm.models.config import ModelConfig
from flexmdm.models.layers import Block, Padded, RotaryEmbedding, TimeEmbedding
from flexmdm.models.packing import Packing

__all__ = ["DiffusionTransformer", "FlexMDMModel", "MDMModel", "init_weights"]


def init_weights(module: nn.Module) -> None:
    """Small normal weights, zero biases, zero adaLN modulations (blocks start as the identity)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=0.02)
    for sub in module.modules():
        if isinstance(sub, Block) and sub.conditioned:
            nn.init.zeros_(sub.modulation.weight)
            nn.init.zeros_(sub.modulation.bias)
        elif isinstance(sub, DiffusionTransformer):
            nn.init.zeros_(sub.final_modulation.weight)
            nn.init.zeros_(sub.final_modulation.bias)


class DiffusionTransformer(nn.Module):
    """Trunk: ``(x [B, n], t [B], lengths [B], frozen [B, n]) -> hidden [B, n, d]``.

    Token id ``vocab_size`` is reserved for the END slot of the gap head.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size + 1, d)
        self.frozen_embedding = nn.Parameter(torch.zeros(d))
        self.time_embedding = TimeEmbedding(d, config.time_scale)
        # FlexMDM's trunk sees the END slot too: lengths up to max_length + 1.
        self.length_embedding = nn.Embedding(config.max_length + 2, d) if config.length_conditioning else None
        self.rotary = RotaryEmbedding(d // config.n_heads, config.rope_theta)
        self.blocks = nn.ModuleList(
            Block(d, config.n_heads, config.mlp_ratio, config.dropout, conditioned=True) for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False)
        self.final_modulation = nn.Linear(d, 2 * d)

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor | None,
                layout: Padded | Packing | None = None) -> Tensor:
        """``x [B, n]`` and ``frozen`` in ``layout`` (default :class:`Padded`; packed: ``[1, T]``),
        ``t [B]`` and ``lengths [B]`` per sequence -> ``hidden`` in the layout of ``x``, ``[…, d]``."""
        layout = Padded(lengths, x.shape[1]) if layout is None else layout
        h = self.token_embedding(x)
        if frozen is not None:
            h = h + frozen[..., None].to(h.dtype) * self.frozen_embedding
        cond = self.time_embedding(t)
        if self.length_embedding is not None:
            if lengths.numel() and int(lengths.max()) >= self.length_embedding.num_embeddings:
                raise ValueError(f"a state of {int(lengths.max()) - 1} tokens is longer than this "
                                 f"length-conditioned model's max_length")
            cond = cond + self.length_embedding(lengths)
        rotary = self.rotary.at(layout.positions)
        for block in self.blocks:
            h = block(h, rotary, layout, cond)
        shift, scale = layout.spread(self.final_modulation(F.silu(cond))).chunk(2, dim=-1)
        return self.final_norm(h) * (1 + scale) + shift


def _forbid(logits: Tensor, ids: list[int]) -> Tensor:
    forbidden = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    forbidden[ids] = True
    return logits.masked_fill(forbidden, float("-inf"))


class FlexMDMModel(nn.Module):
    """FlexMDM network: unmasking posterior and expected gaps (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = DiffusionTransformer(config)
        self.token_head = nn.Linear(config.d_model, config.vocab_size)
        self.gap_head = nn.Linear(config.d_model, 1)
        self.count_head = nn.Linear(config.d_model, config.count_cap + 1) if config.count_cap else None
        init_weights(self)

    def forward(
        self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor | None = None, *, packed: bool = False
    ) -> tuple[Tensor, ...]:
        """``(x [B, n], t [B], lengths [B], frozen [B, n]) -> (token_logits [B, n, V], gaps [B, n+1])``,
        then ``count_log_probs [B, n+1, C+1]`` with a count head. ``packed`` runs the network on the
        n + 1 slots of every state packed (:mod:`flexmdm.models.packing`); same outputs."""
        batch, n = x.shape
        slots = torch.arange(n + 1, device=x.device)[None, :]
        extended = torch.cat([x, x.new_full((batch, 1), self.config.pad_id)], dim=1)
        extended = torch.where(slots == lengths[:, None], self.config.vocab_size, extended)
        if frozen is not None:
            frozen = torch.cat([frozen, frozen.new_zeros(batch, 1)], dim=1)
        layout = (Packing if packed else Padded)(lengths + 1, n + 1)
        hidden = self.trunk(layout.pack(extended), t, lengths + 1, None if frozen is None else layout.pack(frozen),
                            layout)
        logits = _forbid(self._token_logits(hidden, layout, lengths, n), [self.config.mask_id, self.config.pad_id])
        gaps = layout.unpack(F.softplus(self.gap_head(hidden).squeeze(-1).float()))
        exists = slots <= lengths[:, None]
        gaps = torch.where(exists, gaps, 0.0)
        if self.count_head is None:
            return logits, gaps
        count_log_probs = layout.unpack(torch.log_softmax(self.count_head(hidden).float(), dim=-1))
        nothing = count_log_probs.new_full((count_log_probs.shape[-1],), float("-inf"))
        nothing[0] = 0.0
        return logits, gaps, torch.where(exists[..., None], count_log_probs, nothing)


    def _token_logits(self, hidden: Tensor, layout: Padded | Packing, lengths: Tensor, n: int) -> Tensor:
        """``[B, n, V]`` token logits from the n token slots only: the END slots hold no token, and
        leaving them out of the head (not only out of its output) keeps the padded path's float
        rounding, gradients included, what it was before packing existed."""
        if isinstance(layout, Padded):
            return self.token_head(hidden[:, :n]).float()
        tokens = layout.positions < lengths[layout.segment]  # [T]: not an END slot
        out = self.token_head(hidden[0, tokens]).float()  # [T - B, V]
        where = (layout.segment * n + layout.positions)[tokens]
        batch = lengths.shape[0]
        return out.new_zeros(batch * n, out.shape[-1]).index_copy(0, where, out).view(batch, n, out.shape[-1])


class MDMModel(nn.Module):
    """Masked diffusion network on a fixed canvas: posterior over tokens and PAD, never MASK."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = DiffusionTransformer(config)
        self.token_head = nn.Linear(config.d_model, config.vocab_size)
        init_weights(self)

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor | None = None, *,
                packed: bool = False) -> Tensor:
        """``(x [B, L], t [B], lengths [B], frozen [B, L]) -> token_logits [B, L, V]``; ``packed`` runs
        the network on the rows' first ``lengths`` positions packed (the rest get logits 0)."""
        layout = (Packing if packed else Padded)(lengths, x.shape[1])
        hidden = self.trunk(layout.pack(x), t, lengths, None if frozen is None else layout.pack(frozen), layout)
        return _forbid(layout.unpack(self.token_head(hidden).float()), [self.config.mask_id])
