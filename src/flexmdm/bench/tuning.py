"""Equal tuning for every model of a benchmark: the same number of sampler trials each, chosen on
the validation split alone.

A trial is a :class:`DecoderTrial` (the knobs that apply to the model: unmasking rule, sampling
steps and, for FlexMDM, the insertion sampler). :func:`tune` scores every trial of every model
through a ``score(model, trial, split)`` callback that it calls with ``"validation"`` only, and keeps
the trial with the best ``metric`` (the highest, or the lowest with ``lower_is_better``; ties: the
lower ``cost``, then the first listed), optionally among the trials whose ``guard`` metric (lower is
better, e.g. a perplexity) is within a tolerance of the model's best. A bench then reports the
chosen trials on its test split, which no choice has seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flexmdm.families import SamplingOptions
from flexmdm.sampling import Adaptive, ConfidenceThreshold, Insertion, TauLeaping

__all__ = ["ONE_PER_CALL", "TAU_LEAPING", "DecoderTrial", "Guard", "standard_trials", "tune"]

ONE_PER_CALL = "one_per_call"
"""The rule of a trial that reveals the most probable mask at each network call."""
TAU_LEAPING = "tau_leaping"
"""The rule of a trial that follows Algorithm 1's vanilla τ-leaping unmasking."""


@dataclass(frozen=True)
class DecoderTrial:
    """One sampler setting to try.

    Attributes:
        rule: ``"one_per_call"`` (the most probable mask revealed at each network call, at most
            ``steps`` calls), ``"tau_leaping"`` (:class:`~flexmdm.sampling.TauLeaping`) or a score of
            :class:`~flexmdm.sampling.Adaptive` (``"top_probability"``, ``"margin"``, …), both
            revealing on a grid of ``steps`` intervals.
        steps: sampling steps.
        insertion: FlexMDM's insertion arrivals (:class:`~flexmdm.sampling.Insertion`): ``"exact"``,
            ``"poisson"`` (Algorithm 1) or ``"binomial"``; None for a model that does not insert.
    """

    rule: str
    steps: int
    insertion: str | None = None

    def options(self, inserts: bool, temperature: float, trace: bool = False) -> SamplingOptions:
        """The sampling options of this trial for a model that inserts (``inserts``) or not.

        Raises:
            ValueError: ``insertion`` is given for a model that does not insert, or missing for one that does.
        """
        if inserts != (self.insertion is not None):
            raise ValueError(f"trial {self}: insertion must be set exactly for a model that inserts")
        one = self.rule == ONE_PER_CALL
        fill = ("rule" if inserts else None) if one else "parallel"  # an MDM's rate-free rule needs no fill
        rule = ConfidenceThreshold(1.0) if one else TauLeaping() if self.rule == TAU_LEAPING else Adaptive(self.rule)
        return SamplingOptions(steps=self.steps, rule=rule,
                               temperature=temperature, final_fill=fill,
                               insertion=Insertion(self.insertion) if inserts else None, trace=trace and inserts)


def standard_trials(steps: int, grid_insertion: str = "poisson") -> dict[str, list[DecoderTrial]]:
    """Three trials each for a FlexMDM and an MDM at ``steps``: one reveal per call or an adaptive grid
    (top probability, margin); the FlexMDM's one-per-call inserts exactly, its grids with
    ``grid_insertion``: "poisson" (Algorithm 1) or "binomial" (each interval's exact arrival probability)."""
    return {"flexmdm": [DecoderTrial(ONE_PER_CALL, steps, "exact"), DecoderTrial("top_probability", steps, grid_insertion),
                        DecoderTrial("margin", steps, grid_insertion)],
            "mdm": [DecoderTrial(ONE_PER_CALL, steps), DecoderTrial("top_probability", steps),
                    DecoderTrial("margin", steps)]}


Guard = tuple[str, float]
"""``(metric, tolerance)``: only trials whose ``metric`` (lower is better; None: no value) is at most
``1 + tolerance`` times the model's lowest are eligible (all of them when no trial has a value)."""


def _eligible(scored: list[dict[str, Any]], guard: Guard | None) -> list[int]:
    """The indices of the trials the guard admits, in order (a trial without a guard value is not admitted)."""
    if guard is None:
        return list(range(len(scored)))
    key, tolerance = guard
    values = [row[key] for row in scored if row[key] is not None]
    if not values:
        return list(range(len(scored)))
    return [i for i, row in enumerate(scored) if row[key] is not None and row[key] <= (1 + tolerance) * min(values)]


def tune(trials: dict[str, list[DecoderTrial]], score: Callable[[str, DecoderTrial, str], dict[str, float]],
         metric: str, cost: str, *, lower_is_better: bool = False, guard: Guard | None = None) -> dict[str, Any]:
    """Choose each model's trial on the validation split.

    Args:
        trials: by model, its trials; every model gets the same number.
        score: ``score(model, trial, split)`` -> metrics including ``metric``, ``cost`` and the guard's
            metric; called with ``split="validation"`` only.
        metric: higher is better, or lower with ``lower_is_better``.
        cost: breaks ties, lower is better.
        guard: restricts the choice to the trials it admits (see :data:`Guard`).

    Returns:
        the record's ``tuning``: ``split`` ("validation"), ``criterion``, ``trials`` (by model, each
        trial's knobs and validation metrics) and ``choice`` (by model, the chosen trial's knobs).

    Raises:
        ValueError: the models have different numbers of trials (unequal tuning budgets).
    """
    if len({len(options) for options in trials.values()}) > 1:
        raise ValueError(f"every model needs the same number of trials, got "
                         f"{ {model: len(options) for model, options in trials.items()} }")
    scored, choice = {}, {}
    for model, options in trials.items():
        scored[model] = [{**asdict(trial), **score(model, trial, "validation")} for trial in options]
        sign = 1 if lower_is_better else -1
        best = min(_eligible(scored[model], guard),
                   key=lambda i: (sign * scored[model][i][metric], scored[model][i][cost], i))
        choice[model] = asdict(options[best])
    criterion = f"{'lowest' if lower_is_better else 'highest'} validation {metric}"
    if guard is not None:
        criterion += f" among the trials with {guard[0]} within {guard[1]:.0%} of the model's lowest"
    return {"split": "validation", "criterion": f"{criterion}; ties: lower {cost}, then first listed",
            "trials": scored, "choice": choice}
