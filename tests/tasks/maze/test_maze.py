"""Maze task: Listing 1 generator, BFS and detoured paths, subgoals, split, layouts, metric, picture."""

import random
from collections import deque

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flexmdm.constraints import allowed_gaps
from flexmdm.interpolant import FlexInterpolant
from flexmdm.schedules import schedule_from_config
from flexmdm.tasks.maze import (
    Maze,
    MazeTask,
    MazeTokens,
    build_dataset,
    candidate_paths,
    draw_subgoals,
    evaluate_paths,
    evaluation_examples,
    flexmdm_example,
    flexmdm_prompt,
    flexmdm_training_batch,
    generate_maze,
    mdm_decode_path,
    mdm_example,
    mdm_prompt,
    mdm_training_batch,
    path_success,
    render_samples,
    shortest_path,
)
from flexmdm.tasks.base import get_task_class

FAST = settings(max_examples=25, deadline=None)


def flood(maze: Maze, start) -> dict:
    """Independent BFS distances from ``start`` over the grid (not the maze's own search)."""
    grid = maze.grid
    distance, queue = {start: 0}, deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < grid.shape[0] and 0 <= nc < grid.shape[1] and grid[nr, nc] and (nr, nc) not in distance:
                distance[(nr, nc)] = distance[(r, c)] + 1
                queue.append((nr, nc))
    return distance


def edges(maze: Maze) -> int:
    return int((maze.grid[1:] & maze.grid[:-1]).sum() + (maze.grid[:, 1:] & maze.grid[:, :-1]).sum())


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(11, 11, seed=3, num_pairs=400)


@pytest.fixture(scope="module")
def tokens():
    return MazeTokens(11, 11)


# ---- the maze ---------------------------------------------------------------------------------
@pytest.mark.parametrize("height,width,seed", [(11, 11, 0), (15, 15, 1), (21, 21, 2), (41, 41, 3), (11, 21, 4)])
def test_mazes_are_connected_seeded_and_keep_global_random_state(height, width, seed):
    state, np_state = random.getstate(), np.random.get_state()
    maze = generate_maze(height, width, seed)
    assert random.getstate() == state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert maze.shape == (height, width) and maze.grid.dtype == bool
    assert not (maze.grid[0].any() or maze.grid[-1].any() or maze.grid[:, 0].any() or maze.grid[:, -1].any())
    assert maze.grid[1::2, 1::2].all()  # every room is open; walls lie on even coordinates
    cells = maze.open_cells()
    assert set(flood(maze, cells[0])) == set(cells)
    assert np.array_equal(generate_maze(height, width, seed).grid, maze.grid)
    assert not np.array_equal(generate_maze(height, width, seed + 1).grid, maze.grid)


@given(seed=st.integers(0, 10**6), rooms=st.integers(1, 8))
@FAST
def test_perfect_maze_is_a_tree_and_extra_doors_open_exactly_that_many_walls(seed, rooms):
    side = 2 * rooms + 1
    perfect = generate_maze(side, side, seed, extra_doors=0)
    assert edges(perfect) == len(perfect.open_cells()) - 1
    assert set(flood(perfect, (1, 1))) == set(perfect.open_cells())
    if rooms >= 2:
        loopy = generate_maze(side, side, seed, extra_doors=2)
        assert (loopy.grid >= perfect.grid).all() and loopy.grid.sum() == perfect.grid.sum() + 2
        assert edges(loopy) > len(loopy.open_cells()) - 1
    default = generate_maze(side, side, seed)
    assert (default.grid >= perfect.grid).all()


def test_invalid_sizes_and_doors_are_rejected():
    for height, width in [(10, 11), (11, 12), (1, 11), (11, -3), (0, 0)]:
        with pytest.raises(ValueError, match="odd integer"):
            generate_maze(height, width, 0)
    with pytest.raises(ValueError, match="extra_doors"):
        generate_maze(11, 11, 0, extra_doors=-1)
    with pytest.raises(ValueError, match="extra_doors"):
        generate_maze(11, 11, 0, extra_doors=10**6)
    with pytest.raises(ValueError, match="2-D"):
        Maze(np.ones(5, dtype=bool))


def test_maze_grid_is_read_only_and_neighbours_are_open():
    maze = generate_maze(11, 11, 0)
    with pytest.raises(ValueError):
        maze.grid[1, 1] = False
    for cell in maze.open_cells():
        for nxt in maze.neighbours(cell):
            assert maze.is_open(nxt) and abs(nxt[0] - cell[0]) + abs(nxt[1] - cell[1]) == 1
    assert not maze.is_open((0, 0)) and not maze.is_open((-1, 3)) and not maze.is_open((11, 3))


# ---- paths ------------------------------------------------------------------------------------
@given(seed=st.integers(0, 10**6), side=st.sampled_from([5, 7, 9, 11, 15]), data=st.data())
@FAST
def test_bfs_paths_are_shortest_and_valid(seed, side, data):
    maze = generate_maze(side, side, seed)
    cells = maze.open_cells()
    start = data.draw(st.sampled_from(cells))
    goal = data.draw(st.sampled_from(cells))
    path = shortest_path(maze, start, goal)
    assert len(path) - 1 == flood(maze, start)[goal]
    assert path[0] == start and path[-1] == goal
    assert path_success(maze, path, [start, goal])


def test_shortest_path_rejects_walls_and_unreachable_goals():
    maze = generate_maze(11, 11, 0)
    with pytest.raises(ValueError, match="not an open cell"):
        shortest_path(maze, (0, 0), (1, 1))
    split = Maze(np.array([[0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=bool))
    with pytest.raises(ValueError, match="not reachable"):
        shortest_path(split, (1, 1), (1, 3))


@given(seed=st.integers(0, 10**6), side=st.sampled_from([9, 11, 15]), max_paths=st.integers(1, 10), data=st.data())
@FAST
def test_detoured_paths_are_valid_simple_distinct_and_bounded(seed, side, max_paths, data):
    maze = generate_maze(side, side, seed)
    cells = maze.open_cells()
    start, goal = data.draw(st.lists(st.sampled_from(cells), min_size=2, max_size=2, unique=True))
    paths = candidate_paths(maze, start, goal, max_paths, random.Random(seed))
    shortest = shortest_path(maze, start, goal)
    assert paths[0] == shortest and 1 <= len(paths) <= max_paths
    assert len({tuple(p) for p in paths}) == len(paths)
    for path in paths:
        assert path[0] == start and path[-1] == goal
        assert len(set(path)) == len(path)
        assert path_success(maze, path, [start, goal])
        assert len(path) - 1 <= 2 * (len(shortest) - 1) + 4


def test_detours_exist_only_with_loops():
    perfect, loopy = generate_maze(15, 15, 5, extra_doors=0), generate_maze(15, 15, 5)
    rng = random.Random(0)
    assert all(len(candidate_paths(perfect, a, b, 10, rng)) == 1 for a, b in [((1, 1), (13, 13)), ((1, 13), (13, 1))])
    assert len(candidate_paths(loopy, (1, 1), (13, 13), 10, rng)) > 1
    first = candidate_paths(loopy, (1, 1), (13, 13), 10, random.Random(7))
    assert candidate_paths(loopy, (1, 1), (13, 13), 10, random.Random(7)) == first
    with pytest.raises(ValueError, match="max_paths"):
        candidate_paths(loopy, (1, 1), (13, 13), 0)


@given(length=st.integers(2, 40), data=st.data())
@FAST
def test_subgoals_lie_on_the_path_in_order(length, data):
    path = [(1, c) for c in range(1, length + 1)]
    k = data.draw(st.integers(2, length))
    goals = draw_subgoals(path, k, random.Random(data.draw(st.integers(0, 1000))))
    assert len(goals) == k == len(set(goals))
    assert goals[0] == path[0] and goals[-1] == path[-1]
    positions = [path.index(g) for g in goals]
    assert positions == sorted(positions)


def test_draw_subgoals_rejects_bad_k():
    path = [(1, c) for c in range(1, 6)]
    with pytest.raises(ValueError, match="cannot hold"):
        draw_subgoals(path, 6, random.Random(0))
    with pytest.raises(ValueError, match=">= 2"):
        draw_subgoals(path, 1, random.Random(0))


# ---- dataset ----------------------------------------------------------------------------------
def test_split_is_disjoint_by_pair_and_about_95_5(dataset):
    train, validation = dataset.train_pairs, dataset.val_pairs
    assert len(train) + len(validation) == 400 and 20 <= len(validation) <= 21
    assert len(set(train)) == len(train) and len(set(validation)) == len(validation)
    unordered = {frozenset(p) for p in train}
    assert not unordered & {frozenset(p) for p in validation}  # reverses stay on one side too
    assert all(a != b for a, b in train + validation)
    again = build_dataset(11, 11, seed=3, num_pairs=400)
    assert again.train_pairs == train and np.array_equal(again.path_cells, dataset.path_cells)
    assert build_dataset(11, 11, seed=4, num_pairs=400).train_pairs != train


def test_task_halves_the_held_out_pairs_into_validation_and_test():
    task = get_task_class("maze")(rooms=5, num_pairs=2000, maze_seed=3)
    pairs = task.pairs
    validation, test = pairs["validation"], pairs["test"]
    assert sorted(validation + test) == sorted(task.dataset.val_pairs) and pairs["train"] == task.dataset.train_pairs
    assert not {frozenset(p) for p in validation} & {frozenset(p) for p in test}  # a pair and its reverse together
    assert not {frozenset(p) for p in pairs["train"]} & {frozenset(p) for p in validation + test}
    assert abs(len(validation) - len(test)) <= 2 and len(test) >= 45
    again = get_task_class("maze")(rooms=5, num_pairs=2000, maze_seed=3).pairs
    assert again == pairs  # deterministic from the maze seed
    other = get_task_class("maze")(rooms=5, num_pairs=2000, maze_seed=4).pairs
    assert {frozenset(p) for p in other["test"]} != {frozenset(p) for p in test}
    for split in ("validation", "test"):
        problems = task.evaluation_set(4, 1000, 0, split)
        assert {(path[0], path[-1]) for path, _ in problems} <= set(pairs[split]) and len(problems) >= 30
        assert all(goals[0] == path[0] and goals[-1] == path[-1] and len(goals) == 4 for path, goals in problems)
    with pytest.raises(ValueError, match="split must be 'validation' or 'test', got 'train'"):
        task.evaluation_set(4, 10, 0, "train")


def test_dataset_paths_are_valid(dataset):
    for pair in dataset.train_pairs[:50] + dataset.val_pairs:
        paths = dataset.paths(pair)
        assert 1 <= len(paths) <= 10 and paths[0] == shortest_path(dataset.maze, *pair)
        assert all(path_success(dataset.maze, p, list(pair)) and len(set(p)) == len(p) for p in paths)
    assert dataset.longest_path == max(len(p) for pair in dataset.pairs for p in dataset.paths(pair))
    with pytest.raises(ValueError, match="ordered start-goal pairs"):
        build_dataset(5, 5, seed=0, num_pairs=100)
    with pytest.raises(ValueError, match="num_pairs"):
        build_dataset(11, 11, seed=0, num_pairs=5)


@pytest.mark.parametrize("k", [2, 6])
def test_draw_paths_is_pair_uniform_then_path_uniform_given_length(k):
    small = build_dataset(9, 9, seed=1, num_pairs=30)
    train = small.split_pair_numbers("train")
    exact = np.zeros(len(small.path_lengths))
    for pair in train:
        first, stop = small.pair_path_offsets[pair], small.pair_path_offsets[pair + 1]
        exact[first:stop] = 1 / (len(train) * (stop - first))
    exact[small.path_lengths < k] = 0
    exact /= exact.sum()
    drawn = small.draw_paths("train", np.full(40_000, k), np.random.default_rng(0))
    assert (small.path_lengths[drawn] >= k).all()
    empirical = np.bincount(drawn, minlength=len(exact)) / len(drawn)
    assert 0.5 * np.abs(empirical - exact).sum() < 0.03


def test_evaluation_examples_come_from_validation_pairs(dataset):
    examples = evaluation_examples(dataset, 4, 10, random.Random(0))
    assert 1 <= len(examples) <= 10
    for path, goals in examples:
        assert (path[0], path[-1]) in dataset.val_pairs and len(goals) == 4
        assert path_success(dataset.maze, path, goals)


# ---- tokens and layouts -----------------------------------------------------------------------
@given(cells=st.lists(st.tuples(st.integers(0, 10), st.integers(0, 10)), max_size=30))
@FAST
def test_encode_decode_round_trip(cells):
    tokens = MazeTokens(11, 11)
    ids = tokens.encode_cells(cells)
    assert all(0 <= i < 121 for i in ids)
    assert tokens.decode(ids) == cells and tokens.decode(torch.tensor(ids, dtype=torch.long)) == cells


def test_vocabulary_and_special_tokens(tokens):
    assert (tokens.vocab.size, tokens.vocab.mask_id, tokens.vocab.pad_id, tokens.sep_id) == (124, 121, 122, 123)
    for special in (121, 122, 123, 124, -1):
        with pytest.raises(ValueError, match="not cells"):
            tokens.decode([5, special])
    with pytest.raises(ValueError, match="outside"):
        tokens.encode_cells([(11, 0)])


def test_flexmdm_example_freezes_exactly_the_subgoals(tokens):
    path = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3)]
    ids, frozen = flexmdm_example(path, [(1, 1), (1, 3), (3, 3)], tokens)
    assert ids == [12, 13, 14, 25, 36] and frozen == [True, False, True, False, True]
    with pytest.raises(ValueError, match="in order"):
        flexmdm_example(path, [(1, 1), (2, 3), (1, 3), (3, 3)], tokens)
    with pytest.raises(ValueError, match="start at g1"):
        flexmdm_example(path, [(1, 2), (3, 3)], tokens)


def test_flexmdm_training_batch_layout(dataset, tokens):
    k_choices = (2, 3, 5)
    generator = torch.Generator().manual_seed(0)
    x1, lengths, frozen, allowed = flexmdm_training_batch(dataset, 64, k_choices, generator, tokens)
    assert x1.shape == frozen.shape and allowed.shape == (64, 6) and lengths.shape == (64,)
    assert x1.dtype == torch.long and frozen.dtype == torch.bool and allowed.dtype == torch.bool
    seen_k = set()
    for row in range(64):
        n = int(lengths[row])
        path = tokens.decode(x1[row, :n])
        assert bool((x1[row, n:] == tokens.vocab.pad_id).all()) and not frozen[row, n:].any()
        assert path_success(dataset.maze, path, [path[0], path[-1]])
        assert (path[0], path[-1]) in set(dataset.train_pairs)
        k = int(frozen[row].sum())
        seen_k.add(k)
        assert k in k_choices and frozen[row, 0] and frozen[row, n - 1]
        assert allowed[row].tolist() == [1 <= r <= k - 1 for r in range(6)]
    assert seen_k == set(k_choices)
    again = flexmdm_training_batch(dataset, 64, k_choices, torch.Generator().manual_seed(0), tokens)
    assert torch.equal(again[0], x1) and torch.equal(again[2], frozen)
    for rng in (np.random.default_rng(1), random.Random(1)):
        assert flexmdm_training_batch(dataset, 4, k_choices, rng, tokens)[0].shape[0] == 4
    with pytest.raises(ValueError, match="no train path"):
        flexmdm_training_batch(dataset, 4, (500,), random.Random(0), tokens)
    with pytest.raises(ValueError, match="k_choices"):
        flexmdm_training_batch(dataset, 4, (1, 2), random.Random(0), tokens)


def test_flexmdm_batch_inserts_only_between_subgoals(dataset, tokens):
    """At t = 0 the state is the subgoals alone and every missing token lies between two of them."""
    x1, lengths, frozen, allowed = flexmdm_training_batch(dataset, 32, (2, 4, 7), random.Random(2), tokens)
    linear = schedule_from_config({"name": "linear"})
    state = FlexInterpolant(linear, linear, tokens.vocab).sample(
        x1, lengths, torch.zeros(32), frozen=frozen, allowed_regions=allowed, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(state.lengths, frozen.sum(1)) and bool(state.frozen.sum(1).eq(state.lengths).all())
    slots = allowed_gaps(state.frozen, state.lengths, allowed)
    for row in range(32):
        k = int(state.lengths[row])
        assert slots[row, : k + 1].tolist() == [0 < i < k for i in range(k + 1)]
        assert int(state.gaps[row].sum()) == int(lengths[row]) - k
        assert int(state.gaps[row, 0]) == 0 and int(state.gaps[row, k]) == 0


def test_flexmdm_prompt_starts_from_subgoals(tokens):
    prompt = flexmdm_prompt([[(1, 1), (1, 3)], [(1, 1), (3, 3), (5, 5)]], tokens)
    assert prompt.tokens.tolist() == [[12, 14, 122], [12, 36, 60]]
    assert prompt.lengths.tolist() == [2, 3]
    assert prompt.allowed_regions.tolist() == [[False, True, False, False], [False, True, True, False]]


def test_mdm_example_and_decoding(tokens):
    path, goals = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3)], [(1, 1), (1, 3), (3, 3)]
    ids, frozen = mdm_example(path, goals, 12, tokens)
    assert ids == [12, 14, 36, 123, 12, 13, 14, 25, 36, 122, 122, 122]
    assert frozen == [True] * 4 + [False] * 8
    assert mdm_decode_path(ids, 3, tokens) == path
    assert mdm_decode_path(torch.tensor(ids), 3, tokens) == path
    with pytest.raises(ValueError, match="canvas"):
        mdm_example(path, goals, 8, tokens)
    assert mdm_decode_path(ids[:5] + [121] + ids[6:], 3, tokens) is None  # a MASK left inside
    assert mdm_decode_path(ids[:5] + [122] + ids[6:], 3, tokens) is None  # PAD before the end
    assert mdm_decode_path(ids[:5] + [123] + ids[6:], 3, tokens) is None  # a second SEP
    assert mdm_decode_path(ids, 2, tokens) is None  # no SEP after K subgoals
    assert mdm_decode_path(ids[:4] + [122] * 8, 3, tokens) == []


def test_mdm_training_batch_layout(dataset, tokens):
    width = dataset.longest_path + 8
    canvas, frozen = mdm_training_batch(dataset, 32, (2, 4, 7), torch.Generator().manual_seed(3), tokens, width)
    assert canvas.shape == frozen.shape == (32, width)
    for row in canvas.tolist():
        k = row.index(tokens.sep_id)
        path = mdm_decode_path(row, k, tokens)
        goals = tokens.decode(row[:k])
        assert k in (2, 4, 7) and path_success(dataset.maze, path, goals)
        assert row == mdm_example(path, goals, width, tokens)[0]
    sep = (canvas == tokens.sep_id).long().argmax(1)
    assert torch.equal(frozen, torch.arange(width)[None, :] <= sep[:, None])
    with pytest.raises(ValueError, match="canvas"):
        mdm_training_batch(dataset, 32, (7,), random.Random(0), tokens, 8)


def test_mdm_prompt_canvas(tokens):
    canvas, frozen = mdm_prompt([[(1, 1), (1, 3)], [(1, 1), (3, 3), (5, 5)]], tokens, 6)
    assert canvas.tolist() == [[12, 14, 123, 121, 121, 121], [12, 36, 60, 123, 121, 121]]
    assert frozen.sum(1).tolist() == [3, 4] and frozen[:, 0].all()
    with pytest.raises(ValueError, match="no room"):
        mdm_prompt([[(1, 1), (3, 3), (5, 5)]], tokens, 4)


# ---- metric -----------------------------------------------------------------------------------
U_GRID = np.zeros((5, 5), dtype=bool)
U_GRID[1, 1:4] = U_GRID[2, 3] = U_GRID[3, 1:4] = True  # a U: (1,1)-(1,3), down (2,3), (3,3)-(3,1)
U_PATH = [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
U_GOALS = [(1, 1), (2, 3), (3, 1)]


@pytest.mark.parametrize(
    "path,goals,expected",
    [
        (U_PATH, U_GOALS, True),
        ([list(c) for c in U_PATH], U_GOALS, True),  # cells as lists are fine
        ([(1, 1), (2, 1), (3, 1)], [(1, 1), (3, 1)], False),  # through a wall
        ([(1, 1), (1, 3), (2, 3)], [(1, 1), (2, 3)], False),  # a jump
        ([(1, 1), (1, 2), (1, 2), (1, 3)], [(1, 1), (1, 3)], False),  # standing still is no step
        (U_PATH, [(1, 1), (3, 3), (2, 3), (3, 1)], False),  # subgoals out of order
        (U_PATH[:-1], U_GOALS, False),  # misses the end
        (U_PATH[1:], U_GOALS, False),  # wrong start
        ([(1, 0), *U_PATH], [(1, 0), (3, 1)], False),  # starts in the border wall
        ([], U_GOALS, False),
        (None, U_GOALS, False),
    ],
)
def test_metric_on_hand_made_paths(path, goals, expected):
    assert path_success(Maze(U_GRID), path, goals) is expected


def test_evaluate_paths_rates_and_lengths():
    grid = np.zeros((5, 5), dtype=bool)
    grid[1:4, 1:4] = True  # a 3 x 3 room: loops allow longer valid paths
    maze = Maze(grid)
    goals = [(1, 1), (1, 3)]
    straight = [(1, 1), (1, 2), (1, 3)]
    detour = [(1, 1), (2, 1), (2, 2), (1, 2), (1, 3)]
    metrics = evaluate_paths(maze, [straight, detour, None, [(1, 1)]], [goals] * 4)
    assert metrics["n"] == 4 and metrics["success_rate"] == pytest.approx(0.5)
    assert metrics["mean_length_ratio"] == pytest.approx((1 + 5 / 3) / 2)
    empty = evaluate_paths(maze, [None], [goals])
    assert empty["success_rate"] == 0 and np.isnan(empty["mean_length_ratio"])


# ---- picture and training registration --------------------------------------------------------
def test_render_writes_png(tmp_path, dataset):
    path = dataset.paths(dataset.val_pairs[0])[0]
    goals = [path[0], path[-1]]
    examples = [(path, goals, True), (path[:-1], goals, False), (None, goals, False)]
    out = render_samples(dataset.maze, examples, tmp_path / "pics" / "maze.png", "samples")
    assert out == tmp_path / "pics" / "maze.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


@pytest.mark.parametrize("layout", ["flexmdm", "mdm"])
def test_registered_task_batches(layout):
    task = get_task_class("maze")(rooms=4, num_pairs=200, k_max=6, layout=layout)
    assert isinstance(task, MazeTask)
    batch = task.sample_batch(16, torch.Generator().manual_seed(0))
    assert batch.x1.shape[1] <= task.max_length and int(batch.lengths.max()) <= task.max_length
    assert bool((batch.x1 < task.vocab.size).all()) and batch.frozen.any(1).all()
    assert (batch.allowed_regions is None) == (layout == "mdm")
    with pytest.raises(ValueError, match="layout"):
        MazeTask(layout="ar")
    with pytest.raises(ValueError, match="k_min"):
        MazeTask(k_min=5, k_max=3)
