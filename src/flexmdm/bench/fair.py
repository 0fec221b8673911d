"""A benchmark's fair comparison: equal budgets, equal tuning, several training seeds, a test split.

Given each seed's trained models, :func:`fair_comparison`

1. picks every model's checkpoint at equal optimizer steps and at equal training CPU time and,
   for a bench whose models each train to their plateau, at each model's last checkpoint
   (:func:`~flexmdm.bench.budgets.budget_checkpoints`), scoring no other checkpoint;
2. tunes the sampler: every model's trials (:mod:`flexmdm.bench.tuning`, the same number each) are
   scored on the validation split at the headline budget (equal steps), averaged over seeds and
   result rows (finite values only), and the best is chosen (:func:`~flexmdm.bench.tuning.tune`);
3. evaluates the chosen trials on the test split at every budget for every seed, and summarises the
   rows over seeds as mean ± standard error (:func:`~flexmdm.bench.seeds.seed_summary`);
4. at the plateau, says how much the last checkpoint gained over the one saved before it, on the
   validation split (a large gain says the model was still improving when it stopped).

The bench supplies ``evaluate(model, checkpoint, trial, split, seed) -> rows`` (e.g. one row per K),
and gets back the record fields the fair rules ask for.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flexmdm.bench.budgets import Checkpoint, budget_checkpoints
from flexmdm.bench.seeds import mean_stderr, seed_summary
from flexmdm.bench.tuning import DecoderTrial, Guard, tune

__all__ = ["BUDGETS", "HEADLINE", "PLATEAU", "budget_points", "fair_comparison"]

HEADLINE = "equal_steps"
BUDGETS = ("equal_steps", "equal_cpu")
PLATEAU = "plateau"

Evaluate = Callable[[str, Checkpoint, DecoderTrial, str, int], list[dict[str, Any]]]
"""``evaluate(model, checkpoint, trial, split, seed)`` -> result rows of that model's checkpoint decoded with ``trial``."""


def budget_points(output_dirs: dict[int, dict[str, str | Path]], *, plateau: bool = False
                  ) -> dict[int, dict[str, dict[str, Checkpoint]]]:
    """By seed, each model's checkpoint at each budget (``plateau``: also its last), from the training
    runs' folders (by seed, then model)."""
    return {seed: budget_checkpoints(runs, plateau=plateau) for seed, runs in output_dirs.items()}


def fair_comparison(points: dict[int, dict[str, dict[str, Checkpoint]]], trials: dict[str, list[DecoderTrial]],
                    evaluate: Evaluate, *, metric: str, cost: str, by: Sequence[str], metrics: Sequence[str],
                    lower_is_better: bool = False, guard: Guard | None = None) -> dict[str, Any]:
    """Tune on validation, report on test, over seeds and budgets (see the module docstring).

    Args:
        points: :func:`budget_points`; with its plateau points the test rows cover that budget too.
        trials: by model, its sampler trials (the same number each).
        evaluate: the bench's evaluation; each row holds ``metric``, ``cost``, ``by`` and ``metrics``.
        metric: the tuning score (higher is better, or lower with ``lower_is_better``), averaged
            over seeds and rows.
        cost: the tie-break (lower is better), averaged alike.
        by: the fields that tell a model's rows apart (e.g. ``("K",)``).
        metrics: the fields summarised over seeds.
        lower_is_better: see ``metric``.
        guard: the trials eligible for the choice (:data:`~flexmdm.bench.tuning.Guard`), its metric
            averaged alike (None when no row has a finite value).

    Returns:
        the record fields ``seeds``, ``split`` ("test"), ``headline_budget``, ``tuning`` (see
        :func:`~flexmdm.bench.tuning.tune`, plus the budget and seeds it was scored at), ``per_seed``
        (test rows with ``seed``, ``budget``, ``model``, the checkpoint's ``step`` and ``train_seconds``),
        ``budgets`` (their summary over seeds, every budget), ``results`` (the headline budget's) and,
        with plateau points, ``plateau_gain``: by seed and model, the validation ``metric`` of the
        last and the previous checkpoint with the chosen trial, and their difference ``gain``.
    """
    evaluate = _announced(evaluate)
    seeds = list(points)
    budgets = [budget for budget in (*BUDGETS, PLATEAU) if budget in points[seeds[0]]]

    def score(model: str, trial: DecoderTrial, split: str) -> dict[str, float]:
        rows = [row for seed in seeds for row in evaluate(model, points[seed][HEADLINE][model], trial, split, seed)]
        keys = (metric, cost) if guard is None else (metric, cost, guard[0])
        means = {key: mean_stderr([row[key] for row in rows])[0] for key in keys}
        return {key: None if math.isnan(mean) else mean for key, mean in means.items()}

    tuning = tune(trials, score, metric, cost, lower_is_better=lower_is_better, guard=guard)
    chosen = {model: DecoderTrial(**choice) for model, choice in tuning["choice"].items()}
    per_seed = []
    for seed in seeds:
        for budget in budgets:
            for model in trials:
                point = points[seed][budget][model]
                per_seed += [{"seed": seed, "budget": budget, "model": model, "step": point.step,
                              "train_seconds": point.train_seconds, **row}
                             for row in evaluate(model, point, chosen[model], "test", seed)]
    summary = seed_summary(per_seed, ("budget", "model", *by), (*metrics, "step", "train_seconds"))
    record = {"seeds": seeds, "split": "test", "headline_budget": HEADLINE,
              "tuning": {**tuning, "budget": HEADLINE, "seeds": seeds},
              "results": [row for row in summary if row["budget"] == HEADLINE], "budgets": summary,
              "per_seed": per_seed}
    if PLATEAU in budgets:
        record["plateau_gain"] = _plateau_gain(points, chosen, evaluate, metric)
    return record


def _announced(evaluate: Evaluate) -> Evaluate:
    """``evaluate`` that first prints one progress line per call (scoring takes minutes to an hour)."""
    def announced(model: str, point: Checkpoint, trial: DecoderTrial, split: str, seed: int) -> list[dict[str, Any]]:
        print(f"scoring {model} (seed {seed}, step {point.step}) on {split}: {trial.rule}, {trial.steps} steps",
              flush=True)
        return evaluate(model, point, trial, split, seed)
    return announced


def _plateau_gain(points: dict[int, dict[str, dict[str, Checkpoint]]], chosen: dict[str, DecoderTrial],
                  evaluate: Evaluate, metric: str) -> list[dict[str, Any]]:
    """By seed and model: the mean validation ``metric`` of the plateau checkpoint and of the one before
    it, decoded with the chosen trial, and the ``gain`` between them (None without a previous one)."""
    def mean(model: str, point: Checkpoint | None, seed: int) -> float | None:
        if point is None:
            return None
        return statistics.fmean(row[metric] for row in evaluate(model, point, chosen[model], "validation", seed))

    rows = []
    for seed, budgets in points.items():
        for model, last in budgets[PLATEAU].items():
            value, previous = mean(model, last, seed), mean(model, last.previous, seed)
            rows.append({"seed": seed, "model": model, "step": last.step,
                         "previous_step": None if last.previous is None else last.previous.step,
                         f"validation_{metric}": value, f"previous_validation_{metric}": previous,
                         "gain": None if previous is None else value - previous})
    return rows
