"""The FlexMDM objective is minimised by the exact posterior and expected gaps (Prop. 1)."""

import math

import pytest
import torch

from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm import losses
from flexmdm.losses import MAX_TIME, chunked_cross_entropy, flexmdm_loss, mdm_loss, poisson_deviance, sample_times
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


def test_gap_weight_scales_the_insertion_part_and_keeps_the_oracle_minimiser():
    alpha, beta = PowerDecaySchedule(2.0), LinearSchedule()
    count = 40_000
    x1, lengths = draw_data(count, seed=3)
    t = sample_times(count, max_time=0.95, generator=torch.Generator().manual_seed(4))
    batch = FlexInterpolant(alpha, beta, VOCAB).sample(x1, lengths, t, generator=torch.Generator().manual_seed(5))
    logits, gaps = ExactFlexOracle(P1, VOCAB, alpha)(batch.tokens, batch.t, batch.lengths, batch.frozen)
    plain, weighted = (flexmdm_loss(logits, gaps, batch, alpha, beta, gap_weight=w) for w in (1.0, 0.25))
    assert float(weighted.token_loss) == float(plain.token_loss) and float(weighted.gap_loss) == float(plain.gap_loss)
    assert float(weighted.loss) == pytest.approx(float(plain.token_loss + 0.25 * plain.gap_loss), rel=1e-6)
    assert float(weighted.per_sequence.sum() / weighted.num_tokens) == pytest.approx(float(weighted.loss), rel=1e-5)
    for other_gaps in (gaps * 1.3, gaps * 0.7):
        diff = flexmdm_loss(logits, other_gaps, batch, alpha, beta, gap_weight=0.25).per_sequence - weighted.per_sequence
        assert float(diff.mean()) > 3 * float(diff.std()) / math.sqrt(count)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_cross_entropy_equals_the_plain_one_in_values_and_gradients(dtype):
    torch.manual_seed(0)
    logits = (3 * torch.randn(37, 50)).to(dtype)
    logits[:, 7] = float("-inf")  # a forbidden id (MASK)
    targets = torch.randint(0, 7, (37,))
    weights = torch.rand(37)
    plain = logits.clone().requires_grad_()
    expected = torch.nn.functional.cross_entropy(plain.float(), targets, reduction="none")
    (expected * weights).sum().backward()
    chunked = logits.clone().requires_grad_()
    got = chunked_cross_entropy(chunked, targets, chunk=8)  # 37 rows: a last, shorter chunk
    (got * weights).sum().backward()
    assert got.dtype == torch.float32 and chunked.grad.dtype == dtype
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 0, "atol": 0}
    torch.testing.assert_close(chunked.grad, plain.grad, **tolerance)


def test_chunked_cross_entropy_never_holds_float32_logits_of_the_whole_batch():
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestFloat32(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for value in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
                    self.largest = max(self.largest, value.numel())
            return out

    logits = torch.randn(64, 100, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 100, (64,))
    for loss, bound in ((lambda: chunked_cross_entropy(logits, targets, chunk=16), 16 * 100),
                        (lambda: torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none"),
                         64 * 100)):
        recorder = LargestFloat32()
        with recorder:
            loss().sum().backward()
        assert recorder.largest == bound  # the plain loss does hold them (the recorder sees it)


def test_large_vocabularies_take_the_chunked_loss(monkeypatch):
    canvas = torch.tensor([[0, 1, 1, 3], [1, 0, 3, 3]])
    interpolant = MDMInterpolant(LinearSchedule(), VOCAB)
    batch = interpolant.sample(canvas, torch.tensor([0.6, 0.9]), generator=torch.Generator().manual_seed(0))
    logits = torch.randn(2, 4, VOCAB.size, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for name, threshold in (("plain", 10**9), ("chunked", VOCAB.size)):
        monkeypatch.setattr(losses, "CHUNKED_VOCAB", threshold)
        calls = []
        monkeypatch.setattr(losses, "chunked_cross_entropy",
                            lambda *a, **k: calls.append(1) or chunked_cross_entropy(*a, **k))
        leaf = logits.clone().requires_grad_()
        out = mdm_loss(leaf, batch, LinearSchedule())
        out.loss.backward()
        outputs[name] = (out.per_sequence.detach(), leaf.grad, len(calls))
    assert outputs["plain"][2] == 0 and outputs["chunked"][2] == 1
    torch.testing.assert_close(outputs["chunked"][0], outputs["plain"][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outputs["chunked"][1], outputs["plain"][1], rtol=1e-6, atol=1e-7)
    assert bool(outputs["plain"][0].abs().sum() > 0)
