"""The code-infilling task registered for training (``data: {task: infill, ...}``).

Corpus: functions of the standard library (:mod:`~flexmdm.tasks.infill.functions`) or of a
folder of ``.py`` files, split by module into train and held-out sets; a byte-level BPE trained
on the training functions' lines; each line tokenized on its own; functions of 2 lines or more
and at most ``max_function_tokens`` tokens kept. Cached on disk like the text task
(``cache_dir/infill-<key>/``: ``tokenizer.json``, ``corpus.npz``, ``functions.json``).

Every draw picks a function, a span kind (single-line with probability
``single_line_fraction``, else multi-line) and a span of that kind uniformly among those whose
middle holds at most ``max_middle_tokens`` tokens (:func:`~flexmdm.tasks.infill.spans.candidate_spans`).

Two layouts of the same draw:

* ``layout="flexmdm"`` — ``prefix + middle + suffix`` with prefix and suffix frozen and
  insertion allowed only between them (region ``len(prefix)``): the FlexMDM infilling coupling
  of :mod:`flexmdm.tasks.instruct`.
* ``layout="mdm"`` — a fixed canvas of ``max_length`` positions, ``prefix + middle' + suffix``
  then PAD, where ``middle'`` is the middle right-padded with PAD to the budget of
  ``max_middle_tokens`` positions (the *fixed-budget* layout, the one the MDM is asked in).
  Prefix, suffix and the trailing PAD are frozen; the middle's PADs are targets. This is the
  layout of :func:`flexmdm.sampling.mdm_canvas`.

For evaluation the held-out modules are halved, again by module, into a ``validation`` and a
``test`` part (:attr:`InfillTask.evaluation_functions`), so that a bench can choose on one and
report on the other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from flexmdm.atomic import atomic_directory
from flexmdm.constraints import Prompt
from flexmdm.families import layout_family
from flexmdm.tasks.cache import cache_folder, load_or_build, source_identity
from flexmdm.tasks.infill.functions import FunctionSource, split_by_module, stdlib_functions
from flexmdm.tasks.infill.spans import SPAN_KINDS, InfillExample, SpanKind, candidate_spans, cut
from flexmdm.tasks.text.tokenizer import load_tokenizer, save_tokenizer, text_vocab, train_bpe
from flexmdm.tasks.base import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = ["CodeCorpus", "InfillTask", "build_code_corpus"]

CACHE_VERSION = 1
SPLITS: tuple[Split, ...] = ("train", "validation")
EvaluationPart = Literal["validation", "test"]
EVALUATION_PARTS: tuple[EvaluationPart, ...] = ("validation", "test")


@dataclass
class CodeCorpus:
    """Functions of both splits with their per-line token ids.

    Attributes:
        tokenizer: the BPE (``[MASK]`` and ``[PAD]`` included).
        functions: split → the kept functions.
        line_ids: split → for each function, the token ids of each of its lines.
    """

    tokenizer: Tokenizer
    functions: dict[str, list[FunctionSource]]
    line_ids: dict[str, list[list[list[int]]]]


def build_code_corpus(functions: list[FunctionSource], *, vocab_size: int, max_function_tokens: int,
                      held_out_fraction: float = 0.1, split_seed: int = 0,
                      tokenizer: Tokenizer | None = None) -> CodeCorpus:
    """Split by module, train the BPE on the training lines, tokenize line by line, filter.

    Raises:
        ValueError: an empty split after filtering.
    """
    splits = dict(zip(SPLITS, split_by_module(functions, held_out_fraction, split_seed)))
    if tokenizer is None:
        tokenizer = train_bpe([line for f in splits["train"] for line in f.lines], vocab_size)
    kept: dict[str, list[FunctionSource]] = {}
    line_ids: dict[str, list[list[list[int]]]] = {}
    for name, items in splits.items():
        kept[name], line_ids[name] = [], []
        for function in items:
            encoded = [e.ids for e in tokenizer.encode_batch(function.lines, add_special_tokens=False)]
            if len(encoded) >= 2 and sum(map(len, encoded)) <= max_function_tokens:
                kept[name].append(function)
                line_ids[name].append(encoded)
        if not kept[name]:
            raise ValueError(f"no {name} function of 2+ lines fits max_function_tokens={max_function_tokens} "
                             f"({len(items)} functions before filtering)")
    return CodeCorpus(tokenizer, kept, line_ids)


@register_task("infill")
@dataclass(frozen=True)
class InfillTask(Task):
    """Code infilling on Python functions (see the module docstring).

    Attributes:
        source: ``"stdlib"`` or a folder of ``.py`` files.
        layout: ``"flexmdm"`` or ``"mdm"``.
        max_function_tokens: longest function kept.
        max_middle_tokens: longest middle; also the MDM's middle budget.
        max_span_lines: longest multi-line span.
        single_line_fraction: probability that a draw is a single-line span.
        vocab_size: ids of the BPE, ``[MASK]``/``[PAD]`` included.
        held_out_fraction: share of modules held out (the validation split of training).
        split_seed: seed of the module split; ``split_seed + 1`` halves the held-out modules.
        cache_dir: where the tokenized corpus is cached (None: the text task's default).
    """

    source: str = "stdlib"
    layout: Literal["flexmdm", "mdm"] = "flexmdm"
    max_function_tokens: int = 96
    max_middle_tokens: int = 32
    max_span_lines: int = 3
    single_line_fraction: float = 0.5
    vocab_size: int = 2048
    held_out_fraction: float = 0.1
    split_seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        layout_family(self.layout)  # raises for a layout no generating family trains on
        if self.max_function_tokens < 2 or self.max_middle_tokens < 1:
            raise ValueError("max_function_tokens must be >= 2 and max_middle_tokens >= 1")
        if self.max_span_lines < 2:
            raise ValueError(f"max_span_lines must be >= 2, got {self.max_span_lines}")
        if not 0.0 <= self.single_line_fraction <= 1.0:
            raise ValueError(f"single_line_fraction must lie in [0, 1], got {self.single_line_fraction}")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must lie in (0, 1), got {self.held_out_fraction}")
        if self.source != "stdlib" and not Path(self.source).is_dir():
            raise ValueError(f"source must be 'stdlib' or a folder of .py files, got {self.source!r}")

    @property
    def max_length(self) -> int:
        """The MDM canvas: a whole function plus the unused part of the middle budget (an upper bound)."""
        return self.max_function_tokens + self.max_middle_tokens

    # -- the corpus -------------------------------------------------------------------------

    @cached_property
    def cache_path(self) -> Path:
        """``cache_dir/infill-<key>``: the key digests the options that change the corpus and the source."""
        options = {k: getattr(self, k) for k in ("max_function_tokens", "vocab_size", "held_out_fraction",
                                                  "split_seed")}
        payload = {"version": CACHE_VERSION, "options": options, "source": source_identity(self.source)}
        return cache_folder("infill", self.cache_dir, payload)

    @cached_property
    def corpus(self) -> CodeCorpus:
        """The tokenized functions, from the cache when there (built and cached otherwise)."""
        return load_or_build(self.cache_path, self._read_cache, self._build_corpus, self._write_cache)

    def _build_corpus(self) -> CodeCorpus:
        functions = stdlib_functions(None if self.source == "stdlib" else self.source)
        return build_code_corpus(functions, vocab_size=self.vocab_size, max_function_tokens=self.max_function_tokens,
                                 held_out_fraction=self.held_out_fraction, split_seed=self.split_seed)

    def _read_cache(self, path: Path) -> CodeCorpus:
        tokenizer = load_tokenizer(path / "tokenizer.json")
        listed = json.loads((path / "functions.json").read_text())
        functions = {s: [FunctionSource(**f) for f in listed[s]] for s in SPLITS}
        line_ids = {}
        with np.load(path / "corpus.npz") as arrays:
            for split in SPLITS:
                ids, lines, funcs = (arrays[f"{split}_{k}"] for k in ("ids", "line_offsets", "function_offsets"))
                rows = [ids[lines[j]:lines[j + 1]].tolist() for j in range(len(lines) - 1)]
                line_ids[split] = [rows[funcs[f]:funcs[f + 1]] for f in range(len(funcs) - 1)]
                if len(line_ids[split]) != len(functions[split]):
                    raise ValueError("cache holds inconsistent function counts")
        return CodeCorpus(tokenizer, functions, line_ids)

    def _write_cache(self, corpus: CodeCorpus, path: Path) -> None:
        with atomic_directory(path, replace=False) as temporary:  # another process may cache it first
            save_tokenizer(corpus.tokenizer, temporary)
            arrays = {}
            for split in SPLITS:
                lines = [line for function in corpus.line_ids[split] for line in function]
                arrays[f"{split}_ids"] = np.array([t for line in lines for t in line], dtype=np.int32)
                arrays[f"{split}_line_offsets"] = np.concatenate([[0], np.cumsum([len(x) for x in lines])]).astype(np.int64)
                arrays[f"{split}_function_offsets"] = np.concatenate(
                    [[0], np.cumsum([len(f) for f in corpus.line_ids[split]])]).astype(np.int64)
            np.savez(temporary / "corpus.npz", **arrays)
            (temporary / "functions.json").write_text(
                json.dumps({s: [asdict(f) for f in corpus.functions[s]] for s in SPLITS}))
            (temporary / "meta.json").write_text(json.dumps(
                {"task": asdict(self), "functions": {s: len(corpus.functions[s]) for s in SPLITS}}, indent=2))

    @cached_property
    def vocab(self) -> Vocab:
        return text_vocab(self.corpus.tokenizer)

    @cached_property
    def spans(self) -> dict[str, dict[str, list[list[tuple[int, int]]]]]:
        """split → kind → for each function, its candidate spans."""
        return {split: {kind: [candidate_spans([len(line) for line in f], kind, max_lines=self.max_span_lines,
                                               max_middle_tokens=self.max_middle_tokens)
                               for f in self.corpus.line_ids[split]]
                        for kind in SPAN_KINDS}
                for split in SPLITS}

    def example(self, split: Split, index: int, span: tuple[int, int], kind: SpanKind) -> InfillExample:
        """Function ``index`` of ``split`` cut at ``span``."""
        function = self.corpus.functions[split][index]
        return cut(function.lines, self.corpus.line_ids[split][index], span, kind,
                   f"{function.module}:{function.name}")

    # -- training draws ---------------------------------------------------------------------

    def _draw(self, split: Split, generator: torch.Generator) -> InfillExample:
        spans = self.spans[split]
        uniforms = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        preferred: SpanKind = "single_line" if uniforms[0] < self.single_line_fraction else "multi_line"
        count = len(spans[preferred])
        for _ in range(64):
            index = int(torch.randint(count, (1,), generator=generator))
            for kind in (preferred, *(k for k in SPAN_KINDS if k != preferred)):
                options = spans[kind][index]
                if options:
                    span = options[min(int(uniforms[1] * len(options)), len(options) - 1)]
                    return self.example(split, index, span, kind)
        raise ValueError(f"the {split} split holds no function with a span of at most "
                         f"{self.max_middle_tokens} tokens")

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        """Infilling draws of ``split`` in the task's layout (see the module docstring)."""
        draws = [self._draw(split, generator) for _ in range(batch_size)]
        width, pad = self.max_length, self.vocab.pad_id
        x1 = torch.full((batch_size, width), pad, dtype=torch.long)
        frozen = torch.zeros(batch_size, width, dtype=torch.bool)
        if layout_family(self.layout).inserts:
            for b, e in enumerate(draws):
                row = e.prefix + e.middle + e.suffix
                x1[b, :len(row)] = torch.tensor(row)
                frozen[b, :len(e.prefix)] = True
                frozen[b, len(e.prefix) + len(e.middle):len(row)] = True
            lengths = torch.tensor([len(e.prefix) + len(e.middle) + len(e.suffix) for e in draws])
            prompt = Prompt.infill([e.prefix for e in draws], [e.suffix for e in draws], pad)
            allowed = torch.zeros(batch_size, width + 1, dtype=torch.bool)
            allowed[:, :prompt.allowed_regions.shape[1]] = prompt.allowed_regions
            return TrainingBatch(x1, lengths, frozen, allowed)
        for b, e in enumerate(draws):
            start = len(e.prefix) + self.max_middle_tokens
            x1[b, :len(e.prefix) + len(e.middle)] = torch.tensor(e.prefix + e.middle)
            x1[b, start:start + len(e.suffix)] = torch.tensor(e.suffix, dtype=torch.long)
            frozen[b, :len(e.prefix)] = True
            frozen[b, start:] = True
        return TrainingBatch(x1, torch.full((batch_size,), width), frozen)

    # -- evaluation -------------------------------------------------------------------------

    @cached_property
    def evaluation_functions(self) -> dict[str, list[int]]:
        """``"validation"`` and ``"test"`` → indices of held-out functions (the ``validation`` corpus split):
        the held-out modules halved by :func:`~flexmdm.tasks.infill.functions.split_by_module` with seed
        ``split_seed + 1``, so that no module, hence no function, lies in both."""
        held_out = self.corpus.functions["validation"]
        _, test = split_by_module(held_out, 0.5, self.split_seed + 1)
        test_modules = {f.module for f in test}
        return {part: [i for i, f in enumerate(held_out) if (f.module in test_modules) == (part == "test")]
                for part in EVALUATION_PARTS}

    def evaluation_examples(self, kind: SpanKind, count: int, part: EvaluationPart = "validation",
                            seed: int = 0) -> list[InfillExample]:
        """``count`` examples of ``kind`` from the held-out functions of ``part`` (``"validation"`` or
        ``"test"``, :attr:`evaluation_functions`): functions in a seeded random order, one random span each.

        Returns fewer when the part has fewer functions with a span of that kind.
        """
        if kind not in SPAN_KINDS:
            raise ValueError(f"kind must be one of {list(SPAN_KINDS)}, got {kind!r}")
        if part not in EVALUATION_PARTS:
            raise ValueError(f"part must be one of {list(EVALUATION_PARTS)}, got {part!r}")
        rng = np.random.default_rng([seed, SPAN_KINDS.index(kind)])
        functions, spans = self.evaluation_functions[part], self.spans["validation"][kind]
        examples = []
        for index in rng.permutation(functions).tolist():
            if spans[index]:
                examples.append(self.example("validation", index, spans[index][rng.integers(len(spans[index]))], kind))
                if len(examples) == count:
                    break
        return examples

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (special tokens skipped)."""
        return self.corpus.tokenizer.decode([int(t) for t in ids], skip_special_tokens=True)

    def write_tokenizer(self, directory: Path) -> bool:
        save_tokenizer(self.corpus.tokenizer, directory)
        return True
