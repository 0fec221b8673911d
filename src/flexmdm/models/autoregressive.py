"""A small causal language model: the reference scorer for generative perplexity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flexmdm.models.config import ModelConfig
from flexmdm.models.dit import init_weights
from flexmdm.models.layers import Block, Padded, RotaryEmbedding
from flexmdm.models.packing import Packing

__all__ = ["AutoregressiveLM"]


class AutoregressiveLM(nn.Module):
    """Pre-norm causal transformer.

    A learned BOS vector starts every sequence; position i predicts token i and position n
    predicts the end of the sequence, whose target id is ``pad_id``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.token_embedding = nn.Embedding(config.vocab_size, d)
        self.bos = nn.Parameter(torch.zeros(d))
        self.rotary = RotaryEmbedding(d // config.n_heads, config.rope_theta)
        self.blocks = nn.ModuleList(
            Block(d, config.n_heads, config.mlp_ratio, config.dropout, conditioned=False) for _ in range(config.n_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.vocab_size)
        init_weights(self)
        nn.init.normal_(self.bos, std=0.02)

    def forward(self, x: Tensor, lengths: Tensor, *, packed: bool = False) -> Tensor:
        """``(x [B, n], lengths [B]) -> next-token logits [B, n + 1, V]`` (MASK excluded); ``packed``
        runs the blocks on the n + 1 live positions of every sequence packed
        (:mod:`flexmdm.models.packing`; padding positions get logits 0)."""
        batch, n = x.shape
        layout = (Packing if packed else Padded)(lengths + 1, n + 1, causal=True)
        h = layout.pack(torch.cat([self.bos.expand(batch, 1, -1), self.token_embedding(x)], dim=1))
        rotary = self.rotary.at(layout.positions)
        for block in self.blocks:
            h = block(h, rotary, layout)
        logits = layout.unpack(self.head(self.final_norm(h)).float())
        logits[..., self.config.mask_id] = float("-inf")
        return logits

    def _token_log_probs(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(log p of every target [B, n + 1], valid [B, n + 1])``; the target at ``lengths`` is EOS."""
        batch, n = x.shape
        targets = torch.cat([x, x.new_full((batch, 1), self.config.pad_id)], dim=1)
        slots = torch.arange(n + 1, device=x.device)[None, :]
        targets = torch.where(slots == lengths[:, None], self.config.pad_id, targets)
        log_probs = F.log_softmax(self(x, lengths), dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        valid = slots <= lengths[:, None]
        return torch.where(valid, log_probs, 0.0), valid

    def loss(self, x: Tensor, lengths: Tensor) -> Tensor:
        """Mean negative log-likelihood per predicted token (EOS included)."""
        log_probs, valid = self._token_log_probs(x, lengths)
        return -log_probs.sum() / valid.sum()

    def log_likelihood(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``[B]`` log-probability of each whole sequence, EOS included."""
        return self._token_log_probs(x, lengths)[0].sum(dim=1)
