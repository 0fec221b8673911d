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
multi-line spans:

* ``flexible`` — FlexMDM from ``prefix + suffix``; it may insert up to the same budget;
* ``true_length`` — MDM given exactly as many masks as the reference middle has tokens, PAD
  ruled out (an oracle no real user has; its length error is 0 by construction);
* ``fixed_budget`` — MDM given ``max_middle_tokens`` masks; every PAD it predicts is removed.

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

import argparse
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from flexmdm.bench.figures import infill_bars
from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.train_config import benchmark_train_config
from flexmdm.constraints import Prompt
from flexmdm.models import load_pretrained
from flexmdm.sampling import Adaptive, mdm_canvas, sample_flexmdm, sample_mdm
from flexmdm.schedules import schedule_from_config
from flexmdm.tasks.infill import InfillExample, InfillTask, infill_metrics
from flexmdm.training.config import config_from_dict
from flexmdm.training.streams import keyed_generator

__all__ = ["InfillBenchSettings", "SETTINGS", "fill_middles", "main", "run_infill_benchmark"]

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


def _middles(tokens: torch.Tensor, lengths: torch.Tensor, frozen: torch.Tensor, pad_id: int) -> list[list[int]]:
    """The non-frozen, non-PAD tokens of each generated row (the middle between prefix and suffix)."""
    keep = (~frozen) & (torch.arange(tokens.shape[1]) < lengths[:, None]) & (tokens != pad_id)
    return [row[mask].tolist() for row, mask in zip(tokens, keep)]


def _without_pad(model: torch.nn.Module, pad_id: int):
    """The MDM denoiser with PAD ruled out: told the true length, every mask becomes a real token."""

    def denoiser(x, t, lengths, frozen):
        return model(x, t, lengths, frozen).index_fill(-1, torch.tensor([pad_id]), float("-inf"))

    return denoiser


@torch.no_grad()
def fill_middles(model: torch.nn.Module, saved: dict[str, Any], setting: str, examples: list[InfillExample],
                 task: InfillTask, *, steps: int, generator: torch.Generator) -> list[list[int]]:
    """Generated middle token ids for ``examples`` under ``setting`` (see the module docstring)."""
    vocab, budget = task.vocab, task.max_middle_tokens
    unmasking = schedule_from_config(saved["schedules"]["unmasking"])
    prefixes, suffixes = [e.prefix for e in examples], [e.suffix for e in examples]
    rule = Adaptive("top_probability")
    if setting == "flexible":
        insertion = schedule_from_config(saved["schedules"]["insertion"])
        prompt = Prompt.infill(prefixes, suffixes, vocab.pad_id)
        out = sample_flexmdm(model, vocab=vocab, insertion_schedule=insertion, unmasking_schedule=unmasking,
                             steps=steps, max_length=prompt.lengths + budget, prompt=prompt, rule=rule,
                             temperature=0.0, final_fill="sequential", generator=generator)
    elif setting in ("true_length", "fixed_budget"):
        middle = [len(e.middle) for e in examples] if setting == "true_length" else [budget] * len(examples)
        canvas, frozen = mdm_canvas(prefixes, task.max_length, vocab, suffixes, middle)
        denoiser = model if setting == "fixed_budget" else _without_pad(model, vocab.pad_id)
        out = sample_mdm(denoiser, vocab=vocab, unmasking_schedule=unmasking, steps=steps, canvas=canvas, frozen=frozen,
                         rule=rule, temperature=0.0, final_fill="sequential", generator=generator)
    else:
        raise ValueError(f"unknown setting {setting!r}; expected one of {[s for _, s in SETTINGS]}")
    return _middles(out.tokens, out.lengths, out.frozen, vocab.pad_id)


def _score(examples: list[InfillExample], middles: list[list[int]], task: InfillTask) -> dict[str, Any]:
    texts = [task.decode(m) for m in middles]
    return infill_metrics([e.prefix_text for e in examples], texts, [e.suffix_text for e in examples],
                          [e.middle_text for e in examples], [len(m) for m in middles],
                          [len(e.middle) for e in examples])


def run_infill_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                         argv: list[str] | None = None, settings: InfillBenchSettings | None = None) -> dict[str, Any]:
    """Train both models, fill held-out middles in the three settings, write JSON + PNG, return the record."""
    watch = Stopwatch()
    out = Path(out)
    settings = settings or (InfillBenchSettings.quick() if quick else InfillBenchSettings())
    work = Path(work_dir) if work_dir is not None else out.with_suffix("")
    configs = {kind: _train_config(settings, kind, work, seed) for kind in ("flexmdm", "mdm")}
    # built here first, the corpus cache is ready before the two trainings start
    tasks = {kind: config_from_dict(copy.deepcopy(config)).data.build_task() for kind, config in configs.items()}
    runs, threads = train_side_by_side(configs)
    trained = {kind: run.model_dir for kind, run in runs.items()}
    train_seconds = {kind: run.train_seconds for kind, run in runs.items()}
    train_steps = {kind: run.steps for kind, run in runs.items()}
    task = tasks["flexmdm"]
    examples = {kind: task.evaluation_examples(kind, settings.examples_per_kind, seed=seed) for kind in SPAN_KINDS}
    everything = [e for kind in SPAN_KINDS for e in examples[kind]]

    rows, rows_by_span, samples = [], [], {}
    for model_kind, setting in tqdm(SETTINGS, desc="infill", dynamic_ncols=True):
        model, saved = load_pretrained(trained[model_kind])
        model.eval()
        watch_sampling = Stopwatch()
        generator = keyed_generator(seed, "bench-infill", setting)
        middles: list[list[int]] = []
        for start in range(0, len(everything), settings.sample_batch_size):
            batch = everything[start:start + settings.sample_batch_size]
            middles += fill_middles(model, saved, setting, batch, tasks[model_kind],
                                    steps=settings.sampling_steps, generator=generator)
        row = {"model": model_kind, "setting": setting, **_score(everything, middles, task),
               "sampling_seconds": watch_sampling.seconds, "train_seconds": train_seconds[model_kind],
               "train_steps": train_steps[model_kind], "train_threads": threads}
        rows.append(row)
        offset = 0
        for kind in SPAN_KINDS:
            count = len(examples[kind])
            rows_by_span.append({"model": model_kind, "setting": setting, "span": kind,
                                 **_score(examples[kind], middles[offset:offset + count], task)})
            offset += count
        samples[setting] = [{"function": e.name, "kind": e.kind, "reference": e.middle_text,
                             "generated": task.decode(m)} for e, m in zip(everything[::25], middles[::25])]
        print(f"{model_kind:<8} {setting:<13} exact {row['exact_match']:.3f}  parse {row['parse_rate']:.3f}  "
              f"|len err| {row['length_abs_error']:.2f}  n {row['n']}", flush=True)

    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    infill_bars(rows, png)
    corpus = task.corpus
    record = {
        "command": command_line(argv),
        "seed": seed,
        "wall_seconds": watch.seconds,
        "config": {**asdict(settings), "vocab": task.vocab.to_config(),
                   "functions": {s: len(corpus.functions[s]) for s in corpus.functions},
                   "examples": {kind: len(examples[kind]) for kind in SPAN_KINDS},
                   "sampling_rule": "adaptive top_probability", "temperature": 0.0, "final_fill": "sequential",
                   "split": "validation = held-out modules"},
        "machine": machine_info(),
        "results": rows,
        "results_by_span": rows_by_span,
        "samples": samples,
        "plots": [png.name],
    }
    write_json(record, out)
    print(format_table(rows + rows_by_span))
    return record


def format_table(rows: list[dict[str, Any]]) -> str:
    """The result rows as text."""
    lines = [f"{'model':<8} {'setting':<13} {'span':<12} {'exact':>6} {'parse':>6} {'|len err|':>9} {'n':>4}"]
    for row in rows:
        lines.append(f"{row['model']:<8} {row['setting']:<13} {row.get('span', 'all'):<12} {row['exact_match']:>6.3f} "
                     f"{row['parse_rate']:>6.3f} {row['length_abs_error']:>9.2f} {row['n']:>4}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench infill``."""
    run_infill_benchmark(args.out, quick=args.quick, seed=args.seed, work_dir=args.work_dir, argv=args.argv)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0
