"""The maze bench's figures (:mod:`flexmdm.bench.maze`): sample paths, and a FlexMDM path coloured by
the step at which each cell was revealed."""

from __future__ import annotations

from pathlib import Path

from flexmdm.sampling import SampleOutput
from flexmdm.tasks.maze import Cell, MazeTask, path_success
from flexmdm.tasks.maze.render import render_samples
from flexmdm.viz import plot_maze_reveal, reveal_steps, trace_header

__all__ = ["plot_reveal", "plot_samples", "reveal_example"]

Panel = tuple[str, list[Cell] | None, list[Cell]]
"""A drawn example: the model's name, its path (None: not a path) and the subgoals it was given."""


def reveal_example(task: MazeTask, paths: list[list[Cell] | None], subgoals: list[list[Cell]]) -> int | None:
    """Index of the successful path with the most generated (non-subgoal) cells, else of the
    decodable path with the most; the first on ties; None when no path decodes."""
    decoded = [i for i, path in enumerate(paths) if path]
    if not decoded:
        return None
    ok = {i for i in decoded if path_success(task.maze, paths[i], subgoals[i])}
    return max(decoded, key=lambda i: (i in ok, len(paths[i]) - len(subgoals[i]), -i))


def plot_reveal(task: MazeTask, paths: list[list[Cell] | None], subgoals: list[list[Cell]],
                samples: SampleOutput, out_png: Path) -> str | None:
    """Draw the path chosen by :func:`reveal_example` coloured by when each cell was revealed;
    returns the PNG's name, or None when no sample decodes to a path."""
    index = reveal_example(task, paths, subgoals)
    if index is None:
        return None
    steps = reveal_steps(trace_header(samples.trace), samples.trace.to_records(), index)
    title = f"FlexMDM, K = {len(subgoals[index])}: step at which each cell was revealed ({samples.nfe[index]} calls)"
    return plot_maze_reveal(task.maze.grid, paths[index], steps, out_png, subgoals=subgoals[index], title=title).name


def plot_samples(task: MazeTask, panels: list[Panel], out_png: Path) -> None:
    """Draw each panel's path in the maze (green: success, red: failure), labelled by its model."""
    shown = [(path, goals, path is not None and path_success(task.maze, path, goals)) for _, path, goals in panels]
    render_samples(task.maze, shown, out_png, "Generated paths on held-out subgoals (blue dots, numbered in order)",
                   labels=[model for model, _, _ in panels])
