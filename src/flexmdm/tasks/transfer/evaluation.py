"""Scoring a pipeline on the transfer benchmark's evaluation sets (:mod:`flexmdm.tasks.transfer.data`).

Both kinds of model are asked through the same :func:`~flexmdm.tasks.infill.evaluation.fill_middles`:

* math — the question is the prefix, the suffix is empty; the MDM's canvas is the rest of its width
  (its instruction tuning's layout), a FlexMDM grows the answer up to ``max_length``;
* code — prefix and suffix frozen; the MDM gets ``middle_budget`` masks (PAD removed when read), a
  FlexMDM inserts at most ``middle_budget`` tokens between them. HumanEval tasks longer than the
  window keep the end of their prefix and the start of their suffix (:func:`window`); the middle is
  then executed in the whole program (:func:`~flexmdm.tasks.infill.humaneval.evaluate_infills`).

:func:`prompt_use` asks whether a model reads its prompt at all: the loss of the reference answers
on the model's own training states under their own question and under another problem's.

:class:`TransferEvaluation` holds a built dataset's evaluation sets (the held-out infills alternate
between a validation and a test half) and scores a pipeline on them with the sampler it is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from flexmdm.families import SamplingOptions
from flexmdm.losses import sample_times
from flexmdm.objectives import states_to
from flexmdm.tasks.infill.evaluation import fill_middles
from flexmdm.tasks.infill.humaneval import HumanEvalInfill, evaluate_infills, pass_at_1
from flexmdm.tasks.infill.metrics import infill_metrics
from flexmdm.tasks.instruct import affix_batch
from flexmdm.tasks.reasoning.gsm8k import answers_match, extract_answer

if TYPE_CHECKING:
    from flexmdm.pipeline import Pipeline

__all__ = ["TransferEvaluation", "humaneval_scores", "infill_scores", "math_scores", "prompt_use", "window"]


def window(prefix: Sequence[int], suffix: Sequence[int], max_length: int, budget: int) -> tuple[list[int], list[int]]:
    """The end of ``prefix`` and the start of ``suffix`` that leave ``budget`` of ``max_length`` for the middle
    (the suffix keeps at most a quarter of the window)."""
    kept_suffix = list(suffix[:min(len(suffix), max_length // 4)])
    room = max_length - budget - len(kept_suffix)
    return list(prefix[max(0, len(prefix) - room):]), kept_suffix


def _ids(pipe: Pipeline, texts: Sequence[str]) -> list[list[int]]:
    return [pipe.encode(text) if text else [] for text in texts]


def math_scores(pipe: Pipeline, problems: list[dict[str, str]], options: SamplingOptions, *, batch_size: int,
                seed: int) -> dict[str, Any]:
    """``{accuracy, mean_nfe, answered, n}`` of GSM8K-format ``problems`` (answered: a ``####`` line was written)."""
    middles, calls = fill_middles(pipe, _ids(pipe, [p["question"] for p in problems]), [[] for _ in problems],
                                  budget=None, options=options, batch_size=batch_size, seed=seed)
    predicted = [extract_answer(pipe.decode(m)) for m in middles]
    return {"accuracy": float(np.mean([answers_match(a, extract_answer(p["answer"]))
                                       for a, p in zip(predicted, problems)])),
            "mean_nfe": float(calls.mean()), "answered": float(np.mean([a is not None for a in predicted])),
            "n": len(problems)}


def _answer_losses(pipe: Pipeline, questions: list[list[int]], answers: list[list[int]], *, repeats: int,
                   seed: int) -> float:
    """The unmasking loss (nats) of the model's training states of each ``question + answer`` (the question
    frozen, insertions after it), summed over ``repeats`` draws seeded ``seed``, ``seed + 1``, …"""
    objective = pipe.family.objective(pipe.schedules, pipe.vocab, pipe.max_length)
    batch = affix_batch([(q, a, []) for q, a in zip(questions, answers)], pipe.vocab.pad_id, pipe.max_length)
    total = 0.0
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(seed + repeat)
        states = objective.states(batch, sample_times(len(answers), generator=generator), generator)
        with torch.no_grad():
            output = objective.loss(pipe.model, states_to(states, pipe.device))
        total += float(output.token_loss * output.num_tokens)
    return total


def prompt_use(pipe: Pipeline, problems: list[dict[str, str]], *, seed: int, repeats: int = 4) -> dict[str, Any]:
    """Whether a model reads its prompt: ``{own, other, gain, n}``, the unmasking loss per answer token (nats)
    of each reference answer given its own question and given the next problem's, on the model's own training
    states (its family's objective; the same times and noise in both; an MDM's includes its canvas's PAD
    targets). ``gain`` = other − own is ≈ 0 for a model that ignores its prompt. Problems whose answer
    would not fit after either question are left out."""
    questions, answers = [pipe.encode(p["question"]) for p in problems], [pipe.encode(p["answer"]) for p in problems]
    others = questions[1:] + questions[:1]
    keep = [i for i in range(len(problems))
            if max(len(questions[i]), len(others[i])) + len(answers[i]) <= pipe.max_length]
    answers = [answers[i] for i in keep]
    tokens = repeats * sum(map(len, answers))
    own, other = (_answer_losses(pipe, [prompts[i] for i in keep], answers, repeats=repeats, seed=seed) / tokens
                  for prompts in (questions, others))
    return {"own": own, "other": other, "gain": other - own, "n": len(keep)}


def infill_scores(pipe: Pipeline, examples: list[dict[str, str]], options: SamplingOptions, *, budget: int,
                  batch_size: int, seed: int) -> dict[str, Any]:
    """Exact match, parse rate, middle-length error and calls on ``{prompt, response, suffix}`` examples."""
    middles, calls = fill_middles(pipe, _ids(pipe, [e["prompt"] for e in examples]),
                                  _ids(pipe, [e["suffix"] for e in examples]), budget=budget, options=options,
                                  batch_size=batch_size, seed=seed)
    scores = infill_metrics([e["prompt"] for e in examples], [pipe.decode(m) for m in middles],
                            [e["suffix"] for e in examples], [e["response"] for e in examples],
                            [len(m) for m in middles], [len(pipe.encode(e["response"])) for e in examples])
    return {**scores, "mean_nfe": float(calls.mean())}


def humaneval_scores(pipe: Pipeline, tasks: list[HumanEvalInfill], options: SamplingOptions, *, budget: int,
                     batch_size: int, seed: int) -> dict[str, Any]:
    """pass@1 (one temperature-0 sample executed against the tests) and exact match of the middle line."""
    cut = [window(pipe.encode(t.prefix), _ids(pipe, [t.suffix])[0], pipe.max_length, budget) for t in tasks]
    middles, _ = fill_middles(pipe, [p for p, _ in cut], [s for _, s in cut], budget=budget, options=options,
                              batch_size=batch_size, seed=seed)
    texts = [pipe.decode(m) for m in middles]
    return {"pass_at_1": pass_at_1(evaluate_infills(tasks, texts)),
            "humaneval_exact_match": float(np.mean([m == t.middle for m, t in zip(texts, tasks)])),
            "humaneval_n": len(tasks)}


@dataclass
class TransferEvaluation:
    """The evaluation sets of a built transfer dataset (``TransferFiles.evaluation()``), scored in batches.

    Attributes:
        sets: ``{"math": {split: problems}, "infill": examples, "humaneval": tasks}``.
        budget: the most tokens of a code middle.
        batch_size: sequences per sampler call.
        seed: the sampling seed.
    """

    sets: dict[str, Any]
    budget: int
    batch_size: int
    seed: int
    infills: dict[str, list[dict[str, str]]] = field(init=False)

    def __post_init__(self) -> None:
        held_out = self.sets["infill"]
        self.infills = {"validation": held_out[::2], "test": held_out[1::2]}

    def math(self, pipe: Pipeline, options: SamplingOptions, split: str, count: int | None = None) -> dict[str, Any]:
        """:func:`math_scores` on the first ``count`` (all: None) problems of ``split``."""
        return math_scores(pipe, self.sets["math"][split][:count], options, batch_size=self.batch_size, seed=self.seed)

    def infill(self, pipe: Pipeline, options: SamplingOptions, split: str, count: int | None = None) -> dict[str, Any]:
        """:func:`infill_scores` on the first ``count`` (all: None) held-out infills of ``split``."""
        return infill_scores(pipe, self.infills[split][:count], options, budget=self.budget,
                             batch_size=self.batch_size, seed=self.seed)

    def prompt_use(self, pipe: Pipeline, split: str) -> dict[str, Any]:
        """:func:`prompt_use` on the math problems of ``split``."""
        return prompt_use(pipe, self.sets["math"][split], seed=self.seed)

    def humaneval(self, pipe: Pipeline, options: SamplingOptions) -> dict[str, Any]:
        """:func:`humaneval_scores` on every HumanEval task."""
        tasks = [HumanEvalInfill(**task) for task in self.sets["humaneval"]]
        return humaneval_scores(pipe, tasks, options, budget=self.budget, batch_size=self.batch_size, seed=self.seed)
