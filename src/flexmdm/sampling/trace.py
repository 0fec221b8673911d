"""Recording what a sampler did, event by event, and replaying it.

Within one step a sampler first reveals tokens (``unmask`` events: a slot of the current state
and its token), then inserts masks (``insert`` events: a gap of the state *after* the reveals,
which do not move anything, and how many masks go there). Replaying the events in order from
the start state rebuilds every intermediate state and the final samples exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["Trace", "TraceEvent", "apply_step"]


@dataclass(frozen=True)
class TraceEvent:
    """One event: ``kind`` is "unmask" (``value`` = token) or "insert" (``value`` = count)."""

    kind: str
    step: int
    time: float
    sequence: int
    position: int
    value: int


@dataclass
class Trace:
    """Events of one sampling run, stored as tensors per step (cheap to record).

    Attributes:
        start_tokens: ``[B, P]`` start state (prompt or empty), PAD after ``start_lengths``.
        start_lengths: ``[B]``.
    """

    start_tokens: Tensor
    start_lengths: Tensor
    mask_id: int
    pad_id: int
    _chunks: list[tuple[str, int, Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)

    def record_unmask(self, step: int, time: float | Tensor, selected: Tensor, values: Tensor) -> None:
        """Reveals of one step: ``selected [B, n]`` bool, ``values [B, n]`` tokens; ``time`` per row or shared."""
        rows, cols = selected.nonzero(as_tuple=True)
        self._chunks.append(("unmask", step, self._times(time, rows), rows, cols, values[rows, cols]))

    def record_insert(self, step: int, time: float | Tensor, counts: Tensor) -> None:
        """Insertions of one step: ``counts [B, n + 1]``; ``time`` per row or shared."""
        rows, cols = counts.nonzero(as_tuple=True)
        self._chunks.append(("insert", step, self._times(time, rows), rows, cols, counts[rows, cols]))

    @staticmethod
    def _times(time: float | Tensor, rows: Tensor) -> Tensor:
        if isinstance(time, Tensor):
            return time[rows].double()
        return torch.full(rows.shape, float(time), dtype=torch.float64, device=rows.device)

    def events(self) -> list[TraceEvent]:
        """All events in the order they happened."""
        return [
            TraceEvent(kind, step, time, int(r), int(c), int(v))
            for kind, step, times, rows, cols, values in self._chunks
            for time, r, c, v in zip(times.tolist(), rows.tolist(), cols.tolist(), values.tolist())
        ]

    def to_records(self) -> list[dict[str, Any]]:
        """Events as JSON-ready dicts."""
        return [event.__dict__.copy() for event in self.events()]

    def replay(self) -> list[list[int]]:
        """Rebuild the final sequences from the start state and the events."""
        states = [
            self.start_tokens[b, : int(self.start_lengths[b])].tolist()
            for b in range(self.start_tokens.shape[0])
        ]
        steps: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for record in self.to_records():
            steps.setdefault((record["step"], record["sequence"]), []).append(record)
        for (_, sequence), step_events in sorted(steps.items()):
            apply_step(states[sequence], step_events, self.mask_id)
        return states


def apply_step(state: list[int], step_events: list[Mapping[str, Any]], mask_id: int) -> None:
    """Apply one step's events of one sequence to ``state`` in place.

    Reveals come first (their positions are slots of ``state``), then the insertions, right to left
    so that every gap index refers to the state before the step's insertions.

    Raises:
        ValueError: an event that does not fit ``state``.
    """
    inserts = []
    for event in step_events:
        if event["kind"] == "unmask":
            if not 0 <= event["position"] < len(state):
                raise ValueError(f"step {event['step']}: reveal at slot {event['position']} of a "
                                 f"length-{len(state)} state (sequence {event['sequence']})")
            state[event["position"]] = int(event["value"])
        else:
            inserts.append((int(event["position"]), int(event["value"])))
    for gap, count in sorted(inserts, reverse=True):
        if not 0 <= gap <= len(state) or count < 0:
            raise ValueError(f"step {step_events[0]['step']}: {count} masks into gap {gap} of a "
                             f"length-{len(state)} state")
        state[gap:gap] = [mask_id] * count
