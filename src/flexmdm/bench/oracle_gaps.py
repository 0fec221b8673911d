"""A FlexMDM network whose gap head is exact for a length distribution (for timing samplers)."""

from __future__ import annotations

import torch
from torch import Tensor

from flexmdm.schedules import Schedule

__all__ = ["LengthOracleGaps"]


class LengthOracleGaps(torch.nn.Module):
    """A network whose gap head is replaced by the exact expected gaps of a length distribution.

    For data whose lengths follow ``length_probs [L + 1]`` and whose positions are exchangeable,
    the posterior of the data length given a state of length n at time t is
    p(ℓ) · C(ℓ, n) · α_t^n · (1 − α_t)^(ℓ − n); the remaining ℓ − n tokens are spread evenly
    over the n + 1 gaps.
    """

    def __init__(self, network: torch.nn.Module, length_probs: Tensor, schedule: Schedule) -> None:
        super().__init__()
        self.network = network
        self.log_probs = length_probs.double().log()
        self.schedule = schedule

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor,
                packed: bool = False) -> tuple[Tensor, Tensor]:
        logits, _ = self.network(x, t, lengths, frozen, packed=packed)
        ell = torch.arange(len(self.log_probs), dtype=torch.float64)
        n = lengths.double()[:, None]
        a = self.schedule.value(t.double()).clamp(1e-12, 1 - 1e-12)[:, None]
        log_choose = torch.lgamma(ell + 1) - torch.lgamma(n + 1) - torch.lgamma((ell - n).clamp(min=0) + 1)
        log_w = self.log_probs + log_choose + n * a.log() + (ell - n) * torch.log1p(-a)
        log_w = torch.where(ell >= n, log_w, float("-inf"))
        remaining = (torch.softmax(log_w, dim=1) * (ell - n).clamp(min=0)).sum(dim=1)
        slots = torch.arange(x.shape[1] + 1) <= lengths[:, None]
        gaps = torch.where(slots, (remaining / (lengths + 1))[:, None], 0.0)
        return logits, gaps.float()
