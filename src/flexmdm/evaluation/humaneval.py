"""HumanEval single-line infilling by a model of the ``infill`` task, scored by execution.

The tasks are those of :func:`flexmdm.tasks.infill.humaneval.single_line_tasks`: one non-blank
line of a canonical solution removed. Prefix and suffix are tokenized line by line with the
model's tokenizer, as the infill task tokenizes its functions. A model sees at most its
training length (``max_length``) with room for the middle budget (the task's
``max_middle_tokens``), so the context is cut at line boundaries: the lines nearest the middle
are kept, alternating before and after it, while they fit (``context_truncated`` counts the
tasks that lost lines).

FlexMDM inserts the middle between the frozen prefix and suffix (at most the budget); an MDM
fills a canvas of ``budget`` masks between them and every PAD it predicts is dropped (the
benchmark's *fixed budget* setting). The program run for pass@1 is the whole prefix, the
generated middle and the whole suffix (:func:`~flexmdm.tasks.infill.humaneval.program_for`);
exact match, parse rate and middle-length error are those of
:func:`~flexmdm.tasks.infill.infill_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from flexmdm.pipeline import Pipeline
from flexmdm.sampling import Insertion, UnmaskingRule
from flexmdm.tasks.infill.evaluation import MiddleConditioning
from flexmdm.tasks.infill.humaneval import HumanEvalInfill, pass_at_1, program_for, run_program
from flexmdm.tasks.infill.metrics import infill_metrics
from flexmdm.vocab import Vocab

__all__ = ["EncodedInfill", "encode_task", "evaluate_humaneval_infill", "fill_middles"]


@dataclass(frozen=True)
class EncodedInfill:
    """Token ids of one task: the context kept, the reference middle, whether lines were cut."""

    prefix: list[int]
    suffix: list[int]
    middle: list[int]
    truncated: bool


def _line_ids(tokenizer: Tokenizer, text: str) -> list[list[int]]:
    lines = text.splitlines(keepends=True)
    return [e.ids for e in tokenizer.encode_batch(lines, add_special_tokens=False)] if lines else []


def encode_task(task: HumanEvalInfill, tokenizer: Tokenizer, room: int) -> EncodedInfill:
    """Tokenize ``task`` and keep at most ``room`` context tokens, the lines nearest the middle first.

    Lines are taken alternately from the end of the prefix and the start of the suffix; a side
    stops at its first line that no longer fits.
    """
    before, after = _line_ids(tokenizer, task.prefix), _line_ids(tokenizer, task.suffix)
    middle = [t for line in _line_ids(tokenizer, task.middle) for t in line]
    nearest = {"before": before[::-1], "after": after}  # each side's lines, nearest the middle first
    kept = {"before": 0, "after": 0}
    used, growing = 0, ["before", "after"]
    while growing:
        for side in list(growing):
            lines = nearest[side]
            if kept[side] == len(lines) or used + len(lines[kept[side]]) > room:
                growing.remove(side)
            else:
                used += len(lines[kept[side]])
                kept[side] += 1
    prefix = [t for line in before[len(before) - kept["before"]:] for t in line]
    suffix = [t for line in after[:kept["after"]] for t in line]
    truncated = kept["before"] < len(before) or kept["after"] < len(after)
    return EncodedInfill(prefix, suffix, middle, truncated)


@torch.no_grad()
def fill_middles(model: Pipeline, vocab: Vocab, encoded: Sequence[EncodedInfill], *, budget: int, width: int,
                 rule: UnmaskingRule, steps: int, insertion: Insertion | None, temperature: float,
                 generator: torch.Generator) -> tuple[list[list[int]], list[int]]:
    """Generated middle ids (PAD dropped) and network calls of each task (see the module docstring)."""
    middles = MiddleConditioning([e.prefix for e in encoded], [e.suffix for e in encoded], vocab, width, budget)
    out = model.sample(middles, max_length=width, generator=generator, steps=steps, rule=rule, insertion=insertion,
                       temperature=temperature)
    return model.family.read(middles, out.sequences()), out.nfe.tolist()


def evaluate_humaneval_infill(
    model: Pipeline,
    tokenizer: Tokenizer,
    vocab: Vocab,
    tasks: Sequence[HumanEvalInfill],
    *,
    budget: int,
    width: int,
    rule: UnmaskingRule,
    steps: int,
    insertion: Insertion | None = None,
    temperature: float = 0.0,
    batch_size: int = 50,
    timeout: float = 5.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fill every task's middle, run its tests; ``(metrics, per-task rows)``.

    Metrics: ``pass_at_1``, ``exact_match``, ``parse_rate``, ``length_abs_error`` (tokens),
    ``mean_nfe``, ``context_truncated`` (share of tasks whose context was cut), ``timeouts``, ``n``.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    encoded = [encode_task(task, tokenizer, width - budget) for task in tasks]
    middles: list[list[int]] = []
    nfe: list[int] = []
    with tqdm(total=len(tasks), desc="infill", unit="task", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(tasks), batch_size):
            batch = encoded[start:start + batch_size]
            ids, calls = fill_middles(model, vocab, batch, budget=budget, width=width, rule=rule, steps=steps,
                                      insertion=insertion, temperature=temperature, generator=generator)
            middles += ids
            nfe += calls
            bar.update(len(batch))
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in middles]
    results = []
    for task, text in tqdm(list(zip(tasks, texts)), desc="execute", unit="program", disable=not progress,
                           dynamic_ncols=True):
        results.append(run_program(program_for(task, text), timeout=timeout))
    metrics = {
        "pass_at_1": pass_at_1(results),
        **infill_metrics([t.prefix for t in tasks], texts, [t.suffix for t in tasks], [t.middle for t in tasks],
                         [len(m) for m in middles], [len(e.middle) for e in encoded]),
        "mean_nfe": sum(nfe) / len(nfe),
        "context_truncated": sum(e.truncated for e in encoded) / len(encoded),
        "timeouts": sum(r.status == "timeout" for r in results),
    }
    rows = [{"task_id": task.task_id, "line_index": task.line_index, "reference": task.middle, "generated": text,
             "status": result.status, "exact": text == task.middle, "middle_tokens": len(ids), "nfe": calls,
             "context_truncated": e.truncated}
            for task, text, result, ids, calls, e in zip(tasks, texts, results, middles, nfe, encoded)]
    return metrics, rows
