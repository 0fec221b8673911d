"""Filling middles between prefixes and suffixes with a trained model, and scoring them.

:func:`fill_middles` asks a pipeline of either family through the same
:class:`MiddleConditioning`: a FlexMDM grows the middle from ``prefix + suffix`` by insertion, at
most ``budget`` tokens; an MDM fills a fixed canvas of ``budget`` masks between them (the
*fixed-budget* setting), and every PAD it predicts is removed. The sampler is the caller's
(:class:`~flexmdm.families.SamplingOptions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from flexmdm.families import Affixes, SamplingOptions
from flexmdm.sampling import mdm_canvas
from flexmdm.tasks.infill.metrics import infill_metrics
from flexmdm.tasks.infill.spans import InfillExample

if TYPE_CHECKING:
    from flexmdm.pipeline import Pipeline
    from flexmdm.tasks.infill.task import InfillTask

__all__ = ["MiddleConditioning", "fill_middles", "score_middles"]


@dataclass(frozen=True)
class MiddleConditioning(Affixes):
    """Fill between each prefix and suffix, read back as the middle's token ids (PAD removed).

    Attributes:
        middles: the MASKs of each row's MDM canvas (default: ``budget`` each).
    """

    middles: Sequence[int] | None = None

    def mdm_canvas(self) -> tuple[Tensor, Tensor]:
        middles = self.middles if self.middles is not None else [self.budget] * len(self.prefixes)
        return mdm_canvas(self.prefixes, self.width, self.vocab, self.suffixes, middles)

    def _middle(self, sequence: list[int], start: int, end: int) -> list[int]:
        return [token for token in sequence[start:end] if token != self.vocab.pad_id]

    def read_flexmdm(self, sequences: list[list[int]]) -> list[list[int]]:
        return [self._middle(seq, len(p), len(seq) - len(s))
                for seq, p, s in zip(sequences, self.prefixes, self.suffixes)]

    def read_mdm(self, sequences: list[list[int]]) -> list[list[int]]:
        middles = self.middles if self.middles is not None else [self.budget] * len(self.prefixes)
        return [self._middle(seq, len(p), len(p) + m) for seq, p, m in zip(sequences, self.prefixes, middles)]


@torch.no_grad()
def fill_middles(pipe: Pipeline, prefixes: list[list[int]], suffixes: list[list[int]], *, budget: int | None,
                 options: SamplingOptions, batch_size: int, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """Generated middles (token ids, PAD removed) and ``[N]`` network calls, in batches of ``batch_size``.

    ``budget`` None: an MDM's middle is the rest of its canvas (``pipe.max_length``); else at most
    ``budget`` tokens (an MDM's canvas holds exactly ``budget`` masks).
    """
    width, generator = pipe.max_length, torch.Generator().manual_seed(seed)
    middles, calls = [], []
    for start in range(0, len(prefixes), batch_size):
        p, s = prefixes[start:start + batch_size], suffixes[start:start + batch_size]
        rows = None if budget is not None else [width - len(x) - len(y) for x, y in zip(p, s)]
        conditioning = MiddleConditioning(p, s, pipe.vocab, width, budget=budget, middles=rows)
        out = pipe.sample(conditioning, max_length=width, generator=generator, options=options)
        middles += pipe.family.read(conditioning, out.sequences())
        calls += out.nfe.tolist()
    return middles, np.asarray(calls, dtype=np.float64)


def score_middles(examples: list[InfillExample], middles: list[list[int]], task: InfillTask) -> dict[str, Any]:
    """:func:`~flexmdm.tasks.infill.metrics.infill_metrics` of generated ``middles`` (token ids)."""
    texts = [task.decode(m) for m in middles]
    return infill_metrics([e.prefix_text for e in examples], texts, [e.suffix_text for e in examples],
                          [e.middle_text for e in examples], [len(m) for m in middles],
                          [len(e.middle) for e in examples])
