"""``flexmdm bench speed``: how fast training and sampling run on this machine.

Everything is measured in one run, so the ratios are comparable even on a noisy shared machine.
Each quantity is measured in every configuration (:data:`CONFIGURATIONS`: padded or packed, eager
or compiled), alternating the configurations within each of ``repeats`` rounds; the record gives
each one's median with its range (``configurations``), and at the top level the medians of the
configuration with the higher real-token training throughput (``recommended``):

* ``matmul_peak_gflops``: fp32 ``2048 × 2048`` matmuls, best of several repetitions.
* ``train_real_tokens_per_s`` and ``mfu_real_tokens``: full FlexMDM training steps
  (interpolant, forward, loss, backward, AdamW) of the reference model on sequences of the
  reference length, counting the tokens of the states x_t only. Model FLOPs per token:
  6·(parameters applied per token: no embeddings, no time conditioning) + 12·layers·d_model·n
  for attention over its sequence of n tokens, the usual forward + backward count.
  ``train_tokens_per_s`` and ``mfu`` count every position run through the token-wise layers
  instead, as the earlier records did; ``padding_fraction`` is the share of those positions that
  hold no token, ``attention_padding_fraction`` the share of attention scores computed outside a
  sequence's own block.
* ``train_first_step_seconds`` and ``sample_first_seconds``: the first training step and the first
  FlexMDM and MDM samples of each configuration (a repeat of the sample cost), compiling included
  (inductor's on-disk cache shortens it on later runs). Every configuration warms up twice, in
  turn, before the timings.
* ``sampler_overhead_fraction``: share of FlexMDM sampling wall time (batch 64) spent outside
  the network calls — the rules, insertions, bookkeeping.
* ``flexmdm_vs_mdm_sample_cost``: wall time of one FlexMDM sample over one MDM sample of the
  same data, same network run the same way (eager or compiled) and the same number of steps. Data lengths are uniform on
  [L/8, L]; MDM fills a canvas of L (padded: it has no padding), FlexMDM grows each sequence and
  runs only its live sequences, cropped to the longest or packed. To make FlexMDM grow realistic
  lengths without a trained model, the network's gap head is replaced by the exact expected gap
  of that length distribution (the tokens still come from the network, so the per-call cost is
  the network's).
* ``attention_ms``: the attention alone on one batch of states, forward and forward + backward:
  padded SDPA, packed rows with SDPA (what ``packed`` uses) and, except with ``--quick``,
  FlexAttention with a document mask over the whole packed sequence (forward only on CPU, where
  torch 2.13 has no FlexAttention backward).
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flexmdm.bench.attention import measure_attention
from flexmdm.bench.oracle_gaps import LengthOracleGaps
from flexmdm.bench.record import Stopwatch, command_line, machine_info, spread, write_json
from flexmdm.interpolant import FlexInterpolant
from flexmdm.losses import flexmdm_loss, sample_times
from flexmdm.models import FlexMDMModel, MDMModel, ModelConfig
from flexmdm.models.compiled import CompiledNetwork
from flexmdm.models.packing import first_fit_decreasing
from flexmdm.sampling import mdm_canvas, sample_flexmdm, sample_mdm
from flexmdm.schedules import LinearSchedule, Schedule

__all__ = ["LengthOracleGaps", "SpeedSettings", "main", "run_speed_benchmark"]


@dataclass
class SpeedSettings:
    """The reference configuration (documented in ``benchmarks/README.md``)."""

    d_model: int = 512
    n_layers: int = 4
    n_heads: int = 8
    vocab_size: int = 1024
    sequence_length: int = 256
    train_batch: int = 16
    train_steps: int = 8
    sample_batch: int = 64
    sample_steps: int = 64
    cost_batch: int = 16
    repeats: int = 3
    compiled: bool = True
    seed: int = 0

    @classmethod
    def quick(cls) -> SpeedSettings:
        return cls(d_model=128, n_layers=2, n_heads=4, sequence_length=64, train_steps=3,
                   sample_batch=16, sample_steps=8, cost_batch=4, repeats=1)


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul throughput over ``repeats`` products of ``size × size`` matrices."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def _model_config(settings: SpeedSettings, kind: str) -> ModelConfig:
    return ModelConfig(kind=kind, vocab_size=settings.vocab_size, mask_id=settings.vocab_size - 2,
                       pad_id=settings.vocab_size - 1, d_model=settings.d_model, n_layers=settings.n_layers,
                       n_heads=settings.n_heads, max_length=settings.sequence_length + 1)


def _flops_per_token(model: torch.nn.Module, config: ModelConfig, positions: int) -> float:
    """Training FLOPs per processed position; embeddings and the per-sequence time conditioning
    (time MLP, adaLN modulations) are not counted."""
    per_sequence = ("embedding", "modulation")
    dense = sum(p.numel() for name, p in model.named_parameters() if not any(k in name for k in per_sequence))
    return 6.0 * dense + 12.0 * config.n_layers * config.d_model * positions


CONFIGURATIONS = {"padded": (False, False), "packed": (True, False),
                  "padded_compiled": (False, True), "packed_compiled": (True, True)}
"""``(packed, compiled)`` of every configuration: padded batches are cropped to their longest
sequence, packed ones hold none (:mod:`flexmdm.models.packing`); compiled networks run through
``torch.compile`` (:class:`~flexmdm.models.compiled.CompiledNetwork`)."""


def _configurations(settings: SpeedSettings) -> dict[str, tuple[bool, bool]]:
    return {name: how for name, how in CONFIGURATIONS.items() if settings.compiled or not how[1]}


def _run(network: torch.nn.Module, compiled: bool) -> torch.nn.Module:
    return CompiledNetwork(network) if compiled else network


def _alternate(repeats: int, measures: dict[str, Callable[[], dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Every measurement ``repeats`` times, alternating them: the median and range of each key."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            samples[name].append(measure())
    return {name: {key: spread([row[key] for row in rows]) for key in rows[0]} for name, rows in samples.items()}


class _TrainingRun:
    """Full FlexMDM training steps of the reference model in one configuration.

    Every configuration starts from the same weights and draws the same sequence of batches, so
    repeat r of each configuration times the same work. The first step (compiling) is timed apart.
    """

    def __init__(self, settings: SpeedSettings, packed: bool, compiled: bool) -> None:
        torch.manual_seed(settings.seed)
        self.settings, self.packed = settings, packed
        self.config = _model_config(settings, "flexmdm")
        self.model = FlexMDMModel(self.config)
        self.network = _run(self.model, compiled)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.schedule = LinearSchedule()
        self.interpolant = FlexInterpolant(self.schedule, self.schedule, self.config.vocab)
        self.generator = torch.Generator().manual_seed(settings.seed)
        length = settings.sequence_length
        self.x1 = torch.randint(0, settings.vocab_size - 2, (settings.train_batch, length), generator=self.generator)
        self.lengths = torch.full((settings.train_batch,), length)
        watch = Stopwatch()
        self.step()
        self.first_step_seconds = watch.seconds

    def step(self) -> Tensor:
        """One step; returns the state lengths ``[B]``."""
        t = sample_times(self.settings.train_batch, generator=self.generator)
        batch = self.interpolant.sample(self.x1, self.lengths, t, generator=self.generator)
        logits, gaps = self.network(batch.tokens, batch.t, batch.lengths, batch.frozen, packed=self.packed)
        loss = flexmdm_loss(logits, gaps, batch, self.schedule, self.schedule).loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return batch.lengths

    def measure(self, peak_gflops: float) -> dict[str, float]:
        """``train_steps`` steps: throughput, MFU and padding."""
        real = processed = scores = useful_scores = 0
        real_flops = processed_flops = 0.0
        watch = Stopwatch()
        for _ in range(self.settings.train_steps):
            sizes = self.step().tolist()
            width = max(sizes)
            step_flops = sum(n * _flops_per_token(self.model, self.config, n) for n in sizes)
            real += sum(sizes)
            real_flops += step_flops
            useful_scores += sum((n + 1) ** 2 for n in sizes)  # the END slot attends too
            if self.packed:
                processed += sum(sizes)
                processed_flops += step_flops
                rows = max(first_fit_decreasing([n + 1 for n in sizes], width + 1)[0]) + 1
                scores += rows * (width + 1) ** 2
            else:
                processed += len(sizes) * width
                processed_flops += len(sizes) * width * _flops_per_token(self.model, self.config, width)
                scores += len(sizes) * (width + 1) ** 2
        seconds = watch.seconds
        return {
            "train_tokens_per_s": processed / seconds,
            "train_real_tokens_per_s": real / seconds,
            "mfu": processed_flops / seconds / 1e9 / peak_gflops,
            "mfu_real_tokens": real_flops / seconds / 1e9 / peak_gflops,
            "padding_fraction": 1.0 - real / processed,
            "attention_padding_fraction": 1.0 - useful_scores / scores,
        }


def measure_training(settings: SpeedSettings, peak_gflops: float) -> dict[str, dict[str, Any]]:
    """Every configuration's training measurements: medians and ranges of alternating repeats.

    Tokens are the tokens of the states x_t; ``padding_fraction`` is the share of the positions
    run through the token-wise layers (embeddings, linears, heads) that hold no token, and
    ``attention_padding_fraction`` the share of the attention scores computed outside a
    sequence's own block. ``mfu_real_tokens`` counts the model FLOPs of the real tokens only
    (each attending over its own sequence) per second, over the matmul peak; ``mfu`` counts
    every processed position as the reference record did.
    """
    runs = {name: _TrainingRun(settings, *how) for name, how in _configurations(settings).items()}
    for run in runs.values():  # once all are compiled (see measure_sampling)
        run.step()
    training = _alternate(settings.repeats, {name: functools.partial(run.measure, peak_gflops)
                                             for name, run in runs.items()})
    return {name: {**training[name], "train_first_step_seconds": run.first_step_seconds} for name, run in runs.items()}


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


class _Sampling:
    """FlexMDM and MDM sampling in every configuration: the reference FlexMDM network (its gaps
    exact for lengths uniform on [L/8, L]) and an MDM of the same size, run eagerly or compiled.
    The MDM fills full canvases of L, padded (it has no padding)."""

    def __init__(self, settings: SpeedSettings) -> None:
        self.settings, self.schedule = settings, LinearSchedule()
        flex, mdm = _flex_network(settings, self.schedule), MDMModel(_model_config(settings, "mdm")).eval()
        modes = {compiled for _, compiled in _configurations(settings).values()}
        self.networks = {compiled: (_run(flex, compiled), _run(mdm, compiled)) for compiled in modes}
        self.vocab = flex.network.config.vocab
        self.canvas, self.frozen = mdm_canvas([[]] * settings.cost_batch, settings.sequence_length, self.vocab)
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
        sample_mdm(mdm, vocab=self.vocab, unmasking_schedule=self.schedule, steps=self.settings.sample_steps,
                   canvas=self.canvas, frozen=self.frozen, final_fill="parallel",
                   generator=torch.Generator().manual_seed(self.settings.seed))
        mdm_seconds = watch.seconds / batch
        watch = Stopwatch()
        out = _sample_flexmdm(self.settings, functools.partial(flex, packed=packed), self.schedule, batch)
        flex_seconds = watch.seconds / batch
        return {"flexmdm_sample_seconds": flex_seconds, "mdm_sample_seconds": mdm_seconds,
                "flexmdm_mean_length": float(out.lengths.float().mean()),
                "flexmdm_vs_mdm_sample_cost": flex_seconds / mdm_seconds}

    def overhead(self, name: str) -> dict[str, float]:
        """Share of FlexMDM sampling wall time (batch ``sample_batch``) outside the network calls."""
        packed, compiled = CONFIGURATIONS[name]
        timed = _TimedDenoiser(functools.partial(self.networks[compiled][0], packed=packed))
        watch = Stopwatch()
        out = _sample_flexmdm(self.settings, timed, self.schedule, self.settings.sample_batch)
        total = watch.seconds
        return {"sampler_overhead_fraction": 1.0 - timed.seconds / total, "sampler_seconds_batch": total,
                "sampler_network_calls": timed.calls, "sampler_mean_length": float(out.lengths.float().mean())}


def measure_sampling(settings: SpeedSettings, sampling: _Sampling) -> dict[str, dict[str, Any]]:
    """The FlexMDM / MDM cost per sample in every configuration: medians and ranges of alternating
    repeats (each ratio taken within one repeat), and each one's first sampling time."""
    names = list(_configurations(settings))
    for _ in range(2):  # compiling a configuration may cost the previous one a recompile (guards shared)
        for name in names:
            sampling.warm_up(name)
    costs = _alternate(settings.repeats, {name: functools.partial(sampling.cost, name) for name in names})
    return {name: {**costs[name], "sample_first_seconds": sampling.first_seconds[name]} for name in names}


def _flex_network(settings: SpeedSettings, schedule: Schedule) -> LengthOracleGaps:
    """The reference FlexMDM network with the exact gaps of lengths uniform on [L/8, L]."""
    torch.manual_seed(settings.seed)
    length = settings.sequence_length
    length_probs = torch.zeros(length + 1)
    length_probs[length // 8 :] = 1.0
    length_probs /= length_probs.sum()
    return LengthOracleGaps(FlexMDMModel(_model_config(settings, "flexmdm")).eval(), length_probs, schedule)


def _sample_flexmdm(settings: SpeedSettings, denoiser: Any, schedule: Schedule, batch: int) -> Any:
    """FlexMDM samples of the reference length with the reference number of steps."""
    vocab = _model_config(settings, "flexmdm").vocab
    return sample_flexmdm(denoiser, vocab=vocab, insertion_schedule=schedule, unmasking_schedule=schedule,
                          steps=settings.sample_steps, max_length=settings.sequence_length, batch_size=batch,
                          final_fill="parallel", generator=torch.Generator().manual_seed(settings.seed))


def _recommended(training: dict[str, dict[str, Any]]) -> str:
    """The configuration with the higher median real-token training throughput."""
    return max(training, key=lambda name: training[name]["train_real_tokens_per_s"]["median"])


def run_speed_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, argv: list[str] | None = None) -> dict:
    """Run every measurement and write the JSON record to ``out``: the headline keys (top level)
    are those of the recommended configuration, every configuration's are under
    ``configurations``."""
    watch = Stopwatch()
    settings = SpeedSettings.quick() if quick else SpeedSettings()
    settings.seed = seed
    peak = matmul_peak_gflops()
    training = measure_training(settings, peak)
    sampler = _Sampling(settings)
    sampling = measure_sampling(settings, sampler)
    recommended = _recommended(training)
    record: dict[str, Any] = {"matmul_peak_gflops": peak, "recommended": recommended}
    for summary in (training[recommended], sampling[recommended]):
        record.update({key: value["median"] for key, value in summary.items() if isinstance(value, dict)})
    record.update(sampler.overhead(recommended))
    record["configurations"] = {name: {**training[name], **sampling[name]} for name in training}
    record["attention_ms"] = measure_attention(settings, flex=not quick)
    record.update({
        "command": command_line(argv),
        "seed": seed,
        "settings": asdict(settings),
        "machine": machine_info(),
        "wall_seconds": watch.seconds,
    })
    write_json(record, out)
    return record


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench speed`` (``--work-dir`` is unused: nothing is saved)."""
    record = run_speed_benchmark(args.out, quick=args.quick, seed=args.seed, argv=args.argv)
    print(f"{'recommended':>28}: {record['recommended']}")
    for key in ("matmul_peak_gflops", "train_real_tokens_per_s", "mfu_real_tokens", "padding_fraction",
                "sampler_overhead_fraction", "flexmdm_vs_mdm_sample_cost", "wall_seconds"):
        print(f"{key:>28}: {record[key]:.4g}")
    for name, summary in record["configurations"].items():
        print(f"{name:>28}: " + ", ".join(
            f"{key} {summary[key]['median']:.4g} [{summary[key]['min']:.4g}, {summary[key]['max']:.4g}]"
            for key in ("mfu_real_tokens", "padding_fraction", "flexmdm_vs_mdm_sample_cost"))
            + f", first step {summary['train_first_step_seconds']:.3g} s, "
            f"first samples {summary['sample_first_seconds']:.3g} s")
    for name, summary in record["attention_ms"].items():
        print(f"{'attention ' + name:>28}: {summary['median']:.4g} ms [{summary['min']:.4g}, {summary['max']:.4g}]")
    return 0
