"""``flexmdm bench speed``: how fast training and sampling run on this machine.

Everything is measured in one run, so the ratios are comparable even on a noisy shared machine.
Each quantity is measured in every configuration (:data:`~flexmdm.bench.speed_setup.CONFIGURATIONS`:
padded or packed, eager or compiled), alternating the configurations within each of ``repeats``
rounds; the record gives each one's median with its range (``configurations``), and at the top
level the medians of the configuration with the higher real-token training throughput
(``recommended``). Training is timed by :mod:`flexmdm.bench.throughput`, sampling by
:mod:`flexmdm.bench.sampling_cost`, the attention by :mod:`flexmdm.bench.attention`:

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexmdm.bench.attention import measure_attention
from flexmdm.bench.sampling_cost import SamplingCost, measure_sampling
from flexmdm.bench.skeleton import BenchRun, choose
from flexmdm.bench.speed_setup import configurations
from flexmdm.bench.throughput import matmul_peak_gflops, measure_training

__all__ = ["SpeedSettings", "main", "run_speed_benchmark"]


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


def _recommended(training: dict[str, dict[str, Any]]) -> str:
    """The configuration with the higher median real-token training throughput."""
    return max(training, key=lambda name: training[name]["train_real_tokens_per_s"]["median"])


def run_speed_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, argv: list[str] | None = None) -> dict:
    """Run every measurement and write the JSON record to ``out``: the headline keys (top level)
    are those of the recommended configuration, every configuration's are under
    ``configurations``."""
    run = BenchRun.start(out, seed=seed, argv=argv)
    settings = choose(SpeedSettings, quick)
    settings.seed = seed
    print("measuring the matmul peak, then training and sampling in every configuration "
          f"({', '.join(configurations(settings))}); each warms up first (compiling: minutes)", flush=True)
    peak = matmul_peak_gflops()
    training = measure_training(settings, peak)
    sampler = SamplingCost(settings)
    sampling = measure_sampling(settings, sampler)
    recommended = _recommended(training)
    record: dict[str, Any] = {"matmul_peak_gflops": peak, "recommended": recommended}
    for summary in (training[recommended], sampling[recommended]):
        record.update({key: value["median"] for key, value in summary.items() if isinstance(value, dict)})
    record.update(sampler.overhead(recommended))
    record["configurations"] = {name: {**training[name], **sampling[name]} for name in training}
    record["attention_ms"] = measure_attention(settings, flex=not quick)
    return run.write({**record, "settings": asdict(settings)})


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
