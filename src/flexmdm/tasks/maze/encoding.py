"""Tokens and training layouts of the maze task.

One token per cell, ``row · W + col``; then MASK, PAD and SEP. Two layouts of a path with
subgoals g1 … gK:

* **FlexMDM**: the path itself; the subgoal tokens are frozen (present and clean from t = 0)
  and insertions are allowed only strictly between consecutive subgoals, i.e. in regions
  1 … K−1 (:mod:`flexmdm.constraints`); inference starts from g1 … gK.
* **MDM**: a fixed canvas ``g1 … gK SEP path PAD …``; the prompt ``g1 … gK SEP`` is frozen, the
  path and the PADs after it are the targets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from flexmdm.constraints import Prompt, pad_sequences
from flexmdm.tasks.maze.data import Cell, MazeDataset
from flexmdm.vocab import Vocab

__all__ = [
    "MazeTokens",
    "flexmdm_example",
    "flexmdm_prompt",
    "flexmdm_training_batch",
    "mdm_decode_path",
    "mdm_example",
    "mdm_prompt",
    "mdm_training_batch",
]

RandomSource = np.random.Generator | torch.Generator | random.Random


@dataclass(frozen=True)
class MazeTokens:
    """Token ids of an ``H × W`` maze: cells ``0 … H·W−1``, then MASK, PAD, SEP.

    Attributes:
        height: maze rows.
        width: maze columns.
    """

    height: int
    width: int

    @property
    def num_cells(self) -> int:
        return self.height * self.width

    @cached_property
    def vocab(self) -> Vocab:
        """``Vocab(H·W + 3, mask_id=H·W, pad_id=H·W + 1)``."""
        return Vocab(size=self.num_cells + 3, mask_id=self.num_cells, pad_id=self.num_cells + 1)

    @property
    def sep_id(self) -> int:
        """The separator between the MDM prompt and the path, ``H·W + 2``."""
        return self.num_cells + 2

    def encode_cells(self, cells: Sequence[Cell]) -> list[int]:
        """Token ids of cells.

        Raises:
            ValueError: a cell lies outside the grid.
        """
        out = []
        for r, c in cells:
            if not (0 <= r < self.height and 0 <= c < self.width):
                raise ValueError(f"cell {(r, c)} lies outside the {self.height} x {self.width} grid")
            out.append(int(r) * self.width + int(c))
        return out

    def decode(self, tokens: Sequence[int] | Tensor) -> list[Cell]:
        """Cells of token ids.

        Raises:
            ValueError: a token is not a cell (MASK, PAD, SEP or out of range).
        """
        ids = tokens.tolist() if isinstance(tokens, Tensor) else list(tokens)
        bad = [t for t in ids if not 0 <= t < self.num_cells]
        if bad:
            raise ValueError(f"tokens {bad[:5]} are not cells")
        return [divmod(int(t), self.width) for t in ids]


def _subgoal_positions(path: Sequence[Cell], subgoals: Sequence[Cell]) -> list[int]:
    """Where g1 … gK sit on the path: g1 first, gK last, the others matched in order.

    Raises:
        ValueError: fewer than two subgoals, or they are not on the path in order.
    """
    path = [tuple(c) for c in path]
    goals = [tuple(g) for g in subgoals]
    if len(goals) < 2:
        raise ValueError(f"need at least a start and a goal, got {len(goals)} subgoals")
    if not path or path[0] != goals[0] or path[-1] != goals[-1] or len(path) < len(goals):
        raise ValueError("the path must start at g1, end at gK and hold all K subgoals")
    positions, cursor = [0], 1
    for goal in goals[1:-1]:
        while cursor < len(path) - 1 and path[cursor] != goal:
            cursor += 1
        if cursor >= len(path) - 1:
            raise ValueError(f"subgoal {goal} is not on the path in order")
        positions.append(cursor)
        cursor += 1
    return positions + [len(path) - 1]


def flexmdm_example(path: Sequence[Cell], subgoals: Sequence[Cell], tokens: MazeTokens) -> tuple[list[int], list[bool]]:
    """The FlexMDM layout of one path: its tokens, frozen exactly at the subgoals.

    Args:
        path: cells of the path (``L`` of them).
        subgoals: g1 … gK, on the path in order, g1 its first and gK its last cell.
        tokens: the maze's token ids.

    Returns:
        ``(ids [L], frozen [L])``; insertions belong in regions 1 … K−1.

    Raises:
        ValueError: the subgoals do not fit the path.
    """
    frozen = [False] * len(path)
    for position in _subgoal_positions(path, subgoals):
        frozen[position] = True
    return tokens.encode_cells(path), frozen


def _numpy_rng(rng: RandomSource) -> np.random.Generator:
    """A numpy generator drawn from (and advancing) any supported random source."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, torch.Generator):
        return np.random.default_rng(int(torch.randint(2**62, (), generator=rng)))
    if isinstance(rng, random.Random):
        return np.random.default_rng(rng.getrandbits(62))
    raise TypeError(f"expected a numpy, torch or random generator, got {type(rng).__name__}")


def _flexmdm_arrays(
    dataset: MazeDataset, batch_size: int, k_choices: Sequence[int], rng: RandomSource, pad_id: int, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x1 [B, L], lengths [B], frozen [B, L], ks [B])`` as numpy arrays."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    choices = np.asarray(list(k_choices), dtype=np.int64)
    if choices.size == 0 or choices.min() < 2:
        raise ValueError(f"k_choices must be a non-empty set of integers >= 2, got {list(k_choices)}")
    generator = _numpy_rng(rng)
    ks = generator.choice(choices, size=batch_size)
    paths = dataset.draw_paths(split, ks, generator)
    starts, lengths = dataset.path_offsets[paths], dataset.path_lengths[paths]
    position = np.arange(lengths.max())[None, :]
    inside = position < lengths[:, None]
    x1 = np.where(inside, dataset.path_cells[np.where(inside, starts[:, None] + position, 0)], pad_id)
    # K−2 distinct interior positions per row: the K−2 smallest of i.i.d. uniform keys.
    interior = (position >= 1) & (position < lengths[:, None] - 1)
    keys = np.where(interior, generator.random(x1.shape), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    frozen = (interior & (rank < (ks - 2)[:, None])) | (position == 0) | (position == lengths[:, None] - 1)
    return x1, lengths, frozen, ks


def flexmdm_training_batch(
    dataset: MazeDataset,
    batch_size: int,
    k_choices: Sequence[int],
    rng: RandomSource,
    tokens: MazeTokens,
    *,
    split: str = "train",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A FlexMDM training batch: paths with frozen subgoals.

    Per row: K uniform from ``k_choices``, a path (:meth:`MazeDataset.draw_paths`: pair
    uniform, path uniform within the pair, conditioned on holding at least K cells) and K
    subgoals on it (start, goal and K−2 interior cells uniformly without replacement).

    Args:
        dataset: pairs and paths.
        batch_size: B.
        k_choices: subgoal counts to draw from (each >= 2).
        rng: numpy, torch or :mod:`random` generator (advanced, never the global state).
        tokens: the maze's token ids.
        split: ``"train"`` or ``"validation"``.

    Returns:
        ``x1 [B, L]`` long (PAD after each path), ``lengths [B]`` long, ``frozen [B, L]`` bool
        (True exactly at the subgoals), ``allowed_regions [B, max(k_choices) + 1]`` bool (True
        at regions 1 … K−1).

    Raises:
        ValueError: a bad argument, or no path of the split is long enough for a drawn K.
    """
    x1, lengths, frozen, ks = _flexmdm_arrays(dataset, batch_size, k_choices, rng, tokens.vocab.pad_id, split)
    regions = np.arange(max(k_choices) + 1)[None, :]
    allowed = (regions >= 1) & (regions < ks[:, None])
    return torch.from_numpy(x1), torch.from_numpy(lengths), torch.from_numpy(frozen), torch.from_numpy(allowed)


def flexmdm_prompt(subgoal_lists: Sequence[Sequence[Cell]], tokens: MazeTokens) -> Prompt:
    """Where FlexMDM inference starts: the frozen subgoals, insertions only between them.

    Args:
        subgoal_lists: B lists g1 … gK (K >= 2, may differ per row).
        tokens: the maze's token ids.
    """
    return Prompt.subgoals([tokens.encode_cells(goals) for goals in subgoal_lists], tokens.vocab.pad_id)


def mdm_example(
    path: Sequence[Cell], subgoals: Sequence[Cell], canvas_length: int, tokens: MazeTokens
) -> tuple[list[int], list[bool]]:
    """The MDM canvas of one path: ``g1 … gK SEP path PAD …``, the prompt and SEP frozen.

    Returns:
        ``(ids [canvas_length], frozen [canvas_length])``.

    Raises:
        ValueError: the subgoals do not fit the path, or ``K + 1 + len(path) > canvas_length``.
    """
    _subgoal_positions(path, subgoals)
    used = len(subgoals) + 1 + len(path)
    if used > canvas_length:
        raise ValueError(
            f"{len(subgoals)} subgoals, SEP and a {len(path)}-cell path exceed a canvas of {canvas_length}"
        )
    prompt = tokens.encode_cells(subgoals) + [tokens.sep_id]
    ids = prompt + tokens.encode_cells(path) + [tokens.vocab.pad_id] * (canvas_length - used)
    return ids, [True] * len(prompt) + [False] * (canvas_length - len(prompt))


def mdm_training_batch(
    dataset: MazeDataset,
    batch_size: int,
    k_choices: Sequence[int],
    rng: RandomSource,
    tokens: MazeTokens,
    canvas_length: int,
    *,
    split: str = "train",
) -> tuple[Tensor, Tensor]:
    """An MDM training batch: ``g1 … gK SEP path PAD …`` canvases.

    Rows are drawn as in :func:`flexmdm_training_batch` (same distribution).

    Returns:
        ``canvas [B, canvas_length]`` long and ``frozen [B, canvas_length]`` bool (True on
        ``g1 … gK SEP``; PAD is a target, not frozen).

    Raises:
        ValueError: a bad argument, or a drawn row does not fit the canvas.
    """
    x1, lengths, frozen, ks = _flexmdm_arrays(dataset, batch_size, k_choices, rng, tokens.vocab.pad_id, split)
    if int((ks + 1 + lengths).max()) > canvas_length:
        raise ValueError(f"a row of {int((ks + 1 + lengths).max())} tokens exceeds the canvas of {canvas_length}")
    position = np.arange(canvas_length)[None, :]
    goal_order = np.argsort(~frozen, axis=1, kind="stable")  # subgoal positions first, in order
    goal_tokens = np.take_along_axis(x1, goal_order, axis=1)
    k, n = ks[:, None], lengths[:, None]
    width = x1.shape[1]
    canvas = np.full((batch_size, canvas_length), tokens.vocab.pad_id, dtype=np.int64)
    canvas = np.where(position < k, goal_tokens[:, np.minimum(position[0], width - 1)], canvas)
    canvas = np.where(position == k, tokens.sep_id, canvas)
    path_part = (position > k) & (position <= k + n)
    path_index = np.clip(position - k - 1, 0, width - 1)
    canvas = np.where(path_part, np.take_along_axis(x1, path_index, axis=1), canvas)
    return torch.from_numpy(canvas), torch.from_numpy(position <= k)


def mdm_prompt(
    subgoal_lists: Sequence[Sequence[Cell]], tokens: MazeTokens, canvas_length: int
) -> tuple[Tensor, Tensor]:
    """Where MDM inference starts: ``g1 … gK SEP MASK …`` canvases with the prompt frozen.

    Returns:
        ``canvas [B, canvas_length]`` long, ``frozen [B, canvas_length]`` bool.

    Raises:
        ValueError: a prompt (K + 1 tokens) does not leave room on the canvas.
    """
    prompts = [tokens.encode_cells(goals) + [tokens.sep_id] for goals in subgoal_lists]
    if any(len(p) >= canvas_length for p in prompts):
        longest = max(len(p) for p in prompts)
        raise ValueError(f"a prompt of {longest} tokens leaves no room on a canvas of {canvas_length}")
    canvas, lengths = pad_sequences(prompts, tokens.vocab.mask_id)
    filler = canvas.new_full((len(prompts), canvas_length - canvas.shape[1]), tokens.vocab.mask_id)
    canvas = torch.cat([canvas, filler], dim=1)
    return canvas, torch.arange(canvas_length)[None, :] < lengths[:, None]


def mdm_decode_path(canvas_row: Sequence[int] | Tensor, k: int, tokens: MazeTokens) -> list[Cell] | None:
    """The path of a generated MDM canvas: what follows ``g1 … gK SEP``, trailing PADs dropped.

    Args:
        canvas_row: ``[L]`` token ids of one canvas.
        k: number of subgoals K.
        tokens: the maze's token ids.

    Returns:
        The cells, or None when malformed: no SEP at position K, or any non-cell token (MASK,
        SEP, a PAD followed by more tokens) inside the path.
    """
    ids = canvas_row.tolist() if isinstance(canvas_row, Tensor) else list(canvas_row)
    if len(ids) <= k or ids[k] != tokens.sep_id:
        return None
    body = ids[k + 1 :]
    while body and body[-1] == tokens.vocab.pad_id:
        body.pop()
    try:
        return tokens.decode(body)
    except ValueError:
        return None
