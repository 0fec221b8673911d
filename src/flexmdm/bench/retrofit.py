"""``flexmdm bench retrofit``: an MDM retrofitted into a FlexMDM vs a FlexMDM from scratch (paper §5.2).

An MDM of the LLaDA architecture pretrained on standard-library docstring paragraphs, saved as a native LLaDA checkpoint
(standing in for LLaDA-8B), is retrofitted (:func:`flexmdm.models.retrofit.retrofit`) and fine-tuned through its
training configuration's ``retrofit`` section (``--retrofit KEY=VALUE``, which the scratch run's time conditioning and
gap head follow), beside a FlexMDM of its architecture trained from scratch as long on the same data and schedules.
Reported: both validation-loss curves, the first evaluated step at which the retrofit reaches the scratch run's final
validation loss, and the length total variation of samples to the training data (``length_tv_noise_floor``: of data).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexmdm.bench.commands import retrofit_overrides
from flexmdm.bench.figures import retrofit_figure
from flexmdm.bench.skeleton import BenchRun, bench_main, choose
from flexmdm.families import family
from flexmdm.models import load_pretrained
from flexmdm.models.llada import save_llada
from flexmdm.models.retrofit import RetrofitConfig, load_retrofit, merge_adapters
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.text.evaluation import tau_leaping, unconditional_samples
from flexmdm.tasks.text.metrics import length_total_variation
from flexmdm.training.config import config_from_dict
from flexmdm.training.network import retrofit_run_config, scratch_model_like
from flexmdm.training.trainer import ADAPTERS_DIR, read_metrics, train

__all__ = ["RetrofitBenchSettings", "main", "run_retrofit_benchmark", "steps_to_reach"]


@dataclass
class RetrofitBenchSettings:
    """What the benchmark trains and samples (the default is the committed result)."""

    source: str = "stdlib"
    vocab_size: int = 1024
    max_length: int = 64
    model: dict[str, Any] = field(default_factory=lambda: {
        "d_model": 128, "n_layers": 4, "n_heads": 4, "mlp_ratio": 2.75, "rope_theta": 10000.0})
    retrofit: dict[str, Any] = field(default_factory=lambda: {"lora_rank": 16, "lora_alpha": 32.0, "time_groups": 2})
    pretrain_steps: int = 600
    flex_steps: int = 1000
    flex_time_power: float = 2.0
    batch_size: int = 64
    pretrain_lr: float = 1e-3
    scratch_lr: float = 1e-3
    retrofit_lr: float = 2e-3
    ema_decay: float = 0.99
    eval_every: int = 20
    eval_batches: int = 8
    samples: int = 5000
    scratch_samples: int = 1000
    sample_batch: int = 500
    sampling_steps: int = 32
    train: dict[str, Any] = field(default_factory=lambda: {
        "warmup_steps": 50, "weight_decay": 0.01, "log_every": 25, "save_every": 250, "device": "cpu"})

    @classmethod
    def quick(cls) -> RetrofitBenchSettings:
        """A ~6-minute smoke setting (not a result)."""
        return cls(pretrain_steps=300, flex_steps=200, samples=400, scratch_samples=200, eval_every=20,
                   model={**cls().model, "d_model": 64, "n_layers": 2})


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose validation loss is ``<= target`` (None if none is)."""
    return next((step for step, loss in curve if loss <= target), None)


def _config(settings: RetrofitBenchSettings, kind: str, name: str, run: BenchRun, steps: int, lr: float) -> dict:
    model = {"kind": kind, "architecture": "llada", **settings.model, "max_length": settings.max_length}
    train = {**settings.train, "steps": steps, "batch_size": settings.batch_size, "lr": lr, "seed": run.seed,
             "ema_decay": settings.ema_decay, "eval_every": settings.eval_every, "eval_batches": settings.eval_batches}
    if family(kind).inserts:
        model, train["time_power"] = scratch_model_like(model, settings.retrofit), settings.flex_time_power
    return {"model": model, "train": train, "output_dir": str(run.work / name),
            "data": {"task": "text", "source": settings.source, "vocab_size": settings.vocab_size,
                     "max_length": settings.max_length, "cache_dir": str(run.work / "cache")}}


def _train(config: dict[str, Any]):
    print(f"training {config['output_dir']} ({config['train']['steps']} steps)", flush=True)
    return train(config_from_dict(copy.deepcopy(config)))


def run_retrofit_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                           argv: list[str] | None = None, retrofit: dict[str, Any] | None = None,
                           settings: RetrofitBenchSettings | None = None) -> dict[str, Any]:
    """Pretrain, retrofit, train from scratch, sample; write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(RetrofitBenchSettings, quick, settings)
    settings = replace(settings, retrofit={**settings.retrofit, **(retrofit or {})})
    RetrofitConfig.from_dict(settings.retrofit)  # fail before pretraining
    pretrained = run.timed("pretrain_seconds", _train, _config(settings, "mdm", "pretrain-mdm", run,
                                                           settings.pretrain_steps, settings.pretrain_lr))
    base_dir = save_llada(load_pretrained(pretrained.model_dir)[0], run.work / "base-llada")  # native LLaDA
    scratch = _config(settings, "flexmdm", "scratch-flexmdm", run, settings.flex_steps, settings.scratch_lr)
    retrofitted = retrofit_run_config(_config(settings, "flexmdm", "retrofit-flexmdm", run, settings.flex_steps,
                                              settings.retrofit_lr), base_dir, settings.retrofit)
    runs = {"scratch": run.timed("scratch_seconds", _train, scratch),
            "retrofit": run.timed("retrofit_seconds", _train, retrofitted)}
    task = config_from_dict(copy.deepcopy(scratch)).data.build_task()
    adapter_dir = runs["retrofit"].output_dir / ADAPTERS_DIR
    model, saved = load_retrofit(base_dir, adapter_dir)  # the run's adapters, re-attached to the base checkpoint
    counts = {"total": sum(p.numel() for p in model.parameters()),
              "retrofit_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    merge_adapters(model)  # same outputs, no LoRA overhead while sampling
    curves = {name: [(row["step"], row["val_loss"]) for row in read_metrics(r.output_dir) if "val_loss" in row]
              for name, r in runs.items()}
    target, scratch_steps = curves["scratch"][-1][1], runs["scratch"].steps
    reached = steps_to_reach(curves["retrofit"], target)
    data_lengths = task.lengths("train").astype(np.int64)

    def sample(pipe: Pipeline, count: int) -> list[list[int]]:
        return unconditional_samples(pipe, count, options=tau_leaping(settings.sampling_steps), batch_size=settings.sample_batch,
                                     max_length=settings.max_length, generator=torch.Generator().manual_seed(seed))[0]

    samples = {"retrofit": run.timed("sample_seconds", sample, Pipeline.from_model(model, saved), settings.samples),
               "scratch": run.timed("scratch_sample_seconds", sample, Pipeline.from_pretrained(
                   runs["scratch"].model_dir), settings.scratch_samples)}
    lengths = {name: np.array([len(s) for s in samples[name]]) for name in samples}
    noise = np.random.default_rng(seed).choice(data_lengths, size=settings.samples, replace=True)
    retrofit_figure(curves, target, reached, {"data (train)": data_lengths, "retrofit samples": lengths["retrofit"],
                                              "scratch samples": lengths["scratch"]}, settings.max_length, run.png())
    return run.write({
        "scratch_final_val_loss": target, "scratch_steps": scratch_steps, "retrofit_steps_to_scratch_final": reached,
        "retrofit_fraction_of_scratch_steps": None if reached is None else reached / scratch_steps,
        "retrofit_final_val_loss": curves["retrofit"][-1][1],
        **{f"{name}_length_tv": length_total_variation(lengths[name], data_lengths) for name in samples},
        "length_tv_noise_floor": length_total_variation(noise, data_lengths),
        "mean_length": {"data": float(data_lengths.mean()), **{k: float(v.mean()) for k, v in lengths.items()}},
        "pretrain_final_val_loss_mdm": pretrained.val_loss, "pretrain_steps": pretrained.steps, "parameters": counts,
        "checkpoint_bytes": {name: sum(f.stat().st_size for f in folder.iterdir())
                             for name, folder in (("base", base_dir), ("adapters", adapter_dir))},
        "curves": {name: [{"step": s, "val_loss": v} for s, v in curve] for name, curve in curves.items()},
        "phase_seconds": run.phases, "retrofit_sample_texts": task.decode(samples["retrofit"][:6]),
        "config": asdict(settings), "plot": run.png().name,
        "data": {"train_sequences": int(len(data_lengths)), "vocab_size": task.vocab.size},
    })


main = bench_main(run_retrofit_benchmark, lambda args: {"retrofit": retrofit_overrides(args.retrofit)})
"""``flexmdm bench retrofit``."""
