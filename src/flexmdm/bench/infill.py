"""``flexmdm bench infill``: code infilling, FlexMDM vs MDM (paper §5.2), under fair rules.

Both models share the backbone and the optimiser settings and fill the middles of standard-library
functions (:class:`~flexmdm.tasks.infill.InfillTask`), each trained on the layout it is asked in:
FlexMDM grows the middle between frozen prefix and suffix by insertion (``flexible``); the MDM fills
``max_middle_tokens`` masks, trained with the middle right-padded with PAD, PAD removed when read
(``fixed_budget``). For each training seed (the corpus fixed by ``--seed``) they train side by side
(:mod:`flexmdm.bench.seeds`), each to its own step count: a FlexMDM state holds only the middle
inserted so far (with ``train.length_buckets``, little padding), so its step is cheaper. FlexMDM
inserts on the ``power_decay`` schedule with p = 4; times are drawn in [0, 0.98] (``train.max_time``).

The checkpoints (one every ``save_every`` steps) at equal optimizer steps, at equal training CPU time
and each model's last (its plateau, with its validation gain over the checkpoint before it;
:mod:`flexmdm.bench.fair`) are scored; the headline is equal steps. The held-out modules (never
trained on) are halved by module into validation and test
(:attr:`~flexmdm.tasks.infill.InfillTask.evaluation_functions`). Each model gets the same sampler
trials (:func:`~flexmdm.bench.tuning.standard_trials`), argmax tokens, chosen at equal steps by the
highest validation ``exact_match + parse_rate`` averaged over seeds (ties: the lower middle-length
error): the claim is FlexMDM ahead on both at lower length error, and exact match alone is too rare
at this scale to choose by. The chosen trials are reported on test, mean ± standard error over seeds,
overall and by span kind. Metrics (:mod:`flexmdm.tasks.infill.metrics`): exact match of the middle
text, the fraction of ``prefix + middle + suffix`` that ``ast.parse`` accepts, the mean absolute
error of the middle length in tokens.

The full run is sized for three seeds in about 27 minutes of training on 2 idle cores (the recorded
run's scoring took 38 more, beside another job): d_model 64 at batch 32, FlexMDM 5000 steps and the
MDM 2000 (0.11 and 0.24 CPU seconds a step measured); the single-seed record before the fair rules
trained d_model 128 at batch 48 for 9000 / 4000 steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from flexmdm.bench.budgets import Checkpoint
from flexmdm.bench.fair import HEADLINE, budget_points, fair_comparison
from flexmdm.bench.figures import infill_bars
from flexmdm.bench.infill_rows import METRICS, SETTINGS, Middles, scores, span_rows
from flexmdm.bench.seeds import plus_minus, seed_summary, train_seeds
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows
from flexmdm.bench.train_config import benchmark_train_config
from flexmdm.bench.tuning import DecoderTrial, standard_trials
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.infill import InfillTask
from flexmdm.tasks.infill.evaluation import fill_middles
from flexmdm.tasks.infill.spans import SPAN_KINDS

__all__ = ["InfillBenchSettings", "main", "run_infill_benchmark"]


@dataclass
class InfillBenchSettings:
    """What the benchmark trains and evaluates (``quick()`` is a smoke-sized run); ``examples_per_kind``
    spans of each kind in each of validation and test."""

    data: dict[str, Any] = field(default_factory=lambda: {
        "source": "stdlib", "max_function_tokens": 64, "max_middle_tokens": 24, "max_span_lines": 3,
        "vocab_size": 2048, "single_line_fraction": 0.5})
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 4, "n_heads": 4, "dropout": 0.1})
    steps: dict[str, int] = field(default_factory=lambda: {"flexmdm": 5000, "mdm": 2000})
    seeds: int = 3
    flexmdm_length_buckets: int = 4
    flexmdm_insertion_schedule: dict[str, Any] = field(default_factory=lambda: {"name": "power_decay", "power": 4.0})
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01, "ema_decay": 0.999,
        "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 500, "keep_last": 0, "max_time": 0.98,
    })
    examples_per_kind: int = 150
    trials: dict[str, list[DecoderTrial]] = field(default_factory=lambda: standard_trials(48))
    sample_batch_size: int = 100

    @classmethod
    def quick(cls) -> InfillBenchSettings:
        settings = cls(examples_per_kind=40, trials=standard_trials(32), seeds=2)
        settings.data.update(max_function_tokens=48, max_middle_tokens=16, vocab_size=1024)
        settings.model = {"d_model": 64, "n_layers": 2, "n_heads": 2}
        settings.steps = {"flexmdm": 300, "mdm": 150}
        settings.train.update(warmup_steps=20, ema_decay=0.99, save_every=75)
        return settings


def _train_config(settings: InfillBenchSettings, kind: str, output_dir: Path, cache_dir: Path,
                  seed: int) -> dict[str, Any]:
    data = {"task": "infill", **settings.data, "layout": kind, "cache_dir": str(cache_dir)}
    return benchmark_train_config(
        kind, model=settings.model, max_length=data["max_function_tokens"] + data["max_middle_tokens"],
        data=data, train=settings.train, steps=settings.steps[kind], seed=seed, output_dir=output_dir / kind,
        flexmdm_insertion_schedule=settings.flexmdm_insertion_schedule,
        flexmdm_length_buckets=settings.flexmdm_length_buckets)


def run_infill_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                         argv: list[str] | None = None, settings: InfillBenchSettings | None = None,
                         seeds: int | None = None) -> dict[str, Any]:
    """Train both models for each of ``seeds`` (default ``settings.seeds``) training seeds, tune on
    validation, fill the test middles at every budget, write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(InfillBenchSettings, quick, settings)
    cache_dir = run.work / "corpus-cache"
    task = InfillTask(**settings.data, cache_dir=str(cache_dir))
    task.corpus  # noqa: B018 -- built here first, the corpus cache is ready before the trainings start
    trained, threads = train_seeds(range(settings.seeds if seeds is None else seeds), lambda s: {
        kind: _train_config(settings, kind, run.work / f"seed{s}", cache_dir, s) for kind in SETTINGS})
    examples = {part: [e for kind in SPAN_KINDS
                       for e in task.evaluation_examples(kind, settings.examples_per_kind, part, seed)]
                for part in ("validation", "test")}
    pipe = cache(Pipeline.from_pretrained)

    @cache
    def generate(model_dir: Path, trial: DecoderTrial, part: str, sample_seed: int) -> Middles:
        """Middles of the ``part`` examples and the network calls of each."""
        model_pipe, chosen = pipe(model_dir), examples[part]
        return fill_middles(model_pipe, [e.prefix for e in chosen], [e.suffix for e in chosen],
                            budget=task.max_middle_tokens, options=trial.options(model_pipe.family.inserts, 0.0),
                            batch_size=settings.sample_batch_size, seed=sample_seed)

    def evaluate(model: str, point: Checkpoint, trial: DecoderTrial, part: str, s: int) -> list[dict[str, Any]]:
        return [scores(model, task, examples[part], generate(point.model_dir, trial, part, s))]

    points = budget_points({s: {m: runs[m].output_dir for m in SETTINGS} for s, runs in trained.items()}, plateau=True)
    fair = fair_comparison(points, settings.trials, evaluate, metric="exact_plus_parse", cost="length_abs_error",
                           by=("setting",), metrics=METRICS)
    by_span, samples = span_rows(task, examples["test"], fair["seeds"], lambda s, model: generate(
        points[s][HEADLINE][model].model_dir, DecoderTrial(**fair["tuning"]["choice"][model]), "test", s))
    results_by_span = seed_summary(by_span, ("model", "setting", "span"), METRICS)
    infill_bars(fair["results"], run.png())
    print(format_rows(fair["budgets"] + results_by_span, TABLE))
    return run.write({
        "config": {**asdict(settings), "vocab": task.vocab.to_config(),
                   "functions": {s: len(task.corpus.functions[s]) for s in task.corpus.functions},
                   "evaluation_functions": {p: len(f) for p, f in task.evaluation_functions.items()},
                   "examples": {p: len(e) for p, e in examples.items()}, "temperature": 0.0,
                   "evaluation_split": "validation / test: the held-out modules halved by module"},
        **fair, "results_by_span": results_by_span, "per_seed_by_span": by_span, "samples": samples,
        "train_threads": threads, "plots": [run.png().name]})


TABLE: list[Column] = [("budget", lambda row: row.get("budget", HEADLINE), "<12"), ("model", "model", "<8"),
                       ("span", lambda row: row.get("span", "all"), "<12"),
                       ("steps", lambda row: row.get("step"), ">6.0f"), ("exact", plus_minus("exact_match"), ">15"),
                       ("parse", plus_minus("parse_rate"), ">15"), ("|len err|", plus_minus("length_abs_error", 2), ">13"),
                       ("calls", plus_minus("mean_nfe", 1), ">12")]


main = bench_main(run_infill_benchmark, lambda args: {"seeds": args.seeds})
"""``flexmdm bench infill``."""
