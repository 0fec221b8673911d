"""Samplers driven by exact oracles reproduce the data distribution (paper Prop. 3)."""

import pytest
import torch

from flexmdm.constraints import Prompt
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.sampling import (
    Adaptive,
    EntropyBounded,
    TauLeaping,
    mdm_canvas,
    sample_flexmdm,
    sample_mdm,
)
from flexmdm.schedules import CosineSchedule, LinearSchedule, PolynomialSchedule, PowerDecaySchedule
from flexmdm.testing import ExactFlexOracle, ExactMDMOracle, empirical_distribution, total_variation
from tests.oracle_cases import P1, VOCAB

pytestmark = pytest.mark.statistical

SAMPLES = 20_000
TV_BOUND = 0.03


def flex_tv(rule, *, steps=200, alpha=LinearSchedule(), beta=LinearSchedule(), seed=0, final_fill="sequential"):
    oracle = ExactFlexOracle(P1, VOCAB, alpha)
    out = sample_flexmdm(
        oracle, FlexInterpolant(alpha, beta, VOCAB), steps=steps,
        max_length=8, batch_size=SAMPLES, rule=rule, final_fill=final_fill,
        generator=torch.Generator().manual_seed(seed),
    )
    return total_variation(empirical_distribution(out.tokens, out.lengths), P1), out


def test_vanilla_tau_leaping_is_exact():
    tv, out = flex_tv(TauLeaping())
    assert tv <= TV_BOUND, tv
    assert int(out.dropped_insertions.sum()) == 0


@pytest.mark.parametrize("alpha", [PolynomialSchedule(2.0), PowerDecaySchedule(3.0)], ids=str)
def test_vanilla_with_other_schedules(alpha):
    tv, _ = flex_tv(TauLeaping(), alpha=alpha, beta=CosineSchedule(), seed=1)
    assert tv <= TV_BOUND, tv


@pytest.mark.parametrize(
    "rule",
    [
        Adaptive("top_probability"),
        Adaptive("margin"),
        Adaptive("entropy"),
        Adaptive("left_most"),
        Adaptive("random"),
        Adaptive("right_most"),  # adversarial order
        Adaptive("top_probability", window_factor=1.0, window_max=2),
    ],
    ids=lambda r: f"{r.score}-window{r.window_factor}",
)
def test_adaptive_rules_are_exact(rule):
    tv, _ = flex_tv(rule, seed=2)
    assert tv <= TV_BOUND, tv


def test_any_unmasking_order_is_exact_even_entropy_greedy():
    # MED reveals by confidence at every step; insertions still follow their rates.
    tv, _ = flex_tv(EntropyBounded(threshold=0.0), seed=3)
    assert tv <= TV_BOUND, tv


def test_prompted_generation_matches_conditional():
    prompt_tokens = (1, 0)
    conditional = {s: p for s, p in P1.items() if s[:2] == prompt_tokens}
    frozen = {s: (True, True) + (False,) * (len(s) - 2) for s in conditional}
    alpha = LinearSchedule()
    oracle = ExactFlexOracle(conditional, VOCAB, alpha, frozen=frozen)
    prompt = Prompt.prefix([list(prompt_tokens)] * SAMPLES, VOCAB.pad_id)
    out = sample_flexmdm(
        oracle, FlexInterpolant(alpha, alpha, VOCAB), steps=200,
        max_length=8, prompt=prompt, rule=Adaptive("right_most"),
        generator=torch.Generator().manual_seed(4),
    )
    assert bool((out.tokens[:, :2] == torch.tensor(prompt_tokens)).all())
    assert bool(out.frozen[:, :2].all()) and not bool(out.frozen[:, 2:].any())
    total = sum(conditional.values())
    target = {s: p / total for s, p in conditional.items()}
    tv = total_variation(empirical_distribution(out.tokens, out.lengths), target)
    assert tv <= TV_BOUND, tv


def test_infilling_matches_conditional():
    # prefix (1,), suffix (0,): insertions only between them
    conditional = {s: p for s, p in P1.items() if len(s) >= 2 and s[0] == 1 and s[-1] == 0}
    frozen = {s: (True,) + (False,) * (len(s) - 2) + (True,) for s in conditional}
    alpha = LinearSchedule()
    oracle = ExactFlexOracle(conditional, VOCAB, alpha, frozen=frozen)
    prompt = Prompt.infill([[1]] * SAMPLES, [[0]] * SAMPLES, VOCAB.pad_id)
    out = sample_flexmdm(
        oracle, FlexInterpolant(alpha, alpha, VOCAB), steps=200,
        max_length=8, prompt=prompt, generator=torch.Generator().manual_seed(5),
    )
    total = sum(conditional.values())
    target = {s: p / total for s, p in conditional.items()}
    tv = total_variation(empirical_distribution(out.tokens, out.lengths), target)
    assert tv <= TV_BOUND, tv


@pytest.mark.parametrize("rule", [TauLeaping(), Adaptive("right_most"), EntropyBounded(0.3)], ids=str)
def test_mdm_sampler_is_exact(rule):
    canvas_length = 4
    oracle = ExactMDMOracle(P1, VOCAB, canvas_length)
    canvas, frozen = mdm_canvas([[]] * SAMPLES, canvas_length, VOCAB)
    out = sample_mdm(
        oracle, MDMInterpolant(LinearSchedule(), VOCAB), steps=100, canvas=canvas,
        frozen=frozen, rule=rule, generator=torch.Generator().manual_seed(6),
    )
    tv = total_variation(empirical_distribution(out.tokens, out.lengths), P1)
    # MED reveals several tokens at once from marginals; only the one-at-a-time rules are exact
    bound = TV_BOUND if not isinstance(rule, EntropyBounded) else 0.1
    assert tv <= bound, tv


def test_parallel_final_fill_is_close():
    tv, _ = flex_tv(TauLeaping(), final_fill="parallel", seed=7)
    assert tv <= TV_BOUND, tv
