"""``flexmdm bench maze``: FlexMDM against MDM on subgoal maze planning (paper Table 1), under fair rules.

Both models share the backbone and the optimiser settings and differ only in layout
(:mod:`flexmdm.tasks.maze`). For each training seed (the maze fixed by ``--seed``) they train side by
side (:mod:`flexmdm.bench.seeds`), FlexMDM to more steps: a FlexMDM batch holds paths at their own
length while every MDM sequence spans the whole canvas, so a FlexMDM step costs about half an MDM
step. The checkpoints at equal optimizer steps and at equal training CPU time
(:mod:`flexmdm.bench.budgets`) are scored; the headline is equal steps. Each model gets the same
number of sampler trials (:mod:`flexmdm.bench.tuning`: unmasking rule and, for FlexMDM, exact or
Algorithm 1 insertion), argmax tokens, chosen by the mean success rate over seeds and K on the
validation start–goal pairs at the headline checkpoints; the chosen trials are reported on the test
pairs, which no training pair and no choice touches, as mean ± standard error over seeds. Beside
the JSON go a PNG of sample paths and ``<name>-reveal.png``: a FlexMDM path at the largest K
coloured by the step at which each cell was revealed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from flexmdm.bench.budgets import Checkpoint
from flexmdm.bench.fair import HEADLINE, budget_points, fair_comparison
from flexmdm.bench.maze_figures import plot_reveal, plot_samples
from flexmdm.bench.seeds import plus_minus, train_seeds
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows
from flexmdm.bench.tuning import DecoderTrial, standard_trials
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import SampleOutput
from flexmdm.tasks.maze import Cell, MazeTask, evaluate_paths

__all__ = ["MazeBenchSettings", "main", "run_maze_benchmark"]

LAYOUTS = ("flexmdm", "mdm")


@dataclass
class MazeBenchSettings:
    """What the benchmark trains and evaluates: the full run (``benchmarks/results/maze.json``) by
    default, ``quick()`` for the README's main job. ``eval_per_k`` problems per K and split.

    The full run is sized so that three seeds train in about an hour on 2 cores: 7 × 7 rooms and
    the quick run's model (d_model 64, batch 32); the single-seed record before the fair rules
    trained a d_model 128 model at batch 64 on 9 × 9 rooms for 20000 / 11000 steps."""

    rooms: int = 7
    num_pairs: int = 4000
    ks: tuple[int, ...] = (2, 5, 9)
    eval_per_k: int = 90
    seeds: int = 3
    temperature: float = 0.0
    trials: dict[str, list[DecoderTrial]] = field(default_factory=lambda: standard_trials(256))
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 4, "n_heads": 4})
    steps: dict[str, int] = field(default_factory=lambda: {"flexmdm": 6000, "mdm": 4000})
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 32, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01, "ema_decay": 0.995,
        "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 500, "keep_last": 0,
    })

    @classmethod
    def quick(cls) -> MazeBenchSettings:
        """Three seeds in about 9 minutes on 2 idle cores: 5 × 5 rooms, half the steps, 64 sampling steps."""
        settings = cls(rooms=5, num_pairs=2000, ks=(2, 4, 7), eval_per_k=45, trials=standard_trials(64),
                       steps={"flexmdm": 3000, "mdm": 1800})
        settings.train.update(save_every=300)
        return settings


def _train_config(settings: MazeBenchSettings, kind: str, output_dir: Path, maze_seed: int,
                  seed: int) -> dict[str, Any]:
    data = {"task": "maze", "rooms": settings.rooms, "num_pairs": settings.num_pairs, "maze_seed": maze_seed,
            "k_max": max(settings.ks)}
    return {"model": {"kind": kind, **settings.model, "max_length": 4 * settings.rooms**2 + 16}, "data": data,
            "train": {**settings.train, "steps": settings.steps[kind], "seed": seed},
            "output_dir": str(output_dir / kind)}


def run_maze_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                       argv: list[str] | None = None, settings: MazeBenchSettings | None = None,
                       seeds: int | None = None) -> dict[str, Any]:
    """Train both models for each of ``seeds`` (default ``settings.seeds``) training seeds, tune on
    validation, evaluate on test at both budgets, write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(MazeBenchSettings, quick, settings)
    trained, threads = train_seeds(range(settings.seeds if seeds is None else seeds), lambda s: {
        layout: _train_config(settings, layout, run.work / f"seed{s}", seed, s) for layout in LAYOUTS})
    tasks = {layout: MazeTask(rooms=settings.rooms, num_pairs=settings.num_pairs, maze_seed=seed,
                              k_max=max(settings.ks), layout=layout) for layout in LAYOUTS}
    task, pipe = tasks["flexmdm"], cache(Pipeline.from_pretrained)
    problems = {(split, k): [goals for _, goals in task.evaluation_set(k, settings.eval_per_k, seed, split)]
                for split in ("validation", "test") for k in settings.ks}

    @cache
    def generate(model: str, model_dir: Path, trial: DecoderTrial, split: str, k: int,
                 sample_seed: int) -> tuple[list[list[Cell] | None], SampleOutput]:
        """Paths for the ``(split, k)`` problems (None: not a list of cells) and the sampler's output."""
        conditioning, model_pipe = tasks[model].conditioning(problems[split, k]), pipe(model_dir)
        options = trial.options(model_pipe.family.inserts, settings.temperature, trace=True)
        samples = model_pipe.sample(conditioning, max_length=tasks[model].max_length, seed=sample_seed, options=options)
        return model_pipe.family.read(conditioning, samples.sequences()), samples

    def evaluate(model: str, point: Checkpoint, trial: DecoderTrial, split: str, s: int) -> list[dict[str, Any]]:
        rows = []
        for k in settings.ks:
            paths, samples = generate(model, point.model_dir, trial, split, k, s)
            rows.append({"K": k, **evaluate_paths(task.maze, paths, problems[split, k]),
                         "mean_nfe": float(samples.nfe.double().mean())})
        return rows

    points = budget_points({s: {m: runs[m].output_dir for m in LAYOUTS} for s, runs in trained.items()})
    fair = fair_comparison(points, settings.trials, evaluate, metric="success_rate", cost="mean_nfe", by=("K",),
                           metrics=("success_rate", "mean_length_ratio", "mean_nfe"))
    first, panels, reveal_plot = fair["seeds"][0], [], None
    for model in LAYOUTS:  # figures: the first seed's headline checkpoints, the chosen trials, on test
        model_dir = points[first][HEADLINE][model].model_dir
        for k in settings.ks:
            paths, samples = generate(model, model_dir, DecoderTrial(**fair["tuning"]["choice"][model]), "test", k, first)
            panels += [(model, paths[i], problems["test", k][i]) for i in range(min(2, len(paths)))]
        if pipe(model_dir).family.inserts:
            reveal_plot = plot_reveal(task, paths, problems["test", k], samples, run.png("-reveal"))
    plot_samples(task, panels, run.png())
    record = run.write({"config": {**asdict(settings), "maze_shape": list(task.maze.shape), "max_length": task.max_length,
                                   **{f"{split}_pairs": len(task.pairs[split]) for split in ("validation", "test")}},
                        **fair, "train_threads": threads, "plot": run.png().name, "reveal_plot": reveal_plot})
    print(format_rows(fair["budgets"], TABLE))
    return record


TABLE: list[Column] = [("budget", "budget", "<12"), ("model", "model", "<8"), ("K", "K", ">3"),
                       ("success", plus_minus("success_rate"), ">15"), ("steps", "step", ">6.0f"),
                       ("len/shortest", plus_minus("mean_length_ratio", 2), ">13"), ("calls", plus_minus("mean_nfe", 1), ">12")]


main = bench_main(run_maze_benchmark, lambda args: {"seeds": args.seeds})
