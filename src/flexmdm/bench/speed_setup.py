"""What the measurements of ``flexmdm bench speed`` share: its configurations, the reference model and
alternating repeats."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from flexmdm.bench.record import spread
from flexmdm.models import ModelConfig
from flexmdm.models.compiled import CompiledNetwork

if TYPE_CHECKING:
    from flexmdm.bench.speed import SpeedSettings

__all__ = ["CONFIGURATIONS", "alternate", "configurations", "model_config", "run_as"]

CONFIGURATIONS = {"padded": (False, False), "packed": (True, False),
                  "padded_compiled": (False, True), "packed_compiled": (True, True)}
"""``(packed, compiled)`` of every configuration: padded batches are cropped to their longest
sequence, packed ones hold none (:mod:`flexmdm.models.packing`); compiled networks run through
``torch.compile`` (:class:`~flexmdm.models.compiled.CompiledNetwork`)."""


def configurations(settings: SpeedSettings) -> dict[str, tuple[bool, bool]]:
    """The configurations ``settings`` measures: every one, or the eager ones without ``compiled``."""
    return {name: how for name, how in CONFIGURATIONS.items() if settings.compiled or not how[1]}


def model_config(settings: SpeedSettings, kind: str) -> ModelConfig:
    """The reference model of ``kind`` (``flexmdm`` or ``mdm``)."""
    return ModelConfig(kind=kind, vocab_size=settings.vocab_size, mask_id=settings.vocab_size - 2,
                       pad_id=settings.vocab_size - 1, d_model=settings.d_model, n_layers=settings.n_layers,
                       n_heads=settings.n_heads, max_length=settings.sequence_length + 1)


def run_as(network: torch.nn.Module, compiled: bool) -> torch.nn.Module:
    """``network`` run eagerly or through ``torch.compile``."""
    return CompiledNetwork(network) if compiled else network


def alternate(repeats: int, measures: dict[str, Callable[[], dict[str, float]]],
              description: str) -> dict[str, dict[str, Any]]:
    """Every measurement ``repeats`` times, alternating them: the median and range of each key.
    A progress bar labelled ``description`` counts the measurements (on stderr)."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in measures}
    with tqdm(total=repeats * len(measures), desc=description, unit="measurement") as bar:
        for _ in range(repeats):
            for name, measure in measures.items():
                bar.set_postfix_str(name)
                samples[name].append(measure())
                bar.update()
    return {name: {key: spread([row[key] for row in rows]) for key in rows[0]} for name, rows in samples.items()}
