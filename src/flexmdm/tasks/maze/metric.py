"""Success of a generated path and the summary over many (paper appendix F.2, "Metric")."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from flexmdm.tasks.maze.data import Cell, Maze

__all__ = ["evaluate_paths", "path_success", "shortest_length_through"]


def path_success(maze: Maze, path: Sequence[Cell] | None, subgoals: Sequence[Cell]) -> bool:
    """Whether a path solves its subgoals.

    A path succeeds iff it is non-empty, every visited cell is open, consecutive cells are
    4-neighbours, it starts at g1, ends at gK and visits g1 … gK in this order (positions
    ``0 = i1 <= i2 <= … <= iK`` with ``path[ij] = gj``).

    Args:
        maze: the maze.
        path: cells (None, as for an undecodable output, fails).
        subgoals: g1 … gK, K >= 1.
    """
    if not path or not subgoals:
        return False
    cells = [(int(r), int(c)) for r, c in path]
    goals = [(int(r), int(c)) for r, c in subgoals]
    if cells[0] != goals[0] or cells[-1] != goals[-1]:
        return False
    if not all(maze.is_open(cell) for cell in cells):
        return False
    if any(abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1 for a, b in pairwise(cells)):
        return False
    cursor = 0  # g_j is met at or after where g_{j-1} was met (one visit may serve equal neighbours)
    for goal in goals:
        while cursor < len(cells) and cells[cursor] != goal:
            cursor += 1
        if cursor == len(cells):
            return False
    return True


def shortest_length_through(maze: Maze, subgoals: Sequence[Cell]) -> int:
    """Cells of a shortest path visiting g1 … gK in order (1 + the sum of leg distances).

    Raises:
        ValueError: a subgoal is not open or a leg is unreachable.
    """
    total = 1
    for a, b in pairwise(subgoals):
        steps = maze.distance(tuple(a), tuple(b))
        if steps < 0:
            raise ValueError(f"{b} is unreachable from {a}")
        total += steps
    return total


def evaluate_paths(
    maze: Maze, paths: Sequence[Sequence[Cell] | None], subgoal_lists: Sequence[Sequence[Cell]]
) -> dict[str, float]:
    """Success rate and length of generated paths.

    Args:
        maze: the maze.
        paths: N generated paths (None for an output that is not a list of cells: a failure).
        subgoal_lists: the N subgoal lists they were asked to connect.

    Returns:
        ``success_rate`` (successes / N, 0 for N = 0), ``mean_length_ratio`` (over successful
        paths: cells of the path / cells of the shortest path through its subgoals; NaN
        without successes) and ``n`` (N).
    """
    if len(paths) != len(subgoal_lists):
        raise ValueError(f"{len(paths)} paths but {len(subgoal_lists)} subgoal lists")
    successes = [path_success(maze, p, g) for p, g in zip(paths, subgoal_lists)]
    ratios = [
        len(p) / shortest_length_through(maze, g) for p, g, ok in zip(paths, subgoal_lists, successes) if ok
    ]
    return {
        "success_rate": sum(successes) / len(successes) if successes else 0.0,
        "mean_length_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "n": len(successes),
    }
