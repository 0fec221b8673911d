"""The training configuration of one benchmark model, FlexMDM's own settings applied to it alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexmdm.families import family

__all__ = ["benchmark_train_config"]


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
