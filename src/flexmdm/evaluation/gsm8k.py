"""GSM8K-format problems solved by a model of the ``reasoning`` task (reasoning as infilling).

Each record's question is laid out as the reasoning task lays out its own problems
(:mod:`flexmdm.tasks.reasoning.template`): the compact keyword question, then empty reasoning
and answer regions that the model fills. A question is read as the English rendering of a
generated problem (:func:`~flexmdm.tasks.reasoning.parse_question`) or, failing that, as a
compact question (``has 7 buys 5 ?``); the reference is the number after ``####`` in the
record's answer. Scoring is :func:`~flexmdm.tasks.reasoning.accuracy` on the decoded answer
regions (a malformed output scores as wrong).

The model reads only its arithmetic vocabulary (30 words; 37 with the extended operations): real GSM8K questions are refused with
the words it cannot read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from flexmdm.evaluation.common import task_options
from flexmdm.families import family
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import Insertion, UnmaskingRule
from flexmdm.sampling.flexmdm import ExitCriterion
from flexmdm.tasks.reasoning import (
    DELIMITERS,
    ReasoningTask,
    ReasoningTemplate,
    accuracy,
    answers_match,
    extract_answer,
    parse_question,
)
from flexmdm.tasks.reasoning.inference import generate
from flexmdm.tasks.reasoning.task import EncodedProblems

__all__ = ["GSM8KSet", "default_steps", "encode_records", "evaluate_gsm8k", "reasoning_task"]


@dataclass(frozen=True)
class GSM8KSet:
    """Records ready for the model: question ids and reference answers (normalised numbers), and
    the gold reasoning as the template decodes it where known (it adds ``trace_exact``)."""

    questions: list[list[int]]
    references: list[str]
    texts: list[str]
    reasonings: list[str] | None = None

    @classmethod
    def from_problems(cls, template: ReasoningTemplate, data: EncodedProblems) -> GSM8KSet:
        """A reasoning task's own problems (e.g. its validation or test split), gold reasoning included."""
        return cls([list(q) for q in data.questions], [str(p.answer) for p in data.problems],
                   [p.compact_question() for p in data.problems],
                   [template.text(r) for r in data.reasonings])

    def __len__(self) -> int:
        return len(self.questions)


def reasoning_task(model: Pipeline) -> ReasoningTask:
    """The model's reasoning task, rebuilt from its saved options (problems drawn only when used)."""
    return ReasoningTask(**task_options(model))


def default_steps(kind: str, template: ReasoningTemplate) -> int:
    """The benchmark's budget: 8 insertion steps (FlexMDM); one call per canvas slot (MDM)."""
    return 8 if family(kind).inserts else template.reasoning_width + template.answer_width


def encode_records(records: Sequence[dict[str, str]], template: ReasoningTemplate, source: str | Path) -> GSM8KSet:
    """Question ids and references of ``records`` (from ``source``, named in errors).

    Raises:
        ValueError: a record without ``#### N``, a question the model cannot read, or one longer
            than any the model was trained on (the message names the record, counted from 1).
    """
    questions, references, texts = [], [], []
    special = {template.ids[token] for token in (*DELIMITERS, "[MASK]", "[PAD]")}
    for number, record in enumerate(records, start=1):
        where = f"{source} record {number}"
        reference = extract_answer(record["answer"])
        if reference is None:
            raise ValueError(f"{where}: the answer has no final '#### N' line")
        problem = parse_question(record["question"])
        text = problem.compact_question() if problem is not None else record["question"]
        unknown = template.unknown_words(text)
        if unknown:
            raise ValueError(f"{where}: the model cannot read this question (unknown words {unknown[:5]}); it "
                             "reads the arithmetic problems of its reasoning task (see --write-held-out)")
        ids = template.encode(text)
        if special & set(ids):
            raise ValueError(f"{where}: the question holds the template's delimiters {list(DELIMITERS)}")
        if not ids or len(ids) > template.question_width:
            raise ValueError(f"{where}: the question has {len(ids)} tokens; the model reads 1 to "
                             f"{template.question_width} (its task's max_steps)")
        questions.append(ids)
        references.append(reference)
        texts.append(text)
    return GSM8KSet(questions, references, texts)


@torch.no_grad()
def evaluate_gsm8k(
    model: Pipeline,
    template: ReasoningTemplate,
    data: GSM8KSet,
    *,
    rule: UnmaskingRule,
    steps: int,
    early_exit: ExitCriterion | None = None,
    insertion: Insertion | None = None,
    temperature: float = 0.0,
    batch_size: int = 100,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate every problem's reasoning and answer; ``(metrics, per-problem rows)``.

    Metrics: ``accuracy`` (answers equal to the reference), ``mean_nfe`` (network calls per
    problem, as counted by the samplers), ``mean_reasoning_length`` (tokens), ``well_formed``
    (share of outputs whose reasoning and answer regions both decode), ``n``; with gold reasoning,
    ``trace_exact`` (share of outputs whose reasoning is the gold one).
    """
    rows = []
    with tqdm(total=len(data), desc="gsm8k", unit="problem", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(data), batch_size):
            questions = data.questions[start:start + batch_size]
            out = generate(model.kind, model.model, template, model.schedules, questions, rule=rule, steps=steps,
                           early_exit=early_exit, insertion=insertion, temperature=temperature, generator=generator,
                           device=model.device)
            for row, sequence in enumerate(out.sequences()):
                index = start + row
                decoded = template.decode(sequence, out.frozen[row, : len(sequence)].tolist())
                rows.append({
                    "index": index, "question": data.texts[index], "reference": data.references[index],
                    "prediction": decoded.answer, "correct": answers_match(decoded.answer, data.references[index]),
                    "reasoning": decoded.reasoning, "reasoning_length": decoded.reasoning_length,
                    "well_formed": decoded.answer is not None and decoded.reasoning is not None,
                    "nfe": int(out.nfe[row]),
                    **({} if data.reasonings is None else {"trace_exact": decoded.reasoning == data.reasonings[index]}),
                })
            bar.update(len(questions))
    n = len(rows)
    metrics = {
        "accuracy": accuracy([r["prediction"] for r in rows], data.references),
        "mean_nfe": sum(r["nfe"] for r in rows) / n,
        "mean_reasoning_length": sum(r["reasoning_length"] for r in rows) / n,
        "well_formed": sum(r["well_formed"] for r in rows) / n,
        "n": n,
    }
    if data.reasonings is not None:
        metrics["trace_exact"] = sum(r["trace_exact"] for r in rows) / n
    return metrics, rows
