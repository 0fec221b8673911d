"""``flexmdm bench speed``: how fast training and sampling run on this machine.

Everything is measured in one run, so the ratios are comparable even on a noisy shared machine:

* ``matmul_peak_gflops``: fp32 ``2048 × 2048`` matmuls, best of several repetitions.
* ``train_tokens_per_s`` and ``mfu``: full FlexMDM training steps (interpolant, forward,
  loss, backward, AdamW) of the reference model on sequences of the reference length. Tokens
  are the positions the network processes (each batch is cropped to its longest x_t; the
  padding fraction is reported beside). Model FLOPs per token: 6·(parameters applied per
  token: no embeddings, no time conditioning)
  + 12·layers·d_model·n for attention, the usual forward + backward count.
* ``sampler_overhead_fraction``: share of FlexMDM sampling wall time (batch 64) spent outside
  the network calls — the rules, insertions, bookkeeping.
* ``flexmdm_vs_mdm_sample_cost``: wall time of one FlexMDM sample over one MDM sample of the
  same data, same network and the same number of steps. Data lengths are uniform on
  [L/8, L]; MDM fills a canvas of L, FlexMDM grows each sequence and crops every step to its
  longest live sequence. To make FlexMDM grow realistic lengths without a trained model, the
  network's gap head is replaced by the exact expected gap of that length distribution
  (the tokens still come from the network, so the per-call cost is the network's).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.interpolant import FlexInterpolant
from flexmdm.losses import flexmdm_loss, sample_times
from flexmdm.models import FlexMDMModel, MDMModel, ModelConfig
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
    seed: int = 0

    @classmethod
    def quick(cls) -> SpeedSettings:
        return cls(d_model=128, n_layers=2, n_heads=4, sequence_length=64, train_steps=3,
                   sample_batch=16, sample_steps=8, cost_batch=4)


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


def measure_training(settings: SpeedSettings, peak_gflops: float) -> dict[str, float]:
    """Tokens/s and MFU of full FlexMDM training steps on the reference model."""
    torch.manual_seed(settings.seed)
    config = _model_config(settings, "flexmdm")
    model = FlexMDMModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    schedule = LinearSchedule()
    interpolant = FlexInterpolant(schedule, schedule, config.vocab)
    generator = torch.Generator().manual_seed(settings.seed)
    length = settings.sequence_length
    x1 = torch.randint(0, settings.vocab_size - 2, (settings.train_batch, length), generator=generator)
    lengths = torch.full((settings.train_batch,), length)

    def step() -> tuple[int, int, float]:
        t = sample_times(settings.train_batch, generator=generator)
        batch = interpolant.sample(x1, lengths, t, generator=generator)
        logits, gaps = model(batch.tokens, batch.t, batch.lengths, batch.frozen)
        loss = flexmdm_loss(logits, gaps, batch, schedule, schedule).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        processed = batch.tokens.numel()
        return processed, int(batch.lengths.sum()), batch.tokens.shape[1]

    step()  # warm-up
    processed = real = 0
    flops = 0.0
    watch = Stopwatch()
    for _ in range(settings.train_steps):
        n_processed, n_real, width = step()
        processed += n_processed
        real += n_real
        flops += n_processed * _flops_per_token(model, config, width)
    seconds = watch.seconds
    return {
        "train_tokens_per_s": processed / seconds,
        "train_real_tokens_per_s": real / seconds,
        "train_padding_fraction": 1.0 - real / processed,
        "train_achieved_gflops": flops / seconds / 1e9,
        "mfu": flops / seconds / 1e9 / peak_gflops,
    }


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

    def forward(self, x: Tensor, t: Tensor, lengths: Tensor, frozen: Tensor) -> tuple[Tensor, Tensor]:
        logits, _ = self.network(x, t, lengths, frozen)
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


def measure_sampling(settings: SpeedSettings) -> dict[str, float]:
    """Sampler overhead at batch ``sample_batch`` and the FlexMDM / MDM cost per sample."""
    torch.manual_seed(settings.seed)
    schedule = LinearSchedule()
    length = settings.sequence_length
    length_probs = torch.zeros(length + 1)
    length_probs[length // 8 :] = 1.0
    length_probs /= length_probs.sum()
    flex_network = LengthOracleGaps(FlexMDMModel(_model_config(settings, "flexmdm")).eval(), length_probs, schedule)
    mdm_network = MDMModel(_model_config(settings, "mdm")).eval()
    vocab = flex_network.network.config.vocab

    def flex(batch: int, denoiser: Any) -> Any:
        return sample_flexmdm(denoiser, vocab=vocab, insertion_schedule=schedule, unmasking_schedule=schedule,
                              steps=settings.sample_steps, max_length=length, batch_size=batch,
                              final_fill="parallel", generator=torch.Generator().manual_seed(settings.seed))

    flex(2, flex_network)  # warm-up
    timed = _TimedDenoiser(flex_network)
    watch = Stopwatch()
    out = flex(settings.sample_batch, timed)
    total = watch.seconds
    overhead = 1.0 - timed.seconds / total

    watch = Stopwatch()
    flex_out = flex(settings.cost_batch, flex_network)
    flex_seconds = watch.seconds / settings.cost_batch
    canvas, frozen = mdm_canvas([[]] * settings.cost_batch, length, vocab)
    watch = Stopwatch()
    sample_mdm(mdm_network, vocab=vocab, unmasking_schedule=schedule, steps=settings.sample_steps, canvas=canvas,
               frozen=frozen, final_fill="parallel", generator=torch.Generator().manual_seed(settings.seed))
    mdm_seconds = watch.seconds / settings.cost_batch
    return {
        "sampler_overhead_fraction": overhead,
        "sampler_seconds_batch": total,
        "sampler_network_calls": timed.calls,
        "sampler_mean_length": float(out.lengths.float().mean()),
        "flexmdm_sample_seconds": flex_seconds,
        "mdm_sample_seconds": mdm_seconds,
        "flexmdm_mean_length": float(flex_out.lengths.float().mean()),
        "flexmdm_vs_mdm_sample_cost": flex_seconds / mdm_seconds,
    }


def run_speed_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, argv: list[str] | None = None) -> dict:
    """Run every measurement and write the JSON record to ``out``."""
    watch = Stopwatch()
    settings = SpeedSettings.quick() if quick else SpeedSettings()
    settings.seed = seed
    peak = matmul_peak_gflops()
    record: dict[str, Any] = {"matmul_peak_gflops": peak}
    record.update(measure_training(settings, peak))
    record.update(measure_sampling(settings))
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
    for key in ("matmul_peak_gflops", "train_tokens_per_s", "mfu", "sampler_overhead_fraction",
                "flexmdm_vs_mdm_sample_cost", "wall_seconds"):
        print(f"{key:>28}: {record[key]:.4g}")
    return 0
