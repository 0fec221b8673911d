"""Metrics of generated text: length fidelity, generative perplexity, unigram entropy
(:func:`text_statistics` and :func:`sample_statistics` gather them).

* Length distributions are compared as empirical distributions over integer lengths: the
  total-variation distance ``½ Σ_ℓ |p(ℓ) − q(ℓ)|`` and the Wasserstein-1 distance
  ``Σ_ℓ |P(ℓ) − Q(ℓ)|`` (P, Q the cumulative distributions; in tokens).
* Generative perplexity (paper §5.1.1): ``exp(Σ NLL / Σ tokens)`` of the generated sequences
  under a reference causal LM (:class:`flexmdm.models.AutoregressiveLM`), pooling the tokens of
  all scored samples; samples of ``≤ 10`` tokens are excluded, as in the paper. The end of a
  sequence is not scored (it measures the text, not where it stops).
* Unigram entropy: the entropy (nats) of each sample's token frequencies, averaged over
  samples; repetitive, degenerate samples score low.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "finite_or_none",
    "generative_perplexity",
    "length_distances",
    "length_summary",
    "length_total_variation",
    "length_wasserstein1",
    "sample_statistics",
    "text_statistics",
    "unigram_entropy",
]

MIN_SCORED_TOKENS = 11
"""Samples shorter than this (≤ 10 tokens) are left out of the generative perplexity."""


def _as_lengths(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if array.size == 0:
        raise ValueError("a length distribution needs at least one sample")
    if (array < 0).any():
        raise ValueError("lengths must be >= 0")
    return array


def _histograms(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_lengths(a), _as_lengths(b)
    size = int(max(a.max(), b.max())) + 1
    return np.bincount(a, minlength=size) / a.size, np.bincount(b, minlength=size) / b.size


def length_total_variation(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Total-variation distance between the empirical length distributions of ``a`` and ``b``."""
    p, q = _histograms(a, b)
    return float(0.5 * np.abs(p - q).sum())


def length_wasserstein1(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Wasserstein-1 distance (in tokens) between the empirical length distributions."""
    p, q = _histograms(a, b)
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum())


def length_summary(lengths: Sequence[int] | np.ndarray) -> dict[str, float]:
    """``{"mean", "q25", "median", "q75"}`` of the lengths (quartiles by linear interpolation)."""
    array = _as_lengths(lengths)
    q25, median, q75 = np.quantile(array, [0.25, 0.5, 0.75])
    return {"mean": float(array.mean()), "q25": float(q25), "median": float(median), "q75": float(q75)}


def unigram_entropy(sequences: Sequence[Sequence[int]]) -> float:
    """Mean over non-empty sequences of the entropy (nats) of their token frequencies (NaN if none)."""
    entropies = []
    for sequence in sequences:
        if len(sequence) == 0:
            continue
        _, counts = np.unique(np.asarray(sequence), return_counts=True)
        frequencies = counts / counts.sum()
        entropies.append(float(-(frequencies * np.log(frequencies)).sum()))
    return float(np.mean(entropies)) if entropies else math.nan


@torch.no_grad()
def generative_perplexity(model: nn.Module, sequences: Sequence[Sequence[int]], *, pad_id: int,
                          min_tokens: int = MIN_SCORED_TOKENS, batch_size: int = 64) -> tuple[float, int]:
    """Perplexity of ``sequences`` under the causal LM ``model``, pooled over tokens.

    Args:
        model: called as ``model(x [B, n], lengths [B]) -> logits [B, n + 1, V]`` (logit i
            predicts token i), like :class:`flexmdm.models.AutoregressiveLM`.
        sequences: token-id lists.
        pad_id: id filling the batch after each sequence (never scored).
        min_tokens: sequences shorter than this are not scored.
        batch_size: sequences per forward pass.

    Returns:
        ``(perplexity, number of sequences scored)``; NaN and 0 when none is long enough.
    """
    kept = [list(map(int, s)) for s in sequences if len(s) >= min_tokens]
    if not kept:
        return math.nan, 0
    model.eval()
    total_nll, total_tokens = 0.0, 0
    kept.sort(key=len)  # similar lengths together: less padding
    for start in range(0, len(kept), batch_size):
        chunk = kept[start:start + batch_size]
        lengths = torch.tensor([len(s) for s in chunk])
        width = int(lengths.max())
        x = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, sequence in enumerate(chunk):
            x[row, : len(sequence)] = torch.tensor(sequence)
        logits = model(x, lengths)[:, :width]
        nll = F.cross_entropy(logits.transpose(1, 2).float(), x, reduction="none")
        scored = torch.arange(width)[None, :] < lengths[:, None]
        total_nll += float(nll[scored].double().sum())
        total_tokens += int(scored.sum())
    return math.exp(total_nll / total_tokens), len(kept)


def length_distances(lengths: Sequence[int] | np.ndarray, reference: Sequence[int] | np.ndarray) -> dict[str, float]:
    """``{"length_tv", "length_w1"}`` between two sets of lengths."""
    return {"length_tv": length_total_variation(lengths, reference),
            "length_w1": length_wasserstein1(lengths, reference)}


def text_statistics(sequences: Sequence[Sequence[int]], scorer: nn.Module, *, pad_id: int) -> dict[str, Any]:
    """``{"n", "n_scored", "gen_ppl", "length", "unigram_entropy"}`` of ``sequences``: ``gen_ppl`` under the causal
    LM ``scorer`` (:func:`generative_perplexity`), ``length`` the :func:`length_summary`; ``gen_ppl`` and
    ``unigram_entropy`` are None where NaN (no sequence to score)."""
    ppl, scored = generative_perplexity(scorer, sequences, pad_id=pad_id)
    return {"n": len(sequences), "n_scored": scored, "gen_ppl": finite_or_none(ppl),
            "length": length_summary([len(s) for s in sequences]),
            "unigram_entropy": finite_or_none(unigram_entropy(sequences))}


def sample_statistics(sequences: Sequence[Sequence[int]], reference_lengths: Sequence[int] | np.ndarray,
                      scorer: nn.Module, *, pad_id: int) -> dict[str, Any]:
    """:func:`text_statistics` of generated ``sequences`` and the :func:`length_distances` of their lengths to
    ``reference_lengths``."""
    return {**length_distances([len(s) for s in sequences], reference_lengths),
            **text_statistics(sequences, scorer, pad_id=pad_id)}


def finite_or_none(value: float) -> float | None:
    """``value``, or None (JSON null) when it is NaN: e.g. no sample long enough to score."""
    return None if math.isnan(value) else value
