"""Train one tiny configuration under each value of a ``train`` switch, for runs that must agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flexmdm.training import load_config, read_metrics, train
from flexmdm.training.checkpoint import latest_checkpoint, load_trainer_state


def train_each_way(tmp_path: Path, raw: dict[str, Any], switch: str) -> tuple[dict, dict]:
    """``({value: metrics rows}, {value: final model state dict})`` for ``train.<switch>`` off, then on."""
    metrics, weights = {}, {}
    for value in (False, True):
        run = tmp_path / f"{switch}-{value}"
        path = tmp_path / f"{switch}-{value}.yaml"
        path.write_text(yaml.safe_dump({**raw, "output_dir": str(run)}))
        train(load_config(path, [f"train.{switch}={str(value).lower()}"]))
        metrics[value] = read_metrics(run)
        weights[value] = load_trainer_state(latest_checkpoint(run))["model"]
    return metrics, weights
