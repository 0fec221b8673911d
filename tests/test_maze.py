"""Maze task: generator, paths, subgoals, split, layouts and the success metric."""

import random
from collections import deque

import numpy as np
import pytest
import torch

from flexmdm.tasks.maze import (
    Maze,
    MazeTask,
    candidate_paths,
    draw_subgoals,
    evaluate_paths,
    generate_maze,
    path_success,
    shortest_path,
)


def reachable(maze: Maze, start) -> set:
    seen, queue = {start}, deque([start])
    while queue:
        for nxt in maze.neighbours(queue.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


@pytest.mark.parametrize("rooms,seed,doors", [(3, 0, 0.0), (5, 1, 0.5), (8, 2, 0.3)])
def test_mazes_are_connected_and_seeded(rooms, seed, doors):
    state = random.getstate()
    maze = generate_maze(rooms, rooms, seed, doors)
    assert random.getstate() == state  # the global random state is untouched
    assert maze.shape == (2 * rooms + 1, 2 * rooms + 1)
    assert not maze.grid[0].any() and not maze.grid[:, 0].any()  # outer wall
    cells = maze.open_cells()
    assert reachable(maze, cells[0]) == set(cells)
    assert np.array_equal(generate_maze(rooms, rooms, seed, doors).grid, maze.grid)
    assert not np.array_equal(generate_maze(rooms, rooms, seed + 7, doors).grid, maze.grid)


def test_perfect_maze_is_a_tree_and_doors_add_loops():
    perfect, loopy = generate_maze(6, 6, 3, 0.0), generate_maze(6, 6, 3, 0.5)
    def edges(m):
        return sum(len(m.neighbours(c)) for c in m.open_cells()) // 2
    assert edges(perfect) == len(perfect.open_cells()) - 1
    assert edges(loopy) > len(loopy.open_cells()) - 1


def brute_force_distance(maze, start, goal):
    frontier, seen, steps = {start}, {start}, 0
    while goal not in frontier:
        frontier = {n for c in frontier for n in maze.neighbours(c)} - seen
        seen |= frontier
        steps += 1
    return steps


def test_bfs_paths_are_shortest_and_detours_valid():
    maze = generate_maze(5, 5, 4, 0.5)
    rng = random.Random(0)
    cells = maze.open_cells()
    for _ in range(20):
        start, goal = rng.sample(cells, 2)
        best = shortest_path(maze, start, goal)
        assert len(best) - 1 == brute_force_distance(maze, start, goal)
        paths = candidate_paths(maze, start, goal, rng, max_paths=10)
        assert paths[0] == best and 1 <= len(paths) <= 10
        assert len({tuple(p) for p in paths}) == len(paths)
        for path in paths:
            assert path[0] == start and path[-1] == goal
            assert len(set(path)) == len(path)  # simple
            assert path_success(maze, path, [start, goal])


def test_subgoals_lie_on_the_path_in_order():
    rng = random.Random(1)
    path = [(1, c) for c in range(1, 10)]
    for k in range(2, 10):
        index = draw_subgoals(path, k, rng)
        assert index[0] == 0 and index[-1] == len(path) - 1 and len(index) == k
        assert index == sorted(set(index))
    with pytest.raises(ValueError, match="cannot hold"):
        draw_subgoals(path, 10, rng)
    with pytest.raises(ValueError, match=">= 2"):
        draw_subgoals(path, 1, rng)


def test_split_is_disjoint_by_pair():
    task = MazeTask(rooms=4, num_pairs=400)
    train, validation = task.pairs["train"], task.pairs["validation"]
    assert len(train) == 380 and len(validation) == 20
    assert not set(train) & set(validation)
    assert len(set(train)) == len(train)


def test_flexmdm_layout_freezes_subgoals_between_allowed_regions():
    task = MazeTask(rooms=4, num_pairs=200, k_max=6)
    batch = task.sample_batch(32, torch.Generator().manual_seed(0))
    for row in range(32):
        n = int(batch.lengths[row])
        cells = task.decode(batch.x1[row, :n].tolist())
        assert path_success(task.maze, cells, [cells[0], cells[-1]])
        frozen = batch.frozen[row, :n]
        k = int(frozen.sum())
        assert 2 <= k <= min(6, n) and frozen[0] and frozen[n - 1]
        assert batch.allowed_regions[row].tolist() == [1 <= r < k for r in range(7)]


def test_mdm_layout_is_prompt_sep_path():
    task = MazeTask(rooms=4, num_pairs=200, k_max=6, layout="mdm")
    batch = task.sample_batch(16, torch.Generator().manual_seed(1))
    assert batch.allowed_regions is None
    for row in range(16):
        n = int(batch.lengths[row])
        tokens = batch.x1[row, :n].tolist()
        k = tokens.index(task.sep_id)
        assert batch.frozen[row, : k + 1].all() and not batch.frozen[row, k + 1 :].any()
        path = task.decode_mdm(tokens, k)
        goals = task.decode(tokens[:k])
        assert path_success(task.maze, path, goals)
    canvas, frozen = task.mdm_canvas([[(1, 1), (1, 3)]])
    assert canvas.shape == (1, task.max_length) and frozen[0].tolist()[:4] == [True, True, True, False]
    assert canvas[0, 2] == task.sep_id and bool((canvas[0, 3:] == task.vocab.mask_id).all())


def test_metric_on_hand_made_paths():
    grid = np.zeros((5, 5), dtype=bool)
    grid[1, 1:4] = grid[2, 3] = grid[3, 1:4] = True  # a U: (1,1)-(1,3), down (2,3), (3,3)-(3,1)
    maze = Maze(grid)
    u = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    goals = [(1, 1), (2, 3), (3, 1)]
    assert path_success(maze, u, goals)
    assert not path_success(maze, [(1, 1), (2, 1), (3, 1)], [(1, 1), (3, 1)])  # through a wall
    assert not path_success(maze, [(1, 1), (1, 3), (2, 3)], [(1, 1), (2, 3)])  # a jump
    assert not path_success(maze, u, [(1, 1), (3, 3), (2, 3), (3, 1)])  # subgoals out of order
    assert not path_success(maze, u[:-1], goals)  # misses the end
    assert not path_success(maze, u[1:], [(1, 2), (3, 1)][::-1])  # wrong start
    assert not path_success(maze, [], goals)
    metrics = evaluate_paths(maze, [u, None, u[:-1]], [goals, goals, goals])
    assert metrics["success_rate"] == pytest.approx(1 / 3) and metrics["n"] == 3
    assert metrics["mean_length_ratio"] == pytest.approx(1.0)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="rooms"):
        generate_maze(0, 3, 0)
    with pytest.raises(ValueError, match="layout"):
        MazeTask(layout="ar")
    with pytest.raises(ValueError, match="k_min"):
        MazeTask(k_min=5, k_max=3)
