"""Unmasking rules: which masked slots a sampler reveals at one step.

A rule sees the unmasking posterior of the current state and returns a boolean selection; the
sampler then draws each selected slot's token. Rules never select a slot that is not MASK.

* :class:`TauLeaping` — Algorithm 1's vanilla step: every mask jumps independently with
  probability 1 − exp(−τ·κ_β(t)).
* :class:`Adaptive` — K ~ Poisson(τ·κ_β(t)·#masked), capped at the eligible count; the K
  best-scoring eligible masks by a confidence score, optionally within a sliding window.
* :class:`EntropyBounded` (MED) — every mask whose entropy is below λ, at least the lowest.
* :class:`EntropySum` (EB-sampler) — the largest entropy-sorted prefix whose entropy sum minus
  its maximum is at most γ, at least one.
* :class:`ConfidenceThreshold` — every mask whose top probability is at least c, at least one.
* :class:`SemiAutoregressive` — another rule restricted to the left-most block of positions
  that still holds masks (blocks of a fixed width of slots of the current state: an MDM canvas,
  or a FlexMDM state as it grows).

By the paper's Prop. 3 any choice of *which* masks to reveal leaves FlexMDM's samples exact, as
long as tokens come from the posterior and insertions follow their rates.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "UnmaskingRule",
    "TauLeaping",
    "Adaptive",
    "EntropyBounded",
    "EntropySum",
    "ConfidenceThreshold",
    "SemiAutoregressive",
    "SCORES",
    "entropy",
]

NEG_INF = float("-inf")


def entropy(probs: Tensor) -> Tensor:
    """``[B, n]`` Shannon entropy (nats) of ``probs [B, n, V]``."""
    return -torch.special.xlogy(probs, probs).sum(dim=-1)


def _top_probability(probs: Tensor) -> Tensor:
    return probs.max(dim=-1).values


def _margin(probs: Tensor) -> Tensor:
    top2 = probs.topk(2, dim=-1).values
    return top2[..., 0] - top2[..., 1]


def _negative_entropy(probs: Tensor) -> Tensor:
    return -entropy(probs)


def _left_most(probs: Tensor) -> Tensor:
    return -torch.arange(probs.shape[1], dtype=probs.dtype, device=probs.device).expand(probs.shape[:2])


def _right_most(probs: Tensor) -> Tensor:
    return torch.arange(probs.shape[1], dtype=probs.dtype, device=probs.device).expand(probs.shape[:2])


SCORES: dict[str, Callable[[Tensor], Tensor]] = {
    "top_probability": _top_probability,
    "margin": _margin,
    "entropy": _negative_entropy,
    "left_most": _left_most,
    "right_most": _right_most,
}
"""Confidence scores ``probs [B, n, V] -> [B, n]``: higher is revealed first. ``random`` is
handled by :class:`Adaptive` itself; ``right_most`` is the adversarial order used in tests."""


def _rank_among(scores: Tensor, eligible: Tensor) -> Tensor:
    """``[B, n]`` rank (0 = best) of each eligible slot by descending score; n at others."""
    scores = torch.where(eligible, scores, NEG_INF)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    )
    return torch.where(eligible, ranks, scores.shape[1])


def _at_least_lowest(values: Tensor, chosen: Tensor, masked: Tensor) -> Tensor:
    """Add the masked slot of lowest ``values`` to every row that chose nothing."""
    if masked.shape[1] == 0:
        return chosen
    lowest = torch.where(masked, values, math.inf).argmin(dim=1)
    fallback = torch.zeros_like(masked).scatter_(1, lowest[:, None], True) & masked
    empty = ~chosen.any(dim=1, keepdim=True)
    return chosen | (fallback & empty)


class UnmaskingRule(ABC):
    """Chooses which masked slots to reveal."""

    #: Whether the rule uses the time grid (τ·κ_β). Rules that don't can run until no mask is left.
    uses_rates: bool = True

    @abstractmethod
    def select(
        self,
        probs: Tensor,
        masked: Tensor,
        jump_intensity: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Pick slots to reveal.

        Args:
            probs: ``[B, n, V]`` unmasking posterior at every slot (rows of non-masks unused).
            masked: ``[B, n]`` bool, the MASK slots.
            jump_intensity: ``[B]`` τ·κ_β(t), the expected number of unmasking events per mask
                during this step.
            generator: random stream.

        Returns:
            ``[B, n]`` bool, a subset of ``masked``.
        """

    def order(self, probs: Tensor) -> Tensor:
        """``[B, n]`` scores used to fill the last masks one at a time at t = 1."""
        return _left_most(probs)


@dataclass(frozen=True)
class TauLeaping(UnmaskingRule):
    """Algorithm 1's vanilla unmasking: each mask jumps w.p. 1 − exp(−τ·κ_β(t))."""

    def select(self, probs, masked, jump_intensity, generator):
        jump = -torch.expm1(-jump_intensity)[:, None]
        u = torch.rand(masked.shape, generator=generator, device=masked.device)
        return masked & (u < jump)


@dataclass(frozen=True)
class Adaptive(UnmaskingRule):
    """K ~ Poisson(τ·κ_β(t)·#masked) capped at the eligible count; the K best by ``score``.

    Args:
        score: a key of :data:`SCORES` or ``"random"``.
        window_factor: γ1 of the sliding window (None: no window). With a window only the
            left-most min(⌊γ1·K⌋, γ2) masks are eligible.
        window_max: γ2 of the sliding window.
    """

    score: str = "top_probability"
    window_factor: float | None = None
    window_max: int = 1 << 30

    def __post_init__(self) -> None:
        if self.score not in SCORES and self.score != "random":
            raise ValueError(f"unknown score {self.score!r}; choose one of {[*SCORES, 'random']}")
        if self.window_factor is not None and self.window_factor <= 0:
            raise ValueError(f"window_factor must be > 0, got {self.window_factor}")
        if self.window_max < 1:
            raise ValueError(f"window_max must be >= 1, got {self.window_max}")

    def _scores(self, probs: Tensor, generator: torch.Generator | None) -> Tensor:
        if self.score == "random":
            return torch.rand(probs.shape[:2], generator=generator, device=probs.device)
        return SCORES[self.score](probs)

    def select(self, probs, masked, jump_intensity, generator):
        count = torch.poisson(jump_intensity * masked.sum(dim=1), generator=generator).long()
        eligible = masked
        if self.window_factor is not None:
            window = torch.clamp(torch.floor(self.window_factor * count).long(), max=self.window_max)
            mask_rank = torch.cumsum(masked.long(), dim=1) - 1
            eligible = masked & (mask_rank < window[:, None])
        ranks = _rank_among(self._scores(probs, generator), eligible)
        return eligible & (ranks < count[:, None])

    def order(self, probs):
        if self.score in SCORES:
            return SCORES[self.score](probs)
        return super().order(probs)


@dataclass(frozen=True)
class EntropyBounded(UnmaskingRule):
    """MED: reveal every mask whose entropy is below ``threshold`` (λ), at least the lowest."""

    threshold: float = 0.2
    uses_rates = False

    def select(self, probs, masked, jump_intensity, generator):
        h = entropy(probs)
        return _at_least_lowest(h, masked & (h < self.threshold), masked)

    def order(self, probs):
        return _negative_entropy(probs)


@dataclass(frozen=True)
class EntropySum(UnmaskingRule):
    """EB-sampler: the largest entropy-sorted prefix with Σ entropy − max entropy <= γ."""

    budget: float = 0.1
    uses_rates = False

    def select(self, probs, masked, jump_intensity, generator):
        h = torch.where(masked, entropy(probs), math.inf)
        sorted_h, order = torch.sort(h, dim=1)
        finite = torch.isfinite(sorted_h)
        prefix_sum = torch.cumsum(torch.where(finite, sorted_h, 0.0), dim=1)
        # sorted ascending, so the prefix maximum is its last element.
        keep_sorted = finite & (prefix_sum - torch.where(finite, sorted_h, 0.0) <= self.budget)
        chosen = torch.zeros_like(masked).scatter_(1, order, keep_sorted)
        return _at_least_lowest(h, chosen, masked)

    def order(self, probs):
        return _negative_entropy(probs)


@dataclass(frozen=True)
class ConfidenceThreshold(UnmaskingRule):
    """Reveal every mask whose top probability is at least ``threshold``, at least the best."""

    threshold: float = 0.9
    uses_rates = False

    def select(self, probs, masked, jump_intensity, generator):
        top = _top_probability(probs)
        return _at_least_lowest(-top, masked & (top >= self.threshold), masked)

    def order(self, probs):
        return _top_probability(probs)


@dataclass(frozen=True)
class SemiAutoregressive(UnmaskingRule):
    """``inner`` restricted to the left-most block still holding masks.

    Positions are cut into blocks ``[0, w), [w, 2w), …`` of ``block_size`` slots; only the
    masks of the first block that has any are eligible (blocks of frozen tokens are skipped).

    Args:
        inner: the rule choosing within the block (e.g. :class:`EntropyBounded`).
        block_size: w, in slots.
    """

    inner: UnmaskingRule = EntropyBounded()
    block_size: int = 8

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")

    @property
    def uses_rates(self) -> bool:  # type: ignore[override]
        return self.inner.uses_rates

    def _blocks(self, width: int, device: torch.device) -> Tensor:
        """``[width]`` the block of every slot."""
        return torch.arange(width, device=device) // self.block_size

    def eligible(self, masked: Tensor) -> Tensor:
        """``[B, n]`` bool: the masks of each row's left-most block that holds masks.

        A state with no slot at all (a FlexMDM sample starting from the empty string) has none.
        """
        if masked.shape[1] == 0:
            return masked
        block = self._blocks(masked.shape[1], masked.device)
        first = torch.where(masked, block, masked.shape[1]).min(dim=1, keepdim=True).values
        return masked & (block == first)

    def select(self, probs, masked, jump_intensity, generator):
        return self.inner.select(probs, self.eligible(masked), jump_intensity, generator)

    def order(self, probs):
        """Block first, then ``inner``'s order: the best mask is always in the left-most block
        holding masks, so the one-at-a-time final fill respects the blocks too."""
        width = probs.shape[1]
        inner_rank = _rank_among(self.inner.order(probs), torch.ones(probs.shape[:2], dtype=torch.bool,
                                                                     device=probs.device))
        return -(self._blocks(width, probs.device) * width + inner_rank).double()
