"""The maze, its shortest and detoured paths, subgoals, and the pair-split dataset.

The maze is the recursive-division maze of the paper's Listing 1 on an ``H × W`` bitmap (both
odd): rooms sit at odd coordinates, walls at even ones, the border is wall. Knocking out walls
that separate two passages ("extra doorways") adds loops, hence several paths between two
cells. Every random choice comes from a local :class:`random.Random`; the global random state
is never touched.

Cells are ``(row, col)`` tuples. Internally cells are *flat indices* ``row · W + col``, which
are also their token ids (:mod:`flexmdm.tasks.maze.encoding`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import numpy as np

__all__ = [
    "Cell",
    "Maze",
    "MazeDataset",
    "build_dataset",
    "candidate_paths",
    "draw_subgoals",
    "evaluation_examples",
    "generate_maze",
    "shortest_path",
    "split_by_pair",
]

Cell = tuple[int, int]
Pair = TypeVar("Pair", int, Cell)  # a pair end: a flat cell index or a cell
VALIDATION_FRACTION = 0.05
DETOUR_FACTOR = 2.0  # a detour takes at most DETOUR_FACTOR · d(start, goal) + DETOUR_SLACK steps
DETOUR_SLACK = 4
_STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass(frozen=True)
class _Search:
    """A breadth-first search tree of the maze rooted at one cell (flat indices).

    Attributes:
        distance: ``[H·W]`` steps from the root (-1: wall or unreachable), a Python list.
        parent: ``[H·W]`` next flat index towards the root (-1: none; the root points to itself).
        distance_array: ``[H·W]`` int64 numpy copy of ``distance``.
    """

    distance: list[int]
    parent: list[int]
    distance_array: np.ndarray

    def walk(self, cell: int) -> list[int]:
        """Flat indices from ``cell`` back to the root, both included."""
        parent = self.parent
        if parent[cell] < 0:
            raise ValueError("the cell is not reachable from the root of the search")
        out = [cell]
        while parent[cell] != cell:
            cell = parent[cell]
            out.append(cell)
        return out


@dataclass(frozen=True, eq=False)
class Maze:
    """A grid of open cells and walls (compared by identity).

    Attributes:
        grid: ``[H, W]`` bool, True where the cell is open (stored read-only).
    """

    grid: np.ndarray
    _searches: dict[int, _Search] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        grid = np.array(self.grid, dtype=bool)
        if grid.ndim != 2:
            raise ValueError(f"a maze grid must be 2-D, got shape {list(grid.shape)}")
        grid.setflags(write=False)
        object.__setattr__(self, "grid", grid)

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    def is_open(self, cell: Cell) -> bool:
        """True iff ``cell`` lies inside the grid and is not a wall."""
        r, c = cell
        return 0 <= r < self.grid.shape[0] and 0 <= c < self.grid.shape[1] and bool(self.grid[r, c])

    def neighbours(self, cell: Cell) -> list[Cell]:
        """Open 4-neighbours of ``cell`` (up, down, left, right)."""
        r, c = cell
        return [(r + dr, c + dc) for dr, dc in _STEPS if self.is_open((r + dr, c + dc))]

    def open_cells(self) -> list[Cell]:
        """Every open cell in row-major order."""
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(self.grid))]

    def flat(self, cell: Cell) -> int:
        """Flat index ``row · W + col`` of an open cell.

        Raises:
            ValueError: the cell is a wall or outside the grid.
        """
        if not self.is_open(cell):
            raise ValueError(f"cell {cell} is not an open cell of the maze")
        return int(cell[0]) * self.grid.shape[1] + int(cell[1])

    def cell(self, flat: int) -> Cell:
        """The ``(row, col)`` of a flat index."""
        return divmod(int(flat), self.grid.shape[1])

    @cached_property
    def _adjacency(self) -> list[list[int]]:
        """``[H·W]`` lists of the open 4-neighbours (flat indices) of every open cell."""
        height, width = self.grid.shape
        padded = np.pad(self.grid, 1)
        adjacency: list[list[int]] = [[] for _ in range(height * width)]
        for dr, dc in _STEPS:
            shifted = padded[1 + dr : 1 + dr + height, 1 + dc : 1 + dc + width]
            for index in np.flatnonzero(self.grid & shifted).tolist():
                adjacency[index].append(index + dr * width + dc)
        return adjacency

    def _search(self, root: int) -> _Search:
        """The BFS tree rooted at flat index ``root``, computed once and cached on the maze."""
        cached = self._searches.get(root)
        if cached is not None:
            return cached
        adjacency = self._adjacency
        size = len(adjacency)
        distance, parent = [-1] * size, [-1] * size
        distance[root], parent[root] = 0, root
        queue = [root]
        for cell in queue:  # the list grows while we iterate: a FIFO queue
            step = distance[cell] + 1
            for nxt in adjacency[cell]:
                if distance[nxt] < 0:
                    distance[nxt], parent[nxt] = step, cell
                    queue.append(nxt)
        found = _Search(distance, parent, np.asarray(distance, dtype=np.int64))
        self._searches[root] = found
        return found

    def distance(self, start: Cell, goal: Cell) -> int:
        """Steps of a shortest path from ``start`` to ``goal`` (-1 if unreachable)."""
        return self._search(self.flat(start)).distance[self.flat(goal)]


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or value < 3 or value % 2 == 0:
        raise ValueError(f"maze {name} must be an odd integer >= 3 (e.g. 11, 21, 41), got {value!r}")


def _divide(walls: np.ndarray, rng: random.Random) -> None:
    """Recursive division of the interior of ``walls`` (1 = wall), in Listing 1's order.

    A chamber (top, left, height, width) is split by a wall across its longer side (a
    horizontal wall when it is taller than wide) at an even coordinate with one doorway at an
    odd coordinate; chambers of height or width <= 2 stop. The explicit stack visits chambers
    depth-first, first half first, so the random calls come in Listing 1's order.
    """
    stack = [(1, 1, walls.shape[0] - 2, walls.shape[1] - 2)]
    while stack:
        top, left, height, width = stack.pop()
        if height <= 2 or width <= 2:
            continue
        if width < height:
            row = rng.randrange(top + 1, top + height - 1, 2)
            door = rng.randrange(left, left + width, 2)
            walls[row, left : left + width] = 1
            walls[row, door] = 0
            halves = [(top, left, row - top, width), (row + 1, left, top + height - row - 1, width)]
        else:
            col = rng.randrange(left + 1, left + width - 1, 2)
            door = rng.randrange(top, top + height, 2)
            walls[top : top + height, col] = 1
            walls[door, col] = 0
            halves = [(top, left, height, col - left), (top, col + 1, height, left + width - col - 1)]
        stack.extend(reversed(halves))


def generate_maze(height: int, width: int, seed: int, extra_doors: int | None = None) -> Maze:
    """The maze of Listing 1: recursive division, then extra doorways.

    Args:
        height: grid rows, odd and >= 3 (Listing 1's ``2m + 1``; the paper uses 41).
        width: grid columns, odd and >= 3.
        seed: seed of a local :class:`random.Random` (same seed, same maze).
        extra_doors: how many walls that separate two passages (vertically or horizontally)
            to knock out; None: half of them, Listing 1's default ``extra_door_frac = 0.5``;
            0: a perfect maze (exactly one simple path between two cells).

    Returns:
        The maze; every open cell is reachable from every other one.

    Raises:
        ValueError: a size is even or < 3, or ``extra_doors`` is negative or exceeds the
            number of candidate walls.
    """
    _check_size("height", height)
    _check_size("width", width)
    rng = random.Random(seed)
    walls = np.zeros((height, width), dtype=np.uint8)
    walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = 1
    _divide(walls, rng)
    inner = walls[1:-1, 1:-1].astype(bool)
    between_rows = ~walls[:-2, 1:-1].astype(bool) & ~walls[2:, 1:-1].astype(bool)
    between_cols = ~walls[1:-1, :-2].astype(bool) & ~walls[1:-1, 2:].astype(bool)
    rows, cols = np.nonzero(inner & (between_rows | between_cols))  # row-major, as Listing 1
    candidates = list(zip((rows + 1).tolist(), (cols + 1).tolist()))
    count = len(candidates) // 2 if extra_doors is None else extra_doors
    if not 0 <= count <= len(candidates):
        raise ValueError(f"extra_doors must lie in [0, {len(candidates)}] for this maze, got {extra_doors}")
    for r, c in rng.sample(candidates, k=count):
        walls[r, c] = 0
    return Maze(walls == 0)


def shortest_path(maze: Maze, start: Cell, goal: Cell) -> list[Cell]:
    """A breadth-first shortest path.

    Returns:
        Cells from ``start`` to ``goal``, both included (``[start]`` if they coincide).

    Raises:
        ValueError: an end is not an open cell, or ``goal`` is unreachable.
    """
    walked = maze._search(maze.flat(goal)).walk(maze.flat(start))  # start -> goal in goal's tree
    return [maze.cell(i) for i in walked]


def _flat_candidate_paths(
    maze: Maze, start: int, goal: int, max_paths: int, rng: random.Random, detour_factor: float, detour_slack: int
) -> list[list[int]]:
    """:func:`candidate_paths` on flat indices."""
    from_start, from_goal = maze._search(start), maze._search(goal)
    shortest = from_goal.walk(start)
    paths, seen = [shortest], {tuple(shortest)}
    if max_paths == 1 or start == goal:
        return paths
    limit = detour_factor * (len(shortest) - 1) + detour_slack
    through = from_start.distance_array + from_goal.distance_array
    eligible = (from_start.distance_array >= 0) & (through <= limit)
    eligible[[start, goal]] = False
    waypoints = np.flatnonzero(eligible).tolist()
    for waypoint in rng.sample(waypoints, k=min(len(waypoints), 4 * max_paths)):
        if from_start.parent[waypoint] == from_goal.parent[waypoint]:
            continue  # the two legs would meet before the waypoint: not simple
        path = from_start.walk(waypoint)[::-1] + from_goal.walk(waypoint)[1:]
        key = tuple(path)
        if key in seen or len(set(path)) != len(path):
            continue
        paths.append(path)
        seen.add(key)
        if len(paths) == max_paths:
            break
    return paths


def candidate_paths(
    maze: Maze,
    start: Cell,
    goal: Cell,
    max_paths: int = 10,
    rng: random.Random | None = None,
    *,
    detour_factor: float = DETOUR_FACTOR,
    detour_slack: int = DETOUR_SLACK,
) -> list[list[Cell]]:
    """The shortest path, then distinct simple detours through random waypoints.

    A detour through waypoint w is the BFS path start → w followed by the BFS path w → goal;
    it is kept when it visits no cell twice, differs from every path so far, and takes at most
    ``detour_factor · d(start, goal) + detour_slack`` steps. At most ``4 · max_paths``
    waypoints are tried, so fewer than ``max_paths`` paths may come back.

    Args:
        maze: the maze.
        start: first cell of every path.
        goal: last cell of every path.
        max_paths: most paths returned (>= 1).
        rng: source of the waypoints; None: ``random.Random(0)``.
        detour_factor: length bound, relative to the shortest path.
        detour_slack: length bound, additive (steps).

    Returns:
        1 to ``max_paths`` distinct simple valid paths (cell lists), the BFS shortest first.

    Raises:
        ValueError: ``max_paths < 1``, an end is not open, or the goal is unreachable.
    """
    if max_paths < 1:
        raise ValueError(f"max_paths must be >= 1, got {max_paths}")
    rng = random.Random(0) if rng is None else rng
    flat = _flat_candidate_paths(
        maze, maze.flat(start), maze.flat(goal), max_paths, rng, detour_factor, detour_slack
    )
    return [[maze.cell(i) for i in path] for path in flat]


def subgoal_indices(length: int, k: int, rng: random.Random) -> list[int]:
    """Positions of K subgoals on a path of ``length`` cells: 0, K−2 sorted interior ones, last.

    Raises:
        ValueError: ``k < 2`` or the path has fewer than ``max(k, 2)`` cells.
    """
    if k < 2:
        raise ValueError(f"K must be >= 2, got {k}")
    if length < k:
        raise ValueError(f"a path of {length} cells cannot hold {k} subgoals")
    return [0, *sorted(rng.sample(range(1, length - 1), k - 2)), length - 1]


def draw_subgoals(path: Sequence[Cell], k: int, rng: random.Random) -> list[Cell]:
    """Subgoals g1 … gK of a path: its start, K−2 distinct interior cells in path order, its goal.

    Args:
        path: a simple path of at least ``k`` cells.
        k: number of subgoals, >= 2.
        rng: source of the interior picks (uniform without replacement).

    Raises:
        ValueError: ``k < 2`` or the path is shorter than ``k`` cells.
    """
    return [tuple(path[i]) for i in subgoal_indices(len(path), k, rng)]


@dataclass(frozen=True, eq=False)
class MazeDataset:
    """Start–goal pairs of one fixed maze with their candidate paths, split 95/5 by pair.

    Paths are stored once, concatenated, as flat cell indices (= cell token ids). Pairs are
    numbered train first, then validation; pair ``p`` owns paths
    ``pair_path_offsets[p] : pair_path_offsets[p + 1]``, path ``j`` is
    ``path_cells[path_offsets[j] : path_offsets[j + 1]]``.

    Attributes:
        maze: the maze (fixed, never shown to a model).
        train_pairs: ``(start, goal)`` pairs for training.
        val_pairs: held-out pairs; neither they nor their reverses occur in ``train_pairs``.
        path_cells: ``[N]`` int64, every path's flat cell indices, concatenated.
        path_offsets: ``[P + 1]`` int64, where each path starts in ``path_cells``.
        pair_path_offsets: ``[num_pairs + 1]`` int64, the first path of each pair.
    """

    maze: Maze
    train_pairs: list[tuple[Cell, Cell]]
    val_pairs: list[tuple[Cell, Cell]]
    path_cells: np.ndarray
    path_offsets: np.ndarray
    pair_path_offsets: np.ndarray
    _tables: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False
    )

    @property
    def pairs(self) -> list[tuple[Cell, Cell]]:
        """Train pairs then validation pairs (the pair numbering)."""
        return self.train_pairs + self.val_pairs

    @cached_property
    def _pair_number(self) -> dict[tuple[Cell, Cell], int]:
        return {pair: number for number, pair in enumerate(self.pairs)}

    @property
    def path_lengths(self) -> np.ndarray:
        """``[P]`` cells of every path."""
        return np.diff(self.path_offsets)

    @property
    def longest_path(self) -> int:
        """Cells of the longest stored path."""
        return int(self.path_lengths.max())

    def split_pair_numbers(self, split: str) -> range:
        """Pair numbers of ``"train"`` or ``"validation"``."""
        if split == "train":
            return range(len(self.train_pairs))
        if split == "validation":
            return range(len(self.train_pairs), len(self.train_pairs) + len(self.val_pairs))
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")

    def _table(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The split's paths by decreasing length: ``(path numbers, lengths, cumulative weights)``,
        a path weighing 1 / (paths of its pair)."""
        if split not in self._tables:
            numbers = self.split_pair_numbers(split)
            offsets = self.pair_path_offsets[numbers.start : numbers.stop + 1]
            counts = np.diff(offsets)
            path_numbers = np.arange(offsets[0], offsets[-1])
            lengths = self.path_lengths[path_numbers]
            order = np.argsort(-lengths, kind="stable")
            weights = np.repeat(1.0 / counts, counts)[order]
            self._tables[split] = (path_numbers[order], lengths[order], np.cumsum(weights))
        return self._tables[split]

    def draw_paths(self, split: str, ks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw one path per requested subgoal count.

        A pair of ``split`` uniformly, then one of its paths uniformly, conditioned on the
        path holding at least K cells (exact conditioning of that joint draw).

        Args:
            split: ``"train"`` or ``"validation"``.
            ks: ``[B]`` subgoal counts K.
            rng: the random source.

        Returns:
            ``[B]`` int64 path numbers (rows of ``path_offsets``).

        Raises:
            ValueError: no path of the split holds some requested K.
        """
        path_numbers, lengths, cumulative = self._table(split)
        ks = np.asarray(ks, dtype=np.int64)
        eligible = np.searchsorted(-lengths, -ks, side="right")  # paths with length >= K
        if (eligible == 0).any():
            k = int(ks[eligible == 0][0])
            raise ValueError(f"no {split} path holds K={k} subgoals (longest: {int(lengths[0])} cells)")
        mass = cumulative[eligible - 1]
        picks = np.searchsorted(cumulative, rng.random(len(ks)) * mass, side="right")
        return path_numbers[np.minimum(picks, eligible - 1)]

    def paths(self, pair: tuple[Cell, Cell]) -> list[list[Cell]]:
        """Candidate paths (cell lists) of a stored pair, the shortest first.

        Raises:
            KeyError: the pair is not in the dataset.
        """
        number = self._pair_number[(tuple(pair[0]), tuple(pair[1]))]
        first, stop = self.pair_path_offsets[number], self.pair_path_offsets[number + 1]
        return [
            [self.maze.cell(i) for i in self.path_cells[self.path_offsets[j] : self.path_offsets[j + 1]].tolist()]
            for j in range(first, stop)
        ]


def split_by_pair(
    pairs: list[tuple[Pair, Pair]], rng: random.Random, fraction: float = VALIDATION_FRACTION
) -> tuple[list[tuple[Pair, Pair]], list[tuple[Pair, Pair]]]:
    """``(kept, held out)``: about ``fraction`` of ``pairs`` held out (at least one pair), a pair
    and its reverse always on the same side; order kept on both sides."""
    groups: dict[tuple[Pair, Pair], int] = {}
    for a, b in pairs:
        key = (min(a, b), max(a, b))
        groups[key] = groups.get(key, 0) + 1
    keys = sorted(groups)
    rng.shuffle(keys)
    wanted, held_out = max(1, round(fraction * len(pairs))), set()
    count = 0
    for key in keys:
        if count >= wanted:
            break
        held_out.add(key)
        count += groups[key]
    kept = [p for p in pairs if (min(p), max(p)) not in held_out]
    return kept, [p for p in pairs if (min(p), max(p)) in held_out]


def build_dataset(
    height: int,
    width: int,
    seed: int,
    num_pairs: int,
    max_paths: int = 10,
    extra_doors: int | None = None,
) -> MazeDataset:
    """Generate the maze, ``num_pairs`` distinct ordered start–goal pairs and their paths.

    Args:
        height: maze rows (odd, >= 3).
        width: maze columns (odd, >= 3).
        seed: seeds the maze (:func:`generate_maze`) and, separately, the pairs, the split and
            the detours.
        num_pairs: distinct ordered pairs of distinct open cells (>= 20).
        max_paths: candidate paths per pair (see :func:`candidate_paths`).
        extra_doors: see :func:`generate_maze`.

    Returns:
        The dataset, 95/5 by pair (a pair and its reverse are never split apart, so the
        validation share is 5% up to one pair).

    Raises:
        ValueError: invalid sizes, ``num_pairs < 20`` or more than the maze holds, ``max_paths < 1``.
    """
    if num_pairs < 20:
        raise ValueError(f"num_pairs must be >= 20 for a 95/5 split, got {num_pairs}")
    if max_paths < 1:
        raise ValueError(f"max_paths must be >= 1, got {max_paths}")
    maze = generate_maze(height, width, seed, extra_doors)
    cells = np.flatnonzero(maze.grid).tolist()
    n = len(cells)
    if num_pairs > n * (n - 1):
        raise ValueError(f"the maze has only {n * (n - 1)} ordered start-goal pairs, {num_pairs} requested")
    rng = random.Random(f"flexmdm.maze.pairs:{seed}")
    pairs = []
    for index in rng.sample(range(n * (n - 1)), num_pairs):
        a, b = divmod(index, n - 1)
        pairs.append((cells[a], cells[b + (b >= a)]))
    train, validation = split_by_pair(pairs, rng)
    chunks, path_lengths, paths_per_pair = [], [], []
    for start, goal in train + validation:
        found = _flat_candidate_paths(maze, start, goal, max_paths, rng, DETOUR_FACTOR, DETOUR_SLACK)
        paths_per_pair.append(len(found))
        for path in found:
            chunks.extend(path)
            path_lengths.append(len(path))
    return MazeDataset(
        maze=maze,
        train_pairs=[(maze.cell(a), maze.cell(b)) for a, b in train],
        val_pairs=[(maze.cell(a), maze.cell(b)) for a, b in validation],
        path_cells=np.asarray(chunks, dtype=np.int64),
        path_offsets=np.concatenate([[0], np.cumsum(path_lengths)]).astype(np.int64),
        pair_path_offsets=np.concatenate([[0], np.cumsum(paths_per_pair)]).astype(np.int64),
    )


def evaluation_examples(
    dataset: MazeDataset, k: int, count: int, rng: random.Random,
    pairs: Sequence[tuple[Cell, Cell]] | None = None,
) -> list[tuple[list[Cell], list[Cell]]]:
    """Held-out problems: ``(reference path, subgoals)`` on validation pairs.

    For every held-out pair with a path of at least K cells, one such path is drawn
    uniformly and K subgoals on it (:func:`draw_subgoals`); the problems are shuffled and the
    first ``count`` returned.

    Args:
        dataset: the dataset.
        k: subgoals per problem (>= 2).
        count: most problems returned.
        rng: source of every choice.
        pairs: the held-out pairs to draw from (default: every one, ``dataset.val_pairs``).

    Returns:
        Up to ``count`` pairs ``(path, [g1, …, gK])``, each pair at most once.
    """
    examples = []
    for pair in dataset.val_pairs if pairs is None else pairs:
        options = [path for path in dataset.paths(pair) if len(path) >= k]
        if options:
            path = options[rng.randrange(len(options))]
            examples.append((path, draw_subgoals(path, k, rng)))
    rng.shuffle(examples)
    return examples[:count]
