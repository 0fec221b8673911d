import math

import pytest
import torch

from flexmdm.schedules import (
    CosineSchedule,
    GeometricSchedule,
    LinearSchedule,
    PolynomialSchedule,
    PowerDecaySchedule,
    schedule_from_config,
)

SCHEDULES = [LinearSchedule(), PolynomialSchedule(2.0), PolynomialSchedule(0.5), PowerDecaySchedule(2.0),
             PowerDecaySchedule(3.0), CosineSchedule(), GeometricSchedule()]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: str(s))
def test_boundaries_monotone_inverse(schedule):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a = schedule.value(t)
    assert float(a[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(a[-1]) == pytest.approx(1.0, abs=1e-8)
    assert bool((a[1:] >= a[:-1]).all())
    inner = t[1:-1]
    assert torch.allclose(schedule.inverse(schedule.value(inner)), inner, atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: str(s))
def test_survival_is_one_minus_value_and_inverts(schedule):
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    assert torch.allclose(schedule.survival(t), 1 - schedule.value(t), atol=1e-12)
    assert torch.allclose(schedule.inverse_survival(schedule.survival(t)), t, atol=1e-6)


def test_power_decay_survival_keeps_its_precision_where_the_value_rounds_to_one():
    steep, t = PowerDecaySchedule(50.0), torch.tensor([0.6, 0.9], dtype=torch.float64)
    assert bool((steep.value(t) == 1.0).all())
    assert torch.allclose(steep.survival(t), (1 - t) ** 50, rtol=1e-12)
    assert torch.allclose(steep.inverse_survival(steep.survival(t)), t, rtol=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: str(s))
def test_derivative_and_rate(schedule):
    t = torch.linspace(0.05, 0.95, 50, dtype=torch.float64)
    h = 1e-6
    numeric = (schedule.value(t + h) - schedule.value(t - h)) / (2 * h)
    assert torch.allclose(schedule.derivative(t), numeric, rtol=1e-5, atol=1e-6)
    assert torch.allclose(schedule.rate(t), schedule.derivative(t) / (1 - schedule.value(t)), rtol=1e-6)


def _assert_truncated_samples_follow(cdf, samples: torch.Tensor, quantiles) -> None:
    """Each empirical P(T <= q) within 4 standard errors of ``cdf(q)``."""
    for q in quantiles:
        empirical = float((samples <= q).double().mean())
        assert abs(empirical - cdf(q)) < 4 * math.sqrt(cdf(q) * (1 - cdf(q)) / len(samples)) + 1e-9


def _sample_after(schedule, t0: float) -> torch.Tensor:
    start = torch.full((50_000,), t0, dtype=torch.float64)
    return schedule.sample_after(start, torch.rand(50_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64))


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: str(s))
def test_truncated_sampling_matches_cdf(schedule):
    samples = _sample_after(schedule, 0.3)
    assert bool((samples >= 0.3).all()) and bool((samples <= 1.0).all())
    a0 = float(schedule.value(torch.tensor(0.3, dtype=torch.float64)))
    _assert_truncated_samples_follow(
        lambda q: (float(schedule.value(torch.tensor(q, dtype=torch.float64))) - a0) / (1 - a0), samples, (0.4, 0.6, 0.9))


def test_truncated_sampling_stays_exact_where_a_steep_value_rounds_to_one():
    # p = 50 after t0 = 0.6: a(t0) is 1.0 in float64, yet T has P(T <= q) = 1 - ((1-q)/(1-t0))^50 below 1.
    samples = _sample_after(PowerDecaySchedule(50.0), 0.6)
    _assert_truncated_samples_follow(lambda q: 1 - ((1 - q) / 0.4) ** 50, samples, (0.601, 0.605, 0.62))


def test_geometric_rate_is_bounded():
    s = GeometricSchedule(0.01, 20.0)
    assert float(s.rate(torch.tensor(1.0))) == pytest.approx(20.0 * math.log(2000.0))
    assert math.isinf(float(LinearSchedule().rate(torch.tensor(1.0))))


def test_config_round_trip_and_errors():
    for s in SCHEDULES:
        assert schedule_from_config(s.to_config()) == s
    assert schedule_from_config("cosine") == CosineSchedule()
    with pytest.raises(ValueError, match="unknown schedule 'cubic'"):
        schedule_from_config({"name": "cubic"})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['pow'\]"):
        schedule_from_config({"name": "polynomial", "pow": 2})
    with pytest.raises(ValueError, match="power > 0"):
        PolynomialSchedule(-1.0)
    with pytest.raises(ValueError, match="PowerDecaySchedule needs a finite power > 0"):
        PowerDecaySchedule(0.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        GeometricSchedule(5.0, 1.0)
