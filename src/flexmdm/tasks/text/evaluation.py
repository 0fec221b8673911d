"""Unconditional text from a trained model, as the length and retrofit benchmarks draw it.

A FlexMDM grows each sample from nothing, an MDM fills a canvas of ``max_length`` positions and its
sample is the canvas with every PAD removed; both decode with the given
:class:`~flexmdm.families.SamplingOptions`, by default (:func:`tau_leaping`) Algorithm 1's vanilla
τ-leaping unmasking on a grid of ``steps``, masks left at t = 1 filled in parallel. Score the samples
with :func:`flexmdm.tasks.text.metrics.sample_statistics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from flexmdm.families import SamplingOptions
from flexmdm.sampling import TauLeaping

if TYPE_CHECKING:
    from flexmdm.pipeline import Pipeline

__all__ = ["tau_leaping", "unconditional_samples"]


def tau_leaping(steps: int) -> SamplingOptions:
    """Algorithm 1's vanilla τ-leaping unmasking on a grid of ``steps``, the last masks filled in parallel."""
    return SamplingOptions(steps=steps, rule=TauLeaping(), final_fill="parallel")


def unconditional_samples(pipe: Pipeline, count: int, *, options: SamplingOptions, batch_size: int, max_length: int,
                          generator: torch.Generator) -> tuple[list[list[int]], list[int]]:
    """``count`` token-id lists and the network calls each took, ``batch_size`` at a time, all drawn
    from ``generator`` in turn."""
    batches = [pipe.generate(num=min(batch_size, count - start), max_length=max_length, generator=generator,
                             options=options) for start in range(0, count, batch_size)]
    return [ids for batch in batches for ids in batch.ids], [calls for batch in batches for calls in batch.nfe]
