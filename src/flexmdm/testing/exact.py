"""Exact denoisers of enumerable distributions, to check samplers and losses against.

For a FlexMDM state x (length n, some slots MASK) at time t < 1 the exact posterior over the
clean sequence x* and the index set S (which positions of x* survive in x) is (Kim et al.,
*Any-Order Flexible Length Masked Diffusion*, arXiv:2509.01025, appendix E.2.1)

    p(x*, S | x_t = x) ∝ p(x*) · (1 − α_t)^(len(x*) − n)   for every S with x ⊑ x*|_S,

because each surviving position is masked or clean with probabilities that depend on t alone,
and each absent one contributes 1 − α_t. It does not depend on β. Frozen tokens (prompts,
subgoals) are always present and clean: S must contain every frozen position of x*, and map
them onto the frozen slots of x. At t = 1 the factor is 0⁰ = 1 for equal lengths and 0 else.

The index sets S are the increasing alignments of the n slots of x into x*; they are counted by
dynamic programming (forward and backward sums over alignments, O(n · len(x*)²) per state and
candidate), so supports of long sequences — reasoning traces, maze paths — stay exact and cheap.
From the joint posterior the oracle returns the unmasking posterior f at every masked slot, the
expected gap counts g over the n + 1 gaps (what a perfectly trained network would) and, on
request, the whole distribution of every gap's remaining count (what a count head would).
States with no consistent x* (they can only arise from an inexact sampler) get a uniform
posterior, zero gaps and a count of 0 with certainty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexmdm.schedules import Schedule
from flexmdm.vocab import Vocab

__all__ = ["ExactFlexOracle", "ExactMDMOracle", "empirical_distribution", "total_variation"]

Distribution = Mapping[tuple[int, ...], float]
Support = Sequence[tuple[Sequence[int], float, Sequence[bool]]]
"""``[(sequence, probability, frozen flags), …]``: a distribution in which one sequence may appear
with several frozen patterns (e.g. one maze path under different subgoals)."""


def _check_distribution(
    distribution: Distribution | Support, vocab: Vocab, frozen: Mapping[tuple[int, ...], Sequence[bool]] | None
) -> list[tuple[tuple[int, ...], float, tuple[bool, ...]]]:
    if not distribution:
        raise ValueError("the distribution is empty")
    if isinstance(distribution, Mapping):
        triples = [(s, p, frozen[tuple(s)] if frozen is not None else None) for s, p in distribution.items()]
    elif frozen is not None:
        raise ValueError("give frozen flags inside the support triples, not as `frozen`")
    else:
        triples = list(distribution)
    support = []
    for sequence, probability, flags in triples:
        sequence = tuple(int(v) for v in sequence)
        if probability < 0:
            raise ValueError(f"negative probability {probability} for {sequence}")
        bad = [v for v in sequence if not 0 <= v < vocab.size or v in (vocab.mask_id, vocab.pad_id)]
        if bad:
            raise ValueError(f"{sequence} holds ids {bad} that are special or outside the vocabulary")
        flags = tuple(bool(f) for f in flags) if flags is not None else (False,) * len(sequence)
        if len(flags) != len(sequence):
            raise ValueError(f"frozen flags {flags} do not match the length of {sequence}")
        support.append((sequence, float(probability), flags))
    if sum(p for _, p, _ in support) <= 0:
        raise ValueError("the distribution has zero total mass")
    return support


@dataclass
class _Explanations:
    """Alignment sums of one state against its Y candidate clean sequences.

    Attributes:
        probability: ``[Y]`` p(x*).
        absent: ``[Y]`` len(x*) − n.
        tokens: ``[Y, n, V]`` number of alignments that put each clean token under each slot.
        counts: ``[Y, n + 1, C + 1]`` number of alignments that leave k = 0..C tokens of x*
            missing in each gap (C: the longest sequence of the support).
    """

    probability: np.ndarray
    absent: np.ndarray
    tokens: np.ndarray
    counts: np.ndarray


def _alignment_sums(
    state: tuple[int, ...], flags: tuple[bool, ...], sequence: tuple[int, ...],
    sequence_flags: tuple[bool, ...], mask_id: int, vocab_size: int, cap: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(tokens [n, V], counts [n + 1, cap + 1])`` alignment sums of one state in one sequence.

    An alignment maps slot j of the state to position π(j) of ``sequence``, increasing, with equal
    frozen flags, equal tokens off the masks, and no frozen position of ``sequence`` left out.
    Returns None when there is none.
    """
    n, m = len(state), len(sequence)
    if m < n:
        return None
    y, y_frozen = np.array(sequence, dtype=np.int64), np.array(sequence_flags, dtype=bool)
    z, z_frozen = np.array(state, dtype=np.int64), np.array(flags, dtype=bool)
    # compat[j, i]: slot j may sit on position i.
    compat = (z_frozen[:, None] == y_frozen[None, :]) & ((z[:, None] == mask_id) | (z[:, None] == y[None, :]))
    # step[a + 1, b]: consecutive slots may sit on a < b (a = -1 before the start, b = m past the
    # end) when no frozen position lies strictly between them.
    frozen_before = np.concatenate([[0], np.cumsum(y_frozen)])  # frozen positions < i
    a = np.arange(-1, m)[:, None]
    b = np.arange(0, m + 1)[None, :]
    step = ((a < b) & (frozen_before[b] - frozen_before[a + 1] == 0)).astype(np.float64)  # [m + 1, m + 1]
    # forward[j, a + 1]: alignments of slots < j with slot j − 1 on a (row 0: the start, a = -1).
    # backward[j, b]: alignments of slots >= j with slot j on b (row n: the end, b = m).
    forward = np.zeros((n + 1, m + 1))
    forward[0, 0] = 1.0
    for j in range(n):
        forward[j + 1, 1:] = (forward[j] @ step[:, :m]) * compat[j]
    backward = np.zeros((n + 1, m + 1))
    backward[n, m] = 1.0
    for j in range(n - 1, -1, -1):
        backward[j, :m] = compat[j] * (step[1:, :] @ backward[j + 1])
    total = forward[n] @ step[:, m]
    if total == 0:
        return None
    on = forward[1:, 1:] * backward[:n, :m]  # [n, m]: alignments with slot j on position i
    tokens = np.zeros((n, vocab_size))
    np.add.at(tokens.T, y, on.T)
    # gap j lies between slot j − 1 on a and slot j on b and misses b − a − 1 tokens.
    pair = forward[:, :, None] * step[None] * backward[:, None, :]  # [n + 1, m + 1, m + 1]
    missing = (b - (a + 1)).clip(min=0)  # [m + 1, m + 1]
    counts = np.zeros((n + 1, cap + 1))
    for j in range(n + 1):
        counts[j, : m + 1] = np.bincount(missing.ravel(), weights=pair[j].ravel(), minlength=m + 1)
    return tokens, counts


def _unique_states(
    x: Tensor, lengths: Tensor, frozen: Tensor, t: Tensor
) -> tuple[list[tuple[tuple[int, ...], tuple[bool, ...], float]], Tensor]:
    """Distinct ``(tokens, frozen flags, t)`` of a batch and each row's index into them."""
    n = x.shape[1]
    keys = torch.cat([x.long(), frozen.long(), lengths.long()[:, None], t.double().view(torch.long)[:, None]], dim=1)
    rows = np.ascontiguousarray(keys.numpy())
    _, first, inverse = np.unique(
        rows.view(np.dtype((np.void, rows.itemsize * rows.shape[1]))).ravel(), return_index=True, return_inverse=True
    )
    states = []
    for key, time in zip(keys[first, : 2 * n + 1].tolist(), t.double()[first].tolist()):
        length = key[-1]
        states.append((tuple(key[:length]), tuple(bool(f) for f in key[n : n + length]), time))
    return states, torch.from_numpy(inverse.ravel())


class ExactFlexOracle:
    """The exact FlexMDM denoiser of an enumerable distribution (see the module docstring).

    Args:
        distribution: ``{sequence: probability}`` or a :data:`Support` list; need not be
            normalised.
        vocab: special-token ids; sequences hold neither MASK nor PAD.
        insertion_schedule: α, the only schedule the posterior depends on.
        frozen: optional ``{sequence: flags}`` marking tokens that a prompt fixes (with a
            mapping ``distribution``). A state is explained only by sequences whose frozen tokens
            it holds, in order.
        gap_counts: also return the distribution of every gap's remaining count.

    Called like a network: ``(x [B, n], t [B], lengths [B], frozen [B, n]) ->
    (token_logits [B, n, V], expected_gaps [B, n + 1])``, and with ``gap_counts`` a third output
    ``count_log_probs [B, n + 1, C + 1]``: log P(k tokens still to insert in gap i), k = 0..C,
    with C = :attr:`max_count`. Logits are log-probabilities at masked slots and uniform over
    non-MASK ids elsewhere.
    """

    def __init__(
        self,
        distribution: Distribution | Support,
        vocab: Vocab,
        insertion_schedule: Schedule,
        frozen: Mapping[tuple[int, ...], Sequence[bool]] | None = None,
        gap_counts: bool = False,
    ) -> None:
        self.vocab = vocab
        self.insertion_schedule = insertion_schedule
        self.gap_counts = gap_counts
        support = _check_distribution(distribution, vocab, frozen)
        self.max_count = max(len(s) for s, _, _ in support)
        self._by_prompt: dict[tuple[int, ...], list[tuple[tuple[int, ...], float, tuple[bool, ...]]]] = {}
        for sequence, p, flags in support:
            if p > 0:
                key = tuple(v for v, f in zip(sequence, flags) if f)
                self._by_prompt.setdefault(key, []).append((sequence, p, flags))
        self._explanations: dict[tuple, _Explanations | None] = {}

    def _explain(self, state: tuple[int, ...], flags: tuple[bool, ...]) -> _Explanations | None:
        key = (state, flags)
        if key not in self._explanations:
            self._explanations[key] = self._enumerate(state, flags)
        return self._explanations[key]

    def _enumerate(self, state: tuple[int, ...], flags: tuple[bool, ...]) -> _Explanations | None:
        prompt = tuple(v for v, f in zip(state, flags) if f)
        probability, absent, tokens, counts = [], [], [], []
        for sequence, p, sequence_flags in self._by_prompt.get(prompt, []):
            sums = _alignment_sums(state, flags, sequence, sequence_flags, self.vocab.mask_id,
                                   self.vocab.size, self.max_count)
            if sums is not None:
                probability.append(p)
                absent.append(len(sequence) - len(state))
                tokens.append(sums[0])
                counts.append(sums[1])
        if not probability:
            return None
        return _Explanations(np.array(probability), np.array(absent, dtype=float), np.stack(tokens), np.stack(counts))

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor) -> tuple[Tensor, ...]:
        n, cap = x.shape[1], self.max_count
        states, inverse = _unique_states(x.cpu(), lengths.cpu(), frozen.cpu(), t.cpu())
        logits = torch.zeros(len(states), n, self.vocab.size, dtype=torch.float64)
        logits[..., self.vocab.mask_id] = float("-inf")
        gaps = torch.zeros(len(states), n + 1, dtype=torch.float64)
        count_probs = torch.zeros(len(states), n + 1, cap + 1, dtype=torch.float64)
        count_probs[..., 0] = 1.0
        times = torch.tensor([s[2] for s in states], dtype=torch.float64)
        survival = self.insertion_schedule.survival(times).clamp(min=0.0)
        for u, ((state, flags, _), q) in enumerate(zip(states, survival.tolist())):
            explanations = self._explain(state, flags)
            if explanations is None:
                continue
            weights = explanations.probability * np.power(q, explanations.absent)  # [Y]
            total = weights @ explanations.counts[:, 0].sum(axis=1)  # every alignment once
            if total == 0:
                continue
            length = len(state)
            masked = [j for j, v in enumerate(state) if v == self.vocab.mask_id]
            if masked:
                posterior = np.einsum("y,yjv->jv", weights, explanations.tokens[:, masked]) / total
                with np.errstate(divide="ignore"):
                    logits[u, masked] = torch.from_numpy(np.log(posterior))
            distribution = np.einsum("y,yjk->jk", weights, explanations.counts) / total  # [n + 1, C + 1]
            count_probs[u, : length + 1] = torch.from_numpy(distribution)
            gaps[u, : length + 1] = torch.from_numpy(distribution @ np.arange(cap + 1, dtype=float))
        device = x.device
        logits, gaps = logits[inverse].float().to(device), gaps[inverse].float().to(device)
        if not self.gap_counts:
            return logits, gaps
        with torch.no_grad():
            count_log_probs = torch.log(count_probs[inverse]).float().to(device)
        return logits, gaps, count_log_probs


class ExactMDMOracle:
    """The exact MDM denoiser of a small distribution on a canvas of fixed ``length``.

    Sequences are padded with PAD to ``length``; the posterior of a state is p(x*) restricted
    to the padded sequences that agree with it off the masks (independent of t).

    Args:
        distribution: ``{sequence: probability}`` with sequences no longer than ``length``.
        vocab: special-token ids.
        length: the canvas width.
        frozen: optional ``{sequence: flags over the padded canvas}``; when given, a state's
            frozen flags must match them. Without it, frozen flags are not checked.

    Called like a network: ``(x [B, L], t [B], lengths [B], frozen [B, L]) -> token_logits [B, L, V]``.
    """

    def __init__(
        self,
        distribution: Distribution,
        vocab: Vocab,
        length: int,
        frozen: Mapping[tuple[int, ...], Sequence[bool]] | None = None,
    ) -> None:
        self.vocab = vocab
        self.length = length
        support = _check_distribution(distribution, vocab, None)
        too_long = [s for s, _, _ in support if len(s) > length]
        if too_long:
            raise ValueError(f"{len(too_long)} sequences exceed the canvas length {length}, e.g. {too_long[0]}")
        self._canvases = np.array([s + (vocab.pad_id,) * (length - len(s)) for s, _, _ in support])
        self._probability = np.array([p for _, p, _ in support])
        self._flags = None
        if frozen is not None:
            self._flags = np.array([tuple(bool(f) for f in frozen[s]) for s, _, _ in support])
            if self._flags.shape != self._canvases.shape:
                raise ValueError(f"frozen flags must cover the padded canvas of width {length}")

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor) -> Tensor:
        batch, width = x.shape
        if width != self.length:
            raise ValueError(f"state width {width} differs from the oracle's canvas length {self.length}")
        states, inverse = _unique_states(x, torch.full((batch,), width), frozen, torch.zeros(batch))
        logits = torch.zeros(len(states), width, self.vocab.size, dtype=torch.float64)
        logits[..., self.vocab.mask_id] = float("-inf")
        for u, (state, flags, _) in enumerate(states):
            state_array = np.array(state)
            masked = state_array == self.vocab.mask_id
            agree = ((self._canvases == state_array) | masked).all(axis=1)
            if self._flags is not None:
                agree &= (self._flags == np.array(flags)).all(axis=1)
            weights = self._probability * agree
            if weights.sum() == 0 or not masked.any():
                continue
            posterior = np.zeros((width, self.vocab.size))
            for j in np.flatnonzero(masked):
                np.add.at(posterior[j], self._canvases[:, j], weights)
            with np.errstate(divide="ignore"):
                logits[u, masked] = torch.from_numpy(np.log(posterior[masked] / weights.sum()))
        return logits[inverse].float()


def empirical_distribution(tokens: Tensor, lengths: Tensor) -> dict[tuple[int, ...], float]:
    """Frequencies of the sequences ``tokens[b, :lengths[b]]`` of a ``[B, L]`` batch."""
    counts: dict[tuple[int, ...], float] = {}
    for row, n in zip(tokens.tolist(), lengths.tolist()):
        key = tuple(row[:n])
        counts[key] = counts.get(key, 0.0) + 1.0
    total = max(len(lengths), 1)
    return {key: value / total for key, value in counts.items()}


def total_variation(p: Mapping, q: Mapping) -> float:
    """½ Σ |p − q| over the union of both supports (inputs are taken as normalised)."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))
