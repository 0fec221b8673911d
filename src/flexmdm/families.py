"""Model families: how each kind of model generates from the same conditioning.

A FlexMDM starts from its frozen tokens alone and inserts where the conditioning allows; an MDM
fills a fixed canvas of MASKs laid out around the same frozen tokens; an autoregressive model only
scores text here (it is the length benchmark's reference). :func:`family` maps the ``kind`` of a
saved model to its family, and this is the module that knows what each kind needs.

Each family also builds its models' process — the interpolant of :mod:`flexmdm.interpolant` with the
saved schedules and vocabulary (:meth:`Family.process`) — and hands that one object both to the
objective its models train on (:meth:`Family.objective`, see :mod:`flexmdm.objectives`) and to the
sampler (:meth:`Family.generate`).

A request is a :class:`Conditioning`: the same batch as a FlexMDM prompt and as an MDM canvas
(:class:`Affixes` for prefixes and suffixes; tasks define their own, e.g. maze subgoals or a
reasoning template), and a way to read the generated sequences back. The family picks its side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flexmdm.constraints import Prompt
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.objectives import AutoregressiveObjective, FlexMDMObjective, MDMObjective, Objective
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

__all__ = ["FAMILIES", "LAYOUTS", "Affixes", "Conditioning", "Family", "SamplingOptions", "family", "layout_family"]


@dataclass(frozen=True)
class SamplingOptions:
    """How to generate (shared by every family; ``insertion`` is FlexMDM's alone).

    Attributes:
        steps: grid intervals for rate-following rules; the most network calls otherwise (and
            for FlexMDM's exact insertion).
        rule: the unmasking rule (default τ-leaping).
        temperature: 0 for argmax.
        final_fill: masks left at t = 1: "sequential" (one per call, exact), "parallel", or "rule"
            (FlexMDM, rate-free rules); default "rule" for a FlexMDM with a rate-free rule, else
            "sequential".
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
        """A FlexMDM's final fill, its default resolved."""
        return self.final_fill or ("sequential" if self.rule.uses_rates else "rule")


class Conditioning(ABC):
    """One generation request for a batch, in both layouts: a family takes the one it needs.

    A FlexMDM starts from :meth:`flexmdm_prompt` (frozen tokens, where to insert); an MDM fills
    :meth:`mdm_canvas`. :meth:`read_flexmdm` and :meth:`read_mdm` turn generated sequences back
    into what the task means by them (default: the token lists themselves).
    """

    @abstractmethod
    def flexmdm_prompt(self) -> Prompt:
        """Where a FlexMDM starts."""

    @abstractmethod
    def mdm_canvas(self) -> tuple[Tensor, Tensor]:
        """``(canvas [B, L], frozen [B, L])`` an MDM fills."""

    def length_limit(self, max_length: int) -> int | Tensor:
        """The longest a FlexMDM sample may grow: ``max_length`` or ``[B]`` per-sequence limits."""
        return max_length

    def read_flexmdm(self, sequences: list[list[int]]) -> list[Any]:
        return sequences

    def read_mdm(self, sequences: list[list[int]]) -> list[Any]:
        return sequences


@dataclass(frozen=True)
class Affixes(Conditioning):
    """Continue each prefix, or fill between each prefix and its suffix.

    Attributes:
        prefixes: B token-id lists (empty: from nothing).
        suffixes: B token-id lists, or None (continue the prefixes).
        vocab: special-token ids.
        width: the MDM canvas: prefix, MASKs, suffix, PAD up to ``width``.
        budget: most generated tokens per sequence: the MDM's MASKs (the rest of the canvas is PAD)
            and the FlexMDM's insertions; None: whatever ``width`` (FlexMDM: its ``max_length``) leaves.
    """

    prefixes: Sequence[Sequence[int]]
    suffixes: Sequence[Sequence[int]] | None
    vocab: Vocab
    width: int
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.suffixes is not None and len(self.suffixes) != len(self.prefixes):
            raise ValueError(f"{len(self.prefixes)} prefixes but {len(self.suffixes)} suffixes")

    def flexmdm_prompt(self) -> Prompt:
        prefixes = [list(p) for p in self.prefixes]
        if self.suffixes is not None:
            return Prompt.infill(prefixes, [list(s) for s in self.suffixes], self.vocab.pad_id)
        if any(prefixes):
            return Prompt.prefix(prefixes, self.vocab.pad_id)
        return Prompt.unconditional(len(prefixes), self.vocab.pad_id)

    def mdm_canvas(self) -> tuple[Tensor, Tensor]:
        middles = None if self.budget is None else [self.budget] * len(self.prefixes)
        return mdm_canvas(self.prefixes, self.width, self.vocab, self.suffixes, middles)

    def length_limit(self, max_length: int) -> int | Tensor:
        if self.budget is None:
            return max_length
        frozen = torch.tensor([len(p) + len(s) for p, s in zip(self.prefixes, self.suffixes or [[]] * len(self.prefixes))])
        return (frozen + self.budget).clamp(max=max_length)


class Family(ABC):
    """What one kind of model (``kind`` in its saved config) needs to train and generate.

    Attributes:
        kind: the ``model.kind`` of its models.
        label: its name in tables and plots.
        generates: its models generate (else they only score text).
        inserts: its models grow sequences by insertion (a task's FlexMDM layout: frozen tokens
            with regions open to insertion) rather than filling a fixed canvas (the MDM layout).
    """

    kind: str
    label: str
    generates: bool = True
    inserts: bool = False

    @abstractmethod
    def process(self, schedules: dict[str, Schedule], vocab: Vocab) -> FlexInterpolant | MDMInterpolant:
        """The interpolant its models train on and sample from: ``schedules`` as saved with a model
        (``{"unmasking": β}`` and, for FlexMDM, ``"insertion": α``) and its ``vocab``.

        Raises:
            ValueError: the family has no such process (autoregressive).
        """

    @abstractmethod
    def generate(self, model: nn.Module, *, schedules: dict[str, Schedule], vocab: Vocab, max_length: int,
                 conditioning: Conditioning, options: SamplingOptions, generator: torch.Generator | None,
                 device: torch.device | str = "cpu") -> SampleOutput:
        """Sequences for ``conditioning`` (see :class:`SamplingOptions`) from the :meth:`process` of
        ``schedules`` and ``vocab``; a FlexMDM's at most ``max_length`` long. The conditioning's
        tensors go to ``device``, the model's."""

    @property
    def layout(self) -> str:
        """The ``layout`` option of the tasks its models train on (see :func:`layout_family`)."""
        return self.kind

    def task_layout(self, layout: str | None) -> str:
        """A task's ``layout`` for this family's models: its own when None.

        Raises:
            ValueError: ``layout`` is another family's.
        """
        if layout is not None and layout != self.layout:
            raise ValueError(f"layout={layout!r} contradicts model.kind={self.kind!r}: the layout follows the model; "
                             "leave data.layout out")
        return self.layout

    @abstractmethod
    def network(self, config: Any) -> nn.Module:
        """A fresh DiT-architecture network for the ``ModelConfig`` ``config``."""

    def check(self, options: SamplingOptions) -> None:
        """Raise ValueError for options this family cannot use (:meth:`generate` calls it too)."""

    @abstractmethod
    def read(self, conditioning: Conditioning, sequences: list[list[int]]) -> list[Any]:
        """What the generated ``sequences`` mean to the task that made ``conditioning``."""

    @abstractmethod
    def objective(self, schedules: dict[str, Schedule], vocab: Vocab, max_length: int, *,
                  packed: bool = False, gap_weight: float = 1.0) -> Objective:
        """What models of this kind train on (:mod:`flexmdm.objectives`): ``schedules`` as in
        :meth:`generate`, ``max_length`` the task's longest sequence, ``packed`` the network's
        packed mode (``train.packing``), ``gap_weight`` the insertion loss's weight
        (``train.gap_weight``; a family that does not insert has no insertion loss)."""


class FlexMDMFamily(Family):
    """Insert and unmask from the frozen tokens alone (:func:`~flexmdm.sampling.sample_flexmdm`)."""

    kind = "flexmdm"
    label = "FlexMDM"
    inserts = True

    def network(self, config):
        from flexmdm.models.dit import FlexMDMModel  # the models import this module

        return FlexMDMModel(config)

    def process(self, schedules, vocab):
        return FlexInterpolant(schedules["insertion"], schedules["unmasking"], vocab)

    def generate(self, model, *, schedules, vocab, max_length, conditioning, options, generator, device="cpu"):
        limit = conditioning.length_limit(max_length)
        return sample_flexmdm(
            model, self.process(schedules, vocab), steps=options.steps,
            max_length=limit.to(device) if isinstance(limit, Tensor) else limit,
            prompt=conditioning.flexmdm_prompt().to(device), rule=options.rule,
            insertion=options.insertion, temperature=options.temperature, final_fill=options.fill,
            generator=generator, early_exit=options.early_exit, record_trace=options.trace,
        )

    def read(self, conditioning, sequences):
        return conditioning.read_flexmdm(sequences)

    def objective(self, schedules, vocab, max_length, *, packed=False, gap_weight=1.0):
        return FlexMDMObjective(self.process(schedules, vocab), packed=packed, gap_weight=gap_weight)


class MDMFamily(Family):
    """Fill the conditioning's canvas (:func:`~flexmdm.sampling.sample_mdm`); ``max_length`` is unused: the
    canvas has its width (:class:`Affixes`: prefix, MASKs, suffix, then PAD up to ``width``)."""

    kind = "mdm"
    label = "MDM"

    def network(self, config):
        from flexmdm.models.dit import MDMModel  # the models import this module

        return MDMModel(config)

    def process(self, schedules, vocab):
        return MDMInterpolant(schedules["unmasking"], vocab)

    def check(self, options):
        if options.insertion is not None or options.trace:
            raise ValueError("insertion options and traces are for FlexMDM models")
        if options.final_fill == "rule":
            raise ValueError("final_fill 'rule' is for FlexMDM models (an MDM applies a rate-free rule until no "
                             "mask is left, within its steps)")

    def generate(self, model, *, schedules, vocab, max_length, conditioning, options, generator, device="cpu"):
        self.check(options)
        canvas, frozen = conditioning.mdm_canvas()
        return sample_mdm(
            model, self.process(schedules, vocab), steps=options.steps,
            canvas=canvas.to(device), frozen=frozen.to(device), rule=options.rule, temperature=options.temperature,
            final_fill=options.final_fill or "sequential", generator=generator, early_exit=options.early_exit,
        )

    def read(self, conditioning, sequences):
        return conditioning.read_mdm(sequences)

    def objective(self, schedules, vocab, max_length, *, packed=False, gap_weight=1.0):
        return MDMObjective(self.process(schedules, vocab), max_length, packed=packed)


class AutoregressiveFamily(Family):
    """A left-to-right language model: it scores text (``log_likelihood``) and does not generate here."""

    kind = "autoregressive"
    label = "autoregressive"
    generates = False

    def network(self, config):
        from flexmdm.models.autoregressive import AutoregressiveLM  # the models import this module

        return AutoregressiveLM(config)

    def process(self, schedules, vocab):
        raise ValueError("autoregressive models have no masking process; they score text left to right")

    def generate(self, model, *, schedules, vocab, max_length, conditioning, options, generator, device="cpu"):
        raise ValueError("autoregressive models score text here; generate with a FlexMDM or an MDM")

    def read(self, conditioning, sequences):
        return sequences

    def objective(self, schedules, vocab, max_length, *, packed=False, gap_weight=1.0):
        return AutoregressiveObjective(vocab, packed=packed)


FAMILIES: dict[str, Family] = {f.kind: f for f in (FlexMDMFamily(), MDMFamily(), AutoregressiveFamily())}
"""Every family by the ``kind`` its models are saved with."""


LAYOUTS: tuple[str, ...] = tuple(kind for kind, f in FAMILIES.items() if f.generates)
"""The layouts a task can lay its sequences out in: one per generating family, named by its kind."""


def family(kind: str) -> Family:
    """The family of models saved with ``kind``."""
    try:
        return FAMILIES[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {sorted(FAMILIES)}") from None


def layout_family(layout: str) -> Family:
    """The generating family whose layout a task's ``layout`` option names.

    Raises:
        ValueError: ``layout`` is not one of :data:`LAYOUTS`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be {' or '.join(map(repr, LAYOUTS))}, got {layout!r}")
    return FAMILIES[layout]
