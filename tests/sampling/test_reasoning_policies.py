"""Unmasking policies on hand-made distributions, and the early-exit hook of both samplers."""

import math

import pytest
import torch

from flexmdm.constraints import Prompt
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.sampling import (
    ConfidenceThreshold,
    EntropyBounded,
    EntropySum,
    SemiAutoregressive,
    sample_flexmdm,
    sample_mdm,
)
from flexmdm.sampling.unmasking import entropy
from flexmdm.schedules import LinearSchedule
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit, answer_region
from flexmdm.vocab import Vocab

LINEAR = LinearSchedule()
ZERO = torch.zeros(1)


def dist(*rows):
    """``[1, n, V]`` probabilities from rows of (unnormalised) weights."""
    probs = torch.tensor([rows], dtype=torch.float64)
    return probs / probs.sum(dim=-1, keepdim=True)


# Entropies (nats) of the five slots below: 0, ln 2 ≈ 0.693, ≈ 0.325, ln 4 ≈ 1.386, ≈ 0.199.
PROBS = dist([1, 0, 0, 0], [1, 1, 0, 0], [9, 1, 0, 0], [1, 1, 1, 1], [19, 1, 0, 0])
H = entropy(PROBS)[0].tolist()


def test_hand_made_entropies():
    assert H[0] == 0 and math.isclose(H[1], math.log(2)) and math.isclose(H[3], math.log(4))
    assert H[4] < H[2] < H[1]


def test_med_takes_every_slot_below_lambda_and_only_masks():
    masked = torch.tensor([[True, True, True, True, True]])
    assert EntropyBounded(0.3).select(PROBS, masked, ZERO, None)[0].tolist() == [True, False, False, False, True]
    assert EntropyBounded(0.7).select(PROBS, masked, ZERO, None)[0].tolist() == [True, True, True, False, True]
    not_first = torch.tensor([[False, True, True, True, True]])
    assert EntropyBounded(0.3).select(PROBS, not_first, ZERO, None)[0].tolist() == [False, False, False, False, True]


def test_med_falls_back_to_the_single_lowest_entropy():
    masked = torch.tensor([[False, True, True, True, False]])
    assert EntropyBounded(0.1).select(PROBS, masked, ZERO, None)[0].tolist() == [False, False, True, False, False]


def test_eb_prefix_sum_minus_max_within_budget():
    masked = torch.ones(1, 5, dtype=torch.bool)
    # sorted entropies 0, 0.199, 0.325, 0.693, 1.386; sum minus max of each prefix:
    # 0, 0, 0.199, 0.524, 1.217.
    assert EntropySum(0.1).select(PROBS, masked, ZERO, None)[0].tolist() == [True, False, False, False, True]
    assert EntropySum(0.2).select(PROBS, masked, ZERO, None)[0].tolist() == [True, False, True, False, True]
    assert EntropySum(0.6).select(PROBS, masked, ZERO, None)[0].tolist() == [True, True, True, False, True]
    only_high = torch.tensor([[False, True, False, True, False]])
    # a single slot always passes (sum minus max = 0), then 0.693 <= 0.7 admits the second.
    assert EntropySum(0.0).select(PROBS, only_high, ZERO, None)[0].tolist() == [False, True, False, False, False]
    assert EntropySum(0.7).select(PROBS, only_high, ZERO, None)[0].tolist() == [False, True, False, True, False]


def test_confidence_threshold_and_one_per_step():
    masked = torch.ones(1, 5, dtype=torch.bool)
    # top probabilities 1, .5, .9, .25, .95
    assert ConfidenceThreshold(0.9).select(PROBS, masked, ZERO, None)[0].tolist() == [True, False, True, False, True]
    one = ConfidenceThreshold(2.0).select(PROBS, masked, ZERO, None)[0].tolist()
    assert one == [True, False, False, False, False]
    no_first = torch.tensor([[False, True, True, True, True]])
    assert ConfidenceThreshold(2.0).select(PROBS, no_first, ZERO, None)[0].tolist() == [False] * 4 + [True]


def test_semi_autoregressive_blocks():
    rule = SemiAutoregressive(EntropyBounded(0.7), block_size=2)
    masked = torch.tensor([[False, False, True, True, True], [True, False, False, False, True]])
    probs = torch.cat([PROBS, PROBS])
    # row 0: block 0 has no mask, block 1 = slots 2, 3 (entropies 0.325, 1.386): only slot 2.
    # row 1: block 0 = slot 0 (entropy 0); slot 4 (0.199, block 2) must wait.
    chosen = rule.select(probs, masked, torch.zeros(2), None)
    assert chosen.tolist() == [[False, False, True, False, False], [True, False, False, False, False]]
    assert rule.eligible(masked).tolist() == [[False, False, True, True, False], [True, False, False, False, False]]
    # a block full of high entropies still reveals its lowest one
    assert SemiAutoregressive(EntropyBounded(0.1), 2).select(PROBS, torch.tensor([[False, False, True, True, True]]),
                                                              ZERO, None)[0].tolist() == [False, False, True, False, False]
    assert not rule.uses_rates
    with pytest.raises(ValueError, match="block_size"):
        SemiAutoregressive(EntropyBounded(), 0)


# --------------------------------------------------------------------------- early exit
VOCAB = Vocab(size=8, mask_id=6, pad_id=7)
PROCESS = FlexInterpolant(LINEAR, LINEAR, VOCAB)
MDM_PROCESS = MDMInterpolant(LINEAR, VOCAB)
A_OPEN, A_CLOSE = 4, 5


def test_answer_region():
    tokens = torch.tensor([[0, A_OPEN, 6, 6, A_CLOSE, 7], [A_OPEN, A_CLOSE, 1, 1, 1, 7]])
    assert answer_region(tokens, A_OPEN, A_CLOSE).tolist() == [
        [False, False, True, True, False, False], [False] * 6]


def _answer_probs(entropies):
    """``[1, 4, V]``: slots 1 and 2 (the answer) with a two-way split of the given entropies."""
    probs = torch.zeros(1, 4, VOCAB.size)
    probs[0, :, 0] = 1.0
    for slot, h in zip((1, 2), entropies):
        # binary entropy -p ln p - (1-p) ln(1-p) = h, solved by bisection
        lo, hi = 1e-9, 0.5
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if -(mid * math.log(mid) + (1 - mid) * math.log(1 - mid)) < h else (lo, mid)
        probs[0, slot, 0], probs[0, slot, 1] = 1 - lo, lo
    return probs


@pytest.mark.parametrize("reduce, entropies, fires", [
    ("max", (0.05, 0.09), True), ("max", (0.05, 0.11), False),
    ("mean", (0.05, 0.14), True), ("mean", (0.05, 0.16), False),
])
def test_exit_fires_exactly_when_the_answer_entropy_is_below_gamma(reduce, entropies, fires):
    tokens = torch.tensor([[A_OPEN, 6, 6, A_CLOSE]])
    criterion = AnswerEntropyExit(A_OPEN, A_CLOSE, VOCAB.mask_id, threshold=0.1, reduce=reduce)
    assert criterion(_answer_probs(entropies), tokens, None).tolist() == [fires]


def test_exit_ignores_revealed_answer_slots_and_needs_a_slot():
    criterion = AnswerEntropyExit(A_OPEN, A_CLOSE, VOCAB.mask_id, threshold=0.1)
    probs = _answer_probs((2.0, 0.05))  # slot 1 is revealed: its entropy does not count
    assert criterion(probs, torch.tensor([[A_OPEN, 3, 6, A_CLOSE]]), None).tolist() == [True]
    assert criterion(probs, torch.tensor([[A_OPEN, 6, 6, A_CLOSE]]), None).tolist() == [False]
    empty = torch.tensor([[0, 0, A_OPEN, A_CLOSE]])
    assert criterion(probs, empty, None).tolist() == [False]


def test_flexmdm_exit_waits_for_the_answer_insertions():
    criterion = AnswerEntropyExit(A_OPEN, A_CLOSE, VOCAB.mask_id, threshold=0.1, max_missing=0.5)
    tokens = torch.tensor([[A_OPEN, 6, 6, A_CLOSE]])
    probs = _answer_probs((0.01, 0.01))
    gaps = torch.zeros(1, 5)
    assert criterion(probs, tokens, gaps).tolist() == [True]
    gaps[0, 0] = 5.0  # before <a>: not the answer region
    gaps[0, 4] = 5.0  # after </a>
    assert criterion(probs, tokens, gaps).tolist() == [True]
    gaps[0, 3] = 0.6  # just before </a>: inside
    assert criterion(probs, tokens, gaps).tolist() == [False]


class ScriptedDenoiser:
    """Answer slots become certain (token 2) at the ``settle``-th call; others lean to token 1.

    MDM rows: ``0 M M M M <a> M M </a>``. FlexMDM rows start from ``0 <a> </a>``: 20 tokens
    expected in the reasoning gap just before ``<a>``, 50 in the answer region while
    it is empty and 0 once it holds a slot.
    """

    def __init__(self, settle: int, flex: bool):
        self.calls, self.settle, self.flex = 0, settle, flex

    def __call__(self, x, t, lengths, frozen):
        self.calls += 1
        logits = torch.zeros(*x.shape, VOCAB.size)
        region = answer_region(x, A_OPEN, A_CLOSE)
        logits[..., 1] = torch.where(region, 0.0, 3.0)  # reasoning is revealed before the unsettled answer
        if self.calls >= self.settle:
            logits[..., 2] = torch.where(region, 30.0, 0.0)
        if not self.flex:
            return logits
        zero = torch.zeros(x.shape[0], 1)
        opens = torch.cat([zero, torch.cumsum((x == A_OPEN).float(), 1)], 1)
        closes = torch.cat([zero, torch.cumsum((x == A_CLOSE).float(), 1)], 1)
        empty = ~region.any(dim=1, keepdim=True)
        before_answer = torch.cat([x == A_OPEN, torch.zeros(x.shape[0], 1, dtype=torch.bool)], 1)
        gaps = torch.where(before_answer, 20.0, 0.0)
        gaps = torch.where((opens > 0) & (closes == 0) & empty, 50.0, gaps)
        return logits, gaps


@pytest.mark.parametrize("settle", [1, 3, 5])
def test_mdm_early_exit_stops_at_the_settling_call(settle):
    canvas = torch.tensor([[0, 6, 6, 6, 6, A_OPEN, 6, 6, A_CLOSE]] * 2)
    denoiser = ScriptedDenoiser(settle, flex=False)
    criterion = AnswerEntropyExit(A_OPEN, A_CLOSE, VOCAB.mask_id, threshold=0.1)
    out = sample_mdm(denoiser, MDM_PROCESS, steps=20, canvas=canvas,
                     rule=ConfidenceThreshold(2.0), temperature=0.0, early_exit=criterion,
                     generator=torch.Generator().manual_seed(0))
    assert out.nfe.tolist() == [settle, settle]
    assert not bool((out.tokens == VOCAB.mask_id).any())
    for seq in out.sequences():
        assert seq[seq.index(A_OPEN) + 1 : seq.index(A_CLOSE)] == [2, 2]


def test_mdm_without_exit_is_unchanged_by_a_criterion_that_never_fires():
    canvas = torch.tensor([[0, 6, 6, 6, 6, A_OPEN, 6, 6, A_CLOSE]] * 3)
    runs = [sample_mdm(ScriptedDenoiser(3, flex=False), MDM_PROCESS, steps=20,
                       canvas=canvas, rule=EntropyBounded(0.5), generator=torch.Generator().manual_seed(1),
                       early_exit=hook) for hook in (None, lambda p, x, g: torch.zeros(x.shape[0], dtype=torch.bool))]
    assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].nfe, runs[1].nfe)
    # calls 1, 2: one reasoning slot each; call 3: both (settled) answer slots; calls 4, 5: the rest
    assert runs[0].nfe.tolist() == [5, 5, 5]


@pytest.mark.parametrize("settle", [1, 2, 4])
def test_flexmdm_early_exit_stops_inserting_and_charges_no_more_calls(settle):
    prompt = Prompt(torch.tensor([[0, A_OPEN, A_CLOSE]] * 2), torch.tensor([3, 3]),
                    torch.tensor([[False, True, True, False]] * 2))
    criterion = AnswerEntropyExit(A_OPEN, A_CLOSE, VOCAB.mask_id, threshold=0.1, max_missing=0.5)

    def run(hook):
        return sample_flexmdm(ScriptedDenoiser(settle, flex=True), PROCESS, steps=10, max_length=200,
                              prompt=prompt, rule=EntropyBounded(0.1), temperature=0.0, final_fill="rule",
                              generator=torch.Generator().manual_seed(0), early_exit=hook, record_trace=True)

    out, full = run(criterion), run(None)
    # call 1 sees an empty answer region (no exit); the region is filled by that step's insertions
    exit_call = max(settle, 2)
    assert out.nfe.tolist() == [exit_call, exit_call]
    assert not bool((out.tokens == VOCAB.mask_id).any())
    for seq in out.sequences():
        answer = seq[seq.index(A_OPEN) + 1 : seq.index(A_CLOSE)]
        assert len(answer) >= 1 and set(answer) == {2}
    # the exit happens at step exit_call - 1 (0-based), before that step's insertions
    assert not [e for e in out.trace.events() if e.kind == "insert" and e.step >= exit_call - 1]
    assert out.trace.replay() == out.sequences()
    assert bool((out.lengths < full.lengths).all())  # without the exit the reasoning kept growing
    assert bool((full.nfe >= 10).all())


def test_final_fill_rule_needs_a_rate_free_rule():
    from flexmdm.sampling import TauLeaping

    with pytest.raises(ValueError, match="rate-free"):
        sample_flexmdm(ScriptedDenoiser(1, True), PROCESS,
                       steps=2, max_length=5, batch_size=1, rule=TauLeaping(), final_fill="rule")
