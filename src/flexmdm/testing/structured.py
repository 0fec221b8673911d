"""Structured oracle cases: distributions whose samples are right or wrong by their structure.

Each :class:`OracleCase` holds an exact FlexMDM oracle (:class:`~flexmdm.testing.ExactFlexOracle`
with gap-count distributions), the prompts to generate from and the judges of a sample:

* ``toy`` — every binary string up to length 4 with random weights: dense, every state
  explainable; judged by total variation to the truth.
* ``brackets`` — balanced bracket strings of length 0–6: sparse support where one wrong count
  makes a string invalid.
* ``anbn`` — aⁿbⁿ for n = 0…4: the two halves must agree in count.
* ``reasoning`` — the reasoning benchmark's held-out problems (2–5 steps, values 0–9): the question is the prompt, the
  posterior is the problem's one trace (uncertain only in how the present tokens align with it);
  judged by the answer and by the whole trace.
* ``maze`` — subgoal problems on the maze benchmark's maze: the posterior over the pair's
  candidate paths that pass the subgoals in order, as the training data draws them; judged by
  path validity.

Every case reports ``invalid_rate`` (a sample outside what the structure allows), ``accuracy``
(toy and brackets: 1 − invalid rate; reasoning: the right answer; maze: a valid path), and
``trace_exact`` (reasoning: the whole sequence right) or ``tv`` (enumerable unconditional cases).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flexmdm.constraints import Prompt
from flexmdm.families import SamplingOptions
from flexmdm.interpolant import FlexInterpolant
from flexmdm.sampling import SampleOutput, sample_flexmdm
from flexmdm.schedules import LinearSchedule, Schedule
from flexmdm.testing.exact import ExactFlexOracle, empirical_distribution, total_variation
from flexmdm.vocab import Vocab

__all__ = ["OracleCase", "CASES", "oracle_case", "toy_distribution", "brackets_distribution", "anbn_distribution"]

BINARY = Vocab(size=4, mask_id=2, pad_id=3)
"""Two real tokens (0, 1; for brackets "(" and ")", for aⁿbⁿ a and b), MASK and PAD."""


@dataclass
class OracleCase:
    """An exact oracle, prompts to sample from, and how to judge the samples.

    Attributes:
        name: the case's name.
        vocab: special-token ids.
        oracle: the exact denoiser (returns gap-count distributions).
        prompt: one row per sample.
        max_length: per-row maximum length (prompt included).
        judge: ``(row, sequence) -> (valid, correct, exact)``; ``exact`` is None where the case
            has no single right sequence.
        target: the true distribution for total variation (unconditional cases), else None.
    """

    name: str
    vocab: Vocab
    oracle: ExactFlexOracle
    prompt: Prompt
    max_length: int | Tensor
    judge: Callable[[int, tuple[int, ...]], tuple[bool, bool, bool | None]]
    target: dict[tuple[int, ...], float] | None = None

    def sample(self, options: SamplingOptions, seed: int) -> SampleOutput:
        """Samples of every prompt row from the exact oracle: its insertion schedule α (the posterior
        depends on no other), linear β."""
        process = FlexInterpolant(self.oracle.insertion_schedule, LinearSchedule(), self.vocab)
        return sample_flexmdm(
            self.oracle, process, steps=options.steps, max_length=self.max_length, prompt=self.prompt,
            rule=options.rule, insertion=options.insertion, final_fill=options.fill,
            generator=torch.Generator().manual_seed(seed),
        )

    def score(self, tokens: Tensor, lengths: Tensor) -> dict[str, float | None]:
        """``invalid_rate``, ``accuracy``, ``trace_exact`` and ``tv`` of a batch of samples."""
        rows = [tuple(row[:n]) for row, n in zip(tokens.tolist(), lengths.tolist())]
        verdicts = [self.judge(i, row) for i, row in enumerate(rows)]
        count = max(len(rows), 1)
        exact = [e for _, _, e in verdicts if e is not None]
        return {
            "invalid_rate": sum(not v for v, _, _ in verdicts) / count,
            "accuracy": sum(c for _, c, _ in verdicts) / count,
            "trace_exact": sum(exact) / len(exact) if exact else None,
            "tv": total_variation(empirical_distribution(tokens, lengths), self.target) if self.target else None,
        }


def _normalised(weights: dict[tuple[int, ...], float]) -> dict[tuple[int, ...], float]:
    total = sum(weights.values())
    return {s: w / total for s, w in weights.items()}


def toy_distribution(max_length: int = 4, seed: int = 0) -> dict[tuple[int, ...], float]:
    """Every binary string up to ``max_length`` (the empty one included) with a random weight."""
    g = torch.Generator().manual_seed(seed)
    support = [s for n in range(max_length + 1) for s in itertools.product((0, 1), repeat=n)]
    weights = torch.rand(len(support), generator=g, dtype=torch.float64) + 0.2
    return _normalised(dict(zip(support, weights.tolist())))


def _balanced(sequence: Sequence[int]) -> bool:
    depth = 0
    for token in sequence:
        depth += 1 if token == 0 else -1
        if depth < 0:
            return False
    return depth == 0


def brackets_distribution(max_length: int = 6) -> dict[tuple[int, ...], float]:
    """Uniform over balanced strings of "(" = 0 and ")" = 1 up to ``max_length`` (empty included)."""
    support = [s for n in range(0, max_length + 1, 2) for s in itertools.product((0, 1), repeat=n) if _balanced(s)]
    return _normalised({s: 1.0 for s in support})


def anbn_distribution(max_n: int = 4) -> dict[tuple[int, ...], float]:
    """Uniform over aⁿbⁿ (a = 0, b = 1) for n = 0 … ``max_n``."""
    return _normalised({(0,) * n + (1,) * n: 1.0 for n in range(max_n + 1)})


def _unconditional(name: str, distribution: dict[tuple[int, ...], float], samples: int,
                   schedule: Schedule, valid: Callable[[tuple[int, ...]], bool]) -> OracleCase:
    def judge(_: int, sequence: tuple[int, ...]) -> tuple[bool, bool, None]:
        ok = valid(sequence)
        return ok, ok, None

    return OracleCase(
        name=name, vocab=BINARY, oracle=ExactFlexOracle(distribution, BINARY, schedule, gap_counts=True),
        prompt=Prompt.unconditional(samples, BINARY.pad_id), max_length=max(map(len, distribution)) + 2,
        judge=judge, target=distribution,
    )


def _reasoning_case(samples: int, schedule: Schedule) -> OracleCase:
    from flexmdm.tasks.reasoning.task import ReasoningTask

    task = ReasoningTask(max_value=9)  # the reasoning benchmark's problems
    template = task.template
    test = task.splits["test"]
    count = min(samples, len(test))
    support, references = [], []
    for question, reasoning, answer in zip(test.questions[:count], test.reasonings[:count], test.answers[:count]):
        ids, flags, _ = template.flexmdm_example(question, reasoning, answer)
        support.append((tuple(ids), 1.0, tuple(flags)))
        references.append(tuple(ids))
    oracle = ExactFlexOracle(support, template.vocab, schedule, gap_counts=True)
    prompt = template.flexmdm_prompt(test.questions[:count])
    answers = [str(p.answer) for p in test.problems[:count]]

    def judge(row: int, sequence: tuple[int, ...]) -> tuple[bool, bool, bool]:
        decoded = template.decode(sequence)
        valid = decoded.reasoning is not None and _equations_hold(decoded.reasoning)
        return valid, decoded.answer == answers[row], sequence == references[row]

    return OracleCase("reasoning", template.vocab, oracle, prompt, template.canvas_width, judge)


_EQUATION = re.compile(r"(\d+)([+\-*])(\d+)=(\d+)")


def _equations_hold(reasoning: str) -> bool:
    """Whether a reasoning text (tokens joined by spaces) is ``a op b = c`` steps, each true."""
    for equation in reasoning.replace(" ", "").split(";"):
        match = _EQUATION.fullmatch(equation)
        if match is None:
            return False
        a, operator, b, c = match.groups()
        if {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[operator] != int(c):
            return False
    return True


def _maze_case(samples: int, schedule: Schedule, ks: Sequence[int] = (2, 4)) -> OracleCase:
    from flexmdm.tasks.maze import MazeTask, path_success
    from flexmdm.tasks.maze.data import evaluation_examples
    from flexmdm.tasks.maze.encoding import flexmdm_example, flexmdm_prompt

    task = MazeTask(rooms=5, num_pairs=2000, maze_seed=0)
    dataset, tokens = task.dataset, task.tokens
    rng = random.Random(0)
    problems = []
    for i, k in enumerate(ks):
        count = samples // len(ks) + (i < samples % len(ks))
        problems += [(k, path, goals) for path, goals in evaluation_examples(dataset, k, count, rng)]
    support: dict[tuple[tuple[int, ...], tuple[bool, ...]], float] = {}
    for k, path, goals in problems:
        candidates = [p for p in dataset.paths((path[0], path[-1])) if len(p) >= k]
        for candidate in candidates:
            try:
                ids, flags = flexmdm_example(candidate, goals, tokens)
            except ValueError:  # the subgoals are not on this path in order
                continue
            # P(path | pair) · P(these K − 2 interior subgoal positions | path)
            weight = 1.0 / len(candidates) / math.comb(len(candidate) - 2, k - 2)
            support[(tuple(ids), tuple(flags))] = weight
    oracle = ExactFlexOracle([(ids, w, flags) for (ids, flags), w in support.items()],
                             tokens.vocab, schedule, gap_counts=True)
    prompt = flexmdm_prompt([goals for _, _, goals in problems], tokens)
    subgoals = [goals for _, _, goals in problems]

    def judge(row: int, sequence: tuple[int, ...]) -> tuple[bool, bool, None]:
        cells = tokens.decode(list(sequence)) if all(v < tokens.num_cells for v in sequence) else None
        ok = path_success(task.maze, cells, subgoals[row])
        return ok, ok, None

    return OracleCase("maze", tokens.vocab, oracle, prompt, dataset.longest_path, judge)


CASES: dict[str, Callable[[int, Schedule], OracleCase]] = {
    "toy": lambda n, s: _unconditional("toy", toy_distribution(), n, s, lambda seq: len(seq) <= 4),
    "brackets": lambda n, s: _unconditional("brackets", brackets_distribution(), n, s, _balanced),
    "anbn": lambda n, s: _unconditional("anbn", anbn_distribution(), n, s, anbn_distribution().__contains__),
    "reasoning": _reasoning_case,
    "maze": _maze_case,
}
"""Case builders ``(samples, insertion schedule) -> OracleCase`` by name."""


def oracle_case(name: str, samples: int, schedule: Schedule | None = None) -> OracleCase:
    """The named case with ``samples`` prompts (rows) and the insertion schedule α (default linear).

    Raises:
        ValueError: an unknown name.
    """
    if name not in CASES:
        raise ValueError(f"unknown oracle case {name!r}; choose one of {sorted(CASES)}")
    return CASES[name](samples, schedule or LinearSchedule())
