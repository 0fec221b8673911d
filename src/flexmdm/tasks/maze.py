"""Maze planning through subgoals (paper §5.1.2, appendix F.2).

One maze is fixed (and never shown to the model). Given subgoals g1 … gK, the model must output
a path of grid cells that starts at g1, visits every subgoal in order, ends at gK, steps between
4-neighbours only and never enters a wall.

* **Maze.** Recursive division (paper Listing 1) on a ``(2m + 1) × (2n + 1)`` bitmap, then a
  fraction of the walls that separate two passages are knocked out ("extra doorways"), which
  makes loops and hence several valid paths between two cells. Seeded by a local
  :class:`random.Random`; the global random state is never touched.
* **Paths.** For a start–goal pair: the BFS shortest path plus detours through random waypoints
  (shortest path to the waypoint, then to the goal, kept when it visits no cell twice and is at
  most ``detour_factor`` times the shortest length) — up to ``max_paths`` distinct paths.
* **Split.** Start–goal pairs are split 95/5 into train and validation, so validation pairs
  are never seen in training.
* **Tokens.** One token per cell, ``row · W + col``; then MASK, PAD and SEP.
* **Layouts.** FlexMDM trains on the path itself with the subgoal tokens frozen and insertions
  allowed only strictly between consecutive subgoals (regions 1 … K−1). MDM trains on
  ``g1 … gK SEP path`` with the prompt ``g1 … gK SEP`` frozen, padded with PAD to its canvas.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from flexmdm.constraints import Prompt, pad_sequences
from flexmdm.training.data import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = [
    "Cell",
    "Maze",
    "MazeTask",
    "candidate_paths",
    "draw_subgoals",
    "evaluate_paths",
    "generate_maze",
    "path_success",
    "shortest_path",
]

Cell = tuple[int, int]
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass(frozen=True)
class Maze:
    """A grid of open cells and walls.

    Attributes:
        grid: ``[H, W]`` bool, True where the cell is open.
    """

    grid: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    def is_open(self, cell: Cell) -> bool:
        r, c = cell
        return 0 <= r < self.grid.shape[0] and 0 <= c < self.grid.shape[1] and bool(self.grid[r, c])

    def neighbours(self, cell: Cell) -> list[Cell]:
        """Open 4-neighbours of ``cell``."""
        r, c = cell
        return [(r + dr, c + dc) for dr, dc in _STEPS if self.is_open((r + dr, c + dc))]

    def open_cells(self) -> list[Cell]:
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(self.grid))]

    def distances_from(self, start: Cell) -> tuple[np.ndarray, np.ndarray]:
        """Breadth-first search: ``(distance [H, W] (-1 unreachable), parent [H, W] flat index)``."""
        height, width = self.grid.shape
        distance = np.full((height, width), -1, dtype=np.int64)
        parent = np.full((height, width), -1, dtype=np.int64)
        distance[start] = 0
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            for nxt in self.neighbours(cell):
                if distance[nxt] < 0:
                    distance[nxt] = distance[cell] + 1
                    parent[nxt] = cell[0] * width + cell[1]
                    queue.append(nxt)
        return distance, parent


def _divide(grid: np.ndarray, top: int, left: int, height: int, width: int, rng: random.Random) -> None:
    """Recursive division on the wall bitmap ``grid`` (1 = wall), Listing 1 of the paper."""
    if height <= 2 or width <= 2:
        return
    if width < height:  # split the longer side with a horizontal wall
        row = rng.randrange(top + 1, top + height - 1, 2)
        door = rng.randrange(left, left + width, 2)
        grid[row, left : left + width] = 1
        grid[row, door] = 0
        _divide(grid, top, left, row - top, width, rng)
        _divide(grid, row + 1, left, top + height - row - 1, width, rng)
    else:
        col = rng.randrange(left + 1, left + width - 1, 2)
        door = rng.randrange(top, top + height, 2)
        grid[top : top + height, col] = 1
        grid[door, col] = 0
        _divide(grid, top, left, height, col - left, rng)
        _divide(grid, top, col + 1, height, left + width - col - 1, rng)


def generate_maze(cells_high: int, cells_wide: int, seed: int, extra_door_fraction: float = 0.5) -> Maze:
    """A ``(2·cells_high + 1) × (2·cells_wide + 1)`` maze (Listing 1 with a local RNG).

    Args:
        cells_high: rooms per column (the paper's 41 × 41 grid has 20).
        cells_wide: rooms per row.
        seed: the maze's seed.
        extra_door_fraction: share of the walls between two passages knocked out (0: a
            perfect maze with exactly one path between two cells).
    """
    if cells_high < 1 or cells_wide < 1:
        raise ValueError(f"a maze needs at least 1 x 1 rooms, got {cells_high} x {cells_wide}")
    if not 0.0 <= extra_door_fraction <= 1.0:
        raise ValueError(f"extra_door_fraction must lie in [0, 1], got {extra_door_fraction}")
    rng = random.Random(seed)
    height, width = 2 * cells_high + 1, 2 * cells_wide + 1
    walls = np.zeros((height, width), dtype=np.uint8)
    walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = 1
    _divide(walls, 1, 1, height - 2, width - 2, rng)
    candidates = [
        (r, c)
        for r in range(1, height - 1)
        for c in range(1, width - 1)
        if walls[r, c]
        and ((not walls[r - 1, c] and not walls[r + 1, c]) or (not walls[r, c - 1] and not walls[r, c + 1]))
    ]
    for r, c in rng.sample(candidates, k=int(len(candidates) * extra_door_fraction)):
        walls[r, c] = 0
    return Maze(walls == 0)


def _walk_back(parent: np.ndarray, start: Cell, goal: Cell) -> list[Cell]:
    width = parent.shape[1]
    path = [goal]
    while path[-1] != start:
        index = int(parent[path[-1]])
        if index < 0:
            raise ValueError(f"{goal} is not reachable from {start}")
        path.append((index // width, index % width))
    return path[::-1]


def shortest_path(maze: Maze, start: Cell, goal: Cell) -> list[Cell]:
    """A BFS shortest path from ``start`` to ``goal``, both included."""
    return _walk_back(maze.distances_from(start)[1], start, goal)


def candidate_paths(
    maze: Maze,
    start: Cell,
    goal: Cell,
    rng: random.Random,
    max_paths: int = 10,
    detour_factor: float = 2.0,
    tries: int = 40,
    searches: dict[Cell, np.ndarray] | None = None,
) -> list[list[Cell]]:
    """The shortest path first, then distinct simple detours through random waypoints.

    Args:
        searches: optional cache ``{cell: BFS parent array}`` shared across calls.
    """
    searches = {} if searches is None else searches

    def parent(cell: Cell) -> np.ndarray:
        if cell not in searches:
            searches[cell] = maze.distances_from(cell)[1]
        return searches[cell]

    shortest = _walk_back(parent(start), start, goal)
    paths, seen = [shortest], {tuple(shortest)}
    open_cells = maze.open_cells()
    limit = detour_factor * len(shortest) + 2
    for _ in range(tries):
        if len(paths) >= max_paths:
            break
        waypoint = open_cells[rng.randrange(len(open_cells))]
        path = _walk_back(parent(start), start, waypoint) + _walk_back(parent(waypoint), waypoint, goal)[1:]
        if len(path) <= limit and len(set(path)) == len(path) and tuple(path) not in seen:
            paths.append(path)
            seen.add(tuple(path))
    return paths


def draw_subgoals(path: Sequence[Cell], k: int, rng: random.Random) -> list[int]:
    """Indices into ``path`` of K subgoals: start, goal and K−2 distinct interior cells, in order."""
    if k < 2:
        raise ValueError(f"K must be >= 2, got {k}")
    if len(path) < k:
        raise ValueError(f"a path of {len(path)} cells cannot hold {k} subgoals")
    return [0, *sorted(rng.sample(range(1, len(path) - 1), k - 2)), len(path) - 1]


def path_success(maze: Maze, path: Sequence[Cell], subgoals: Sequence[Cell]) -> bool:
    """Valid iff open cells only, 4-neighbour steps, starts at g1, ends at gK, visits g1…gK in order."""
    if not path or not subgoals or path[0] != subgoals[0] or path[-1] != subgoals[-1]:
        return False
    if not all(maze.is_open(cell) for cell in path):
        return False
    if any(abs(a[0] - b[0]) + abs(a[1] - b[1]) != 1 for a, b in zip(path, path[1:])):
        return False
    remaining = iter(path)
    return all(any(cell == goal for cell in remaining) for goal in subgoals)


def _shortest_through(maze: Maze, subgoals: Sequence[Cell]) -> int:
    """Cells of the shortest path visiting ``subgoals`` in order."""
    return 1 + sum(int(maze.distances_from(a)[0][b]) for a, b in zip(subgoals, subgoals[1:]))


def evaluate_paths(
    maze: Maze, paths: Sequence[Sequence[Cell] | None], subgoal_lists: Sequence[Sequence[Cell]]
) -> dict[str, float]:
    """``success_rate``, ``mean_length_ratio`` (successful paths over the shortest path through
    their subgoals) and ``n``; a path of None (undecodable output) is a failure."""
    successes = [p is not None and path_success(maze, p, g) for p, g in zip(paths, subgoal_lists)]
    ratios = [len(p) / _shortest_through(maze, g) for p, g, ok in zip(paths, subgoal_lists, successes) if ok]
    return {
        "success_rate": sum(successes) / max(len(successes), 1),
        "mean_length_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "n": len(successes),
    }


@register_task("maze")
@dataclass
class MazeTask(Task):
    """Subgoal-conditioned paths in one fixed maze; see the module docstring.

    Attributes:
        rooms: the maze has ``rooms × rooms`` rooms, a ``(2·rooms + 1)``-wide grid.
        maze_seed: seed of the maze and of the pairs.
        num_pairs: start–goal pairs (95% train, 5% validation).
        max_paths: paths per pair (shortest + detours).
        k_min: fewest subgoals in training.
        k_max: most subgoals in training (pairs whose paths are shorter use fewer).
        layout: "flexmdm" (frozen subgoals inside the path) or "mdm" (``g1 … gK SEP path``).
        extra_door_fraction: see :func:`generate_maze`.
    """

    rooms: int = 5
    maze_seed: int = 0
    num_pairs: int = 2000
    max_paths: int = 10
    k_min: int = 2
    k_max: int = 12
    layout: Literal["flexmdm", "mdm"] = "flexmdm"
    extra_door_fraction: float = 0.5
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.layout not in ("flexmdm", "mdm"):
            raise ValueError(f"layout must be 'flexmdm' or 'mdm', got {self.layout!r}")
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"need 2 <= k_min <= k_max, got {self.k_min}, {self.k_max}")
        if self.num_pairs < 20:
            raise ValueError(f"num_pairs must be >= 20 for a 95/5 split, got {self.num_pairs}")
        if self.max_paths < 1:
            raise ValueError(f"max_paths must be >= 1, got {self.max_paths}")

    # ---- the maze, its pairs and paths ---------------------------------------------------
    @cached_property
    def maze(self) -> Maze:
        return generate_maze(self.rooms, self.rooms, self.maze_seed, self.extra_door_fraction)

    @cached_property
    def pairs(self) -> dict[str, list[tuple[Cell, Cell]]]:
        """``{"train": [...], "validation": [...]}``, disjoint start–goal pairs."""
        rng = random.Random(self.maze_seed + 1)
        cells = self.maze.open_cells()
        possible = len(cells) * (len(cells) - 1)
        if self.num_pairs > possible:
            raise ValueError(f"the maze has only {possible} ordered start-goal pairs, {self.num_pairs} requested")
        chosen: set[tuple[Cell, Cell]] = set()
        while len(chosen) < self.num_pairs:
            start, goal = rng.sample(cells, 2)
            chosen.add((start, goal))
        ordered = sorted(chosen)
        rng.shuffle(ordered)
        cut = self.num_pairs - max(1, self.num_pairs // 20)
        return {"train": ordered[:cut], "validation": ordered[cut:]}

    @cached_property
    def paths(self) -> dict[tuple[Cell, Cell], list[list[Cell]]]:
        """Candidate paths of every pair."""
        rng = random.Random(self.maze_seed + 2)
        searches: dict[Cell, np.ndarray] = {}
        return {
            pair: candidate_paths(self.maze, *pair, rng, max_paths=self.max_paths, searches=searches)
            for split in ("train", "validation")
            for pair in self.pairs[split]
        }

    @cached_property
    def longest_path(self) -> int:
        return max(len(p) for paths in self.paths.values() for p in paths)

    # ---- tokens --------------------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.maze.shape[1]

    @property
    def cells(self) -> int:
        return self.maze.shape[0] * self.maze.shape[1]

    @property
    def vocab(self) -> Vocab:
        return Vocab(size=self.cells + 3, mask_id=self.cells, pad_id=self.cells + 1)

    @property
    def sep_id(self) -> int:
        return self.cells + 2

    def encode(self, cells: Sequence[Cell]) -> list[int]:
        return [r * self.width + c for r, c in cells]

    def decode(self, tokens: Sequence[int]) -> list[Cell] | None:
        """Cells of ``tokens``; None if any token is not a cell."""
        if any(not 0 <= t < self.cells for t in tokens):
            return None
        return [(t // self.width, t % self.width) for t in tokens]

    @property
    def max_length(self) -> int:
        return self.longest_path + (self.k_max + 1 if self.layout == "mdm" else 0)

    # ---- training batches ----------------------------------------------------------------
    def _draw(self, split: Split, generator: torch.Generator) -> tuple[list[Cell], list[int]]:
        """One (path, subgoal indices) with K uniform in [k_min, min(k_max, len(path))]."""
        pairs = self.pairs[split]
        pair = pairs[int(torch.randint(len(pairs), (), generator=generator))]
        options = self.paths[pair]
        path = options[int(torch.randint(len(options), (), generator=generator))]
        k_high = min(self.k_max, len(path))
        k = int(torch.randint(min(self.k_min, k_high), k_high + 1, (), generator=generator))
        interior = torch.randperm(len(path) - 2, generator=generator)[: k - 2] + 1
        return path, [0, *sorted(interior.tolist()), len(path) - 1]

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        rows, flags, regions = [], [], []
        for _ in range(batch_size):
            path, subgoal_index = self._draw(split, generator)
            tokens = self.encode(path)
            if self.layout == "flexmdm":
                frozen_row = [False] * len(path)
                for i in subgoal_index:
                    frozen_row[i] = True
                rows.append(tokens)
                flags.append(frozen_row)
                regions.append([1 <= r < len(subgoal_index) for r in range(self.k_max + 1)])
            else:
                prompt = [tokens[i] for i in subgoal_index] + [self.sep_id]
                rows.append(prompt + tokens)
                flags.append([True] * len(prompt) + [False] * len(tokens))
        x1, lengths = pad_sequences(rows, self.vocab.pad_id)
        frozen, _ = pad_sequences(flags, 0)
        allowed = torch.tensor(regions) if regions else None
        return TrainingBatch(x1, lengths, frozen.bool(), allowed)

    # ---- evaluation ------------------------------------------------------------------------
    def evaluation_set(self, k: int, count: int, seed: int) -> list[tuple[list[Cell], list[Cell]]]:
        """Up to ``count`` (reference path, subgoals) on validation pairs whose path holds K cells."""
        rng = random.Random(seed * 1000 + k)
        examples = []
        for pair in self.pairs["validation"]:
            options = [p for p in self.paths[pair] if len(p) >= k]
            if options:
                path = options[rng.randrange(len(options))]
                examples.append((path, [path[i] for i in draw_subgoals(path, k, rng)]))
        rng.shuffle(examples)
        return examples[:count]

    def flexmdm_prompt(self, subgoal_lists: Sequence[Sequence[Cell]]) -> Prompt:
        """Frozen subgoals, insertions only between consecutive ones."""
        return Prompt.subgoals([self.encode(g) for g in subgoal_lists], self.vocab.pad_id)

    def mdm_canvas(self, subgoal_lists: Sequence[Sequence[Cell]]) -> tuple[Tensor, Tensor]:
        """``g1 … gK SEP MASK …`` canvases of width ``max_length`` with the prompt frozen."""
        rows, flags = [], []
        for goals in subgoal_lists:
            prompt = self.encode(goals) + [self.sep_id]
            rows.append(prompt + [self.vocab.mask_id] * (self.max_length - len(prompt)))
            flags.append([True] * len(prompt) + [False] * (self.max_length - len(prompt)))
        return torch.tensor(rows), torch.tensor(flags)

    def decode_mdm(self, tokens: Sequence[int], k: int) -> list[Cell] | None:
        """The path after ``g1 … gK SEP`` (PAD already stripped); None if not all cells."""
        return self.decode(list(tokens)[k + 1 :])
