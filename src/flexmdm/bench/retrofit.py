"""``flexmdm bench retrofit``: an MDM retrofitted into a FlexMDM vs a FlexMDM from scratch (paper §5.2).

1. **Pretrain** an MDM of the LLaDA architecture (:mod:`flexmdm.models.llada`) on the
   standard-library docstring paragraphs (task ``text``: byte-level BPE, at most
   ``max_length`` tokens), then write it as a native LLaDA checkpoint (``config.json`` +
   ``model.safetensors``) — the stand-in for LLaDA-8B.
2. **Retrofit** it (:func:`flexmdm.models.retrofit.retrofit`: adaLN time conditioning, gap
   head, LoRA; only those train) and fine-tune it with the FlexMDM objective, through the
   training configuration's ``retrofit`` section (``retrofit.base`` = that checkpoint), as
   ``flexmdm train`` would. ``--retrofit KEY=VALUE`` changes a setting of that section (e.g.
   ``time_rank=32``), and the scratch run's time conditioning and gap head with it.
3. Train a FlexMDM **from scratch** of the same architecture (same modules, all trainable) for
   the same number of steps, with the same data, batch, schedules and validation states.

Both FlexMDM runs draw their training times as ``t = max_time · u²`` (``train.time_power`` 2):
more early times, where a sequence is short and its final length is decided. It leaves the
loss's minimiser unchanged (:func:`flexmdm.losses.sample_times`); validation times stay uniform.

Reported: both validation-loss curves (PNG), the scratch run's final validation loss, the
first evaluated step at which the retrofit reaches it, and the total variation between the
lengths of retrofitted samples (drawn with :func:`flexmdm.sampling.sample_flexmdm` under the
schedules the retrofit was trained with, adapters re-attached to the base checkpoint from their
own files) and the lengths of the training paragraphs. ``length_tv_noise_floor`` is the TV of
as many lengths drawn from the data itself: the level sampling noise alone produces.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flexmdm.bench.figures import retrofit_figure
from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.families import family
from flexmdm.models import load_pretrained
from flexmdm.models.llada import save_llada
from flexmdm.models.retrofit import RetrofitConfig, load_retrofit, merge_adapters
from flexmdm.sampling import TauLeaping, sample_flexmdm
from flexmdm.schedules import schedule_from_config
from flexmdm.training.config import ConfigError, config_from_dict, parse_override
from flexmdm.training.trainer import ADAPTERS_DIR, METRICS_FILE, train

__all__ = ["RetrofitBenchSettings", "main", "retrofit_overrides", "run_retrofit_benchmark", "steps_to_reach",
           "length_tv"]

ARCHITECTURE_SETTINGS = ("time_groups", "time_rank", "gap_hidden")
"""Retrofit settings that the scratch FlexMDM shares (its time conditioning and gap head)."""


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
        settings = cls(pretrain_steps=300, flex_steps=200, samples=400, scratch_samples=200, eval_every=20)
        settings.model.update(d_model=64, n_layers=2)
        return settings


def steps_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated step whose validation loss is ``<= target`` (None if none is)."""
    for step, loss in curve:
        if loss <= target:
            return step
    return None


def length_tv(lengths: np.ndarray, reference: np.ndarray, max_length: int) -> float:
    """Total variation between the empirical length distributions (bins 0..max_length)."""
    first = np.bincount(lengths, minlength=max_length + 1)[: max_length + 1] / max(len(lengths), 1)
    second = np.bincount(reference, minlength=max_length + 1)[: max_length + 1] / max(len(reference), 1)
    return 0.5 * float(np.abs(first - second).sum())


def _config(settings: RetrofitBenchSettings, kind: str, output_dir: Path, seed: int, steps: int, lr: float,
            cache_dir: Path) -> dict[str, Any]:
    model = {"kind": kind, "architecture": "llada", **settings.model, "max_length": settings.max_length}
    train = {**settings.train, "steps": steps, "batch_size": settings.batch_size, "lr": lr, "seed": seed,
             "ema_decay": settings.ema_decay, "eval_every": settings.eval_every, "eval_batches": settings.eval_batches}
    if family(kind).inserts:
        model.update({key: settings.retrofit[key] for key in ARCHITECTURE_SETTINGS if key in settings.retrofit})
        train["time_power"] = settings.flex_time_power
    return {
        "model": model,
        "data": {"task": "text", "source": settings.source, "vocab_size": settings.vocab_size,
                 "max_length": settings.max_length, "cache_dir": str(cache_dir)},
        "train": train,
        "output_dir": str(output_dir),
    }


def _retrofit_config(settings: RetrofitBenchSettings, base_dir: Path, output_dir: Path, seed: int,
                     cache_dir: Path) -> dict[str, Any]:
    """The retrofit run: the scratch run's data and training, the network from ``retrofit.base``."""
    config = _config(settings, "flexmdm", output_dir, seed, settings.flex_steps, settings.retrofit_lr, cache_dir)
    del config["model"]  # the base's
    config["retrofit"] = {"base": str(base_dir), **settings.retrofit}
    return config


def retrofit_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["time_rank=32", ...]`` (``--retrofit``) as ``{"time_rank": 32, ...}``, checked against
    :class:`~flexmdm.models.retrofit.RetrofitConfig`.

    Raises:
        ConfigError: a malformed pair, an unknown key or an invalid value (one line).
    """
    values = {}
    for pair in pairs:
        keys, value = parse_override(pair)
        values[".".join(keys)] = value
    try:
        RetrofitConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--retrofit: {error}") from None
    return values


def _validation_curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    return [(row["step"], row["val_loss"]) for row in rows if "val_loss" in row]


def _sample_lengths(model, saved: dict[str, Any], settings: RetrofitBenchSettings, vocab, seed: int,
                    count: int) -> tuple[np.ndarray, list[list[int]]]:
    insertion = schedule_from_config(saved["schedules"]["insertion"])
    unmasking = schedule_from_config(saved["schedules"]["unmasking"])
    generator = torch.Generator().manual_seed(seed)
    lengths, examples = [], []
    for start in tqdm(range(0, count, settings.sample_batch), desc="sample", dynamic_ncols=True):
        size = min(settings.sample_batch, count - start)
        out = sample_flexmdm(model, vocab=vocab, insertion_schedule=insertion, unmasking_schedule=unmasking,
                             steps=settings.sampling_steps, max_length=settings.max_length, batch_size=size,
                             rule=TauLeaping(), final_fill="parallel", generator=generator)
        lengths.append(out.lengths.numpy())
        examples += out.sequences()[: max(0, 6 - len(examples))]
    return np.concatenate(lengths), examples


def run_retrofit_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0,
                           work_dir: str | Path | None = None, argv: list[str] | None = None,
                           retrofit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pretrain, retrofit, train from scratch, sample; write JSON + PNG and return the record.

    ``retrofit`` updates the retrofit settings (:func:`retrofit_overrides`); give such a variant
    its own ``work_dir``.
    """
    watch = Stopwatch()
    out = Path(out)
    settings = RetrofitBenchSettings.quick() if quick else RetrofitBenchSettings()
    settings.retrofit.update(retrofit or {})
    RetrofitConfig.from_dict(settings.retrofit)  # fail before pretraining
    work = Path(work_dir) if work_dir is not None else out.with_suffix("")
    cache = work / "cache"
    phases: dict[str, float] = {}

    def timed(name: str, function, *args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        phases[name] = time.perf_counter() - start
        return result

    pretrain_cfg = config_from_dict(copy.deepcopy(_config(settings, "mdm", work / "pretrain-mdm", seed,
                                                          settings.pretrain_steps, settings.pretrain_lr, cache)))
    print(f"pretraining the MDM ({settings.pretrain_steps} steps) in {pretrain_cfg.output_dir}", flush=True)
    pretrained = timed("pretrain_seconds", train, pretrain_cfg)
    mdm, _ = load_pretrained(pretrained.model_dir)
    base_dir = save_llada(mdm, work / "base-llada")  # the native LLaDA checkpoint the retrofit starts from

    runs = {}
    for name, raw in (
        ("scratch", _config(settings, "flexmdm", work / "scratch-flexmdm", seed, settings.flex_steps,
                            settings.scratch_lr, cache)),
        ("retrofit", _retrofit_config(settings, base_dir, work / "retrofit-flexmdm", seed, cache)),
    ):
        cfg = config_from_dict(raw)
        print(f"training the {name} FlexMDM ({settings.flex_steps} steps) in {cfg.output_dir}", flush=True)
        runs[name] = timed(f"{name}_seconds", train, cfg)
    task = cfg.data.build_task()

    # The run wrote its adapters on their own; re-attach them to the base checkpoint for sampling.
    adapter_dir = runs["retrofit"].output_dir / ADAPTERS_DIR
    model, record_meta = load_retrofit(base_dir, adapter_dir)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    merge_adapters(model)  # same outputs, no LoRA overhead while sampling
    adapter_bytes = sum(f.stat().st_size for f in adapter_dir.iterdir())
    base_bytes = sum(f.stat().st_size for f in base_dir.iterdir())

    curves = {name: _validation_curve(run.output_dir) for name, run in runs.items()}
    target = curves["scratch"][-1][1]
    reached = steps_to_reach(curves["retrofit"], target)
    data_lengths = task.lengths("train").astype(np.int64)

    print(f"sampling {settings.samples} sequences from the retrofitted model", flush=True)
    retrofit_lengths, examples = timed("sample_seconds", _sample_lengths, model, record_meta, settings,
                                       task.vocab, seed, settings.samples)
    scratch_model, scratch_saved = load_pretrained(runs["scratch"].model_dir)
    scratch_lengths, _ = timed("scratch_sample_seconds", _sample_lengths, scratch_model, scratch_saved, settings,
                               task.vocab, seed, settings.scratch_samples)
    noise = np.random.default_rng(seed).choice(data_lengths, size=settings.samples, replace=True)

    png = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    retrofit_figure(curves, target, reached, {"data (train)": data_lengths, "retrofit samples": retrofit_lengths,
                                    "scratch samples": scratch_lengths}, settings.max_length, png)
    record = {
        "command": command_line(argv),
        "seed": seed,
        "wall_seconds": watch.seconds,
        "scratch_final_val_loss": target,
        "scratch_steps": runs["scratch"].steps,
        "retrofit_steps_to_scratch_final": reached,
        "retrofit_fraction_of_scratch_steps": None if reached is None else reached / runs["scratch"].steps,
        "retrofit_final_val_loss": curves["retrofit"][-1][1],
        "retrofit_length_tv": length_tv(retrofit_lengths, data_lengths, settings.max_length),
        "scratch_length_tv": length_tv(scratch_lengths, data_lengths, settings.max_length),
        "length_tv_noise_floor": length_tv(noise, data_lengths, settings.max_length),
        "mean_length": {"data": float(data_lengths.mean()), "retrofit": float(retrofit_lengths.mean()),
                        "scratch": float(scratch_lengths.mean())},
        "pretrain_final_val_loss_mdm": pretrained.val_loss,
        "pretrain_steps": pretrained.steps,
        "parameters": {"total": total, "retrofit_trainable": trainable},
        "checkpoint_bytes": {"base": base_bytes, "adapters": adapter_bytes},
        "curves": {name: [{"step": s, "val_loss": v} for s, v in curve] for name, curve in curves.items()},
        "phase_seconds": phases,
        "retrofit_sample_texts": task.decode(examples),
        "config": asdict(settings),
        "data": {"train_sequences": int(len(data_lengths)), "vocab_size": task.vocab.size},
        "machine": machine_info(),
        "plot": png.name,
    }
    write_json(record, out)
    print(json.dumps({k: record[k] for k in ("scratch_final_val_loss", "scratch_steps",
                                             "retrofit_steps_to_scratch_final", "retrofit_length_tv",
                                             "length_tv_noise_floor", "wall_seconds")}, indent=1))
    return record


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench retrofit``."""
    run_retrofit_benchmark(args.out, quick=args.quick, seed=args.seed, work_dir=args.work_dir, argv=args.argv,
                           retrofit=retrofit_overrides(args.retrofit))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0
