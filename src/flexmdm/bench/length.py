"""``flexmdm bench length``: length fidelity and generative perplexity on text (paper §5.1.1), under fair rules.

FlexMDM and MDM share the backbone, the optimiser and the tokenized corpus
(:class:`flexmdm.tasks.text.TextTask`, by default paragraphs of the standard library's docstrings).
For each training seed (the corpus and its held-out halves fixed by ``--seed``) they train side by
side (:mod:`flexmdm.bench.seeds`), FlexMDM to more steps: its states hold only the tokens inserted so
far and ``train.length_buckets`` keeps padding low, so its step costs about half an MDM step. The
checkpoints at equal optimizer steps and at equal training CPU time (:mod:`flexmdm.bench.budgets`)
are scored; the headline is equal steps. A causal reference LM (the perplexity's instrument) is trained
once. FlexMDM's recipe was chosen in earlier runs on the whole held-out set, not re-tuned: ``power_decay``
insertion (p = 4), ``model.length_conditioning``, 4 length buckets; the MDM's is the default (see ``tuning``).

Both models draw unconditional samples at temperature 1 (:mod:`flexmdm.bench.length_evaluation`:
FlexMDM from nothing, MDM on a canvas of ``max_length`` without its PAD). The held-out text is halved
at random (fixed by ``--seed``) into validation and test. Each model gets the same three sampler
trials (τ-leaping at two step counts, adaptive top-probability unmasking at the larger), scored on
validation at the equal-steps checkpoints over seeds; the choice is the lowest length Wasserstein-1
distance among the trials whose generative perplexity is within 15 % of the model's best. Test, which
no choice reads, gets fresh samples of the chosen trials: total-variation and Wasserstein-1 distances
to the test lengths, mean length, generative perplexity under the reference LM (samples of ≤ 10
tokens excluded), unigram entropy and network calls, as mean ± standard error over seeds.
``reference`` holds the same statistics of the test half; ``noise_floor`` the distances between
``num_samples`` training sequences and the test half, mean ± standard error over ``noise_draws`` draws.

The full run (d_model 64, 3200 / 1500 steps) trained three seeds in 31 minutes on a busy 2-core
machine (0.21 and 0.35 s a FlexMDM and an MDM step side by side); scoring took about an hour more.
The single-seed record before the fair rules trained d_model 128 (0.28 and 0.65 s a step) to
8200 / 4500 steps, 49 minutes.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexmdm.bench.fair import BUDGETS, budget_points, fair_comparison
from flexmdm.bench.figures import length_figures
from flexmdm.bench.length_evaluation import TEMPERATURE, LengthEvaluation, held_out_halves, length_trials, noise_floor
from flexmdm.bench.seeds import plus_minus, train_seeds
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows
from flexmdm.bench.train_config import benchmark_train_config
from flexmdm.bench.tuning import DecoderTrial
from flexmdm.families import family
from flexmdm.models import load_pretrained
from flexmdm.tasks.text import metrics
from flexmdm.training.config import config_from_dict
from flexmdm.training.trainer import train

__all__ = ["LengthBenchSettings", "main", "run_length_benchmark"]

DIFFUSION_KINDS = ("flexmdm", "mdm")
METRICS = ("length_w1", "length_tv", "gen_ppl", "unigram_entropy", "mean_length", "mean_nfe")
RECIPES = {"flexmdm": "power_decay insertion schedule (p = 4), length conditioning and length buckets, chosen in "
                      "earlier runs on the whole held-out set (validation and test); not re-tuned here",
           "mdm": "the defaults (linear schedule, no buckets); not tuned"}


@dataclass
class LengthBenchSettings:
    """What the benchmark trains and evaluates (``quick()`` is a smoke-sized run)."""

    data: dict[str, Any] = field(default_factory=lambda: {"source": "stdlib", "max_length": 64, "vocab_size": 1024})
    seeds: int = 3
    trials: dict[str, list[DecoderTrial]] = field(default_factory=lambda: length_trials((128, 256)))
    perplexity_tolerance: float = 0.15
    num_samples: int = 480
    sample_batch_size: int = 160
    noise_draws: int = 20
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 4, "n_heads": 4})
    steps: dict[str, int] = field(default_factory=lambda: {"flexmdm": 3200, "mdm": 1500})
    flexmdm_length_buckets: int = 4
    flexmdm_insertion_schedule: dict[str, Any] = field(default_factory=lambda: {"name": "power_decay", "power": 4.0})
    flexmdm_model: dict[str, Any] = field(default_factory=lambda: {"length_conditioning": True})
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01, "ema_decay": 0.995,
        "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 200, "keep_last": 0,
    })
    reference_steps: int = 400

    @classmethod
    def quick(cls) -> LengthBenchSettings:
        settings = cls(trials=length_trials((16, 64)), num_samples=64, model={"d_model": 64, "n_layers": 2, "n_heads": 2},
                       steps={"flexmdm": 300, "mdm": 150}, reference_steps=150)
        settings.data.update(max_length=32, vocab_size=512)
        settings.train.update(warmup_steps=20, save_every=50)
        return settings


def _train_config(settings: LengthBenchSettings, kind: str, work: Path, seed: int, output_dir: Path) -> dict[str, Any]:
    steps = settings.steps[kind] if family(kind).generates else settings.reference_steps
    return benchmark_train_config(
        kind, model=settings.model, max_length=settings.data["max_length"],
        data={"task": "text", **settings.data, "cache_dir": str(work / "corpus-cache")}, train=settings.train,
        steps=steps, seed=seed, output_dir=output_dir, flexmdm_insertion_schedule=settings.flexmdm_insertion_schedule,
        flexmdm_length_buckets=settings.flexmdm_length_buckets, flexmdm_model=settings.flexmdm_model,
    )


def run_length_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                         argv: list[str] | None = None, settings: LengthBenchSettings | None = None,
                         seeds: int | None = None) -> dict[str, Any]:
    """Train both models for each of ``seeds`` (default ``settings.seeds``) training seeds and the reference
    LM once, tune on validation, evaluate on test at both budgets, write JSON + two PNGs, return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(LengthBenchSettings, quick, settings)
    reference_config = _train_config(settings, "autoregressive", run.work, seed, run.work / "autoregressive")
    # Building the task here writes the corpus cache that every training process then reads.
    task = config_from_dict(copy.deepcopy(reference_config)).data.build_task()
    trained, threads = train_seeds(range(settings.seeds if seeds is None else seeds), lambda s: {
        kind: _train_config(settings, kind, run.work, s, run.work / f"seed{s}" / kind) for kind in DIFFUSION_KINDS})
    print(f"training the autoregressive reference ({settings.reference_steps} steps)", flush=True)
    reference_lm = train(config_from_dict(reference_config))
    scorer, _ = load_pretrained(reference_lm.model_dir)
    splits = held_out_halves(task.corpus.sequences("validation"), seed)
    evaluate = LengthEvaluation(splits, scorer, task.decode, task.vocab.pad_id, task.max_length, settings.num_samples,
                                settings.sample_batch_size, seed, cache_dir=run.work / "samples")
    points = budget_points({s: {kind: runs[kind].output_dir for kind in DIFFUSION_KINDS} for s, runs in trained.items()})
    fair = fair_comparison(points, settings.trials, evaluate, metric="length_w1", cost="mean_nfe", by=(), metrics=METRICS,
                           lower_is_better=True, guard=("gen_ppl", settings.perplexity_tolerance))
    fair["tuning"]["training_recipes"] = RECIPES
    chosen = {kind: DecoderTrial(**choice) for kind, choice in fair["tuning"]["choice"].items()}
    lengths = {(kind, budget): evaluate.pooled_lengths(kind, {s: points[s][budget][kind] for s in points}, chosen[kind],
                                                       "test") for kind in DIFFUSION_KINDS for budget in BUDGETS}
    test_lengths = np.array([len(sequence) for sequence in splits["test"]])
    data = metrics.text_statistics(splits["test"], scorer, pad_id=task.vocab.pad_id)
    length_figures(test_lengths, lengths, fair["budgets"], data["gen_ppl"], task.max_length, run.png(), run.png("-ppl"))
    record = run.write({
        "config": {**asdict(settings), "vocab": task.vocab.to_config(), "sampling_temperature": TEMPERATURE,
                   "sequences": {"train": int(len(task.lengths("train"))), **{k: len(v) for k, v in splits.items()}},
                   "reference_lm_train_seconds": reference_lm.train_seconds},
        **fair, "reference": data, "train_threads": threads, "plots": [run.png().name, run.png("-ppl").name],
        "noise_floor": noise_floor(task.lengths("train"), test_lengths, n=settings.num_samples,
                                   draws=settings.noise_draws, seed=seed),
    })
    print(format_rows(fair["budgets"], TABLE))
    return record


TABLE: list[Column] = [("budget", "budget", "<12"), ("model", "model", "<8"), ("steps", "step", ">6.0f"),
                       ("W1", plus_minus("length_w1", 2), ">12"), ("TV", plus_minus("length_tv"), ">14"),
                       ("gen ppl", plus_minus("gen_ppl", 1), ">12"), ("mean len", plus_minus("mean_length", 1), ">12"),
                       ("calls", plus_minus("mean_nfe", 0), ">10")]


main = bench_main(run_length_benchmark, lambda args: {"seeds": args.seeds})
