"""``flexmdm bench length``: length fidelity and generative perplexity on text (paper §5.1.1).

Three models are trained on the same tokenized corpus (:class:`flexmdm.tasks.text.TextTask`,
by default paragraphs of the standard library's docstrings): FlexMDM and MDM with the same
backbone and optimiser for about the same CPU time, side by side
(:mod:`flexmdm.bench.side_by_side`), then a causal reference LM of the same size with every core.
A FlexMDM step is cheaper: its states hold only the tokens inserted so far (an MDM state, the
whole canvas), and with ``train.length_buckets`` the network sees little padding (0.36 s against
0.65 s per step on one thread, measured side by side), so FlexMDM takes ``steps`` in proportion. Its
insertion schedule is ``power_decay`` with p = 4 (:class:`flexmdm.schedules.PowerDecaySchedule`):
a state reaches 59 % of its length by t = 0.2, so the unmasking head mostly sees MDM-like states
at nearly known length (trained half as long, FlexMDM's perplexity was 1.9× the MDM's with the
linear α and 1.3× with p = 4; trained as long as here, 1.1× with p = 4). FlexMDM's trunk is
conditioned on the state length (``model.length_conditioning``): its adaLN conditioning adds a
learned embedding of n to that of t, so the gap head need not infer n through attention (with it,
pooled over four sampling seeds, length W1 fell from 1.19 to 0.97). Both diffusion models then
generate unconditional samples with Algorithm 1's vanilla τ-leaping unmasking for every number of
sampling steps; each row reports the total-variation and
Wasserstein-1 distances between the generated and the held-out length distributions, the length
mean and quartiles, the generative perplexity under the reference LM (samples of ≤ 10 tokens
excluded) and the unigram entropy.

MDM generates on a canvas of ``max_length`` positions; its sample is the canvas with every
PAD removed (its length is the number of non-PAD tokens). FlexMDM samples start empty.

The ``reference`` entry gives the same statistics for held-out data, and ``noise_floor`` the
distances between ``num_samples`` training sequences and the held-out set: the value a
perfect sampler would get with this many samples.
"""

from __future__ import annotations

import argparse
import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flexmdm.bench.figures import length_figures
from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.train_config import benchmark_train_config
from flexmdm.families import Affixes, SamplingOptions, family
from flexmdm.models import load_pretrained
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import TauLeaping
from flexmdm.tasks.text import TextTask
from flexmdm.tasks.text.metrics import (
    generative_perplexity,
    length_summary,
    length_total_variation,
    length_wasserstein1,
    unigram_entropy,
)
from flexmdm.training.config import config_from_dict
from flexmdm.training.streams import keyed_generator
from flexmdm.training.trainer import train

__all__ = ["LengthBenchSettings", "main", "run_length_benchmark"]

DIFFUSION_KINDS = ("flexmdm", "mdm")


@dataclass
class LengthBenchSettings:
    """What the benchmark trains and evaluates (``quick()`` is a smoke-sized run)."""

    data: dict[str, Any] = field(default_factory=lambda: {"source": "stdlib", "max_length": 64, "vocab_size": 1024})
    sampling_steps: tuple[int, ...] = (64, 128, 256, 512)
    num_samples: int = 480
    sample_batch_size: int = 160
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 128, "n_layers": 4, "n_heads": 4})
    steps: dict[str, int] = field(default_factory=lambda: {"flexmdm": 8200, "mdm": 4500})
    flexmdm_length_buckets: int = 4
    flexmdm_insertion_schedule: dict[str, Any] = field(default_factory=lambda: {"name": "power_decay", "power": 4.0})
    flexmdm_model: dict[str, Any] = field(default_factory=lambda: {"length_conditioning": True})
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01,
        "ema_decay": 0.995, "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 200,
    })
    reference_steps: int = 400

    @classmethod
    def quick(cls) -> LengthBenchSettings:
        settings = cls(sampling_steps=(16, 64), num_samples=64)
        settings.data.update(max_length=32, vocab_size=512)
        settings.model = {"d_model": 64, "n_layers": 2, "n_heads": 2}
        settings.steps = {"flexmdm": 300, "mdm": 150}
        settings.train.update(warmup_steps=20, save_every=0)
        settings.reference_steps = 150
        return settings


def _train_config(settings: LengthBenchSettings, kind: str, work: Path, seed: int) -> dict[str, Any]:
    steps = settings.steps[kind] if family(kind).generates else settings.reference_steps
    return benchmark_train_config(
        kind, model=settings.model, max_length=settings.data["max_length"],
        data={"task": "text", **settings.data, "cache_dir": str(work / "corpus-cache")}, train=settings.train,
        steps=steps, seed=seed, output_dir=work / kind,
        flexmdm_insertion_schedule=settings.flexmdm_insertion_schedule,
        flexmdm_length_buckets=settings.flexmdm_length_buckets, flexmdm_model=settings.flexmdm_model,
    )


def generate(model_dir: Path, task: TextTask, num_samples: int, steps: int, batch_size: int,
             generator: torch.Generator) -> list[list[int]]:
    """Unconditional samples of a trained FlexMDM or MDM (MDM: its canvas of ``task.max_length`` without PAD)."""
    pipe = Pipeline.from_pretrained(model_dir)
    options = SamplingOptions(steps=steps, rule=TauLeaping(), final_fill="parallel")
    samples: list[list[int]] = []
    for start in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - start)
        nothing = Affixes([[]] * count, None, task.vocab, task.max_length)
        samples += pipe.sample(nothing, max_length=task.max_length, generator=generator, options=options).sequences()
    return samples


def _statistics(sequences: list[list[int]], reference_lengths: np.ndarray, scorer: torch.nn.Module,
                pad_id: int) -> dict[str, Any]:
    lengths = np.array([len(s) for s in sequences])
    ppl, scored = generative_perplexity(scorer, sequences, pad_id=pad_id)
    entropy = unigram_entropy(sequences)
    return {
        "length_tv": length_total_variation(lengths, reference_lengths),
        "length_w1": length_wasserstein1(lengths, reference_lengths),
        "gen_ppl": _finite(ppl),
        "n": len(sequences),
        "n_scored": scored,
        "length": length_summary(lengths),
        "unigram_entropy": _finite(entropy),
    }


def _finite(value: float) -> float | None:
    """``value``, or None (JSON null) when it is NaN: e.g. no sample long enough to score."""
    return None if math.isnan(value) else value


def run_length_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                         argv: list[str] | None = None, settings: LengthBenchSettings | None = None) -> dict[str, Any]:
    """Train the three models, sample, measure, write JSON + two PNGs, return the record."""
    watch = Stopwatch()
    out = Path(out)
    settings = settings or (LengthBenchSettings.quick() if quick else LengthBenchSettings())
    work = Path(work_dir) if work_dir is not None else out.with_suffix("")
    configs = {kind: _train_config(settings, kind, work, seed) for kind in (*DIFFUSION_KINDS, "autoregressive")}
    # Building the task here writes the corpus cache that every training process then reads.
    task = config_from_dict(copy.deepcopy(configs["autoregressive"])).data.build_task()
    runs, threads = train_side_by_side({kind: configs[kind] for kind in DIFFUSION_KINDS})
    print(f"training autoregressive ({settings.reference_steps} steps) in {configs['autoregressive']['output_dir']}",
          flush=True)
    runs["autoregressive"] = train(config_from_dict(copy.deepcopy(configs["autoregressive"])))
    trained = {kind: run.model_dir for kind, run in runs.items()}
    train_seconds = {kind: run.train_seconds for kind, run in runs.items()}
    train_steps = {kind: run.steps for kind, run in runs.items()}

    reference = task.lengths("validation")
    scorer, _ = load_pretrained(trained["autoregressive"])
    pad_id = task.vocab.pad_id
    held_out = task.corpus.sequences("validation")
    train_lengths = task.lengths("train")
    floor_draw = np.random.default_rng(seed).choice(len(train_lengths), settings.num_samples, replace=False)
    floor = train_lengths[floor_draw]

    results, lengths = [], {}
    jobs = [(kind, steps) for steps in settings.sampling_steps for kind in DIFFUSION_KINDS]
    for kind, steps in tqdm(jobs, desc="sample", dynamic_ncols=True):
        watch_sampling = Stopwatch()
        generator = keyed_generator(seed, "bench-length", kind, steps)
        samples = generate(trained[kind], task, settings.num_samples, steps, settings.sample_batch_size,
                           generator)
        sampling_seconds = watch_sampling.seconds
        lengths[kind, steps] = np.array([len(s) for s in samples])
        row = {"model": kind, "steps": steps, **_statistics(samples, reference, scorer, pad_id),
               "sampling_seconds": sampling_seconds, "train_seconds": train_seconds[kind],
               "train_steps": train_steps[kind], "train_threads": threads,
               "example": task.decode(samples[:3])}
        results.append(row)
        print(f"{kind:<8} {steps:>4} steps  W1 {row['length_w1']:.2f}  TV {row['length_tv']:.3f}  "
              f"gen ppl {_text(row['gen_ppl'], '.1f')}  ({sampling_seconds:.0f} s)", flush=True)

    data_ppl, data_scored = generative_perplexity(scorer, held_out, pad_id=pad_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    histogram_png = out.with_suffix(".png")
    perplexity_png = out.with_name(f"{out.stem}-ppl.png")
    length_figures(reference, lengths, results, data_ppl, task.max_length, histogram_png, perplexity_png)
    record = {
        "command": command_line(argv),
        "seed": seed,
        "wall_seconds": watch.seconds,
        "config": {**asdict(settings), "vocab": task.vocab.to_config(),
                   "sequences": {"train": int(len(train_lengths)), "validation": int(len(reference))},
                   "sampling_rule": "tau_leaping", "final_fill": "parallel",
                   "reference_lm_train_seconds": train_seconds["autoregressive"]},
        "machine": machine_info(),
        "reference": {"length": length_summary(reference), "gen_ppl": _finite(data_ppl), "n_scored": data_scored,
                      "unigram_entropy": unigram_entropy(held_out), "n": int(len(reference))},
        "noise_floor": {"length_tv": length_total_variation(floor, reference),
                        "length_w1": length_wasserstein1(floor, reference), "n": settings.num_samples},
        "results": results,
        "plots": [histogram_png.name, perplexity_png.name],
    }
    write_json(record, out)
    print(format_table(results))
    return record


def _text(value: float | None, spec: str) -> str:
    return format(math.nan if value is None else value, spec)


def format_table(results: list[dict[str, Any]]) -> str:
    """The result rows as text."""
    lines = [f"{'model':<8} {'steps':>5} {'W1':>6} {'TV':>6} {'gen ppl':>8} {'mean len':>8} {'entropy':>7} {'n':>4}"]
    for row in results:
        lines.append(f"{row['model']:<8} {row['steps']:>5} {row['length_w1']:>6.2f} {row['length_tv']:>6.3f} "
                     f"{_text(row['gen_ppl'], '>8.1f')} {row['length']['mean']:>8.1f} "
                     f"{_text(row['unigram_entropy'], '>7.2f')} "
                     f"{row['n']:>4}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench length``."""
    run_length_benchmark(args.out, quick=args.quick, seed=args.seed, work_dir=args.work_dir, argv=args.argv)
    print(f"wrote {args.out}, {args.out.with_suffix('.png')} and {args.out.with_name(args.out.stem + '-ppl.png')}")
    return 0
