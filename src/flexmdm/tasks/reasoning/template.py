"""The question / reasoning / answer template, its tokenizer and its two layouts.

Text form of one example (the model's input and output)::

    has 7 buys 5 gives 3 ? <r> 7+5=12;12-3=9 </r> <a> 9 </a>

The question keywords, then the reasoning region between ``<r>`` and ``</r>`` (the calculator
annotations of the rationale joined by ``;``), then the answer region between ``<a>`` and
``</a>``. Numbers are split into digits. A word-level HF ``tokenizers`` tokenizer (digits
isolated, punctuation isolated, delimiters as special tokens) maps text to ids; unknown words
raise an error.

* **FlexMDM layout**: the sequence itself. The question and the four delimiters are frozen;
  insertions are allowed in the reasoning region (after ``<r>``) and the answer region (after
  ``<a>``), so both grow to whatever length the problem needs.
* **MDM layout**: a fixed canvas ``question <r> R… </r> <a> A… </a> PAD…`` whose reasoning and
  answer regions have fixed widths, filled with PAD after their content (PAD is a target there);
  the question, the delimiters and the trailing PAD are frozen.

Given an answer, the answer region is frozen too (posterior sampling of reasoning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor

from flexmdm.constraints import Prompt, pad_sequences
from flexmdm.tasks.reasoning.gsm8k import calculator_annotations, extract_answer
from flexmdm.tasks.reasoning.problems import OPERATION_SETS
from flexmdm.vocab import Vocab

__all__ = ["DELIMITERS", "Decoded", "ReasoningTemplate", "template_parts"]

DELIMITERS = ("<r>", "</r>", "<a>", "</a>")
_SYMBOLS = (*(str(d) for d in range(10)), "+", "-", "*", "/", "=", ";", "?", "has")


def template_parts(question: str, rationale: str) -> tuple[str, str, str]:
    """``(question, reasoning, answer)`` texts of a compact question and a GSM8K rationale.

    The reasoning is the rationale's calculator annotations joined by ``;``; the answer is the
    number after ``####``.

    Raises:
        ValueError: the rationale has no ``#### N`` line.
    """
    answer = extract_answer(rationale)
    if answer is None:
        raise ValueError(f"the rationale has no '#### N' line: {rationale!r}")
    return question, ";".join(calculator_annotations(rationale)), answer


@dataclass(frozen=True)
class Decoded:
    """What a generated sequence says.

    Attributes:
        answer: the answer region's text (digits joined, PAD removed), None when malformed
            (a delimiter missing or out of order, a MASK left, an empty answer).
        reasoning: the reasoning region's text (PAD removed), None when malformed.
        reasoning_length: tokens in the reasoning region (PAD excluded).
    """

    answer: str | None
    reasoning: str | None
    reasoning_length: int


@dataclass(frozen=True)
class ReasoningTemplate:
    """Token ids, the tokenizer and the layouts of the reasoning template.

    Attributes:
        reasoning_width: the MDM reasoning region (tokens); FlexMDM has no fixed width.
        answer_width: the MDM answer region.
        question_width: the longest question (sizes the MDM canvas).
        operations: the operation set whose keywords the questions use
            (:data:`~flexmdm.tasks.reasoning.problems.OPERATION_SETS`).
    """

    reasoning_width: int = 39
    answer_width: int = 2
    question_width: int = 13
    operations: str = "basic"

    @cached_property
    def symbols(self) -> tuple[str, ...]:
        """Every token string in id order: symbols, keywords, delimiters, ``[MASK]``, ``[PAD]``."""
        return (*_SYMBOLS, *OPERATION_SETS[self.operations], *DELIMITERS, "[MASK]", "[PAD]")

    @cached_property
    def ids(self) -> dict[str, int]:
        return {symbol: i for i, symbol in enumerate(self.symbols)}

    @cached_property
    def vocab(self) -> Vocab:
        return Vocab(size=len(self.symbols), mask_id=self.ids["[MASK]"], pad_id=self.ids["[PAD]"])

    @property
    def delimiter_ids(self) -> tuple[int, int, int, int]:
        """``(<r>, </r>, <a>, </a>)``."""
        return tuple(self.ids[d] for d in DELIMITERS)  # type: ignore[return-value]

    @property
    def canvas_width(self) -> int:
        """The MDM canvas: question, ``<r>``, reasoning, ``</r> <a>``, answer, ``</a>``."""
        return self.question_width + self.reasoning_width + self.answer_width + 4

    @cached_property
    def tokenizer(self):
        """The HF word-level tokenizer (digits and punctuation isolated)."""
        from tokenizers import Tokenizer, pre_tokenizers
        from tokenizers.models import WordLevel

        tokenizer = Tokenizer(WordLevel(dict(self.ids), unk_token="[PAD]"))
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Punctuation("isolated"),
        ])
        tokenizer.add_special_tokens([*DELIMITERS, "[MASK]", "[PAD]"])
        return tokenizer

    def write_tokenizer(self, directory: Path) -> None:
        self.tokenizer.save(str(Path(directory) / "tokenizer.json"))

    def encode(self, text: str) -> list[int]:
        """Ids of a text.

        Raises:
            ValueError: a word outside the vocabulary.
        """
        encoding = self.tokenizer.encode(text)
        if self.vocab.pad_id in encoding.ids:  # unknown words map to [PAD]
            raise ValueError(f"words outside the vocabulary: {self.unknown_words(text)[:5]} in {text!r}")
        return list(encoding.ids)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` (after pre-tokenization) that are not in the vocabulary."""
        return [piece for piece, _ in self.tokenizer.pre_tokenizer.pre_tokenize_str(text) if piece not in self.ids]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of many texts (checked like :meth:`encode`)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        out = []
        for text, encoding in zip(texts, encodings):
            if self.vocab.pad_id in encoding.ids:
                return [self.encode(t) for t in texts]  # raises with the offending words
            out.append(list(encoding.ids))
        return out

    def text(self, ids: Sequence[int]) -> str:
        """Ids as space-separated token strings (delimiters, MASK and PAD included)."""
        return " ".join(self.symbols[i] for i in ids)

    # ------------------------------------------------------------------ layouts
    def flexmdm_example(self, question: Sequence[int], reasoning: Sequence[int],
                        answer: Sequence[int]) -> tuple[list[int], list[bool], tuple[int, int]]:
        """``(ids, frozen, (reasoning region, answer region))`` of one example.

        Regions are numbered as in :mod:`flexmdm.constraints`: the reasoning region follows
        the ``len(question) + 1``-th frozen token (``<r>``), the answer region the
        ``len(question) + 3``-th (``<a>``).
        """
        r_open, r_close, a_open, a_close = self.delimiter_ids
        ids = [*question, r_open, *reasoning, r_close, a_open, *answer, a_close]
        frozen = [True] * (len(question) + 1) + [False] * len(reasoning) + [True, True] \
            + [False] * len(answer) + [True]
        q = len(question)
        return ids, frozen, (q + 1, q + 3)

    def mdm_example(self, question: Sequence[int], reasoning: Sequence[int],
                    answer: Sequence[int]) -> tuple[list[int], list[bool]]:
        """``(canvas [canvas_width], frozen)`` of one example.

        Raises:
            ValueError: a part exceeds its region.
        """
        self._check_widths(question, reasoning, answer)
        r_open, r_close, a_open, a_close = self.delimiter_ids
        pad = self.vocab.pad_id
        ids = [*question, r_open, *reasoning, *[pad] * (self.reasoning_width - len(reasoning)), r_close, a_open,
               *answer, *[pad] * (self.answer_width - len(answer)), a_close]
        frozen = [True] * (len(question) + 1) + [False] * self.reasoning_width + [True, True] \
            + [False] * self.answer_width + [True]
        tail = self.canvas_width - len(ids)
        return ids + [pad] * tail, frozen + [True] * tail

    def _check_widths(self, question: Sequence[int], reasoning: Sequence[int], answer: Sequence[int]) -> None:
        for name, part, width in (("question", question, self.question_width),
                                  ("reasoning", reasoning, self.reasoning_width),
                                  ("answer", answer, self.answer_width)):
            if len(part) > width:
                raise ValueError(f"a {name} of {len(part)} tokens exceeds its region of {width}")

    def flexmdm_prompt(self, questions: Sequence[Sequence[int]],
                       answers: Sequence[Sequence[int]] | None = None) -> Prompt:
        """Where FlexMDM inference starts.

        Without answers: ``question <r> </r> <a> </a>`` frozen, insertions in both regions.
        With answers: ``question <r> </r> <a> answer </a>`` frozen, insertions only in the
        reasoning region (posterior sampling of reasoning given the answer).
        """
        r_open, r_close, a_open, a_close = self.delimiter_ids
        rows = []
        for b, question in enumerate(questions):
            answer = [] if answers is None else list(answers[b])
            rows.append([*question, r_open, r_close, a_open, *answer, a_close])
        tokens, lengths = pad_sequences(rows, self.vocab.pad_id)
        q = torch.tensor([len(question) for question in questions], dtype=torch.long)
        regions = torch.arange(tokens.shape[1] + 1)[None, :]
        allowed = regions == (q + 1)[:, None]
        if answers is None:
            allowed = allowed | (regions == (q + 3)[:, None])
        return Prompt(tokens, lengths, allowed)

    def mdm_canvas(self, questions: Sequence[Sequence[int]],
                   answers: Sequence[Sequence[int]] | None = None) -> tuple[Tensor, Tensor]:
        """Where MDM inference starts: ``(canvas [B, W], frozen [B, W])``.

        Both regions are MASK; with answers the answer region holds the answer and PAD, frozen.
        """
        r_open, r_close, a_open, a_close = self.delimiter_ids
        mask, pad = self.vocab.mask_id, self.vocab.pad_id
        rows, frozen_rows = [], []
        for b, question in enumerate(questions):
            self._check_widths(question, [], [] if answers is None else answers[b])
            if answers is None:
                answer, answer_frozen = [mask] * self.answer_width, [False] * self.answer_width
            else:
                answer = [*answers[b], *[pad] * (self.answer_width - len(answers[b]))]
                answer_frozen = [True] * self.answer_width
            row = [*question, r_open, *[mask] * self.reasoning_width, r_close, a_open, *answer, a_close]
            flags = [True] * (len(question) + 1) + [False] * self.reasoning_width + [True, True] \
                + answer_frozen + [True]
            tail = self.canvas_width - len(row)
            rows.append(row + [pad] * tail)
            frozen_rows.append(flags + [True] * tail)
        return torch.tensor(rows, dtype=torch.long), torch.tensor(frozen_rows, dtype=torch.bool)

    # ------------------------------------------------------------------ reading outputs
    def regions(self, ids: Sequence[int], frozen: Sequence[bool] | None = None
                ) -> tuple[list[int], list[int]] | None:
        """``(reasoning ids, answer ids)`` between the delimiters (PAD kept); None if malformed.

        With ``frozen`` flags only frozen delimiters count (a generated ``</a>`` inside the
        reasoning does not end the answer's search).
        """
        ids = list(ids)
        where = [i for i in range(len(ids)) if frozen is None or bool(frozen[i])]
        first = {}
        for i in where:
            first.setdefault(ids[i], i)
        try:
            i, j, k, m = (first[d] for d in self.delimiter_ids)
        except KeyError:
            return None
        if not i < j < k < m:
            return None
        return ids[i + 1 : j], ids[k + 1 : m]

    def decode(self, ids: Sequence[int], frozen: Sequence[bool] | None = None) -> Decoded:
        """The answer and reasoning of a generated sequence (FlexMDM or MDM layout).

        Args:
            ids: the sequence.
            frozen: its frozen flags (see :meth:`regions`); None: first delimiters.
        """
        parts = self.regions(ids, frozen)
        if parts is None:
            return Decoded(None, None, 0)
        reasoning, answer = parts
        pad, mask = self.vocab.pad_id, self.vocab.mask_id
        reasoning = [i for i in reasoning if i != pad]
        answer = self._strip_trailing_pad(answer)
        digits = set(self.ids[str(d)] for d in range(10))
        answer_text = "".join(self.symbols[i] for i in answer) if answer and set(answer) <= digits else None
        reasoning_text = None if mask in reasoning else " ".join(self.symbols[i] for i in reasoning)
        return Decoded(answer_text, reasoning_text, len(reasoning))

    def _strip_trailing_pad(self, ids: list[int]) -> list[int]:
        while ids and ids[-1] == self.vocab.pad_id:
            ids = ids[:-1]
        return ids
