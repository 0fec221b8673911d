"""``flexmdm bench speed``: how fast training and sampling run on this machine.

Everything is measured in one run, so the ratios are comparable even on a noisy shared machine.
Each quantity is measured in every configuration (``padded``: batches cropped to their longest
sequence; ``packed``: :mod:`flexmdm.models.packing`), alternating the configurations within each
of ``repeats`` rounds; the record gives each one's median with its range (``configurations``),
and at the top level the medians of the configuration with the higher real-token training
throughput (``recommended``):

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
* ``sampler_overhead_fraction``: share of FlexMDM sampling wall time (batch 64) spent outside
  the network calls — the rules, insertions, bookkeeping.
* ``flexmdm_vs_mdm_sample_cost``: wall time of one FlexMDM sample over one MDM sample of the
  same data, same network and the same number of steps. Data lengths are uniform on
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
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.interpolant import FlexInterpolant
from flexmdm.losses import flexmdm_loss, sample_times
from flexmdm.models import FlexMDMModel, MDMModel, ModelConfig
from flexmdm.models.layers import Padded
from flexmdm.models.packing import Packing, first_fit_decreasing
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


CONFIGURATIONS = ("padded", "packed")
"""How the networks are fed: padded batches cropped to their longest sequence, or packed
(:mod:`flexmdm.models.packing`)."""


def _spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class _TrainingRun:
    """Full FlexMDM training steps of the reference model in one configuration.

    Every configuration starts from the same weights and draws the same sequence of batches, so
    repeat r of each configuration times the same work.
    """

    def __init__(self, settings: SpeedSettings, packed: bool) -> None:
        torch.manual_seed(settings.seed)
        self.settings, self.packed = settings, packed
        self.config = _model_config(settings, "flexmdm")
        self.model = FlexMDMModel(self.config)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.schedule = LinearSchedule()
        self.interpolant = FlexInterpolant(self.schedule, self.schedule, self.config.vocab)
        self.generator = torch.Generator().manual_seed(settings.seed)
        length = settings.sequence_length
        self.x1 = torch.randint(0, settings.vocab_size - 2, (settings.train_batch, length), generator=self.generator)
        self.lengths = torch.full((settings.train_batch,), length)
        self.step()  # warm-up

    def step(self) -> Tensor:
        """One step; returns the state lengths ``[B]``."""
        t = sample_times(self.settings.train_batch, generator=self.generator)
        batch = self.interpolant.sample(self.x1, self.lengths, t, generator=self.generator)
        logits, gaps = self.model(batch.tokens, batch.t, batch.lengths, batch.frozen, packed=self.packed)
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
    runs = {name: _TrainingRun(settings, packed=name == "packed") for name in CONFIGURATIONS}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGURATIONS}
    for _ in range(settings.repeats):
        for name, run in runs.items():
            samples[name].append(run.measure(peak_gflops))
    return {name: {key: _spread([s[key] for s in samples[name]]) for key in samples[name][0]}
            for name in CONFIGURATIONS}


def measure_attention(settings: SpeedSettings, flex: bool) -> dict[str, dict[str, float]]:
    """Milliseconds of the attention alone on one batch of FlexMDM states (n + 1 slots each):
    padded SDPA and packed rows with SDPA (what ``packed`` uses), forward and forward + backward;
    with ``flex``, FlexAttention with a document mask over the whole packed sequence, compiled
    once outside the timing, forward only where it has no backward (CPU, torch 2.13)."""
    generator = torch.Generator().manual_seed(settings.seed)
    length, heads = settings.sequence_length, settings.n_heads
    dim = settings.d_model // heads
    slots = (sample_times(settings.train_batch, generator=generator) * length).long() + 1
    width = int(slots.max())
    padded, packing = Padded(slots, width), Packing(slots, width)
    padded_qkv = [torch.randn(settings.train_batch, heads, width, dim, generator=generator) for _ in range(3)]
    packed_qkv = [packing.pack(x.transpose(1, 2)).transpose(1, 2) for x in padded_qkv]  # [1, H, T, D]
    kernels: dict[str, tuple[Callable[..., Tensor], list[Tensor], bool]] = {
        "padded_sdpa": (padded.attend, padded_qkv, True),
        "packed_rows_sdpa": (packing.attend, packed_qkv, True),
    }
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        segment = packing.segment
        block_mask = create_block_mask(lambda b, h, q, k: segment[q] == segment[k], None, None,
                                       packing.tokens, packing.tokens, device=segment.device.type)
        compiled = torch.compile(flex_attention)

        def document(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return compiled(q, k, v, block_mask=block_mask)

        backward = segment.device.type != "cpu"
        kernels["packed_flex_document"] = (document, packed_qkv, backward)
        _attend(document, packed_qkv, backward)  # compile
    samples: dict[str, list[float]] = {}
    for _ in range(settings.repeats):
        for name, (attend, qkv, trainable) in kernels.items():
            for mode in ("forward", "forward_backward") if trainable else ("forward",):
                watch = Stopwatch()
                _attend(attend, qkv, mode == "forward_backward")
                samples.setdefault(f"{name}_{mode}", []).append(watch.seconds * 1000)
    return {name: _spread(values) for name, values in samples.items()}


def _attend(attend: Callable[..., Tensor], qkv: list[Tensor], backward: bool) -> None:
    with torch.set_grad_enabled(backward):
        q, k, v = (x.detach().requires_grad_(backward) for x in qkv)
        out = attend(q, k, v)
        if backward:
            out.sum().backward()


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


class LengthOracleGaps(torch.nn.Module):
    """A network whose gap head is replaced by the exact expected gaps of a length distribution.

    For data whose lengths follow ``length_probs [L + 1]`` and whose positions are exchangeable,
    the posterior of the data length given a state of length n at time t is
    p(ℓ) · C(ℓ, n) · α_t^n · (1 − α_t)^(ℓ − n); the remaining ℓ − n tokens are spread evenly
    over the n + 1 gaps.
    """

    def __init__(self, network: torch.nn.Module, length_probs: Tensor, schedule: Schedule) -> None:
        super().__init__()
        self.network = network
        self.log_probs = length_probs.double().log()
        self.schedule = schedule

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor,
                packed: bool = False) -> tuple[Tensor, Tensor]:
        logits, _ = self.network(x, t, lengths, frozen, packed=packed)
        ell = torch.arange(len(self.log_probs), dtype=torch.float64)
        n = lengths.double()[:, None]
        a = self.schedule.value(t.double()).clamp(1e-12, 1 - 1e-12)[:, None]
        log_choose = torch.lgamma(ell + 1) - torch.lgamma(n + 1) - torch.lgamma((ell - n).clamp(min=0) + 1)
        log_w = self.log_probs + log_choose + n * a.log() + (ell - n) * torch.log1p(-a)
        log_w = torch.where(ell >= n, log_w, float("-inf"))
        remaining = (torch.softmax(log_w, dim=1) * (ell - n).clamp(min=0)).sum(dim=1)
        slots = torch.arange(x.shape[1] + 1) <= lengths[:, None]
        gaps = torch.where(slots, (remaining / (lengths + 1))[:, None], 0.0)
        return logits, gaps.float()


def measure_sampling(settings: SpeedSettings) -> dict[str, dict[str, Any]]:
    """The FlexMDM / MDM cost per sample in every configuration (medians and ranges of alternating
    repeats, each ratio taken within one repeat); the MDM fills full canvases, padded."""
    schedule = LinearSchedule()
    flex_network = _flex_network(settings, schedule)
    mdm_network = MDMModel(_model_config(settings, "mdm")).eval()
    vocab = flex_network.network.config.vocab
    canvas, frozen = mdm_canvas([[]] * settings.cost_batch, settings.sequence_length, vocab)
    _sample_flexmdm(settings, flex_network, schedule, 2)  # warm-up

    samples: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGURATIONS}
    for _ in range(settings.repeats):
        watch = Stopwatch()
        sample_mdm(mdm_network, vocab=vocab, unmasking_schedule=schedule, steps=settings.sample_steps, canvas=canvas,
                   frozen=frozen, final_fill="parallel", generator=torch.Generator().manual_seed(settings.seed))
        mdm_seconds = watch.seconds / settings.cost_batch
        for name in CONFIGURATIONS:
            denoiser = functools.partial(flex_network, packed=name == "packed")
            watch = Stopwatch()
            out = _sample_flexmdm(settings, denoiser, schedule, settings.cost_batch)
            flex_seconds = watch.seconds / settings.cost_batch
            samples[name].append({
                "flexmdm_sample_seconds": flex_seconds,
                "mdm_sample_seconds": mdm_seconds,
                "flexmdm_mean_length": float(out.lengths.float().mean()),
                "flexmdm_vs_mdm_sample_cost": flex_seconds / mdm_seconds,
            })
    return {name: {key: _spread([s[key] for s in samples[name]]) for key in samples[name][0]}
            for name in CONFIGURATIONS}


def measure_sampler_overhead(settings: SpeedSettings, packed: bool) -> dict[str, float]:
    """Share of FlexMDM sampling wall time (batch ``sample_batch``) outside the network calls."""
    schedule = LinearSchedule()
    timed = _TimedDenoiser(functools.partial(_flex_network(settings, schedule), packed=packed))
    watch = Stopwatch()
    out = _sample_flexmdm(settings, timed, schedule, settings.sample_batch)
    total = watch.seconds
    return {
        "sampler_overhead_fraction": 1.0 - timed.seconds / total,
        "sampler_seconds_batch": total,
        "sampler_network_calls": timed.calls,
        "sampler_mean_length": float(out.lengths.float().mean()),
    }


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
    return max(CONFIGURATIONS, key=lambda name: training[name]["train_real_tokens_per_s"]["median"])


def run_speed_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, argv: list[str] | None = None) -> dict:
    """Run every measurement and write the JSON record to ``out``: the headline keys (top level)
    are those of the recommended configuration, every configuration's are under
    ``configurations``."""
    watch = Stopwatch()
    settings = SpeedSettings.quick() if quick else SpeedSettings()
    settings.seed = seed
    peak = matmul_peak_gflops()
    training = measure_training(settings, peak)
    sampling = measure_sampling(settings)
    recommended = _recommended(training)
    record: dict[str, Any] = {"matmul_peak_gflops": peak, "recommended": recommended}
    for summary in (training[recommended], sampling[recommended]):
        record.update({key: value["median"] for key, value in summary.items()})
    record.update(measure_sampler_overhead(settings, packed=recommended == "packed"))
    record["configurations"] = {name: {**training[name], **sampling[name]} for name in CONFIGURATIONS}
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
            for key in ("mfu_real_tokens", "padding_fraction", "flexmdm_vs_mdm_sample_cost")))
    for name, summary in record["attention_ms"].items():
        print(f"{'attention ' + name:>28}: {summary['median']:.4g} ms [{summary['min']:.4g}, {summary['max']:.4g}]")
    return 0
