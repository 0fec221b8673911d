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
sampling steps (:func:`flexmdm.tasks.text.evaluation.unconditional_samples`: FlexMDM from nothing,
MDM on a canvas of ``max_length`` positions without its PAD); each row reports
(:func:`flexmdm.tasks.text.metrics.sample_statistics`) the total-variation and Wasserstein-1
distances between the generated and the held-out length distributions, the length mean and quartiles, the generative perplexity under the reference LM
(samples of ≤ 10 tokens excluded) and the unigram entropy.

The ``reference`` entry gives the same statistics for held-out data, and ``noise_floor`` the
distances between ``num_samples`` training sequences and the held-out set: the value a
perfect sampler would get with this many samples.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from flexmdm.bench.figures import length_figures
from flexmdm.bench.record import Stopwatch
from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows, train_fields
from flexmdm.bench.train_config import benchmark_train_config
from flexmdm.families import family
from flexmdm.models import load_pretrained
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.text import metrics
from flexmdm.tasks.text.evaluation import unconditional_samples
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


def run_length_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                         argv: list[str] | None = None, settings: LengthBenchSettings | None = None) -> dict[str, Any]:
    """Train the three models, sample, measure, write JSON + two PNGs, return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(LengthBenchSettings, quick, settings)
    configs = {kind: _train_config(settings, kind, run.work, seed) for kind in (*DIFFUSION_KINDS, "autoregressive")}
    # Building the task here writes the corpus cache that every training process then reads.
    task = config_from_dict(copy.deepcopy(configs["autoregressive"])).data.build_task()
    trained, threads = train_side_by_side({kind: configs[kind] for kind in DIFFUSION_KINDS})
    print(f"training the autoregressive reference ({settings.reference_steps} steps)", flush=True)
    reference_lm = train(config_from_dict(copy.deepcopy(configs["autoregressive"])))
    scorer, _ = load_pretrained(reference_lm.model_dir)
    reference, held_out, pad_id = task.lengths("validation"), task.corpus.sequences("validation"), task.vocab.pad_id
    train_lengths = task.lengths("train")
    floor = train_lengths[np.random.default_rng(seed).choice(len(train_lengths), settings.num_samples, replace=False)]

    pipes = {kind: Pipeline.from_pretrained(trained[kind].model_dir) for kind in DIFFUSION_KINDS}
    results, lengths = [], {}
    jobs = [(kind, steps) for steps in settings.sampling_steps for kind in DIFFUSION_KINDS]
    for kind, steps in tqdm(jobs, desc="sample", dynamic_ncols=True):
        generator, watch = keyed_generator(seed, "bench-length", kind, steps), Stopwatch()
        samples = unconditional_samples(pipes[kind], settings.num_samples, batch_size=settings.sample_batch_size,
                                        steps=steps, max_length=task.max_length, generator=generator)
        lengths[kind, steps] = np.array([len(s) for s in samples])
        statistics = metrics.sample_statistics(samples, reference, scorer, pad_id=pad_id)
        results.append({"model": kind, "steps": steps, **statistics, "sampling_seconds": watch.seconds,
                        **train_fields(trained[kind], threads), "example": task.decode(samples[:3])})

    data = metrics.text_statistics(held_out, scorer, pad_id=pad_id)
    length_figures(reference, lengths, results, data["gen_ppl"], task.max_length, run.png(), run.png("-ppl"))
    print(format_rows(results, TABLE))
    return run.write({
        "config": {**asdict(settings), "vocab": task.vocab.to_config(),
                   "sequences": {"train": int(len(train_lengths)), "validation": int(len(reference))},
                   "sampling_rule": "tau_leaping", "final_fill": "parallel",
                   "reference_lm_train_seconds": reference_lm.train_seconds},
        "reference": data, "noise_floor": {**metrics.length_distances(floor, reference), "n": settings.num_samples},
        "results": results, "plots": [run.png().name, run.png("-ppl").name],
    })


TABLE: list[Column] = [("model", "model", "<8"), ("steps", "steps", ">5"), ("W1", "length_w1", ">6.2f"),
                       ("TV", "length_tv", ">6.3f"), ("gen ppl", "gen_ppl", ">8.1f"),
                       ("mean len", lambda row: row["length"]["mean"], ">8.1f"),
                       ("entropy", "unigram_entropy", ">7.2f"), ("n", "n", ">4")]


main = bench_main(run_length_benchmark)
"""``flexmdm bench length``."""
