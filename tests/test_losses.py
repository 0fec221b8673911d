"""The FlexMDM objective is minimised by the exact posterior and expected gaps (Prop. 1)."""

import math

import pytest
import torch

from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.losses import MAX_TIME, flexmdm_loss, mdm_loss, poisson_deviance, sample_times
from flexmdm.constraints import pad_sequences
from flexmdm.schedules import LinearSchedule, PolynomialSchedule, PowerDecaySchedule
from flexmdm.testing import ExactFlexOracle, ExactMDMOracle
from tests.oracle_cases import P1, VOCAB


def draw_data(count: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    support = list(P1)
    index = torch.multinomial(torch.tensor(list(P1.values())), count, replacement=True, generator=g)
    return pad_sequences([support[i] for i in index.tolist()], VOCAB.pad_id)


def smoothed(logits: torch.Tensor, weight: float) -> torch.Tensor:
    """Mix the posterior with the uniform one over the real tokens 0 and 1."""
    probs = torch.softmax(logits, dim=-1)
    uniform = torch.zeros_like(probs)
    uniform[..., :2] = 0.5
    return torch.log((1 - weight) * probs + weight * uniform)


def sharpened(logits: torch.Tensor, power: float) -> torch.Tensor:
    """Raise the posterior to a power (over-confident predictor)."""
    return torch.log_softmax(logits * power, dim=-1)


@pytest.mark.parametrize("alpha", [LinearSchedule(), PolynomialSchedule(2.0), PowerDecaySchedule(2.0)], ids=str)
def test_oracle_minimises_flexmdm_loss(alpha):
    beta = LinearSchedule()
    count = 60_000
    x1, lengths = draw_data(count, seed=0)
    # t ≤ 0.95 keeps the κ weights (≤ 20) from dominating the Monte-Carlo error
    t = sample_times(count, max_time=0.95, generator=torch.Generator().manual_seed(1))
    batch = FlexInterpolant(alpha, beta, VOCAB).sample(x1, lengths, t, generator=torch.Generator().manual_seed(2))
    logits, gaps = ExactFlexOracle(P1, VOCAB, alpha)(batch.tokens, batch.t, batch.lengths, batch.frozen)
    best = flexmdm_loss(logits, gaps, batch, alpha, beta).per_sequence
    perturbed = {
        "gaps x1.3": (logits, gaps * 1.3),
        "gaps x0.7": (logits, gaps * 0.7),
        "gaps +0.2": (logits, gaps + 0.2),
        "posterior uniform": (smoothed(logits, 1.0), gaps),
        "posterior sharpened": (sharpened(logits, 3.0), gaps),
    }
    for name, (other_logits, other_gaps) in perturbed.items():
        diff = flexmdm_loss(other_logits, other_gaps, batch, alpha, beta).per_sequence - best
        stderr = float(diff.std()) / math.sqrt(count)
        assert float(diff.mean()) > 3 * stderr, (name, float(diff.mean()), stderr)


def test_count_cross_entropy_is_minimised_by_the_exact_count_distribution():
    alpha, beta = LinearSchedule(), LinearSchedule()
    count = 20_000
    x1, lengths = draw_data(count, seed=7)
    t = sample_times(count, max_time=0.95, generator=torch.Generator().manual_seed(8))
    batch = FlexInterpolant(alpha, beta, VOCAB).sample(x1, lengths, t, generator=torch.Generator().manual_seed(9))
    logits, gaps, counts = ExactFlexOracle(P1, VOCAB, alpha, gap_counts=True)(
        batch.tokens, batch.t, batch.lengths, batch.frozen)
    without = flexmdm_loss(logits, gaps, batch, alpha, beta)
    best = flexmdm_loss(logits, gaps, batch, alpha, beta, counts)
    # the added term is κ_α(t) · Σ_gaps −log q(true count), normalised like the rest
    cross_entropy = -counts.gather(-1, batch.gaps.clamp(max=counts.shape[-1] - 1).long()[..., None]).squeeze(-1)
    added = (alpha.rate(batch.t) * torch.where(batch.gap_allowed, cross_entropy, 0.0).sum(1)).sum() / best.num_tokens
    assert float(best.gap_loss - without.gap_loss) == pytest.approx(float(added), rel=1e-4)
    poisson_like = torch.distributions.Poisson(gaps.clamp(min=1e-6)[..., None]).log_prob(
        torch.arange(counts.shape[-1]).float())  # right mean, wrong shape
    for other in (torch.log_softmax(poisson_like, dim=-1), torch.log_softmax(counts.clamp(min=-30) * 0.5, dim=-1)):
        diff = flexmdm_loss(logits, gaps, batch, alpha, beta, other).per_sequence - best.per_sequence
        assert float(diff.mean()) > 3 * float(diff.std()) / math.sqrt(count)


def test_oracle_minimises_mdm_loss():
    beta = LinearSchedule()
    count = 20_000
    x1, lengths = draw_data(count, seed=3)
    canvas = torch.full((count, 4), VOCAB.pad_id)
    canvas[:, : x1.shape[1]] = x1
    t = sample_times(count, generator=torch.Generator().manual_seed(4))
    batch = MDMInterpolant(beta, VOCAB).sample(canvas, t, generator=torch.Generator().manual_seed(5))
    logits = ExactMDMOracle(P1, VOCAB, 4)(batch.tokens, batch.t, batch.lengths, batch.frozen)
    best = mdm_loss(logits, batch, beta).per_sequence
    probs = torch.softmax(logits, dim=-1)
    worse = torch.log(0.8 * probs + 0.2 / 3 * (torch.arange(4) != VOCAB.mask_id))
    diff = mdm_loss(worse, batch, beta).per_sequence - best
    assert float(diff.mean()) > 3 * float(diff.std()) / math.sqrt(count)


def test_poisson_deviance():
    k = torch.tensor([0.0, 0.0, 3.0, 3.0, 5.0])
    y = torch.tensor([0.5, 1e-30, 3.0, 1.0, 7.0])
    expected = y - k + torch.special.xlogy(k, k / y)
    assert torch.allclose(poisson_deviance(k, y), expected)
    assert float(poisson_deviance(torch.tensor(3.0), torch.tensor(3.0))) == pytest.approx(0.0, abs=1e-6)
    assert bool((poisson_deviance(k, y) >= 0).all())


def test_time_sampling_is_stratified_and_bounded():
    t = sample_times(8, generator=torch.Generator().manual_seed(0))
    strata = torch.floor(t / MAX_TIME * 8).long()
    assert strata.tolist() == list(range(8))
    assert float(t.max()) < MAX_TIME
    rank1 = sample_times(4, offset=4, total=8, generator=torch.Generator().manual_seed(0))
    assert torch.floor(rank1 / MAX_TIME * 8).long().tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="do not fit"):
        sample_times(4, offset=6, total=8)
    with pytest.raises(ValueError, match="max_time"):
        sample_times(4, max_time=1.5)


def test_time_power_warps_each_stratum_towards_early_times():
    plain = sample_times(8, generator=torch.Generator().manual_seed(3))
    warped = sample_times(8, power=2.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(warped, (plain / MAX_TIME) ** 2 * MAX_TIME)
    assert torch.equal(sample_times(8, power=1.0, generator=torch.Generator().manual_seed(3)), plain)
    # u^2 < 1/4 exactly when u < 1/2: half the strata land in the first quarter of [0, max_time]
    many = sample_times(64, power=2.0, generator=torch.Generator().manual_seed(4))
    assert int((many < 0.25 * MAX_TIME).sum()) == 32
    with pytest.raises(ValueError, match="power"):
        sample_times(4, power=0.0)


def test_loss_finite_at_max_time():
    alpha = beta = LinearSchedule()
    x1, lengths = draw_data(64, seed=6)
    t = torch.full((64,), MAX_TIME)
    batch = FlexInterpolant(alpha, beta, VOCAB).sample(x1, lengths, t)
    logits = torch.zeros(*batch.tokens.shape, VOCAB.size)
    out = flexmdm_loss(logits, torch.ones(64, batch.tokens.shape[1] + 1), batch, alpha, beta)
    assert math.isfinite(float(out.loss))
