"""Several training seeds per benchmark: the models trained side by side once per seed, and rows
summarised over seeds as mean ± standard error.

A bench's data (its maze, problems, corpus) stays fixed by the bench's ``--seed``; only the
training seed (``train.seed``: initialisation, batch order) varies, which also stands in for the
spread a user sees across machines (floating-point kernels differ between CPUs).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.training.trainer import TrainResult

__all__ = ["mean_stderr", "plus_minus", "seed_summary", "train_seeds"]


def train_seeds(seeds: Sequence[int], configs: Callable[[int], dict[str, dict[str, Any]]]
                ) -> tuple[dict[int, dict[str, TrainResult]], int]:
    """Train ``configs(seed)`` (``config_from_dict`` mappings by model) side by side, once per seed.

    Returns:
        the runs by seed then model, and the CPU threads each run used.
    """
    runs, threads = {}, 1
    for number, seed in enumerate(seeds, 1):
        print(f"training seed {seed} ({number} of {len(seeds)})", flush=True)
        runs[seed], threads = train_side_by_side(configs(seed))
    return runs, threads


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error (sample standard deviation / √n) of the finite ``values``; the error is
    None for fewer than two, the mean NaN for none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, None
    error = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else None
    return statistics.fmean(finite), error


def seed_summary(rows: list[dict[str, Any]], by: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per-seed rows (each with a ``seed``) grouped by the values of ``by``, in first-seen order.

    Returns:
        one row per group: the ``by`` fields, for each metric its mean over the group's rows
        (``metric``) and standard error (``metric_stderr``, see :func:`mean_stderr`), and ``seeds``
        (the seeds it covers).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in by), []).append(row)
    summary = []
    for key, members in groups.items():
        entry: dict[str, Any] = dict(zip(by, key))
        for metric in metrics:
            entry[metric], entry[f"{metric}_stderr"] = mean_stderr([row[metric] for row in members])
        summary.append({**entry, "seeds": [row["seed"] for row in members]})
    return summary


def plus_minus(metric: str, digits: int = 3) -> Callable[[dict[str, Any]], str]:
    """A table cell of a summary row: ``"mean ± stderr"`` of ``metric`` (the mean alone without an error)."""
    def cell(row: dict[str, Any]) -> str:
        error = row[f"{metric}_stderr"]
        return f"{row[metric]:.{digits}f}" + ("" if error is None else f" ± {error:.{digits}f}")

    return cell
