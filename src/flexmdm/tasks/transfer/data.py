"""The data of the transfer benchmark: a pretraining corpus, instruction pairs and evaluation sets.

Everything follows from a :class:`TransferData` and a seed, and is written to one folder:

* ``tokenizer.json`` — a byte-level BPE (``[MASK]`` and ``[PAD]`` last) trained on the corpus;
* ``corpus.jsonl`` — the pretraining documents (``{"text"}``, the text task's source): every
  function of the *train* modules of the standard library (canonical ``ast.unparse`` form,
  docstrings removed, :mod:`flexmdm.tasks.infill.functions`) and the GSM8K-format prose
  (question, then rationale ending ``#### N``) of the *train* arithmetic problems;
* ``ift.jsonl`` — instruction pairs for :class:`~flexmdm.tasks.instruct.InstructTask` with coupling
  ``infill``: math ``{prompt: question, response: rationale, suffix: ""}`` (the prompt coupling) and
  code single-line infills of train-module functions ``{prompt: lines before, response: the line,
  suffix: lines after}``;
* ``evaluation.json`` — math ``validation`` and ``test`` problems (``{question, answer}``), single-line
  infills of *held-out* modules, and HumanEval single-line infilling tasks (one per problem);
* ``meta.json`` — the options and what was kept or left out (pairs that do not fit the canvas are
  dropped, and counted).

Held-out modules (:func:`~flexmdm.tasks.infill.functions.split_by_module`) and the validation and
test problems (drawn from their own seeds, any question of the train pool redrawn) never enter the
corpus or the pairs. The folder is a cache: an existing one built with the same options is reused.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from flexmdm.atomic import atomic_directory
from flexmdm.tasks.infill.functions import FunctionSource, split_by_module, stdlib_functions
from flexmdm.tasks.infill.humaneval import load_problems, single_line_tasks
from flexmdm.tasks.infill.spans import candidate_spans
from flexmdm.tasks.reasoning.problems import Problem, generate_problem
from flexmdm.tasks.text.tokenizer import save_tokenizer, train_bpe

__all__ = ["TransferData", "TransferFiles", "build_transfer_data", "math_text"]


@dataclass(frozen=True)
class TransferData:
    """What the data holds.

    Attributes:
        vocab_size: BPE ids, ``[MASK]`` and ``[PAD]`` included.
        max_length: the canvas: the longest math pair (question + rationale, in tokens) kept, and
            of code pairs and held-out infills, prefix + ``middle_budget`` + suffix.
        middle_budget: the longest code middle (tokens), the MDM's middle canvas.
        held_out_fraction: share of standard-library modules held out.
        num_train_problems: arithmetic problems drawn for pretraining and instruction pairs.
        num_validation: validation problems (sampler choices are made on these).
        num_test: test problems.
        min_steps: fewest reasoning steps of a problem.
        max_steps: most reasoning steps of a problem.
        max_value: the largest quantity in a problem.
        num_infill: held-out-module single-line infills evaluated.
        num_humaneval: HumanEval tasks evaluated (None: all 164).
        stdlib_root: the standard library folder (None: this Python's).
    """

    vocab_size: int = 2048
    max_length: int = 128
    middle_budget: int = 24
    held_out_fraction: float = 0.1
    num_train_problems: int = 8000
    num_validation: int = 100
    num_test: int = 200
    min_steps: int = 2
    max_steps: int = 4
    max_value: int = 99
    num_infill: int = 200
    num_humaneval: int | None = None
    stdlib_root: str | None = None


@dataclass(frozen=True)
class TransferFiles:
    """The built folder's files, and ``meta.json``'s content."""

    folder: Path
    meta: dict[str, Any]

    @property
    def corpus(self) -> Path:
        return self.folder / "corpus.jsonl"

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer.json"

    @property
    def ift(self) -> Path:
        return self.folder / "ift.jsonl"

    def evaluation(self) -> dict[str, Any]:
        return json.loads((self.folder / "evaluation.json").read_text())


def math_text(problem: dict[str, str]) -> str:
    """A GSM8K record as pretraining prose: the question, a newline, the rationale."""
    return f"{problem['question']}\n{problem['answer']}"


def _problems(count: int, seed: int, data: TransferData, exclude: set[str]) -> list[Problem]:
    """``count`` problems whose questions are new (not in ``exclude``, which grows with them)."""
    rng, out = random.Random(seed), []
    while len(out) < count:
        problem = generate_problem(rng, rng.randint(data.min_steps, data.max_steps), data.max_value)
        if problem.compact_question() not in exclude:
            exclude.add(problem.compact_question())
            out.append(problem)
    return out


def _single_line(function: FunctionSource, tokenizer: Tokenizer, budget: int, rng: random.Random
                 ) -> dict[str, str] | None:
    """A random single-line infill of ``function`` (never its ``def`` or last line), None if it has none."""
    lines = function.lines
    counts = [len(tokenizer.encode(line, add_special_tokens=False).ids) for line in lines]
    spans = [s for s, _ in candidate_spans(counts, "single_line", max_middle_tokens=budget) if s < len(lines) - 1]
    if not spans:
        return None
    start = rng.choice(spans)
    return {"prompt": "".join(lines[:start]), "response": lines[start], "suffix": "".join(lines[start + 1:]),
            "module": function.module, "name": function.name}


def _fits(tokenizer: Tokenizer, texts: list[str], limit: int) -> bool:
    return sum(len(tokenizer.encode(text, add_special_tokens=False).ids) for text in texts) <= limit


def _build(folder: Path, data: TransferData, seed: int) -> dict[str, Any]:
    functions = stdlib_functions(data.stdlib_root)
    train_functions, held_functions = split_by_module(functions, data.held_out_fraction, seed)
    seen: set[str] = set()
    train_problems = [p.to_gsm8k() for p in _problems(data.num_train_problems, seed * 3, data, seen)]
    validation = [p.to_gsm8k() for p in _problems(data.num_validation, seed * 3 + 1, data, seen)]
    test = [p.to_gsm8k() for p in _problems(data.num_test, seed * 3 + 2, data, seen)]
    documents = [f.source for f in train_functions] + [math_text(p) for p in train_problems]
    tokenizer = train_bpe(documents, data.vocab_size)
    save_tokenizer(tokenizer, folder)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))

    rng = random.Random(seed)
    math_pairs = [{"prompt": p["question"], "response": p["answer"], "suffix": ""} for p in train_problems]
    code_pairs = [pair for f in train_functions if (pair := _single_line(f, tokenizer, data.middle_budget, rng))]
    code_room = data.max_length - data.middle_budget  # the MDM canvas: prefix, the budget, suffix
    pairs = [p for p in math_pairs if _fits(tokenizer, [p["prompt"], p["response"]], data.max_length)]
    pairs += [p for p in code_pairs if _fits(tokenizer, [p["prompt"], p["suffix"]], code_room)]
    rng.shuffle(pairs)
    (folder / "ift.jsonl").write_text("".join(json.dumps({k: p[k] for k in ("prompt", "response", "suffix")}) + "\n"
                                              for p in pairs))

    def fitting(problems: list[dict[str, str]]) -> list[dict[str, str]]:
        return [p for p in problems if _fits(tokenizer, [p["question"], p["answer"]], data.max_length)]

    held_infills = [pair for f in held_functions if (pair := _single_line(f, tokenizer, data.middle_budget, rng))
                    and _fits(tokenizer, [pair["prompt"], pair["suffix"]], code_room)]
    humaneval = single_line_tasks(load_problems(), one_per_problem=True)[:data.num_humaneval]
    evaluation = {"math": {"validation": fitting(validation), "test": fitting(test)},
                  "infill": rng.sample(held_infills, min(data.num_infill, len(held_infills))),
                  "humaneval": [asdict(task) for task in humaneval]}
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    return {"options": asdict(data), "seed": seed,
            "corpus": {"documents": len(documents), "functions": len(train_functions), "problems": len(train_problems),
                       "tokens": sum(len(e.ids) for e in tokenizer.encode_batch(documents, add_special_tokens=False))},
            "held_out": {"modules": len({f.module for f in held_functions}), "functions": len(held_functions),
                         "modules_train": len({f.module for f in train_functions})},
            "ift": {"math": sum(p["suffix"] == "" for p in pairs), "code": sum(p["suffix"] != "" for p in pairs),
                    "dropped_longer_than_max_length": len(math_pairs) + len(code_pairs) - len(pairs)},
            "evaluation": {"validation": len(evaluation["math"]["validation"]), "test": len(evaluation["math"]["test"]),
                           "test_dropped_longer_than_max_length": len(test) - len(evaluation["math"]["test"]),
                           "infill": len(evaluation["infill"]), "humaneval": len(humaneval)}}


def build_transfer_data(directory: str | Path, data: TransferData, seed: int = 0) -> TransferFiles:
    """The files of ``data`` with ``seed`` in ``directory/<key of both>`` (built unless already there)."""
    key = hashlib.blake2b(json.dumps([asdict(data), seed]).encode(), digest_size=8).hexdigest()
    folder = Path(directory) / f"transfer-data-{key}"
    if not (folder / "meta.json").is_file():
        with atomic_directory(folder) as staging:
            meta = _build(staging, data, seed)
            (staging / "meta.json").write_text(json.dumps(meta, indent=1))
    return TransferFiles(folder, json.loads((folder / "meta.json").read_text()))
