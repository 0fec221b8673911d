"""``flexmdm bench infill``: code infilling, FlexMDM vs MDM (paper §5.2).

Two models with the same backbone and optimiser are trained side by side
(:mod:`flexmdm.bench.side_by_side`), for about the same CPU time, on the
:class:`~flexmdm.tasks.infill.InfillTask` draws of the standard library's functions: FlexMDM
(prefix and suffix frozen, the middle grown by insertion) and MDM (the middle as a fixed number
of masks; trained on both the fixed-budget layout, the middle right-padded with PAD to
``max_middle_tokens``, and the true-length layout). A FlexMDM state holds the prefix, the suffix
and only the middle tokens inserted so far, and with ``train.length_buckets`` little padding, so
its step is cheaper (0.31 s against 0.81 s on one thread in the recorded run) and it takes ``steps``
in proportion. As in the length benchmark it inserts on the ``power_decay`` schedule with p = 4
(:class:`flexmdm.schedules.PowerDecaySchedule`): the middle reaches most of its length early, and
the unmasking head mostly sees states of nearly known length.
They fill the middles of held-out functions (modules never seen in training), single-line and
multi-line spans, in three settings (:mod:`flexmdm.tasks.infill.evaluation`): ``flexible`` (FlexMDM),
``true_length`` (MDM told the reference length, an oracle) and ``fixed_budget`` (MDM, ``max_middle_tokens``
masks, PAD removed).

Training times are drawn in [0, 0.98] (``train.max_time``) for both models: the rate weight
κ(t) = 1/(1 − t) then stays below 50, which steadies the FlexMDM loss on short middles; the
sampling grid (48 steps) never calls the network in (0.98, 1) before its final fill.
Both samplers use the same number of steps, confidence-ordered adaptive unmasking
(:class:`~flexmdm.sampling.Adaptive`, top probability), argmax tokens (temperature 0) and a
sequential final fill. Metrics (:mod:`flexmdm.tasks.infill.metrics`): exact match of the middle
text, the fraction of ``prefix + middle + suffix`` that ``ast.parse`` accepts, and the mean
absolute error of the middle length in tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from flexmdm.bench.figures import infill_bars
from flexmdm.bench.record import Stopwatch
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows, train_fields
from flexmdm.bench.train_config import benchmark_train_config
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.infill import InfillTask
from flexmdm.tasks.infill.evaluation import fill_middles, score_middles
from flexmdm.training.streams import keyed_generator

__all__ = ["InfillBenchSettings", "SETTINGS", "main", "run_infill_benchmark"]

SETTINGS = (("flexmdm", "flexible"), ("mdm", "true_length"), ("mdm", "fixed_budget"))
"""``(model, setting)`` rows of the benchmark."""
SPAN_KINDS = ("single_line", "multi_line")


@dataclass
class InfillBenchSettings:
    """What the benchmark trains and evaluates (``quick()`` is a smoke-sized run)."""

    data: dict[str, Any] = field(default_factory=lambda: {
        "source": "stdlib", "max_function_tokens": 64, "max_middle_tokens": 24, "max_span_lines": 3,
        "vocab_size": 2048, "single_line_fraction": 0.5, "mdm_true_length_fraction": 0.5,
    })
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 128, "n_layers": 4, "n_heads": 4, "dropout": 0.1})
    steps: dict[str, int] = field(default_factory=lambda: {"flexmdm": 9000, "mdm": 4000})
    flexmdm_length_buckets: int = 4
    flexmdm_insertion_schedule: dict[str, Any] = field(default_factory=lambda: {"name": "power_decay", "power": 4.0})
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 48, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01,
        "ema_decay": 0.999, "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 500,
        "max_time": 0.98,
    })
    examples_per_kind: int = 150
    sampling_steps: int = 48
    sample_batch_size: int = 100

    @classmethod
    def quick(cls) -> InfillBenchSettings:
        settings = cls(examples_per_kind=40, sampling_steps=32)
        settings.data.update(max_function_tokens=48, max_middle_tokens=16, vocab_size=1024)
        settings.model = {"d_model": 64, "n_layers": 2, "n_heads": 2}
        settings.steps = {"flexmdm": 300, "mdm": 150}
        settings.train.update(warmup_steps=20, ema_decay=0.99, save_every=0)
        return settings


def _train_config(settings: InfillBenchSettings, kind: str, work: Path, seed: int) -> dict[str, Any]:
    data = {"task": "infill", **settings.data, "layout": kind, "cache_dir": str(work / "corpus-cache")}
    return benchmark_train_config(
        kind, model=settings.model, max_length=data["max_function_tokens"] + data["max_middle_tokens"],
        data=data, train=settings.train, steps=settings.steps[kind], seed=seed, output_dir=work / kind,
        flexmdm_insertion_schedule=settings.flexmdm_insertion_schedule,
        flexmdm_length_buckets=settings.flexmdm_length_buckets,
    )


def run_infill_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                         argv: list[str] | None = None, settings: InfillBenchSettings | None = None) -> dict[str, Any]:
    """Train both models, fill held-out middles in the three settings, write JSON + PNG, return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(InfillBenchSettings, quick, settings)
    configs = {kind: _train_config(settings, kind, run.work, seed) for kind in ("flexmdm", "mdm")}
    task = InfillTask(**{key: value for key, value in configs["flexmdm"]["data"].items() if key != "task"})
    task.corpus  # noqa: B018 -- built here first, the corpus cache is ready before the two trainings start
    trained, threads = train_side_by_side(configs)
    examples = {kind: task.evaluation_examples(kind, settings.examples_per_kind, seed=seed) for kind in SPAN_KINDS}
    everything = [e for kind in SPAN_KINDS for e in examples[kind]]

    rows, rows_by_span, samples = [], [], {}
    for model_kind, setting in tqdm(SETTINGS, desc="infill", dynamic_ncols=True):
        pipe = Pipeline.from_pretrained(trained[model_kind].model_dir)
        generator, watch = keyed_generator(seed, "bench-infill", setting), Stopwatch()
        middles: list[list[int]] = []
        for start in range(0, len(everything), settings.sample_batch_size):
            middles += fill_middles(pipe, setting, everything[start:start + settings.sample_batch_size], task,
                                    steps=settings.sampling_steps, generator=generator)
        rows.append({"model": model_kind, "setting": setting, **score_middles(everything, middles, task),
                     "sampling_seconds": watch.seconds, **train_fields(trained[model_kind], threads)})
        offset = 0
        for kind in SPAN_KINDS:
            count = len(examples[kind])
            rows_by_span.append({"model": model_kind, "setting": setting, "span": kind,
                                 **score_middles(examples[kind], middles[offset:offset + count], task)})
            offset += count
        samples[setting] = [{"function": e.name, "kind": e.kind, "reference": e.middle_text,
                             "generated": task.decode(m)} for e, m in zip(everything[::25], middles[::25])]

    infill_bars(rows, run.png())
    print(format_rows(rows + rows_by_span, TABLE))
    return run.write({
        "config": {**asdict(settings), "vocab": task.vocab.to_config(),
                   "functions": {s: len(task.corpus.functions[s]) for s in task.corpus.functions},
                   "examples": {kind: len(examples[kind]) for kind in SPAN_KINDS},
                   "sampling_rule": "adaptive top_probability", "temperature": 0.0, "final_fill": "sequential",
                   "split": "validation = held-out modules"},
        "results": rows, "results_by_span": rows_by_span, "samples": samples, "plots": [run.png().name],
    })


TABLE: list[Column] = [("model", "model", "<8"), ("setting", "setting", "<13"),
                       ("span", lambda row: row.get("span", "all"), "<12"), ("exact", "exact_match", ">6.3f"),
                       ("parse", "parse_rate", ">6.3f"), ("|len err|", "length_abs_error", ">9.2f"), ("n", "n", ">4")]


main = bench_main(run_infill_benchmark)
"""``flexmdm bench infill``."""
