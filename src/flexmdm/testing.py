"""Exact denoisers for small enumerable distributions, to check samplers and losses against.

For a FlexMDM state x (length n, some slots MASK) at time t < 1 the exact posterior over the
clean sequence x* and the index set S (which positions of x* survive in x) is (GUIDE §1,
paper appendix E.2.1)

    p(x*, S | x_t = x) ∝ p(x*) · (1 − α_t)^(len(x*) − n)   for every S with x ⊑ x*|_S,

because each surviving position is masked or clean with probabilities that depend on t alone,
and each absent one contributes 1 − α_t. It does not depend on β. Frozen tokens (prompts,
subgoals) are always present and clean: S must contain every frozen position of x*, and map
them onto the frozen slots of x. At t = 1 the factor is 0⁰ = 1 for equal lengths and 0 else.

From that joint posterior the oracle returns the unmasking posterior f at every masked slot and
the expected gap counts g over the n + 1 gaps, exactly what a perfectly trained network would.
States with no consistent x* (they can only arise from τ-leaping overshoot) get a uniform
posterior and zero gaps.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flexmdm.schedules import Schedule
from flexmdm.vocab import Vocab

__all__ = ["ExactFlexOracle", "ExactMDMOracle", "empirical_distribution", "total_variation"]

Distribution = Mapping[tuple[int, ...], float]


def _check_distribution(
    distribution: Distribution, vocab: Vocab, frozen: Mapping[tuple[int, ...], Sequence[bool]] | None
) -> list[tuple[tuple[int, ...], float, tuple[bool, ...]]]:
    if not distribution:
        raise ValueError("the distribution is empty")
    support = []
    for sequence, probability in distribution.items():
        sequence = tuple(int(v) for v in sequence)
        if probability < 0:
            raise ValueError(f"negative probability {probability} for {sequence}")
        bad = [v for v in sequence if not 0 <= v < vocab.size or v in (vocab.mask_id, vocab.pad_id)]
        if bad:
            raise ValueError(f"{sequence} holds ids {bad} that are special or outside the vocabulary")
        flags = tuple(bool(f) for f in frozen[sequence]) if frozen is not None else (False,) * len(sequence)
        if len(flags) != len(sequence):
            raise ValueError(f"frozen flags {flags} do not match the length of {sequence}")
        support.append((sequence, float(probability), flags))
    if sum(p for _, p, _ in support) <= 0:
        raise ValueError("the distribution has zero total mass")
    return support


@dataclass
class _Explanations:
    """Every (x*, S) consistent with one state; M rows.

    Attributes:
        probability: ``[M]`` p(x*).
        absent: ``[M]`` len(x*) − n.
        onehot: ``[M, n, V]`` the clean token x*[S[j]] of every slot j.
        gaps: ``[M, n + 1]`` tokens of x* missing before each slot (and at the end).
    """

    probability: np.ndarray
    absent: np.ndarray
    onehot: np.ndarray
    gaps: np.ndarray


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
    """The exact FlexMDM denoiser of a small distribution (see the module docstring).

    Args:
        distribution: ``{sequence: probability}``; need not be normalised.
        vocab: special-token ids; sequences hold neither MASK nor PAD.
        insertion_schedule: α, the only schedule the posterior depends on.
        frozen: optional ``{sequence: flags}`` marking tokens that a prompt fixes.

    Called like a network: ``(x [B, n], t [B], lengths [B], frozen [B, n]) ->
    (token_logits [B, n, V], expected_gaps [B, n + 1])``. Logits are log-probabilities at masked
    slots and uniform over non-MASK ids elsewhere.
    """

    def __init__(
        self,
        distribution: Distribution,
        vocab: Vocab,
        insertion_schedule: Schedule,
        frozen: Mapping[tuple[int, ...], Sequence[bool]] | None = None,
    ) -> None:
        self.vocab = vocab
        self.insertion_schedule = insertion_schedule
        self._support = _check_distribution(distribution, vocab, frozen)
        self._explanations: dict[tuple, _Explanations | None] = {}

    def _explain(self, state: tuple[int, ...], flags: tuple[bool, ...]) -> _Explanations | None:
        key = (state, flags)
        if key not in self._explanations:
            self._explanations[key] = self._enumerate(state, flags)
        return self._explanations[key]

    def _enumerate(self, state: tuple[int, ...], flags: tuple[bool, ...]) -> _Explanations | None:
        n, mask = len(state), self.vocab.mask_id
        probability, absent, onehot, gaps = [], [], [], []
        for sequence, p, sequence_flags in self._support:
            if len(sequence) < n or p == 0:
                continue
            must_keep = {i for i, f in enumerate(sequence_flags) if f}
            for kept in itertools.combinations(range(len(sequence)), n):
                if not must_keep.issubset(kept):
                    continue
                if any(
                    sequence_flags[i] != flags[j] or (state[j] != mask and state[j] != sequence[i])
                    for j, i in enumerate(kept)
                ):
                    continue
                bounds = (-1, *kept, len(sequence))
                probability.append(p)
                absent.append(len(sequence) - n)
                hot = np.zeros((n, self.vocab.size))
                hot[np.arange(n), [sequence[i] for i in kept]] = 1.0
                onehot.append(hot)
                gaps.append([bounds[j + 1] - bounds[j] - 1 for j in range(n + 1)])
        if not probability:
            return None
        return _Explanations(
            np.array(probability), np.array(absent, dtype=float), np.stack(onehot), np.array(gaps, dtype=float)
        )

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[1]
        states, inverse = _unique_states(x, lengths, frozen, t)
        logits = torch.zeros(len(states), n, self.vocab.size, dtype=torch.float64)
        logits[..., self.vocab.mask_id] = float("-inf")
        gaps = torch.zeros(len(states), n + 1, dtype=torch.float64)
        survival = (1.0 - self.insertion_schedule.value(torch.tensor([s[2] for s in states], dtype=torch.float64)))
        for u, ((state, flags, _), q) in enumerate(zip(states, survival.clamp(min=0.0).tolist())):
            explanations = self._explain(state, flags)
            if explanations is None:
                continue
            weights = explanations.probability * np.power(q, explanations.absent)  # [M]
            total = weights.sum()
            if total == 0:
                continue
            weights = weights / total
            masked = [j for j, v in enumerate(state) if v == self.vocab.mask_id]
            if masked:
                posterior = np.einsum("m,mjv->jv", weights, explanations.onehot[:, masked])
                with np.errstate(divide="ignore"):
                    logits[u, masked] = torch.from_numpy(np.log(posterior))
            gaps[u, : len(state) + 1] = torch.from_numpy(weights @ explanations.gaps)
        return logits[inverse].float(), gaps[inverse].float()


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
