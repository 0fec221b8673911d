"""The reasoning task registered for training (``data: {task: reasoning, ...}``)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch

from flexmdm.families import layout_family
from flexmdm.tasks.reasoning.problems import Problem, generate_problem
from flexmdm.tasks.reasoning.template import ReasoningTemplate, template_parts
from flexmdm.tasks.base import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = ["EncodedProblems", "ReasoningTask"]


@dataclass
class EncodedProblems:
    """Problems and their token ids (question, reasoning, answer)."""

    problems: list[Problem]
    questions: list[list[int]]
    reasonings: list[list[int]]
    answers: list[list[int]]

    def __len__(self) -> int:
        return len(self.problems)


@register_task("reasoning")
@dataclass
class ReasoningTask(Task):
    """Arithmetic word problems in the question / reasoning / answer template.

    Attributes:
        num_train: training problems (a fixed pool drawn with ``problem_seed``).
        problem_seed: seed of every split.
        min_steps: fewest reasoning steps per problem.
        max_steps: most reasoning steps (sizes the MDM reasoning region).
        max_value: every quantity stays in ``[0, max_value]`` (9: single digits only).
        max_operand: the largest start, added or taken amount (9: the original problems).
        operations: "basic" (the original six keywords) or "extended" (more phrasings, ``times``,
            ``halves``, ``splits``; see :mod:`~flexmdm.tasks.reasoning.problems`).
        layout: "flexmdm" (regions grow by insertion) or "mdm" (fixed canvas, PAD filler).
    """

    num_train: int = 20000
    problem_seed: int = 0
    min_steps: int = 2
    max_steps: int = 5
    max_value: int = 99
    max_operand: int = 9
    operations: Literal["basic", "extended"] = "basic"
    layout: Literal["flexmdm", "mdm"] = "flexmdm"

    def __post_init__(self) -> None:
        layout_family(self.layout)  # raises for a layout no generating family trains on
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        generate_problem(random.Random(0), 1, self.max_value, self.max_operand, self.operations)  # checks them
        if self.num_train < 1:
            raise ValueError(f"num_train must be >= 1, got {self.num_train}")

    @cached_property
    def template(self) -> ReasoningTemplate:
        """Region widths fit the longest problem: ``a op k = c ;`` per step with quantities a and c of
        ``max_value``'s digits and operands k of ``max_operand``'s; ``has s`` then ``keyword k`` per step
        and ``?`` as question."""
        digits, operand = len(str(self.max_value)), len(str(self.max_operand))
        return ReasoningTemplate(reasoning_width=(2 * digits + operand + 3) * self.max_steps - 1, answer_width=digits,
                                 question_width=2 + operand + (1 + operand) * self.max_steps,
                                 operations=self.operations)

    @property
    def vocab(self) -> Vocab:
        return self.template.vocab

    @property
    def max_length(self) -> int:
        return self.template.canvas_width

    def write_tokenizer(self, directory: Path) -> bool:
        self.template.write_tokenizer(directory)
        return True

    # ------------------------------------------------------------------ data
    def _draw(self, count: int, seed: int, exclude: set[str]) -> list[Problem]:
        rng, out, seen = random.Random(seed), [], set(exclude)
        while len(out) < count:
            problem = generate_problem(rng, rng.randint(self.min_steps, self.max_steps), self.max_value,
                                       self.max_operand, self.operations)
            key = problem.compact_question()
            if key not in seen:
                seen.add(key)
                out.append(problem)
        return out

    def encode(self, problems: list[Problem]) -> EncodedProblems:
        parts = [template_parts(p.compact_question(), p.rationale) for p in problems]
        q = self.template.encode_batch([p[0] for p in parts])
        r = self.template.encode_batch([p[1] for p in parts])
        a = self.template.encode_batch([p[2] for p in parts])
        return EncodedProblems(problems, q, r, a)

    @cached_property
    def splits(self) -> dict[str, EncodedProblems]:
        """Train pool, then validation and test problems whose questions are not in it."""
        train = self._draw(self.num_train, self.problem_seed * 3 + 0, set())
        keys = {p.compact_question() for p in train}
        validation = self._draw(256, self.problem_seed * 3 + 1, keys)
        keys |= {p.compact_question() for p in validation}
        test = self._draw(2000, self.problem_seed * 3 + 2, keys)
        return {"train": self.encode(train), "validation": self.encode(validation), "test": self.encode(test)}

    @cached_property
    def _arrays(self) -> dict[str, tuple[torch.Tensor, ...]]:
        """Every split in the task's layout, as padded tensors."""
        out = {}
        for name, data in self.splits.items():
            if layout_family(self.layout).inserts:
                rows = [self.template.flexmdm_example(q, r, a) for q, r, a in
                        zip(data.questions, data.reasonings, data.answers)]
                width = max(len(ids) for ids, _, _ in rows)
                x1 = torch.full((len(rows), width), self.vocab.pad_id, dtype=torch.long)
                frozen = torch.zeros(len(rows), width, dtype=torch.bool)
                lengths = torch.tensor([len(ids) for ids, _, _ in rows])
                for i, (ids, flags, _) in enumerate(rows):
                    x1[i, : len(ids)] = torch.tensor(ids)
                    frozen[i, : len(ids)] = torch.tensor(flags)
                regions = torch.tensor([list(reg) for _, _, reg in rows])
                out[name] = (x1, lengths, frozen, regions)
            else:
                rows = [self.template.mdm_example(q, r, a) for q, r, a in
                        zip(data.questions, data.reasonings, data.answers)]
                canvas = torch.tensor([ids for ids, _ in rows])
                frozen = torch.tensor([flags for _, flags in rows])
                out[name] = (canvas, frozen)
        return out

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        arrays = self._arrays[split]
        index = torch.randint(arrays[0].shape[0], (batch_size,), generator=generator)
        if layout_family(self.layout).inserts:
            x1, lengths, frozen, regions = (a[index] for a in arrays)
            width = int(lengths.max())
            slots = torch.arange(width + 1)[None, :]
            allowed = (slots == regions[:, :1]) | (slots == regions[:, 1:])
            return TrainingBatch(x1[:, :width], lengths, frozen[:, :width], allowed)
        canvas, frozen = (a[index] for a in arrays)
        return TrainingBatch(canvas, torch.full((batch_size,), canvas.shape[1]), frozen)

    def test_set(self, count: int) -> EncodedProblems:
        """The first ``count`` held-out test problems (questions unseen in training)."""
        return self.held_out("test", count)

    def held_out(self, split: Literal["validation", "test"], count: int) -> EncodedProblems:
        """The first ``count`` problems of a held-out split (256 validation, 2000 test).

        Raises:
            ValueError: ``count`` exceeds the split.
        """
        data = self.splits[split]
        if count > len(data):
            raise ValueError(f"only {len(data)} {split} problems, {count} requested")
        return EncodedProblems(data.problems[:count], data.questions[:count], data.reasonings[:count],
                               data.answers[:count])
