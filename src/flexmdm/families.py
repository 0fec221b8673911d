"""Model families: how each kind of model generates from the same conditioning.

A FlexMDM starts from its frozen tokens alone and inserts where the conditioning allows; an MDM
fills a fixed canvas of MASKs laid out around the same frozen tokens; an autoregressive model only
scores text here (it is the length benchmark's reference). :func:`family` maps the ``kind`` of a
saved model to its family, and this is the module that knows what each kind needs.

Conditioning is given as prefixes (and optional suffixes) of token ids, one per sequence: a
prefix alone is continued, a prefix and a suffix are infilled between.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from flexmdm.constraints import Prompt
from flexmdm.sampling import (
    Insertion,
    SampleOutput,
    TauLeaping,
    UnmaskingRule,
    mdm_canvas,
    sample_flexmdm,
    sample_mdm,
)
from flexmdm.sampling.flexmdm import ExitCriterion
from flexmdm.schedules import Schedule
from flexmdm.vocab import Vocab

__all__ = ["FAMILIES", "Conditioning", "Family", "SamplingOptions", "family"]


@dataclass(frozen=True)
class SamplingOptions:
    """How to generate (shared by every family; ``insertion`` is FlexMDM's alone).

    Attributes:
        steps: grid intervals for rate-following rules; the most network calls otherwise (and
            for FlexMDM's exact insertion).
        rule: the unmasking rule (default τ-leaping).
        temperature: 0 for argmax.
        final_fill: masks left at t = 1: "sequential" (one per call, exact), "parallel", or "rule"
            (FlexMDM, rate-free rules); default "rule" for rate-free rules, else "sequential".
        insertion: FlexMDM arrivals (default: the paper's Algorithm 1).
        early_exit: rows for which it holds are finished from that step's posterior.
        trace: record the sampler's events (FlexMDM).
    """

    steps: int = 100
    rule: UnmaskingRule = field(default_factory=TauLeaping)
    temperature: float = 1.0
    final_fill: str | None = None
    insertion: Insertion | None = None
    early_exit: ExitCriterion | None = None
    trace: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def fill(self) -> str:
        """The final fill, its default resolved."""
        return self.final_fill or ("sequential" if self.rule.uses_rates else "rule")


@dataclass(frozen=True)
class Conditioning:
    """Frozen tokens of a batch: ``prefixes`` (B id lists) and optional ``suffixes`` (B id lists).

    With suffixes the model generates between each prefix and its suffix; without, after each
    prefix (an empty prefix: from nothing).
    """

    prefixes: Sequence[Sequence[int]]
    suffixes: Sequence[Sequence[int]] | None = None

    def __post_init__(self) -> None:
        if self.suffixes is not None and len(self.suffixes) != len(self.prefixes):
            raise ValueError(f"{len(self.prefixes)} prefixes but {len(self.suffixes)} suffixes")

    @property
    def batch_size(self) -> int:
        return len(self.prefixes)

    def frozen_lengths(self) -> list[int]:
        """Frozen tokens of each sequence."""
        suffixes = self.suffixes or [[]] * self.batch_size
        return [len(p) + len(s) for p, s in zip(self.prefixes, suffixes)]


class Family(ABC):
    """What one kind of model (``kind`` in its saved config) needs to generate."""

    kind: str
    generates: bool = True
    inserts: bool = False

    @abstractmethod
    def generate(self, model: nn.Module, *, schedules: dict[str, Schedule], vocab: Vocab, max_length: int,
                 conditioning: Conditioning, options: SamplingOptions,
                 generator: torch.Generator | None) -> SampleOutput:
        """Sequences for ``conditioning`` (see :class:`SamplingOptions`), at most ``max_length`` long."""


class FlexMDMFamily(Family):
    """Insert and unmask from the frozen tokens alone (:func:`~flexmdm.sampling.sample_flexmdm`)."""

    kind = "flexmdm"
    inserts = True

    def generate(self, model, *, schedules, vocab, max_length, conditioning, options, generator):
        prefixes = [list(p) for p in conditioning.prefixes]
        if conditioning.suffixes is not None:
            prompt = Prompt.infill(prefixes, [list(s) for s in conditioning.suffixes], vocab.pad_id)
        elif any(prefixes):
            prompt = Prompt.prefix(prefixes, vocab.pad_id)
        else:
            prompt = Prompt.unconditional(conditioning.batch_size, vocab.pad_id)
        return sample_flexmdm(
            model, vocab=vocab, insertion_schedule=schedules["insertion"], unmasking_schedule=schedules["unmasking"],
            steps=options.steps, max_length=max_length, prompt=prompt, rule=options.rule,
            insertion=options.insertion, temperature=options.temperature, final_fill=options.fill,
            generator=generator, early_exit=options.early_exit, record_trace=options.trace,
        )


class MDMFamily(Family):
    """Fill a canvas of ``max_length`` slots: prefix, MASKs, suffix, then PAD (:func:`~flexmdm.sampling.sample_mdm`)."""

    kind = "mdm"

    def generate(self, model, *, schedules, vocab, max_length, conditioning, options, generator):
        if options.insertion is not None or options.trace:
            raise ValueError("insertion options and traces are for FlexMDM models")
        canvas, frozen = mdm_canvas(conditioning.prefixes, max_length, vocab, conditioning.suffixes)
        fill = "sequential" if options.fill == "rule" else options.fill
        return sample_mdm(
            model, vocab=vocab, unmasking_schedule=schedules["unmasking"], steps=options.steps, canvas=canvas,
            frozen=frozen, rule=options.rule, temperature=options.temperature, final_fill=fill,
            generator=generator, early_exit=options.early_exit,
        )


class AutoregressiveFamily(Family):
    """A left-to-right language model: it scores text (``log_likelihood``) and does not generate here."""

    kind = "autoregressive"
    generates = False

    def generate(self, model, *, schedules, vocab, max_length, conditioning, options, generator):
        raise ValueError("autoregressive models score text here; generate with a FlexMDM or an MDM")


FAMILIES: dict[str, Family] = {f.kind: f for f in (FlexMDMFamily(), MDMFamily(), AutoregressiveFamily())}
"""Every family by the ``kind`` its models are saved with."""


def family(kind: str) -> Family:
    """The family of models saved with ``kind``."""
    try:
        return FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {sorted(FAMILIES)}") from None
