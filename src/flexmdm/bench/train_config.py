"""The training configuration of one benchmark model: FlexMDM's own settings applied to it alone
(:func:`benchmark_train_config`), or each model's own recipe (:class:`Arm`, :func:`arm_config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexmdm.families import family
from flexmdm.sampling import Insertion

__all__ = ["Arm", "arm_config", "benchmark_train_config"]


@dataclass
class Arm:
    """How one model of a benchmark is trained and decoded.

    Attributes:
        steps: optimizer steps; a checkpoint every ``save_every`` steps (all kept) makes its
            learning curve (:mod:`flexmdm.bench.budgets`).
        model: model options added to the shared backbone.
        schedules: the ``schedules`` config section (None: the defaults).
        decode_steps: the sampler's ``steps`` (None: the bench's default for this model).
        insertion: FlexMDM arrivals (None: the sampler's default, or none for an MDM).
    """

    steps: int
    save_every: int
    model: dict[str, Any] = field(default_factory=dict)
    schedules: dict[str, Any] | None = None
    decode_steps: int | None = None
    insertion: Insertion | None = None


def arm_config(kind: str, arm: Arm, *, backbone: dict[str, Any], max_length: int, data: dict[str, Any],
               train: dict[str, Any], seed: int, output_dir: Path) -> dict[str, Any]:
    """A ``config_from_dict`` mapping for a ``kind`` model trained as ``arm`` says."""
    config = {
        "model": {"kind": kind, **backbone, **arm.model, "max_length": max_length},
        "data": data,
        "train": {**train, "steps": arm.steps, "save_every": arm.save_every,
                  "keep_last": arm.steps // arm.save_every + 1, "seed": seed},
        "output_dir": str(output_dir),
    }
    if arm.schedules is not None:
        config["schedules"] = arm.schedules
    return config


def benchmark_train_config(kind: str, *, model: dict[str, Any], max_length: int, data: dict[str, Any],
                           train: dict[str, Any], steps: int, seed: int, output_dir: Path,
                           flexmdm_insertion_schedule: dict[str, Any],
                           flexmdm_length_buckets: int,
                           flexmdm_model: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``config_from_dict`` mapping for a ``kind`` model of a benchmark.

    Every model shares ``model``, ``data`` and ``train``; only FlexMDM gets the insertion schedule,
    ``train.length_buckets`` and the model options ``flexmdm_model`` (the other kinds keep their
    defaults).
    """
    config = {
        "model": {"kind": kind, **model, "max_length": max_length},
        "data": data,
        "train": {**train, "steps": steps, "seed": seed},
        "output_dir": str(output_dir),
    }
    if family(kind).inserts:
        config["model"].update(flexmdm_model or {})
        config["schedules"] = {"insertion": flexmdm_insertion_schedule}
        config["train"]["length_buckets"] = flexmdm_length_buckets
    return config
