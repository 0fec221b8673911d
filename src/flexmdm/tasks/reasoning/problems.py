"""Multi-step arithmetic word problems in GSM8K's format.

A problem starts from a quantity and applies a few operations, each one reasoning step. Two
operation sets: ``basic`` (buy, find, give, lose, double, triple: the original problems) and
``extended``, which adds more phrasings of adding and taking away (earns, collects, sells,
spends), multiplication by any factor 2–9 (``times``) and exact division (``halves``,
``splits``), so that with larger operands and more steps the traces vary widely in length. It
renders as a GSM8K record: an English question and an answer whose rationale carries the
calculator annotations ``<<a+b=c>>`` and ends with ``#### N``. The model
never reads the English; :mod:`~flexmdm.tasks.reasoning.template` lays out a compact form (the
question's keywords, the annotations as reasoning, the final number as answer).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["OPERATIONS", "OPERATION_SETS", "Operation", "Problem", "generate_problem", "generate_problems",
           "parse_question"]


@dataclass(frozen=True)
class Operation:
    """One kind of step.

    Attributes:
        keyword: the word of the compact question (``buys``).
        symbol: the arithmetic operator of the rationale (``+``).
        sentence: the English sentence, ``{name}`` and ``{k}`` filled in.
    """

    keyword: str
    symbol: str
    sentence: str

    def apply(self, value: int, operand: int) -> int:
        if self.symbol == "+":
            return value + operand
        if self.symbol == "-":
            return value - operand
        if self.symbol == "/":
            return value // operand  # exact: the generator divides only by divisors
        return value * operand


OPERATIONS: dict[str, Operation] = {
    "buys": Operation("buys", "+", "{name} buys {k} more {item}."),
    "finds": Operation("finds", "+", "Then {name} finds {k} {item}."),
    "gives": Operation("gives", "-", "{name} gives {k} {item} to a friend."),
    "loses": Operation("loses", "-", "Then {name} loses {k} {item}."),
    "doubles": Operation("doubles", "*", "{name} doubles the {item}."),
    "triples": Operation("triples", "*", "{name} triples the {item}."),
    "earns": Operation("earns", "+", "{name} earns {k} {item} for helping out."),
    "collects": Operation("collects", "+", "Later {name} collects {k} {item}."),
    "sells": Operation("sells", "-", "{name} sells {k} {item} at the market."),
    "spends": Operation("spends", "-", "{name} spends {k} {item} on a game."),
    "times": Operation("times", "*", "Now {name} has {k} times as many {item}."),
    "halves": Operation("halves", "/", "{name} gives away half of the {item}."),
    "splits": Operation("splits", "/", "{name} splits the {item} into {k} equal piles and keeps one pile."),
}
"""The step kinds by keyword; ``doubles``, ``triples`` and ``halves`` have the implied operand 2, 3 and 2."""

OPERATION_SETS: dict[str, tuple[str, ...]] = {
    "basic": ("buys", "finds", "gives", "loses", "doubles", "triples"),
    "extended": tuple(OPERATIONS),
}
"""The keywords a generator draws from: four phrasings of ``+`` and of ``-``, three of ``*``, two of ``/``
in ``extended``."""

_IMPLIED = {"doubles": 2, "triples": 3, "halves": 2}
_FACTORS = range(2, 10)
"""The factors of ``times`` and the divisors of ``splits``."""
_NAMES = ("Ann", "Ben", "Cleo", "Dan", "Eva", "Finn", "Gus", "Hana")
_ITEMS = ("apples", "marbles", "stickers", "coins", "books", "shells")


@dataclass(frozen=True)
class Problem:
    """A start value and its steps ``(keyword, operand)``.

    Attributes:
        start: the initial quantity.
        steps: operations in order; ``operand`` is 2 / 3 for doubles / triples.
        name: who owns the items (English rendering only).
        item: what is counted (English rendering only).
    """

    start: int
    steps: tuple[tuple[str, int], ...]
    name: str = "Ann"
    item: str = "apples"

    def values(self) -> list[int]:
        """The quantity after each step (the intermediate results), last one the answer."""
        out, value = [], self.start
        for keyword, operand in self.steps:
            value = OPERATIONS[keyword].apply(value, operand)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def equations(self) -> list[str]:
        """``["7+5=12", "12-3=9", "9/3=3", …]``: one calculator annotation per step."""
        previous, out = self.start, []
        for (keyword, operand), value in zip(self.steps, self.values()):
            out.append(f"{previous}{OPERATIONS[keyword].symbol}{operand}={value}")
            previous = value
        return out

    @property
    def question(self) -> str:
        """The English question (GSM8K ``question`` field)."""
        parts = [f"{self.name} has {self.start} {self.item}."]
        for keyword, operand in self.steps:
            parts.append(OPERATIONS[keyword].sentence.format(name=self.name, k=operand, item=self.item))
        parts.append(f"How many {self.item} does {self.name} have now?")
        return " ".join(parts)

    @property
    def rationale(self) -> str:
        """The GSM8K ``answer`` field: one annotated line per step, then ``#### N``."""
        lines = []
        for equation in self.equations():
            left, result = equation.split("=")
            lines.append(f"Now {self.name} has {left} = <<{equation}>>{result} {self.item}.")
        return "\n".join(lines) + f"\n#### {self.answer}"

    def compact_question(self) -> str:
        """The keywords the model reads: ``has 7 buys 5 doubles 2 ?``.

        Every step is a keyword and a number (the implied 2 / 3 for doubles, triples, halves).
        """
        words = ["has", str(self.start)]
        for keyword, operand in self.steps:
            words += [keyword, str(operand)]
        return " ".join([*words, "?"])

    def to_gsm8k(self) -> dict[str, str]:
        """``{"question", "answer"}`` as in GSM8K's JSONL files."""
        return {"question": self.question, "answer": self.rationale}


def parse_question(question: str) -> Problem | None:
    """The problem whose English :attr:`Problem.question` is ``question``; None if it is not one.

    The inverse of the rendering: ``parse_question(p.question) == p`` for every generated problem
    (whitespace between sentences may differ). Any other text, a real GSM8K question among
    them, gives None.
    """
    sentences = re.split(r"(?<=[.?])\s+", question.strip())
    first = re.fullmatch(r"(\w+) has (\d+) (\w+)\.", sentences[0])
    if first is None or len(sentences) < 3:
        return None
    name, start, item = first.group(1), int(first.group(2)), first.group(3)
    if sentences[-1] != f"How many {item} does {name} have now?":
        return None
    steps = []
    for sentence in sentences[1:-1]:
        for keyword, operation in OPERATIONS.items():
            pattern = re.escape(operation.sentence.format(name=name, k="{k}", item=item)).replace(r"\{k\}", r"(\d+)")
            found = re.fullmatch(pattern, sentence)
            if found is not None:
                steps.append((keyword, int(found.group(1)) if found.groups() else _IMPLIED[keyword]))
                break
        else:
            return None
    return Problem(start, tuple(steps), name, item)


def _operands(keyword: str, value: int, max_value: int, max_operand: int) -> Sequence[int]:
    """The operands of ``keyword`` applied to ``value`` that keep every quantity in range (empty: none)."""
    symbol = OPERATIONS[keyword].symbol
    if symbol == "+":
        return range(1, min(max_operand, max_value - value) + 1)
    if symbol == "-":
        return range(1, min(max_operand, value) + 1)
    factors = [_IMPLIED[keyword]] if keyword in _IMPLIED else _FACTORS
    if symbol == "*":
        return [k for k in factors if value <= max_operand and k * value <= max_value]
    return [k for k in factors if value >= k and value % k == 0]


def generate_problem(rng: random.Random, num_steps: int, max_value: int = 99, max_operand: int = 9,
                     operations: str = "basic") -> Problem:
    """A random problem with ``num_steps`` steps whose every quantity lies in ``[0, max_value]``.

    Start uniform on 2..min(max_operand, max_value); each step picks uniformly among the keywords
    of ``OPERATION_SETS[operations]`` that keep the quantity in range (``+``: 1..min(max_operand,
    max_value − value); ``-``: 1..min(max_operand, value); ``*`` by 2 / 3 / a factor 2–9 while the
    quantity is at most ``max_operand`` and the product at most ``max_value``; ``/`` by 2 / a
    divisor 2–9 of the quantity). The defaults give the original problems.

    Raises:
        ValueError: ``num_steps < 1``, ``max_value < 9``, ``max_operand`` outside 2..max_value or an
            unknown operation set.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if max_value < 9:
        raise ValueError(f"max_value must be >= 9, got {max_value}")
    if not 2 <= max_operand <= max_value:
        raise ValueError(f"max_operand must be in 2..max_value ({max_value}), got {max_operand}")
    if operations not in OPERATION_SETS:
        raise ValueError(f"unknown operations {operations!r}; choose from {sorted(OPERATION_SETS)}")
    value = rng.randint(2, min(max_operand, max_value))
    start, steps = value, []
    for _ in range(num_steps):
        keyword = rng.choice([k for k in OPERATION_SETS[operations] if _operands(k, value, max_value, max_operand)])
        operands = _operands(keyword, value, max_value, max_operand)
        operand = operands[0] if keyword in _IMPLIED else rng.choice(operands)
        steps.append((keyword, operand))
        value = OPERATIONS[keyword].apply(value, operand)
    return Problem(start, tuple(steps), rng.choice(_NAMES), rng.choice(_ITEMS))


def generate_problems(count: int, seed: int, min_steps: int = 2, max_steps: int = 5, max_value: int = 99,
                      max_operand: int = 9, operations: str = "basic") -> list[Problem]:
    """``count`` problems, steps uniform on ``min_steps..max_steps`` (deterministic in ``seed``)."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    rng = random.Random(seed)
    return [generate_problem(rng, rng.randint(min_steps, max_steps), max_value, max_operand, operations)
            for _ in range(count)]
