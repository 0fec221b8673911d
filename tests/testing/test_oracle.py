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


def brute_force(distribution, frozen, state, flags, t):
    """Posterior by enumerating every (x*, S): token marginals, gap-count distributions."""
    import itertools

    n = len(state)
    weights, tokens, gaps = [], [], []
    for sequence, p in distribution.items():
        sequence_flags = frozen[sequence] if frozen else (False,) * len(sequence)
        for kept in itertools.combinations(range(len(sequence)), n):
            if any(sequence_flags[i] for i in set(range(len(sequence))) - set(kept)):
                continue
            if any(sequence_flags[i] != flags[j] or state[j] not in (M, sequence[i]) for j, i in enumerate(kept)):
                continue
            bounds = (-1, *kept, len(sequence))
            weights.append(p * (1 - t) ** (len(sequence) - n))
            tokens.append([sequence[i] for i in kept])
            gaps.append([bounds[j + 1] - bounds[j] - 1 for j in range(n + 1)])
    total = sum(weights)
    marginals = [[sum(w for w, tok in zip(weights, tokens) if tok[j] == v) / total for v in range(2)] for j in range(n)]
    counts = [[sum(w for w, g in zip(weights, gaps) if g[j] == k) / total for k in range(5)] for j in range(n + 1)]
    return marginals, counts


@pytest.mark.parametrize("state, flags, t", [
    ((), (), 0.3),
    ((M, M), (False, False), 0.6),
    ((1, M, 0), (False, False, False), 0.2),
    ((M, 1), (False, False), 0.9),
    ((1, M), (True, False), 0.5),
    ((1, 0), (True, True), 0.4),
])
def test_alignment_counting_matches_brute_force_enumeration(state, flags, t):
    frozen = None
    distribution = P1
    if any(flags):
        distribution = {s: p for s, p in P1.items() if s[:1] == (1,)}
        frozen = {s: (True,) + (False,) * (len(s) - 1) for s in distribution}
        if flags == (True, True):  # prefix (1,) and suffix (0,) frozen
            distribution = {s: p for s, p in distribution.items() if len(s) >= 2 and s[-1] == 0}
            frozen = {s: (True,) + (False,) * (len(s) - 2) + (True,) for s in distribution}
    oracle = ExactFlexOracle(distribution, VOCAB, LinearSchedule(), frozen=frozen, gap_counts=True)
    x = torch.tensor([list(state) or [PAD]])[:, : max(len(state), 0)]
    logits, gaps, count_log_probs = oracle(
        x, torch.tensor([t]), torch.tensor([len(state)]), torch.tensor([list(flags)], dtype=torch.bool)[:, : len(state)]
    )
    marginals, counts = brute_force(distribution, frozen, state, flags, t)
    for j, v in enumerate(state):
        if v == M:
            assert logits[0, j, :2].exp().tolist() == pytest.approx(marginals[j], abs=1e-5)
    probs = count_log_probs[0].exp()
    assert probs.shape[-1] == oracle.max_count + 1
    for j in range(len(state) + 1):
        assert probs[j, :5].tolist() == pytest.approx(counts[j][:5], abs=1e-5)
        assert float(gaps[0, j]) == pytest.approx(sum(k * c for k, c in enumerate(counts[j])), abs=1e-5)


def test_an_inconsistent_state_gets_zero_gaps_with_certainty():
    oracle = ExactFlexOracle({(0, 1): 1.0}, VOCAB, LinearSchedule(), gap_counts=True)
    _, gaps, count_log_probs = call(oracle, [(1, 0)], 0.5)
    assert float(gaps.abs().max()) == 0.0
    assert count_log_probs[0, :, 0].exp().tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_structured_cases_judge_their_samples():
    from flexmdm.tasks.reasoning import ReasoningTask
    from flexmdm.testing.structured import oracle_case

    brackets = oracle_case("brackets", 3)
    assert len(brackets.target) == 9 and sum(brackets.target.values()) == pytest.approx(1.0)
    tokens = torch.tensor([[0, 1, 0, 1], [0, 0, 1, PAD], [1, 0, PAD, PAD]])  # "()()", "(()", ")("
    scores = brackets.score(tokens, torch.tensor([4, 3, 2]))
    assert scores["invalid_rate"] == pytest.approx(2 / 3) and scores["trace_exact"] is None

    reasoning = oracle_case("reasoning", 1)
    template = ReasoningTask(max_value=9).template
    problem = ReasoningTask(max_value=9).splits["test"]
    right = template.flexmdm_example(problem.questions[0], problem.reasonings[0], problem.answers[0])[0]
    assert reasoning.judge(0, tuple(right)) == (True, True, True)
    text = template.text(right)
    wrong_result = template.encode(text.replace("= ", "= 1 ", 1))  # a digit too many in the first result
    assert reasoning.judge(0, tuple(wrong_result))[::2] == (False, False)


def test_a_case_samples_with_its_oracle_insertion_schedule():
    """Under α = power_decay(3) the exact case still samples its target (a linear α would shorten lengths)."""
    from flexmdm.families import SamplingOptions
    from flexmdm.schedules import PowerDecaySchedule
    from flexmdm.testing.structured import oracle_case

    case = oracle_case("toy", 3000, PowerDecaySchedule(3.0))
    out = case.sample(SamplingOptions(steps=64), seed=0)
    mean = sum(p * len(s) for s, p in case.target.items())  # 3.05; sampled with a linear α: 1.16 (TV 0.59)
    assert float(out.lengths.float().mean()) == pytest.approx(mean, abs=0.15)
    assert case.score(out.tokens, out.lengths)["tv"] < 0.08
