"""Infilling metrics: exact match of the middle, parse rate of the program, middle-length error."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["exact_match", "length_abs_error", "parses", "parse_rate", "infill_metrics"]


def parses(source: str) -> bool:
    """Whether ``ast.parse`` accepts ``source``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _check(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} predictions but {len(b)} references")
    if not len(a):
        raise ValueError("no example to score")


def exact_match(predicted: Sequence[str], reference: Sequence[str]) -> float:
    """Fraction of middles equal, character for character, to the reference."""
    _check(predicted, reference)
    return float(np.mean([p == r for p, r in zip(predicted, reference)]))


def parse_rate(prefixes: Sequence[str], middles: Sequence[str], suffixes: Sequence[str]) -> float:
    """Fraction of ``prefix + middle + suffix`` that ``ast.parse`` accepts."""
    _check(prefixes, middles)
    _check(suffixes, middles)
    return float(np.mean([parses(p + m + s) for p, m, s in zip(prefixes, middles, suffixes)]))


def length_abs_error(predicted_lengths: Sequence[int], reference_lengths: Sequence[int]) -> float:
    """Mean absolute difference of middle lengths (in tokens)."""
    _check(predicted_lengths, reference_lengths)
    return float(np.mean(np.abs(np.asarray(predicted_lengths) - np.asarray(reference_lengths))))


def infill_metrics(prefixes: Sequence[str], middles: Sequence[str], suffixes: Sequence[str],
                   reference_middles: Sequence[str], middle_lengths: Sequence[int],
                   reference_lengths: Sequence[int]) -> dict[str, float | int]:
    """``{"exact_match", "parse_rate", "length_abs_error", "n"}`` of generated middles."""
    return {
        "exact_match": exact_match(middles, reference_middles),
        "parse_rate": parse_rate(prefixes, middles, suffixes),
        "length_abs_error": length_abs_error(middle_lengths, reference_lengths),
        "n": len(middles),
    }
