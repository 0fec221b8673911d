"""The rows of ``flexmdm bench infill``: one model's middles scored, and the headline split by span kind.

A row holds the model's ``setting``, the metrics of :func:`~flexmdm.tasks.infill.evaluation.score_middles`,
``mean_nfe`` and ``exact_plus_parse`` (exact match + parse rate: the bench's tuning score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flexmdm.tasks.infill import InfillExample, InfillTask
from flexmdm.tasks.infill.evaluation import score_middles

__all__ = ["METRICS", "SETTINGS", "scores", "span_rows"]

SETTINGS = {"flexmdm": "flexible", "mdm": "fixed_budget"}
"""Each model and the setting it is trained and asked in."""

METRICS = ("exact_match", "parse_rate", "length_abs_error", "mean_nfe", "n")
"""The fields of a row summarised over seeds."""

Middles = tuple[list[list[int]], np.ndarray]
"""Generated middles (token ids) and the network calls of each ``[N]``."""


def scores(model: str, task: InfillTask, examples: Sequence[InfillExample], generated: Middles) -> dict[str, Any]:
    """The row of ``model``'s middles of ``examples`` (see the module docstring)."""
    middles, calls = generated
    row = {"setting": SETTINGS[model], **score_middles(list(examples), middles, task), "mean_nfe": float(calls.mean())}
    return {**row, "exact_plus_parse": row["exact_match"] + row["parse_rate"]}


def span_rows(task: InfillTask, examples: list[InfillExample], seeds: Sequence[int],
              generate: Callable[[int, str], Middles], every: int = 25
              ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, str]]]]:
    """Rows by seed, model and span kind (in first-seen order) of the middles ``generate(seed, model)``
    gave for ``examples``, and, by model, every ``every``-th example of the first seed with its middle."""
    rows, samples, spans = [], {}, {}
    for i, example in enumerate(examples):
        spans.setdefault(example.kind, []).append(i)
    for seed in seeds:
        for model in SETTINGS:
            middles, calls = generate(seed, model)
            for span, index in spans.items():
                rows.append({"seed": seed, "model": model, "span": span, **scores(
                    model, task, [examples[i] for i in index], ([middles[i] for i in index], calls[index]))})
            if seed == seeds[0]:
                samples[model] = [{"function": e.name, "kind": e.kind, "reference": e.middle_text,
                                   "generated": task.decode(m)} for e, m in zip(examples[::every], middles[::every])]
    return rows, samples
