"""The exact oracles against answers computed by hand."""

import pytest
import torch

from flexmdm.schedules import LinearSchedule
from flexmdm.testing import ExactFlexOracle, ExactMDMOracle, empirical_distribution, total_variation
from tests.oracle_cases import P1, VOCAB

M, PAD = VOCAB.mask_id, VOCAB.pad_id


def call(oracle, rows, t):
    n = max(len(r) for r in rows)
    x = torch.tensor([list(r) + [PAD] * (n - len(r)) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    return oracle(x, torch.full((len(rows),), t), lengths, torch.zeros_like(x, dtype=torch.bool))


def test_empty_state_at_time_zero_expects_the_mean_length():
    _, gaps = call(ExactFlexOracle(P1, VOCAB, LinearSchedule()), [()], 0.0)
    mean_length = sum(p * len(s) for s, p in P1.items())
    assert float(gaps[0, 0]) == pytest.approx(mean_length, rel=1e-5)


def test_single_mask_at_time_one_is_the_conditional():
    # At t = 1 nothing is missing: x = (1, MASK) explains only length-2 strings (1, v).
    logits, gaps = call(ExactFlexOracle(P1, VOCAB, LinearSchedule()), [(1, M)], 1.0)
    expected = torch.tensor([P1[(1, 0)], P1[(1, 1)]])
    assert torch.allclose(logits[0, 1, :2].softmax(-1), expected / expected.sum(), atol=1e-6)
    assert float(gaps.abs().max()) == 0.0


def test_posterior_mixes_lengths_with_the_survival_weight():
    # x = (0,) at t: explained by (0,) with weight p, and by each 2-string holding a 0 once per
    # position where it can sit, with weight p·(1 − t).
    t = 0.25
    dist = {(0,): 0.5, (0, 0): 0.3, (1, 0): 0.2}
    _, gaps = call(ExactFlexOracle(dist, VOCAB, LinearSchedule()), [(0,)], t)
    w_short, w_00, w_10 = 0.5, 0.3 * (1 - t), 0.2 * (1 - t)
    total = w_short + 2 * w_00 + w_10
    # gap before the 0: (0,0) with S={1}; (1,0). Tail gap: (0,0) with S={0}.
    assert float(gaps[0, 0]) == pytest.approx((w_00 + w_10) / total, rel=1e-5)
    assert float(gaps[0, 1]) == pytest.approx(w_00 / total, rel=1e-5)


def test_frozen_tokens_must_match():
    dist = {(1, 0): 0.5, (1, 1): 0.5}
    frozen = {(1, 0): (True, False), (1, 1): (True, False)}
    oracle = ExactFlexOracle(dist, VOCAB, LinearSchedule(), frozen=frozen)
    x = torch.tensor([[1]])
    _, gaps = oracle(x, torch.tensor([0.5]), torch.tensor([1]), torch.tensor([[True]]))
    assert gaps[0].tolist() == pytest.approx([0.0, 1.0])  # nothing before the frozen prefix


def test_mdm_oracle_marginal_includes_pad():
    oracle = ExactMDMOracle({(0,): 0.25, (1, 1): 0.75}, VOCAB, 2)
    logits = oracle(torch.tensor([[M, M]]), torch.tensor([0.0]), torch.tensor([2]), torch.zeros(1, 2, dtype=torch.bool))
    probs = logits.softmax(-1)[0]
    assert probs[0].tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0], abs=1e-6)
    assert probs[1].tolist() == pytest.approx([0.0, 0.75, 0.0, 0.25], abs=1e-6)


def test_invalid_distributions_are_rejected():
    with pytest.raises(ValueError, match="special"):
        ExactFlexOracle({(M,): 1.0}, VOCAB, LinearSchedule())
    with pytest.raises(ValueError, match="negative"):
        ExactFlexOracle({(0,): -1.0}, VOCAB, LinearSchedule())
    with pytest.raises(ValueError, match="exceed"):
        ExactMDMOracle({(0, 0, 0): 1.0}, VOCAB, 2)


def test_empirical_distribution_and_total_variation():
    tokens = torch.tensor([[0, 1], [0, PAD], [0, 1], [PAD, PAD]])
    empirical = empirical_distribution(tokens, torch.tensor([2, 1, 2, 0]))
    assert empirical == {(0, 1): 0.5, (0,): 0.25, (): 0.25}
    assert total_variation(empirical, {(0, 1): 0.5, (1,): 0.5}) == pytest.approx(0.5)
