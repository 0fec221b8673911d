"""Comparing models at equal budgets, from the checkpoints a training run saved along the way.

A bench trains each model to its own number of steps, saving a checkpoint every few steps, and
scores every checkpoint (a learning curve). From the curves, :func:`budget_rows` reads each
model's score at three budgets:

* ``equal_steps`` — the last checkpoint at or before the largest step count every model reached;
* ``equal_cpu`` — the last checkpoint whose training seconds are at most the smallest total
  training time among the models;
* ``plateau`` — each model's last checkpoint, with its gain over the previous one (a large gain
  says the model was still improving when it stopped; :func:`budget_checkpoints` skips, as the
  previous one, a checkpoint written when training was interrupted).

When only the budgets are reported, :func:`budget_checkpoints` picks their checkpoints from the
saved ones before any is scored, so only those are evaluated (the plateau's with the checkpoint
before it, to measure the gain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from tqdm import tqdm

from flexmdm.pipeline import Pipeline
from flexmdm.training.checkpoint import checkpoint_dir, load_trainer_state

__all__ = ["Checkpoint", "budget_checkpoints", "budget_rows", "learning_curve", "saved_checkpoints"]

BUDGETS = ("equal_steps", "equal_cpu", "plateau")
Point = TypeVar("Point")


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its optimizer step, the training seconds spent to reach it, its model,
    whether it is one of the run's every-``save_every``-steps checkpoints (``scheduled``; one written
    when training was interrupted is not); for a plateau point, ``previous`` is the scheduled
    checkpoint saved before it (None if there is none)."""

    step: int
    train_seconds: float
    model_dir: Path
    scheduled: bool = True
    previous: Checkpoint | None = None


def saved_checkpoints(output_dir: str | Path) -> list[Checkpoint]:
    """Every checkpoint of a training run in ``output_dir``, by step (``keep_last`` decides which remain)."""
    found = []
    for path in sorted(checkpoint_dir(output_dir).glob("step_*")):
        state = load_trainer_state(path)
        step, every = int(state["step"]), state.get("config", {}).get("train", {}).get("save_every")
        found.append(Checkpoint(step, float(state["train_seconds"]), path / "model",
                                scheduled=not every or step % every == 0))
    if not found:
        raise FileNotFoundError(f"{output_dir}: no checkpoints (set train.save_every)")
    return sorted(found, key=lambda c: c.step)


def learning_curve(output_dir: str | Path, score: Callable[[Pipeline], dict[str, Any]], *,
                   label: str = "") -> list[dict[str, Any]]:
    """``{"step", "train_seconds", **score(pipeline)}`` for every checkpoint of the run in ``output_dir``."""
    return [{"step": c.step, "train_seconds": c.train_seconds, **score(Pipeline.from_pretrained(c.model_dir))}
            for c in tqdm(saved_checkpoints(output_dir), desc=f"curve {label}".strip())]


def _last_within(curve: list[Point], key: Callable[[Point], float], limit: float) -> Point:
    within = [point for point in curve if key(point) <= limit + 1e-9]
    return within[-1] if within else curve[0]


def _equal_budgets(curves: dict[str, list[Point]], step: Callable[[Point], int],
                   seconds: Callable[[Point], float]) -> dict[str, dict[str, Point]]:
    """``{"equal_steps": {model: point}, "equal_cpu": {model: point}}`` from curves sorted by step."""
    common_steps = min(step(curve[-1]) for curve in curves.values())
    common_seconds = min(seconds(curve[-1]) for curve in curves.values())
    return {"equal_steps": {name: _last_within(curve, step, common_steps) for name, curve in curves.items()},
            "equal_cpu": {name: _last_within(curve, seconds, common_seconds) for name, curve in curves.items()}}


def budget_checkpoints(output_dirs: dict[str, str | Path], *, plateau: bool = False
                       ) -> dict[str, dict[str, Checkpoint]]:
    """Each model's checkpoint at ``equal_steps`` and ``equal_cpu`` and, with ``plateau``, its last one
    (with ``previous`` set; see the module docstring), from the checkpoints its training run in
    ``output_dirs[model]`` saved: ``{budget: {model: checkpoint}}``."""
    saved = {name: saved_checkpoints(path) for name, path in output_dirs.items()}
    points = _equal_budgets(saved, attrgetter("step"), attrgetter("train_seconds"))
    if plateau:
        points["plateau"] = {name: replace(run[-1], previous=_last_scheduled(run[:-1])) for name, run in saved.items()}
    return points


def _last_scheduled(run: list[Checkpoint]) -> Checkpoint | None:
    return next((point for point in reversed(run) if point.scheduled), None)


def budget_rows(curves: dict[str, list[dict[str, Any]]], metric: str) -> list[dict[str, Any]]:
    """Each model's curve point at every budget.

    Args:
        curves: by model, its points sorted by step, each with ``step``, ``train_seconds`` and
            ``metric`` (and any other fields, copied).
        metric: the score whose gain over the previous checkpoint the plateau rows report.

    Returns:
        rows ``{"budget", "model", **point}``; plateau rows add ``gain_over_previous``.
    """
    equal = _equal_budgets(curves, itemgetter("step"), itemgetter("train_seconds"))
    rows = []
    for name, curve in curves.items():
        rows += [{"budget": budget, "model": name, **equal[budget][name]} for budget in ("equal_steps", "equal_cpu")]
        gain = curve[-1][metric] - curve[-2][metric] if len(curve) > 1 else None
        rows.append({"budget": "plateau", "model": name, "gain_over_previous": gain, **curve[-1]})
    return rows
