"""Unconditional text from a trained model, as the length and retrofit benchmarks draw it.

Algorithm 1's vanilla τ-leaping unmasking on a grid of ``steps``, masks left at t = 1 filled in
parallel: a FlexMDM grows each sample from nothing, an MDM fills a canvas of ``max_length``
positions and its sample is the canvas with every PAD removed. Score the samples with
:func:`flexmdm.tasks.text.metrics.sample_statistics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from flexmdm.families import SamplingOptions
from flexmdm.sampling import TauLeaping

if TYPE_CHECKING:
    from flexmdm.pipeline import Pipeline

__all__ = ["unconditional_samples"]


def unconditional_samples(pipe: Pipeline, count: int, *, batch_size: int, steps: int, max_length: int,
                          generator: torch.Generator) -> list[list[int]]:
    """``count`` token-id lists, ``batch_size`` at a time, all drawn from ``generator`` in turn."""
    options = SamplingOptions(steps=steps, rule=TauLeaping(), final_fill="parallel")
    return [ids for start in range(0, count, batch_size)
            for ids in pipe.generate(num=min(batch_size, count - start), max_length=max_length, generator=generator,
                                     options=options).ids]
