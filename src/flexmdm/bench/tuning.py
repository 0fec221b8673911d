"""Equal tuning for every model of a benchmark: the same number of sampler trials each, chosen on
the validation split alone.

A trial is a :class:`DecoderTrial` (the knobs that apply to the model: unmasking rule, sampling
steps and, for FlexMDM, the insertion sampler). :func:`tune` scores every trial of every model
through a ``score(model, trial, split)`` callback that it calls with ``"validation"`` only, and keeps
the trial with the highest ``metric`` (ties: the lower ``cost``, then the first listed). A bench then
reports the chosen trials on its test split, which no choice has seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flexmdm.families import SamplingOptions
from flexmdm.sampling import Adaptive, ConfidenceThreshold, Insertion

__all__ = ["ONE_PER_CALL", "DecoderTrial", "standard_trials", "tune"]

ONE_PER_CALL = "one_per_call"
"""The rule of a trial that reveals the most probable mask at each network call."""


@dataclass(frozen=True)
class DecoderTrial:
    """One sampler setting to try.

    Attributes:
        rule: ``"one_per_call"`` (the most probable mask revealed at each network call, at most
            ``steps`` calls) or a score of :class:`~flexmdm.sampling.Adaptive` (``"top_probability"``,
            ``"margin"``, …) revealing on a grid of ``steps`` intervals.
        steps: sampling steps.
        insertion: FlexMDM's insertion sampler, ``"exact"`` or ``"poisson"`` (Algorithm 1); None for
            a model that does not insert.
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
        return SamplingOptions(steps=self.steps, rule=ConfidenceThreshold(1.0) if one else Adaptive(self.rule),
                               temperature=temperature, final_fill=fill,
                               insertion=Insertion(self.insertion) if inserts else None, trace=trace and inserts)


def standard_trials(steps: int) -> dict[str, list[DecoderTrial]]:
    """Three trials each for a FlexMDM and an MDM at ``steps``: one reveal per call or an adaptive grid
    (top probability, margin); the FlexMDM's one-per-call inserts exactly, its grids follow Algorithm 1."""
    return {"flexmdm": [DecoderTrial(ONE_PER_CALL, steps, "exact"), DecoderTrial("top_probability", steps, "poisson"),
                        DecoderTrial("margin", steps, "poisson")],
            "mdm": [DecoderTrial(ONE_PER_CALL, steps), DecoderTrial("top_probability", steps),
                    DecoderTrial("margin", steps)]}


def tune(trials: dict[str, list[DecoderTrial]], score: Callable[[str, DecoderTrial, str], dict[str, float]],
         metric: str, cost: str) -> dict[str, Any]:
    """Choose each model's trial on the validation split.

    Args:
        trials: by model, its trials; every model gets the same number.
        score: ``score(model, trial, split)`` -> metrics including ``metric`` and ``cost``; called with
            ``split="validation"`` only.
        metric: higher is better.
        cost: breaks ties, lower is better.

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
        best = min(range(len(options)), key=lambda i: (-scored[model][i][metric], scored[model][i][cost], i))
        choice[model] = asdict(options[best])
    return {"split": "validation", "criterion": f"highest validation {metric}; ties: lower {cost}, then first listed",
            "trials": scored, "choice": choice}
