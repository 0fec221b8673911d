"""Sampling cost of ``flexmdm bench speed``: FlexMDM against MDM per sample, and the FlexMDM sampler's
overhead outside the network calls, in every configuration."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flexmdm.bench.oracle_gaps import LengthOracleGaps
from flexmdm.bench.record import Stopwatch
from flexmdm.bench.speed_setup import CONFIGURATIONS, alternate, configurations, model_config, run_as
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.models import FlexMDMModel, MDMModel
from flexmdm.sampling import mdm_canvas, sample_flexmdm, sample_mdm
from flexmdm.schedules import LinearSchedule, Schedule

if TYPE_CHECKING:
    from flexmdm.bench.speed import SpeedSettings

__all__ = ["SamplingCost", "measure_sampling"]


class _TimedDenoiser:
    """Wraps a network, adding up the wall time spent inside its calls."""

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args: Tensor) -> Any:
        start = time.perf_counter()
        out = self.network(*args)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


class SamplingCost:
    """FlexMDM and MDM sampling in every configuration: the reference FlexMDM network (its gaps
    exact for lengths uniform on [L/8, L]) and an MDM of the same size, run eagerly or compiled.
    The MDM fills full canvases of L, padded (it has no padding)."""

    def __init__(self, settings: SpeedSettings) -> None:
        self.settings, self.schedule = settings, LinearSchedule()
        flex, mdm = _flex_network(settings, self.schedule), MDMModel(model_config(settings, "mdm")).eval()
        modes = {compiled for _, compiled in configurations(settings).values()}
        self.networks = {compiled: (run_as(flex, compiled), run_as(mdm, compiled)) for compiled in modes}
        vocab = flex.network.config.vocab
        self.flex_process = FlexInterpolant(self.schedule, self.schedule, vocab)
        self.mdm_process = MDMInterpolant(self.schedule, vocab)
        self.canvas, self.frozen = mdm_canvas([[]] * settings.cost_batch, settings.sequence_length, vocab)
        self.first_seconds: dict[str, float] = {}

    def warm_up(self, name: str) -> None:
        """Sample what :meth:`cost` samples (compiling every shape it meets); the first time is
        kept in ``first_seconds``."""
        watch = Stopwatch()
        self.cost(name)
        self.first_seconds.setdefault(name, watch.seconds)

    def cost(self, name: str) -> dict[str, float]:
        """Seconds per sample of FlexMDM and MDM sampling (batch ``cost_batch``) and their ratio."""
        packed, compiled = CONFIGURATIONS[name]
        flex, mdm = self.networks[compiled]
        batch = self.settings.cost_batch
        watch = Stopwatch()
        sample_mdm(mdm, self.mdm_process, steps=self.settings.sample_steps,
                   canvas=self.canvas, frozen=self.frozen, final_fill="parallel",
                   generator=torch.Generator().manual_seed(self.settings.seed))
        mdm_seconds = watch.seconds / batch
        watch = Stopwatch()
        out = _sample_flexmdm(self.settings, functools.partial(flex, packed=packed), self.flex_process, batch)
        flex_seconds = watch.seconds / batch
        return {"flexmdm_sample_seconds": flex_seconds, "mdm_sample_seconds": mdm_seconds,
                "flexmdm_mean_length": float(out.lengths.float().mean()),
                "flexmdm_vs_mdm_sample_cost": flex_seconds / mdm_seconds}

    def overhead(self, name: str) -> dict[str, float]:
        """Share of FlexMDM sampling wall time (batch ``sample_batch``) outside the network calls."""
        packed, compiled = CONFIGURATIONS[name]
        timed = _TimedDenoiser(functools.partial(self.networks[compiled][0], packed=packed))
        watch = Stopwatch()
        out = _sample_flexmdm(self.settings, timed, self.flex_process, self.settings.sample_batch)
        total = watch.seconds
        return {"sampler_overhead_fraction": 1.0 - timed.seconds / total, "sampler_seconds_batch": total,
                "sampler_network_calls": timed.calls, "sampler_mean_length": float(out.lengths.float().mean())}


def measure_sampling(settings: SpeedSettings, sampling: SamplingCost) -> dict[str, dict[str, Any]]:
    """The FlexMDM / MDM cost per sample in every configuration: medians and ranges of alternating
    repeats (each ratio taken within one repeat), and each one's first sampling time."""
    names = list(configurations(settings))
    for _ in range(2):  # compiling a configuration may cost the previous one a recompile (guards shared)
        for name in names:
            sampling.warm_up(name)
    costs = alternate(settings.repeats, {name: functools.partial(sampling.cost, name) for name in names},
                      "sample cost")
    return {name: {**costs[name], "sample_first_seconds": sampling.first_seconds[name]} for name in names}


def _flex_network(settings: SpeedSettings, schedule: Schedule) -> LengthOracleGaps:
    """The reference FlexMDM network with the exact gaps of lengths uniform on [L/8, L]."""
    torch.manual_seed(settings.seed)
    length = settings.sequence_length
    length_probs = torch.zeros(length + 1)
    length_probs[length // 8 :] = 1.0
    length_probs /= length_probs.sum()
    return LengthOracleGaps(FlexMDMModel(model_config(settings, "flexmdm")).eval(), length_probs, schedule)


def _sample_flexmdm(settings: SpeedSettings, denoiser: Any, process: FlexInterpolant, batch: int) -> Any:
    """FlexMDM samples of the reference length with the reference number of steps."""
    return sample_flexmdm(denoiser, process, steps=settings.sample_steps, max_length=settings.sequence_length,
                          batch_size=batch, final_fill="parallel",
                          generator=torch.Generator().manual_seed(settings.seed))
