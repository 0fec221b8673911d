"""Count-aware insertion, judged by exact oracles at few steps, where wrong samplers show.

The exact sequential fill at t = 1 repairs much of what a wrong grid sampler does, so exactness at
200 steps alone does not catch Bernoulli insertion, a skipped last interval, adaptive K without
κ_β's 1/(1 − t), or a rule that never reveals on the grid. Two few-step statistics do: the mean
length at 8 steps (the last interval carries a third of the length) and the number of masks left
to the final fill. ``test_the_statistics_catch_known_wrong_samplers`` checks that each of the four
fails them.
"""

import math

import pytest
import torch

from flexmdm.interpolant import FlexInterpolant
from flexmdm.sampling import (
    Adaptive,
    ConfidenceThreshold,
    EntropyBounded,
    Insertion,
    TauLeaping,
    sample_flexmdm,
)
from flexmdm.sampling.insertion import interval_probability
from flexmdm.schedules import LinearSchedule, PolynomialSchedule, PowerDecaySchedule
from flexmdm.testing import ExactFlexOracle, empirical_distribution, total_variation
from flexmdm.testing.structured import oracle_case
from tests.oracle_cases import P1, VOCAB

LINEAR = LinearSchedule()
PROCESS = FlexInterpolant(LINEAR, LINEAR, VOCAB)
SAMPLES = 20_000
TRUE_MEAN_LENGTH = sum(p * len(s) for s, p in P1.items())  # 3.049


def few_step_statistics(rule, insertion=None, seed=0, steps=8):
    """(mean length, mean masks left to the sequential fill) at ``steps`` steps on the toy oracle."""
    out = sample_flexmdm(
        ExactFlexOracle(P1, VOCAB, LINEAR), PROCESS,
        steps=steps, max_length=8, batch_size=SAMPLES, rule=rule, insertion=insertion,
        generator=torch.Generator().manual_seed(seed),
    )
    return float(out.lengths.float().mean()), float(out.nfe.float().mean()) - steps


def statistics_hold(mean_length, left_to_fill):
    # Correct samplers: 3.05-3.07 and 0.70-0.84 over seeds; one standard error of the mean
    # length is 0.008.
    return abs(mean_length - TRUE_MEAN_LENGTH) <= 0.05 and left_to_fill <= 1.2


@pytest.mark.parametrize("rule", [TauLeaping(), Adaptive("top_probability")], ids=str)
def test_few_step_statistics_of_the_grid_sampler(rule):
    assert statistics_hold(*few_step_statistics(rule))


class _BernoulliInsertion(Insertion):
    """Wrong: at most one insertion per gap and step."""

    def draw(self, gaps, count_log_probs, schedule, t, t_next, allowed, generator):
        rate = ((t_next - t)[:, None] * schedule.rate(t)[:, None] * gaps.double().clamp(min=0)).clamp(max=1)
        return torch.where(allowed, torch.bernoulli(rate, generator=generator).long(), 0)


class _SkipLastInterval(Insertion):
    """Wrong: no insertion in [t_{N-1}, 1]."""

    def draw(self, gaps, count_log_probs, schedule, t, t_next, allowed, generator):
        counts = super().draw(gaps, count_log_probs, schedule, t, t_next, allowed, generator)
        return torch.where((t_next >= 1)[:, None], 0, counts)


class _AdaptiveWithoutRate(Adaptive):
    """Wrong: K ~ Poisson(τ · #masked), κ_β's 1/(1 − t) forgotten (τ = 1/8)."""

    def select(self, probs, masked, jump_intensity, generator):
        return super().select(probs, masked, torch.full_like(jump_intensity, 1 / 8), generator)


class _NeverOnTheGrid(TauLeaping):
    """Wrong: leaves every mask to the final fill."""

    def select(self, probs, masked, jump_intensity, generator):
        return torch.zeros_like(masked)


@pytest.mark.parametrize("rule, insertion", [
    (TauLeaping(), _BernoulliInsertion()),
    (TauLeaping(), _SkipLastInterval()),
    (_AdaptiveWithoutRate(), None),
    (_NeverOnTheGrid(), None),
], ids=["bernoulli", "last-interval-skipped", "adaptive-without-rate", "never-on-grid"])
def test_the_statistics_catch_known_wrong_samplers(rule, insertion):
    assert not statistics_hold(*few_step_statistics(rule, insertion))


def test_interval_probabilities_compose_and_end_at_one():
    for schedule in (LINEAR, PolynomialSchedule(2.0), PowerDecaySchedule(3.0)):
        t, mid, end = torch.tensor([0.1, 0.5]), torch.tensor([0.3, 0.7]), torch.tensor([0.6, 1.0])
        whole = interval_probability(schedule, t, end)
        parts = 1 - (1 - interval_probability(schedule, t, mid)) * (1 - interval_probability(schedule, mid, end))
        assert torch.allclose(whole, parts, atol=1e-6)
        assert float(whole[1]) == 1.0


def test_binomial_arrivals_stay_exact_where_a_steep_schedule_rounds_to_one():
    # Power decay 50: 1 - α(t) is below float64's resolution of 1 from t ≈ 0.53 on, so an
    # interval probability computed as (α(t') − α(t)) / (1 − α(t)) is 0/0 on most of the grid.
    steep = PowerDecaySchedule(50.0)
    t, t_next = torch.tensor([0.6, 0.9], dtype=torch.float64), torch.tensor([0.65, 0.95], dtype=torch.float64)
    expected = 1 - ((1 - t_next) / (1 - t)) ** 50
    assert torch.allclose(interval_probability(steep, t, t_next), expected, rtol=1e-12)
    out = sample_flexmdm(
        ExactFlexOracle(P1, VOCAB, steep), FlexInterpolant(steep, LINEAR, VOCAB),
        steps=8, max_length=8, batch_size=SAMPLES, rule=TauLeaping(), insertion=Insertion("binomial"),
        generator=torch.Generator().manual_seed(0),
    )
    assert abs(float(out.lengths.float().mean()) - TRUE_MEAN_LENGTH) <= 0.05


def toy_tv(insertion, rule, steps=200, seed=0):
    oracle = ExactFlexOracle(P1, VOCAB, LINEAR, gap_counts=True)
    out = sample_flexmdm(
        oracle, PROCESS, steps=steps, max_length=8,
        batch_size=SAMPLES, rule=rule, insertion=insertion,
        generator=torch.Generator().manual_seed(seed),
    )
    return total_variation(empirical_distribution(out.tokens, out.lengths), P1), out


@pytest.mark.statistical
@pytest.mark.parametrize("insertion, rule", [
    (Insertion("binomial"), TauLeaping()),
    (Insertion("binomial", refresh=True), TauLeaping()),
    (Insertion("binomial", certainty=1.0, refresh=True), Adaptive("right_most")),
    (Insertion("exact"), ConfidenceThreshold(1.0)),
    (Insertion("exact", certainty=1.0), EntropyBounded(0.0)),
], ids=["binomial", "binomial-refresh", "certain-refresh-right-most", "exact", "exact-certain"])
def test_every_insertion_variant_is_exact_at_many_steps(insertion, rule):
    tv, out = toy_tv(insertion, rule, seed=11)
    assert tv <= 0.03, tv
    assert int(out.dropped_insertions.sum()) == 0


def test_exact_insertion_samples_only_balanced_brackets_at_few_calls():
    case = oracle_case("brackets", 4000)
    out = sample_flexmdm(
        case.oracle, FlexInterpolant(LINEAR, LINEAR, case.vocab), steps=64,
        max_length=case.max_length, prompt=case.prompt, rule=ConfidenceThreshold(1.0),
        insertion=Insertion("exact", certainty=1.0), generator=torch.Generator().manual_seed(0),
    )
    scores = case.score(out.tokens, out.lengths)
    assert scores["invalid_rate"] == 0.0
    assert scores["tv"] <= 0.05  # sampling noise of 4000 draws over 9 strings is about 0.02
    assert float(out.nfe.float().mean()) <= 32


def test_poisson_grid_breaks_brackets_at_the_same_budget():
    case = oracle_case("brackets", 4000)
    out = sample_flexmdm(
        case.oracle, FlexInterpolant(LINEAR, LINEAR, case.vocab), steps=64,
        max_length=case.max_length, prompt=case.prompt, generator=torch.Generator().manual_seed(0),
    )
    assert case.score(out.tokens, out.lengths)["invalid_rate"] >= 0.05


def test_certain_counts_write_whole_reasoning_traces_in_a_few_calls():
    case = oracle_case("reasoning", 40)
    asked = []

    def spy(x, t, lengths, frozen):
        asked.append(t.clone())
        return case.oracle(x, t, lengths, frozen)

    out = sample_flexmdm(
        spy, FlexInterpolant(LINEAR, LINEAR, case.vocab), steps=32,
        max_length=case.max_length, prompt=case.prompt, rule=EntropyBounded(0.2),
        insertion=Insertion("exact", certainty=1.0), final_fill="rule", generator=torch.Generator().manual_seed(0),
    )
    scores = case.score(out.tokens, out.lengths)
    assert scores["trace_exact"] == 1.0 and scores["accuracy"] == 1.0
    assert float(out.nfe.float().mean()) <= 4
    # the first call inserts every trace's length at t = 0; the length-complete, all-MASK states
    # are then shown at their most typical time, 1 − 1/e for linear schedules
    assert bool((asked[0] == 0).all()) and torch.allclose(asked[1], torch.full_like(asked[1], 1 - math.exp(-1)),
                                                         atol=1e-3)


def test_insertion_options_are_checked():
    with pytest.raises(ValueError, match="arrivals"):
        Insertion("bernoulli")
    with pytest.raises(ValueError, match="certainty"):
        Insertion(certainty=0.0)
    with pytest.raises(ValueError, match="refresh"):
        Insertion("exact", refresh=True)
    oracle = ExactFlexOracle(P1, VOCAB, LINEAR)  # no count distributions
    common = dict(process=PROCESS, steps=4, max_length=8, batch_size=2)
    with pytest.raises(ValueError, match="gap-count distributions"):
        sample_flexmdm(oracle, insertion=Insertion("binomial", certainty=0.9), **common)
    with pytest.raises(ValueError, match="rate-free rule"):
        sample_flexmdm(oracle, insertion=Insertion("exact"), rule=TauLeaping(), **common)
