"""Training throughput and MFU of ``flexmdm bench speed``: the matmul peak, the model FLOPs per token and
timed FlexMDM training steps in every configuration."""

from __future__ import annotations

import functools
import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flexmdm.bench.record import Stopwatch
from flexmdm.bench.speed_setup import alternate, configurations, model_config, run_as
from flexmdm.interpolant import FlexInterpolant
from flexmdm.losses import flexmdm_loss, sample_times
from flexmdm.models import FlexMDMModel, ModelConfig
from flexmdm.models.packing import first_fit_decreasing
from flexmdm.schedules import LinearSchedule

if TYPE_CHECKING:
    from flexmdm.bench.speed import SpeedSettings

__all__ = ["TrainingRun", "flops_per_token", "matmul_peak_gflops", "measure_training"]


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


def flops_per_token(model: torch.nn.Module, config: ModelConfig, positions: int) -> float:
    """Training FLOPs per processed position; embeddings and the per-sequence time conditioning
    (time MLP, adaLN modulations) are not counted."""
    per_sequence = ("embedding", "modulation")
    dense = sum(p.numel() for name, p in model.named_parameters() if not any(k in name for k in per_sequence))
    return 6.0 * dense + 12.0 * config.n_layers * config.d_model * positions


class TrainingRun:
    """Full FlexMDM training steps of the reference model in one configuration.

    Every configuration starts from the same weights and draws the same sequence of batches, so
    repeat r of each configuration times the same work. The first step (compiling) is timed apart.
    """

    def __init__(self, settings: SpeedSettings, packed: bool, compiled: bool) -> None:
        torch.manual_seed(settings.seed)
        self.settings, self.packed = settings, packed
        self.config = model_config(settings, "flexmdm")
        self.model = FlexMDMModel(self.config)
        self.network = run_as(self.model, compiled)
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
            step_flops = sum(n * flops_per_token(self.model, self.config, n) for n in sizes)
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
                processed_flops += len(sizes) * width * flops_per_token(self.model, self.config, width)
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
    runs = {name: TrainingRun(settings, *how) for name, how in configurations(settings).items()}
    for run in runs.values():  # once all are compiled (see sampling_cost.measure_sampling)
        run.step()
    training = alternate(settings.repeats, {name: functools.partial(run.measure, peak_gflops)
                                            for name, run in runs.items()}, "training steps")
    return {name: {**training[name], "train_first_step_seconds": run.first_step_seconds} for name, run in runs.items()}
