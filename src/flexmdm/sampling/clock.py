"""Where each step of a FlexMDM run ends: the uniform grid, or steps bounded by expected events.

A run spends at most ``steps`` network calls before t = 1. On the uniform grid the k-th call is
at t_k = k / steps. With ``max_events = λ`` every row instead takes the longest step over which
its expected number of events — insertions, plus reveals for rules that follow the unmasking
rate — stays at most λ, but never a shorter one than its remaining budget allows,
τ >= (1 − t) / (calls left). Stretches where little happens are crossed in one call and the calls
saved are spent where events are dense; as λ → 0 and steps → ∞ the run approaches the exact
process one event at a time. For an exact denoiser, a row whose state is complete (no mask, every
gap certain to stay empty) expects no event and finishes at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["next_times"]

_BISECTIONS = 40


def next_times(
    t: Tensor,
    calls: Tensor,
    steps: int,
    max_events: float | None = None,
    expected_events: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``[B]`` float64 end of every row's current step.

    Args:
        t: ``[B]`` float64 current times (< 1).
        calls: ``[B]`` grid calls made before this one (so ``calls < steps``).
        steps: the call budget.
        max_events: λ, or None for the uniform grid.
        expected_events: ``t_next [B] -> [B]`` expected events if the step ended at ``t_next``
            (monotone); needed with ``max_events``.
    """
    left = (steps - calls).double()
    budget = torch.where(left <= 1, torch.ones_like(t), t + (1.0 - t) / left)
    if max_events is None:
        return budget
    if expected_events is None:
        raise ValueError("max_events needs expected_events")
    ones = torch.ones_like(t)
    if bool((expected_events(ones) <= max_events).all()):
        return ones
    lo, hi = t.clone(), ones
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        fits = expected_events(mid) <= max_events
        lo, hi = torch.where(fits, mid, lo), torch.where(fits, hi, mid)
    reach = torch.where(expected_events(ones) <= max_events, ones, lo)
    return torch.maximum(budget, reach)
