"""How a FlexMDM sampler draws one step's insertions.

The forward process inserts every missing token of x1 at an independent time with density
α'(t) / (1 − α(t₀)) after t₀, so a gap that still misses K tokens at time t receives, during
[t, t'], Binomial(K, p) of them with the exact interval probability

    p(t, t') = (α(t') − α(t)) / (1 − α(t)),                     (p = 1 when t' = 1)

and none of them when K = 0. A network sees only a posterior over K: its mean g (the paper's
Poisson head) or, with a count head, its whole distribution. :class:`Insertion` chooses how a
step turns that into counts:

* ``arrivals="poisson"`` — Algorithm 1: ℓ ~ Poisson(τ·κ_α(t)·g), the left-point rate. Its last
  interval draws Poisson(g), whose variance g is wrong where the remaining count is known.
* ``arrivals="binomial"`` — ℓ ~ Binomial(K, p(t, t')) with K drawn from the count distribution
  (or g rounded stochastically when only the mean is known). Exact for one gap whose count
  posterior is exact; in the last interval it inserts exactly K.
* ``arrivals="exact"`` — arrivals one at a time at their own times, drawn by thinning from the
  gaps' expected counts (see :func:`~flexmdm.sampling.flexmdm.sample_flexmdm`): exact for an exact
  denoiser at any budget that suffices; reveals happen between arrivals, with a rate-free rule.
* ``certainty=c`` — every gap whose most likely count has probability >= c receives that count at
  once, whatever the clock. Inserting a count that holds in every explanation of the state
  leaves the posterior over x1 unchanged, so with c = 1 this is exact at any step size; it is
  the insertion analogue of MED (entropy-bounded unmasking). Needs count distributions. A row
  whose every count is certain is length-complete: its exact posterior no longer depends on t,
  and the sampler shows it to the denoiser at the time where such a state is most typical
  (:func:`~flexmdm.interpolant.typical_time`) rather than at its clock — a network has never seen
  a whole trace of masks at t = 0.
* ``refresh=True`` — the sampler re-estimates the gaps after the step's reveals with a second
  call, so that insertions agree with the tokens just revealed (each call counts as an NFE).

Without ``certainty``, or with c = 1, every option samples the data distribution in the limit of
many steps for an exact denoiser (``exact`` at any sufficient budget); c < 1 trades exactness for
fewer calls with a network whose counts are never exactly certain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flexmdm.schedules import Schedule

__all__ = ["Insertion", "ARRIVALS", "GRID_ARRIVALS", "interval_probability"]

GRID_ARRIVALS = ("poisson", "binomial")  # arrivals drawn per grid interval
ARRIVALS = (*GRID_ARRIVALS, "exact")


def interval_probability(schedule: Schedule, t: Tensor, t_next: Tensor) -> Tensor:
    """``[B]`` probability that a token missing at t arrives by t': (a(t') − a(t)) / (1 − a(t)); 1 at t' = 1.

    Computed as 1 − S(t') / S(t) with the schedule's survival S = 1 − a, which stays exact where
    a(t) rounds to 1 (a steep schedule late in the run); 1 where S(t) underflows to 0.
    """
    s, s_next = schedule.survival(t), schedule.survival(t_next)
    p = (1.0 - s_next / torch.where(s > 0, s, 1.0)).clamp(0.0, 1.0)
    return torch.where((t_next >= 1.0) | (s <= 0), torch.ones_like(p), p)


@dataclass(frozen=True)
class Insertion:
    """Insertion options of :func:`~flexmdm.sampling.flexmdm.sample_flexmdm` (see the module docstring).

    Attributes:
        arrivals: "poisson" (the paper's Algorithm 1), "binomial" or "exact".
        certainty: None, or c in (0, 1]: insert at once every count at least this probable.
        refresh: re-estimate the gaps after each step's reveals (one more network call).
    """

    arrivals: str = "poisson"
    certainty: float | None = None
    refresh: bool = False

    def __post_init__(self) -> None:
        if self.arrivals not in ARRIVALS:
            raise ValueError(f"arrivals must be one of {ARRIVALS}, got {self.arrivals!r}")
        if self.certainty is not None and not 0.0 < self.certainty <= 1.0:
            raise ValueError(f"certainty must be in (0, 1], got {self.certainty}")
        if self.refresh and self.arrivals == "exact":
            raise ValueError("exact arrivals always see the state after the reveals; refresh is for grid arrivals")

    @property
    def needs_counts(self) -> bool:
        """Whether the denoiser must return gap-count distributions."""
        return self.certainty is not None

    def certain_counts(self, count_log_probs: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """``(certain [B, G] bool, count [B, G])``: the gaps whose count is known, or None when off."""
        if self.certainty is None or count_log_probs is None:
            return None
        top, count = count_log_probs.max(dim=-1)
        # exp(log p) rounds to 1 for a certain count, so c = 1 accepts only those.
        return top.exp() >= self.certainty * (1.0 - 1e-6), count

    def draw(
        self,
        gaps: Tensor,
        count_log_probs: Tensor | None,
        schedule: Schedule,
        t: Tensor,
        t_next: Tensor,
        allowed: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """Insertion counts of one step.

        Args:
            gaps: ``[B, G]`` expected remaining counts g.
            count_log_probs: ``[B, G, C + 1]`` log P(remaining count = k), or None.
            schedule: α.
            t: ``[B]`` float64 step start.
            t_next: ``[B]`` float64 step end (1 in the last interval).
            allowed: ``[B, G]`` bool, gaps that may receive insertions.

        Returns:
            ``[B, G]`` long counts, zero where not allowed.
        """
        g = gaps.double().clamp(min=0.0)
        if self.arrivals == "exact":
            raise ValueError("exact arrivals are drawn by the sampler one at a time, not per step")
        if self.arrivals == "poisson":
            tau = (t_next - t).float()[:, None]
            rates = tau * schedule.rate(t.float())[:, None] * gaps.float().clamp(min=0.0)
            counts = torch.poisson(torch.where(allowed, rates, 0.0), generator=generator).long()
        else:
            remaining = self._remaining(g, count_log_probs, generator)
            p = interval_probability(schedule, t, t_next)[:, None].expand_as(g)
            counts = torch.binomial(remaining.double(), p.contiguous(), generator=generator).long()
        certain = self.certain_counts(count_log_probs)
        if certain is not None:
            counts = torch.where(certain[0], certain[1], counts)
        return torch.where(allowed, counts, 0)

    @staticmethod
    def _remaining(g: Tensor, count_log_probs: Tensor | None, generator: torch.Generator | None) -> Tensor:
        """``[B, G]`` one draw of each gap's remaining count."""
        if count_log_probs is not None:
            probs = count_log_probs.double().exp().flatten(0, 1)
            return torch.multinomial(probs, 1, generator=generator).view(g.shape)
        floor = torch.floor(g)
        up = torch.rand(g.shape, generator=generator, dtype=g.dtype, device=g.device) < g - floor
        return (floor + up.double()).long()
