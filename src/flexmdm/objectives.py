"""Training objectives: what one model family learns from a task's clean sequences.

An objective turns a :class:`~flexmdm.tasks.base.TrainingBatch` and training times into the
states the network sees (:meth:`states`), splits them into network passes (:meth:`passes`) and
scores a pass (:meth:`loss`, a :class:`~flexmdm.losses.LossOutput` whose ``per_sequence`` sums to
the pass's share of the step's objective). The trainer divides the step's sum by
:meth:`normaliser`, the tokens to generate in the global batch, and reports padding from
:meth:`live` and :meth:`positions`. Each family (:func:`flexmdm.families.family`) builds its own:

- :class:`FlexMDMObjective`: the joint interpolant (insertion and unmasking), states cropped to
  the longest x_t or packed; the FlexMDM loss (token cross-entropy plus the gap-count term).
- :class:`MDMObjective`: a fixed canvas of the task's maximum length with PAD a target; the MDM loss.
- :class:`AutoregressiveObjective`: next-token cross-entropy of clean sequences (the length
  benchmark's reference), the end of each sequence (target PAD) included.

With ``packed`` every network call gets ``packed=True``: the DiT and autoregressive networks run
on the live positions only (:mod:`flexmdm.models.packing`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from flexmdm.interpolant import FlexBatch, FlexInterpolant, MDMBatch, MDMInterpolant
from flexmdm.losses import LossOutput, flexmdm_loss, mdm_loss
from flexmdm.tasks.base import TrainingBatch
from flexmdm.vocab import Vocab

__all__ = ["AutoregressiveObjective", "CausalBatch", "FlexMDMObjective", "MDMObjective", "Objective", "states_to"]


def states_to(states: Any, device: torch.device) -> Any:
    """An objective's states (a dataclass of tensors, drawn on the CPU) on ``device``."""
    if device.type == "cpu":
        return states
    return type(states)(**{f.name: getattr(states, f.name).to(device) for f in dataclasses.fields(states)})


class Objective(Protocol):
    """What the trainer calls; ``States`` is the objective's own batch of network inputs."""

    def normaliser(self, batch: TrainingBatch) -> Tensor | int:
        """Tokens of ``batch`` the model must generate (the loss is per such token)."""

    def states(self, batch: TrainingBatch, t: Tensor, generator: torch.Generator) -> Any:
        """The network inputs at times ``t [B]``, noise drawn from ``generator`` only."""

    def live(self, batch: TrainingBatch, states: Any) -> Tensor:
        """Scalar: positions fed to the network that hold a token."""

    def positions(self, states: Any) -> int:
        """Positions fed to the network."""

    def passes(self, states: Any, buckets: int) -> list[Any]:
        """The sub-batches the network runs on (``TrainConfig.length_buckets``)."""

    def loss(self, model: nn.Module, states: Any) -> LossOutput:
        """The loss of one pass."""


def _options(packed: bool) -> dict[str, Any]:
    return {"packed": True} if packed else {}


class FlexMDMObjective:
    """FlexMDM: states drawn from ``process`` (the joint interpolant), eq. 7 with its insertion part
    weighted by ``gap_weight``, cropped to the longest x_t (or packed)."""

    def __init__(self, process: FlexInterpolant, *, packed: bool = False, gap_weight: float = 1.0):
        self.process, self.gap_weight = process, gap_weight
        self.options = _options(packed)

    def normaliser(self, batch: TrainingBatch) -> Tensor:
        return batch.num_generated

    def states(self, batch: TrainingBatch, t: Tensor, generator: torch.Generator) -> FlexBatch:
        return self.process.sample(
            batch.x1, batch.lengths, t, frozen=batch.frozen, allowed_regions=batch.allowed_regions,
            generator=generator,
        )

    def live(self, batch: TrainingBatch, states: FlexBatch) -> Tensor:
        """Positions fed to the network that hold a token of x_t."""
        return states.lengths.sum()

    def positions(self, states: FlexBatch) -> int:
        """Positions fed to the network (packed: the tokens of x_t only)."""
        return int(states.lengths.sum()) if self.options else states.tokens.numel()

    def passes(self, states: FlexBatch, buckets: int) -> list[FlexBatch]:
        return states.split_by_length(buckets) if buckets > 1 else [states]

    def loss(self, model: nn.Module, states: FlexBatch) -> LossOutput:
        token_logits, expected_gaps, *count = model(states.tokens, states.t, states.lengths, states.frozen,
                                                    **self.options)
        return flexmdm_loss(token_logits, expected_gaps, states, self.process.insertion_schedule,
                            self.process.unmasking_schedule, *count, gap_weight=self.gap_weight)


class MDMObjective:
    """MDM: states drawn from ``process`` on a fixed canvas of ``width`` (the task's maximum
    length), PAD a target, eq. 4."""

    def __init__(self, process: MDMInterpolant, width: int, *, packed: bool = False):
        self.process = process
        self.width, self.pad_id = width, process.vocab.pad_id
        self.options = _options(packed)

    def normaliser(self, batch: TrainingBatch) -> Tensor:
        return batch.x1.shape[0] * self.width - batch.frozen.sum()

    def states(self, batch: TrainingBatch, t: Tensor, generator: torch.Generator) -> MDMBatch:
        canvas, frozen = batch.canvas(self.width, self.pad_id)
        return self.process.sample(canvas, t, frozen=frozen, generator=generator)

    def live(self, batch: TrainingBatch, states: MDMBatch) -> Tensor:
        """Canvas positions that hold a data token (the rest is PAD)."""
        return batch.lengths.sum()

    def positions(self, states: MDMBatch) -> int:
        """The whole canvas, packed or not."""
        return states.tokens.numel()

    def passes(self, states: MDMBatch, buckets: int) -> list[MDMBatch]:
        return [states]

    def loss(self, model: nn.Module, states: MDMBatch) -> LossOutput:
        token_logits = model(states.tokens, states.t, states.lengths, states.frozen, **self.options)
        return mdm_loss(token_logits, states, self.process.unmasking_schedule)


@dataclass
class CausalBatch:
    """Clean sequences for the causal reference LM, cropped to the longest one (no time, no noise).

    Attributes:
        tokens: ``[B, n]``; lengths: ``[B]``; frozen: ``[B, n]`` bool (not scored).
    """

    tokens: Tensor
    lengths: Tensor
    frozen: Tensor


class AutoregressiveObjective:
    """Causal LM: next-token cross-entropy, the end of each sequence (target PAD) included."""

    def __init__(self, vocab: Vocab, *, packed: bool = False):
        self.pad_id = vocab.pad_id
        self.options = _options(packed)

    def normaliser(self, batch: TrainingBatch) -> Tensor:
        return batch.num_generated + batch.x1.shape[0]

    def states(self, batch: TrainingBatch, t: Tensor, generator: torch.Generator) -> CausalBatch:
        width = int(batch.lengths.max()) if len(batch.lengths) else 0
        return CausalBatch(batch.x1[:, :width], batch.lengths, batch.frozen[:, :width])

    def live(self, batch: TrainingBatch, states: CausalBatch) -> Tensor:
        return batch.lengths.sum()

    def positions(self, states: CausalBatch) -> int:
        """Positions fed to the network (packed: the tokens only)."""
        return int(states.lengths.sum()) if self.options else states.tokens.numel()

    def passes(self, states: CausalBatch, buckets: int) -> list[CausalBatch]:
        return [states]

    def loss(self, model: nn.Module, states: CausalBatch) -> LossOutput:
        batch, n = states.tokens.shape
        slots = torch.arange(n + 1, device=states.tokens.device)[None, :]
        targets = torch.cat([states.tokens, states.tokens.new_full((batch, 1), self.pad_id)], dim=1)
        targets = torch.where(slots == states.lengths[:, None], self.pad_id, targets)
        frozen = torch.cat([states.frozen, torch.zeros_like(states.frozen[:, :1])], dim=1)
        scored = (slots <= states.lengths[:, None]) & ~frozen
        nll = torch.nn.functional.cross_entropy(model(states.tokens, states.lengths, **self.options).transpose(1, 2),
                                                targets, reduction="none")
        per_sequence = torch.where(scored, nll, 0.0).sum(dim=1)
        num_tokens = scored.sum()
        token_loss = per_sequence.sum() / num_tokens.clamp(min=1)
        return LossOutput(token_loss, token_loss, torch.zeros_like(token_loss), num_tokens, per_sequence)
