"""``flexmdm bench maze``: FlexMDM against MDM on subgoal maze planning (paper Table 1).

Both models share the backbone and the optimiser settings and get the same training compute,
measured in CPU time; they differ only in layout (:mod:`flexmdm.tasks.maze`). A FlexMDM batch holds
paths at their own length while every MDM sequence spans the whole canvas, so a FlexMDM step costs
about half an MDM step (0.49–0.57 measured) and FlexMDM takes ``steps`` in proportion. They train
side by side (:mod:`flexmdm.bench.side_by_side`), each with half the machine's cores, and are
evaluated on held-out start–goal pairs for every K, both revealing the most probable mask first
at temperature 0. The MDM walks its grid of ``sampling_steps``; FlexMDM inserts as
``flexmdm_insertion`` says: ``"exact"`` (arrivals one at a time, one reveal per call, at most
``sampling_steps`` calls; chosen on exact oracles by ``flexmdm bench sampler``, not on this task)
or ``"poisson"`` (the paper's Algorithm 1 on the same grid as the MDM). Beside the JSON go a PNG
of sample paths and ``<name>-reveal.png``: a FlexMDM path at the largest K coloured by the step at
which each cell was revealed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flexmdm.bench.side_by_side import train_side_by_side
from flexmdm.bench.skeleton import BenchRun, Column, bench_main, choose, format_rows, train_fields
from flexmdm.families import SamplingOptions
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import Adaptive, ConfidenceThreshold, Insertion, SampleOutput
from flexmdm.tasks.maze import Cell, MazeTask, evaluate_paths, path_success
from flexmdm.tasks.maze.render import render_samples
from flexmdm.viz import plot_maze_reveal, reveal_steps, trace_header

__all__ = ["MazeBenchSettings", "main", "reveal_example", "run_maze_benchmark"]

LAYOUTS = ("flexmdm", "mdm")


@dataclass
class MazeBenchSettings:
    """What the benchmark trains and evaluates: the full run (``benchmarks/results/maze.json``) by
    default, ``quick()`` for the README's main job."""

    rooms: int = 9
    num_pairs: int = 6000
    ks: tuple[int, ...] = (2, 7, 12)
    eval_per_k: int = 100
    sampling_steps: int = 1024
    temperature: float = 0.0
    # The recorded full run (benchmarks/results/maze.json) predates exact insertion.
    flexmdm_insertion: str = "poisson"
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 128, "n_layers": 4, "n_heads": 4})
    steps: dict[str, int] = field(default_factory=lambda: {"flexmdm": 20000, "mdm": 11000})
    train: dict[str, Any] = field(default_factory=lambda: {
        "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01,
        "ema_decay": 0.999, "log_every": 50, "eval_every": 0, "eval_batches": 4, "save_every": 1000,
    })

    @classmethod
    def quick(cls) -> MazeBenchSettings:
        settings = cls(rooms=5, num_pairs=2000, ks=(2, 4, 7), eval_per_k=50, sampling_steps=256,
                       steps={"flexmdm": 3700, "mdm": 2200}, flexmdm_insertion="exact")
        settings.train.update(ema_decay=0.995, save_every=500)
        return settings


def _train_config(settings: MazeBenchSettings, kind: str, output_dir: Path, seed: int) -> dict[str, Any]:
    data = {"task": "maze", "rooms": settings.rooms, "num_pairs": settings.num_pairs, "maze_seed": seed,
            "k_max": max(settings.ks)}
    return {"model": {"kind": kind, **settings.model, "max_length": 4 * settings.rooms**2 + 16}, "data": data,
            "train": {**settings.train, "steps": settings.steps[kind], "seed": seed},
            "output_dir": str(output_dir / kind)}


def _generate(pipe: Pipeline, task: MazeTask, subgoals: list[list[Cell]], settings: MazeBenchSettings,
              seed: int) -> tuple[list[list[Cell] | None], SampleOutput]:
    """Paths generated for each subgoal list (None: not a list of cells) and the sampler's output (FlexMDM:
    with its trace); the sampling options of the module docstring."""
    exact = pipe.family.inserts and settings.flexmdm_insertion == "exact"
    options = SamplingOptions(
        steps=settings.sampling_steps, rule=ConfidenceThreshold(1.0) if exact else Adaptive("top_probability"),
        temperature=settings.temperature, final_fill="rule" if exact else "parallel",
        insertion=Insertion(settings.flexmdm_insertion) if pipe.family.inserts else None, trace=pipe.family.inserts,
    )
    conditioning = task.conditioning(subgoals)
    out = pipe.sample(conditioning, max_length=task.max_length, seed=seed, options=options)
    return pipe.family.read(conditioning, out.sequences()), out


def reveal_example(task: MazeTask, paths: list[list[Cell] | None], subgoals: list[list[Cell]]) -> int | None:
    """Index of the successful path with the most generated (non-subgoal) cells, else of the
    decodable path with the most; the first on ties; None when no path decodes."""
    decoded = [i for i, path in enumerate(paths) if path]
    if not decoded:
        return None
    ok = {i for i in decoded if path_success(task.maze, paths[i], subgoals[i])}
    return max(decoded, key=lambda i: (i in ok, len(paths[i]) - len(subgoals[i]), -i))


def _plot_reveal(task: MazeTask, paths: list[list[Cell] | None], subgoals: list[list[Cell]],
                 samples: SampleOutput, out_png: Path) -> str | None:
    """Draw the path chosen by :func:`reveal_example` coloured by when each cell was revealed;
    returns the PNG's name, or None when no sample decodes to a path."""
    index = reveal_example(task, paths, subgoals)
    if index is None:
        return None
    steps = reveal_steps(trace_header(samples.trace), samples.trace.to_records(), index)
    title = f"FlexMDM, K = {len(subgoals[index])}: step at which each cell was revealed ({samples.nfe[index]} calls)"
    return plot_maze_reveal(task.maze.grid, paths[index], steps, out_png, subgoals=subgoals[index], title=title).name


def run_maze_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, work_dir: str | Path | None = None,
                       argv: list[str] | None = None, settings: MazeBenchSettings | None = None) -> dict[str, Any]:
    """Train both models, evaluate them for every K, write JSON + PNG and return the record."""
    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(MazeBenchSettings, quick, settings)
    trained, threads = train_side_by_side({layout: _train_config(settings, layout, run.work, seed)
                                           for layout in LAYOUTS})
    tasks = {layout: MazeTask(rooms=settings.rooms, num_pairs=settings.num_pairs, maze_seed=seed,
                              k_max=max(settings.ks), layout=layout) for layout in LAYOUTS}
    pipes = {layout: Pipeline.from_pretrained(trained[layout].model_dir) for layout in LAYOUTS}
    task = tasks["flexmdm"]
    results, panels, reveal_plot = [], [], None
    for k in settings.ks:
        subgoals = [goals for _, goals in task.evaluation_set(k, settings.eval_per_k, seed)]
        for kind in LAYOUTS:
            paths, samples = _generate(pipes[kind], tasks[kind], subgoals, settings, seed)
            if pipes[kind].family.inserts and k == max(settings.ks):
                reveal_plot = _plot_reveal(task, paths, subgoals, samples, run.png("-reveal"))
            results.append({"model": kind, "K": k, **evaluate_paths(task.maze, paths, subgoals),
                            "mean_nfe": float(samples.nfe.double().mean()), **train_fields(trained[kind], threads)})
            panels += [(kind, paths[i], subgoals[i]) for i in range(min(2, len(paths)))]

    shown = [(path, goals, path is not None and path_success(task.maze, path, goals)) for _, path, goals in panels]
    render_samples(task.maze, shown, run.png(), "Generated paths on held-out subgoals (blue dots, numbered in order)",
                   labels=[kind for kind, _, _ in panels])
    record = run.write({
        "config": {**asdict(settings), "maze_shape": list(task.maze.shape),
                   "validation_pairs": len(task.pairs["validation"]), "max_length": task.max_length},
        "results": results, "plot": run.png().name, "reveal_plot": reveal_plot,
    })
    print(format_rows(results, TABLE))
    return record


TABLE: list[Column] = [("model", "model", "<8"), ("K", "K", ">3"), ("success", "success_rate", ">8.3f"),
                       ("len/shortest", "mean_length_ratio", ">13.2f"), ("calls", "mean_nfe", ">7.1f"),
                       ("n", "n", ">4")]


main = bench_main(run_maze_benchmark)
"""``flexmdm bench maze``."""
