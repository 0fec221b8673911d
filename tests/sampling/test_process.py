"""The samplers take α and β from the process they are given, and from nowhere else."""

from collections import Counter

import torch

from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.sampling import EntropyBounded, TauLeaping, mdm_canvas, sample_flexmdm, sample_mdm
from flexmdm.schedules import LinearSchedule, PowerDecaySchedule, Schedule
from flexmdm.testing import ExactFlexOracle, ExactMDMOracle
from tests.oracle_cases import P1, VOCAB

LINEAR = LinearSchedule()


class Recording(Schedule):
    """The linear schedule, counting the calls of each method."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def value(self, t):
        self.calls["value"] += 1
        return LINEAR.value(t)

    def derivative(self, t):
        self.calls["derivative"] += 1
        return LINEAR.derivative(t)

    def inverse(self, a):
        self.calls["inverse"] += 1
        return LINEAR.inverse(a)


def test_flexmdm_lengths_follow_the_insertion_schedule_of_the_process():
    """An oracle of an early insertion schedule: sampled with that schedule, the lengths are the
    data's; a sampler that kept the linear one would insert far too little."""
    alpha = PowerDecaySchedule(3.0)
    oracle = ExactFlexOracle(P1, VOCAB, alpha)
    truth = sum(p * len(s) for s, p in P1.items())  # 3.05

    def mean_length(insertion: Schedule) -> float:
        out = sample_flexmdm(oracle, FlexInterpolant(insertion, LINEAR, VOCAB), steps=16, max_length=8,
                             batch_size=2000, generator=torch.Generator().manual_seed(0))
        return float(out.lengths.float().mean())

    assert abs(mean_length(alpha) - truth) < 0.3
    assert mean_length(LINEAR) < truth - 1.5


def test_flexmdm_reads_both_schedules_from_the_process():
    alpha, beta = Recording(), Recording()
    kwargs = dict(steps=6, max_length=8, batch_size=64, rule=TauLeaping())
    oracle = ExactFlexOracle(P1, VOCAB, LINEAR)
    recorded = sample_flexmdm(oracle, FlexInterpolant(alpha, beta, VOCAB), generator=torch.Generator().manual_seed(1),
                              **kwargs)
    plain = sample_flexmdm(oracle, FlexInterpolant(LINEAR, LINEAR, VOCAB), generator=torch.Generator().manual_seed(1),
                           **kwargs)
    assert torch.equal(recorded.tokens, plain.tokens) and torch.equal(recorded.nfe, plain.nfe)
    assert alpha.calls["value"] > 0  # insertion probabilities
    assert beta.calls["derivative"] > 0 and beta.calls["value"] > 0  # unmasking rates


def test_mdm_reads_the_unmasking_schedule_from_the_process():
    oracle = ExactMDMOracle(P1, VOCAB, 4)
    canvas, frozen = mdm_canvas([[]] * 64, 4, VOCAB)
    for rule, method in ((TauLeaping(), "derivative"), (EntropyBounded(0.3), "inverse")):
        beta = Recording()
        runs = [sample_mdm(oracle, MDMInterpolant(schedule, VOCAB), steps=5, canvas=canvas, frozen=frozen, rule=rule,
                           generator=torch.Generator().manual_seed(2)) for schedule in (beta, LINEAR)]
        assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].nfe, runs[1].nfe)
        assert beta.calls[method] > 0, rule
