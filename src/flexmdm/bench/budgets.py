"""Comparing models at equal budgets, from the checkpoints a training run saved along the way.

A bench trains each model to its own number of steps, saving a checkpoint every few steps, and
scores every checkpoint (a learning curve). From the curves, :func:`budget_rows` reads each
model's score at three budgets:

* ``equal_steps`` — the last checkpoint at or before the largest step count every model reached;
* ``equal_cpu`` — the last checkpoint whose training seconds are at most the smallest total
  training time among the models;
* ``plateau`` — each model's last checkpoint, with its gain over the previous one (a large gain
  says the model was still improving when it stopped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from flexmdm.pipeline import Pipeline
from flexmdm.training.checkpoint import checkpoint_dir, load_trainer_state

__all__ = ["Checkpoint", "budget_rows", "learning_curve", "saved_checkpoints"]

BUDGETS = ("equal_steps", "equal_cpu", "plateau")


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its optimizer step, the training seconds spent to reach it, its model."""

    step: int
    train_seconds: float
    model_dir: Path


def saved_checkpoints(output_dir: str | Path) -> list[Checkpoint]:
    """Every checkpoint of a training run in ``output_dir``, by step (``keep_last`` decides which remain)."""
    found = []
    for path in sorted(checkpoint_dir(output_dir).glob("step_*")):
        state = load_trainer_state(path)
        found.append(Checkpoint(int(state["step"]), float(state["train_seconds"]), path / "model"))
    if not found:
        raise FileNotFoundError(f"{output_dir}: no checkpoints (set train.save_every)")
    return sorted(found, key=lambda c: c.step)


def learning_curve(output_dir: str | Path, score: Callable[[Pipeline], dict[str, Any]], *,
                   label: str = "") -> list[dict[str, Any]]:
    """``{"step", "train_seconds", **score(pipeline)}`` for every checkpoint of the run in ``output_dir``."""
    return [{"step": c.step, "train_seconds": c.train_seconds, **score(Pipeline.from_pretrained(c.model_dir))}
            for c in tqdm(saved_checkpoints(output_dir), desc=f"curve {label}".strip())]


def _last_within(curve: list[dict[str, Any]], key: str, limit: float) -> dict[str, Any]:
    within = [point for point in curve if point[key] <= limit + 1e-9]
    return within[-1] if within else curve[0]


def budget_rows(curves: dict[str, list[dict[str, Any]]], metric: str) -> list[dict[str, Any]]:
    """Each model's curve point at every budget.

    Args:
        curves: by model, its points sorted by step, each with ``step``, ``train_seconds`` and
            ``metric`` (and any other fields, copied).
        metric: the score whose gain over the previous checkpoint the plateau rows report.

    Returns:
        rows ``{"budget", "model", **point}``; plateau rows add ``gain_over_previous``.
    """
    common_steps = min(curve[-1]["step"] for curve in curves.values())
    common_seconds = min(curve[-1]["train_seconds"] for curve in curves.values())
    rows = []
    for name, curve in curves.items():
        rows.append({"budget": "equal_steps", "model": name, **_last_within(curve, "step", common_steps)})
        rows.append({"budget": "equal_cpu", "model": name, **_last_within(curve, "train_seconds", common_seconds)})
        gain = curve[-1][metric] - curve[-2][metric] if len(curve) > 1 else None
        rows.append({"budget": "plateau", "model": name, "gain_over_previous": gain, **curve[-1]})
    return rows
