"""Filling held-out middles with a trained model, and scoring them (``flexmdm bench infill``).

Three settings (:data:`FILL_SETTINGS`), each a way to ask a pipeline for the middle between an
example's prefix and suffix:

* ``flexible`` — a FlexMDM from ``prefix + suffix``, inserting at most ``max_middle_tokens``;
* ``true_length`` — an MDM given exactly as many masks as the reference middle has tokens, PAD
  ruled out (an oracle no real user has);
* ``fixed_budget`` — an MDM given ``max_middle_tokens`` masks; every PAD it predicts is removed.

All three reveal the most probable mask first (:class:`~flexmdm.sampling.Adaptive`, top
probability), take argmax tokens and fill what is left at t = 1 one mask per call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from flexmdm.families import Affixes, SamplingOptions
from flexmdm.sampling import Adaptive, mdm_canvas
from flexmdm.tasks.infill.metrics import infill_metrics
from flexmdm.tasks.infill.spans import InfillExample

if TYPE_CHECKING:
    from flexmdm.pipeline import Pipeline
    from flexmdm.tasks.infill.task import InfillTask

__all__ = ["FILL_SETTINGS", "MiddleConditioning", "PadRuledOut", "fill_middles", "score_middles"]

FILL_SETTINGS = ("flexible", "true_length", "fixed_budget")


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


class PadRuledOut(nn.Module):
    """An MDM denoiser that never predicts PAD: told the true length, every mask becomes a real token."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model, self.pad_id = model, pad_id

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor) -> Tensor:
        logits = self.model(x, t, lengths, frozen)
        return logits.index_fill(-1, torch.tensor([self.pad_id], device=logits.device), float("-inf"))


@torch.no_grad()
def fill_middles(pipe: Pipeline, setting: str, examples: list[InfillExample], task: InfillTask, *, steps: int,
                 generator: torch.Generator) -> list[list[int]]:
    """Generated middle token ids for ``examples`` under ``setting`` (see the module docstring); ``pipe`` is a
    FlexMDM for ``flexible``, an MDM otherwise."""
    if setting not in FILL_SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {list(FILL_SETTINGS)}")
    if pipe.family.inserts != (setting == "flexible"):
        raise ValueError(f"setting {setting!r} is for {'a FlexMDM' if setting == 'flexible' else 'an MDM'}, "
                         f"not a {pipe.family.label} model")
    if setting == "true_length":
        pipe = dataclasses.replace(pipe, model=PadRuledOut(pipe.model, task.vocab.pad_id))
    conditioning = MiddleConditioning(
        [e.prefix for e in examples], [e.suffix for e in examples], task.vocab, task.max_length,
        budget=task.max_middle_tokens, middles=[len(e.middle) for e in examples] if setting == "true_length" else None)
    options = SamplingOptions(steps=steps, rule=Adaptive("top_probability"), temperature=0.0, final_fill="sequential")
    out = pipe.sample(conditioning, max_length=task.max_length, generator=generator, options=options)
    return pipe.family.read(conditioning, out.sequences())


def score_middles(examples: list[InfillExample], middles: list[list[int]], task: InfillTask) -> dict[str, Any]:
    """:func:`~flexmdm.tasks.infill.metrics.infill_metrics` of generated ``middles`` (token ids)."""
    texts = [task.decode(m) for m in middles]
    return infill_metrics([e.prefix_text for e in examples], texts, [e.suffix_text for e in examples],
                          [e.middle_text for e in examples], [len(m) for m in middles],
                          [len(e.middle) for e in examples])
