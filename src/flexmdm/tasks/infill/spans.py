"""Infilling examples: a function cut at line boundaries into prefix, middle and suffix.

A function of lines ``l_0 … l_{m−1}`` (``l_0`` its ``def`` line) gives the span ``(start, count)``
with middle ``l_start … l_{start+count−1}``, prefix the lines before and suffix the lines after.
Spans never include the ``def`` line (``start >= 1``). A *single-line* span has ``count = 1``;
a *multi-line* span has ``2 <= count <= max_lines``.

Each line is tokenized on its own (its ``\\n`` included), so a span's tokens are a slice of
the function's tokens and the middle decodes back to exactly its text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["InfillExample", "SpanKind", "candidate_spans", "cut"]

SpanKind = Literal["single_line", "multi_line"]
SPAN_KINDS: tuple[SpanKind, ...] = ("single_line", "multi_line")


@dataclass(frozen=True)
class InfillExample:
    """One infilling problem: the texts and token ids of prefix, middle and suffix.

    ``prefix_text + middle_text + suffix_text`` is the whole function.
    """

    prefix_text: str
    middle_text: str
    suffix_text: str
    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    kind: SpanKind
    name: str = ""

    @property
    def source(self) -> str:
        return self.prefix_text + self.middle_text + self.suffix_text


def candidate_spans(line_token_counts: Sequence[int], kind: SpanKind, *, max_lines: int = 3,
                    max_middle_tokens: int = 32) -> list[tuple[int, int]]:
    """Every ``(start, count)`` span of ``kind`` whose middle holds 1..``max_middle_tokens`` tokens.

    Args:
        line_token_counts: tokens of each line of the function (line 0 the ``def`` line).
        kind: "single_line" (count 1) or "multi_line" (2..max_lines).
        max_lines: the longest multi-line span.
        max_middle_tokens: the largest middle (in tokens).

    Raises:
        ValueError: unknown kind or ``max_lines < 2``.
    """
    if kind not in SPAN_KINDS:
        raise ValueError(f"kind must be one of {list(SPAN_KINDS)}, got {kind!r}")
    if max_lines < 2:
        raise ValueError(f"max_lines must be >= 2, got {max_lines}")
    counts = np.asarray(line_token_counts, dtype=np.int64)
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    sizes = (1,) if kind == "single_line" else range(2, max_lines + 1)
    spans = []
    for start in range(1, len(counts)):
        for count in sizes:
            if start + count > len(counts):
                break
            tokens = cumulative[start + count] - cumulative[start]
            if 1 <= tokens <= max_middle_tokens:
                spans.append((start, count))
    return spans


def cut(lines: Sequence[str], line_ids: Sequence[Sequence[int]], span: tuple[int, int], kind: SpanKind,
        name: str = "") -> InfillExample:
    """The :class:`InfillExample` of ``span`` over a function's lines and their token ids.

    Raises:
        ValueError: the span leaves the function or includes the ``def`` line.
    """
    start, count = span
    if len(lines) != len(line_ids):
        raise ValueError(f"{len(lines)} lines but {len(line_ids)} token lists")
    if start < 1 or count < 1 or start + count > len(lines):
        raise ValueError(f"span {span} is not inside lines 1..{len(lines) - 1}")
    end = start + count

    def ids(a: int, b: int) -> tuple[int, ...]:
        return tuple(int(t) for row in line_ids[a:b] for t in row)

    return InfillExample("".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:]),
                         ids(0, start), ids(start, end), ids(end, len(lines)), kind, name)
