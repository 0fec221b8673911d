"""The joint interpolant against closed forms, and its invariants on random batches."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexmdm.interpolant import FlexInterpolant, MDMInterpolant, typical_time
from flexmdm.schedules import CosineSchedule, LinearSchedule, PolynomialSchedule, PowerDecaySchedule, Schedule
from flexmdm.vocab import Vocab

VOCAB = Vocab(size=6, mask_id=4, pad_id=5)


def state_probabilities(alpha: Schedule, beta: Schedule, t: float) -> tuple[float, float, float]:
    """(absent, masked, clean) probabilities of one token at time t, by quadrature.

    P(clean) = ∫_0^t α'(s) (β(t) − β(s)) / (1 − β(s)) ds, P(present) = α(t).
    """
    s = torch.linspace(0.0, t, 200_001, dtype=torch.float64)
    bt = beta.value(torch.tensor(t, dtype=torch.float64))
    integrand = alpha.derivative(s) * (bt - beta.value(s)) / (1.0 - beta.value(s))
    clean = float(torch.trapezoid(integrand, s))
    present = float(alpha.value(torch.tensor(t, dtype=torch.float64)))
    return 1.0 - present, present - clean, clean


def test_quadrature_matches_linear_closed_form():
    t = 0.6
    absent, masked, clean = state_probabilities(LinearSchedule(), LinearSchedule(), t)
    assert absent == pytest.approx(1 - t)
    assert masked == pytest.approx(-(1 - t) * math.log(1 - t), abs=1e-7)
    assert clean == pytest.approx(t + (1 - t) * math.log(1 - t), abs=1e-7)


@pytest.mark.parametrize("alpha, beta", [(LinearSchedule(), LinearSchedule()),
                                         (PolynomialSchedule(2.0), CosineSchedule()),
                                         (PowerDecaySchedule(3.0), LinearSchedule())])
def test_typical_time_maximises_the_state_probability(alpha, beta):
    masks, clean = torch.tensor([6, 3, 0]), torch.tensor([0, 3, 6])
    found = typical_time(masks, clean, alpha, beta)
    times = [i / 100 for i in range(1, 100)]
    states = {t: state_probabilities(alpha, beta, t) for t in times}
    for row in range(3):
        def log_likelihood(t):
            _, masked, revealed = states[t]
            return int(masks[row]) * math.log(max(masked, 1e-300)) + int(clean[row]) * math.log(max(revealed, 1e-300))
        best = max(times, key=log_likelihood)
        assert float(found[row]) == pytest.approx(best, abs=0.011), (row, float(found[row]), best)
    assert float(found[0]) < float(found[1]) < float(found[2])  # more revealed, later
    if isinstance(alpha, LinearSchedule):
        assert float(found[0]) == pytest.approx(1 - 1 / math.e, abs=1e-3)


@pytest.mark.parametrize(
    "alpha, beta, t",
    [
        (LinearSchedule(), LinearSchedule(), 0.6),
        (PolynomialSchedule(2.0), CosineSchedule(), 0.7),
        (PowerDecaySchedule(3.0), LinearSchedule(), 0.4),
    ],
)
def test_state_frequencies_match_closed_form(alpha, beta, t):
    # 30 cells checked at 3σ: with a fixed seed the test is deterministic; the draws were
    # checked unbiased at 400,000 draws for three seeds while writing it.
    draws, length = 50_000, 5
    x1 = torch.tensor([[0, 1, 2, 3, 0]]).expand(draws, length)
    lengths = torch.full((draws,), length)
    batch = FlexInterpolant(alpha, beta, VOCAB).sample(
        x1, lengths, torch.full((draws,), t), generator=torch.Generator().manual_seed(0)
    )
    expected = state_probabilities(alpha, beta, t)
    for position in range(length):
        here = batch.source_index == position
        present = here.any(dim=1).double()
        masked = (here & batch.masked).any(dim=1).double()
        observed = (1 - present.mean(), masked.mean(), present.mean() - masked.mean())
        for p, q in zip(expected, observed):
            sigma = math.sqrt(p * (1 - p) / draws)
            assert abs(float(q) - p) <= 3 * sigma, (position, expected, observed)


@st.composite
def padded_batches(draw):
    batch = draw(st.integers(1, 6))
    width = draw(st.integers(0, 7))
    lengths = draw(st.lists(st.integers(0, width), min_size=batch, max_size=batch))
    tokens = draw(st.lists(st.lists(st.integers(0, 3), min_size=width, max_size=width), min_size=batch, max_size=batch))
    frozen = draw(st.lists(st.lists(st.booleans(), min_size=width, max_size=width), min_size=batch, max_size=batch))
    times = draw(st.lists(st.floats(0.0, 1.0), min_size=batch, max_size=batch))
    seed = draw(st.integers(0, 2**31 - 1))
    x1 = torch.tensor(tokens, dtype=torch.long).reshape(batch, width)
    lengths = torch.tensor(lengths)
    valid = torch.arange(width)[None, :] < lengths[:, None]
    x1 = torch.where(valid, x1, VOCAB.pad_id)
    frozen = torch.tensor(frozen, dtype=torch.bool).reshape(batch, width) & valid
    return x1, lengths, frozen, torch.tensor(times), seed


@settings(max_examples=200, deadline=None)
@given(padded_batches(), st.sampled_from([LinearSchedule(), CosineSchedule(), PolynomialSchedule(3.0)]))
def test_flex_interpolant_invariants(data, schedule):
    x1, lengths, frozen, t, seed = data
    out = FlexInterpolant(schedule, LinearSchedule(), VOCAB).sample(
        x1, lengths, t, frozen=frozen, generator=torch.Generator().manual_seed(seed)
    )
    n = out.tokens.shape[1]
    live = torch.arange(n)[None, :] < out.lengths[:, None]
    assert n == (int(out.lengths.max()) if len(lengths) else 0)  # cropped to the longest x_t
    # Σ gaps = len(x1) − len(x_t)
    assert torch.equal(out.gaps.sum(dim=1), lengths - out.lengths)
    assert bool((out.gaps >= 0).all())
    # every frozen token of x1 is present, clean and flagged
    assert torch.equal(out.frozen.sum(dim=1), frozen.sum(dim=1))
    assert not bool((out.frozen & out.masked).any())
    # source indices increase and point at the targets
    src = torch.where(live, out.source_index, 0)
    assert torch.equal(torch.where(live, torch.gather(x1, 1, src), VOCAB.pad_id), out.targets)
    assert bool((out.source_index[:, 1:] > out.source_index[:, :-1])[live[:, 1:]].all())
    assert torch.equal(torch.gather(frozen, 1, src) & live, out.frozen)
    # tokens: MASK where masked, the clean token elsewhere, PAD after the end
    assert torch.equal(out.tokens, torch.where(out.masked, VOCAB.mask_id, out.targets))
    assert not bool((out.masked & ~live).any())
    assert bool((out.tokens[~live] == VOCAB.pad_id).all())
    # gap slots exist up to len(x_t)
    slots = torch.arange(n + 1)[None, :] <= out.lengths[:, None]
    assert torch.equal(out.gap_allowed, slots)


@pytest.mark.parametrize("parts", [1, 3, 8, 20])
def test_split_by_length_keeps_every_state_with_less_padding(parts):
    generator = torch.Generator().manual_seed(parts)
    lengths = torch.randint(0, 13, (8,), generator=generator)
    x1 = torch.where(torch.arange(12)[None, :] < lengths[:, None], torch.randint(0, 4, (8, 12), generator=generator),
                     VOCAB.pad_id)
    t = torch.rand(8, generator=generator)
    whole = FlexInterpolant(LinearSchedule(), LinearSchedule(), VOCAB).sample(x1, lengths, t, generator=generator)
    pieces = whole.split_by_length(parts)
    assert len(pieces) == min(parts, 8)
    # every sequence lands in exactly one piece, the pieces in increasing length
    seen = torch.cat([p.t for p in pieces])
    assert sorted(seen.tolist()) == sorted(t.tolist())
    assert torch.cat([p.lengths for p in pieces]).tolist() == sorted(whole.lengths.tolist())
    for piece in pieces:
        width = int(piece.lengths.max())
        assert piece.tokens.shape[1] == width and piece.gaps.shape[1] == width + 1
        for row in range(len(piece.t)):
            (i,) = (whole.t == piece.t[row]).nonzero()[0].tolist()
            n = int(whole.lengths[i])
            for name in ("tokens", "source_index", "masked", "targets", "frozen"):
                assert torch.equal(getattr(piece, name)[row, :n], getattr(whole, name)[i, :n]), name
            for name in ("gaps", "gap_allowed"):
                assert torch.equal(getattr(piece, name)[row, :n + 1], getattr(whole, name)[i, :n + 1]), name
                assert not bool(getattr(piece, name)[row, n + 1:].any())
            assert piece.data_lengths[row] == whole.data_lengths[i]
    assert sum(p.tokens.numel() for p in pieces) <= whole.tokens.numel()
    with pytest.raises(ValueError, match="parts must be >= 1"):
        whole.split_by_length(0)


def test_extreme_times():
    x1 = torch.tensor([[0, 1, 2]])
    frozen = torch.tensor([[False, True, False]])
    interp = FlexInterpolant(LinearSchedule(), LinearSchedule(), VOCAB)
    start = interp.sample(x1, torch.tensor([3]), torch.tensor([0.0]), frozen=frozen)
    assert start.tokens.tolist() == [[1]] and start.gaps.tolist() == [[1, 1]]
    end = interp.sample(x1, torch.tensor([3]), torch.tensor([1.0]), frozen=frozen)
    assert end.tokens.tolist() == [[0, 1, 2]] and end.gaps.tolist() == [[0, 0, 0, 0]]


def test_allowed_regions_and_violations():
    x1 = torch.tensor([[7 % 4, 1, 2, 3]])  # prompt of two frozen tokens, then two free ones
    frozen = torch.tensor([[True, True, False, False]])
    prompt_regions = torch.tensor([[False, False, True]])
    interp = FlexInterpolant(LinearSchedule(), LinearSchedule(), VOCAB)
    out = interp.sample(x1, torch.tensor([4]), torch.tensor([0.0]), frozen=frozen, allowed_regions=prompt_regions)
    assert out.gap_allowed.tolist() == [[False, False, True]]
    assert out.gaps.tolist() == [[0, 0, 2]]
    with pytest.raises(ValueError, match="region where insertion is not allowed"):
        interp.sample(x1, torch.tensor([4]), torch.tensor([0.5]), frozen=frozen,
                      allowed_regions=torch.tensor([[True, False, False]]))


def test_shape_errors():
    interp = FlexInterpolant(LinearSchedule(), LinearSchedule(), VOCAB)
    with pytest.raises(ValueError, match="lengths must lie"):
        interp.sample(torch.zeros(1, 2, dtype=torch.long), torch.tensor([3]), torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"must be \[B, L\]"):
        interp.sample(torch.zeros(2, dtype=torch.long), torch.tensor([1]), torch.tensor([0.5]))


def test_mdm_interpolant_mask_rate_and_frozen():
    draws, width, t = 20_000, 4, 0.3
    canvas = torch.tensor([[0, 1, VOCAB.pad_id, VOCAB.pad_id]]).expand(draws, width)
    frozen = torch.tensor([[True, False, False, False]]).expand(draws, width)
    out = MDMInterpolant(LinearSchedule(), VOCAB).sample(
        canvas, torch.full((draws,), t), frozen=frozen, generator=torch.Generator().manual_seed(1)
    )
    assert not bool(out.masked[:, 0].any())
    rate = out.masked[:, 1:].double().mean(dim=0)
    sigma = math.sqrt(t * (1 - t) / draws)
    assert bool(((rate - (1 - t)).abs() <= 3 * sigma).all())
    assert torch.equal(out.tokens, torch.where(out.masked, VOCAB.mask_id, canvas))
