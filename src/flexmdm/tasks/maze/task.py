"""The maze task registered for training (``data: {task: maze, ...}`` in a configuration)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

from flexmdm.constraints import Prompt
from flexmdm.families import Conditioning, layout_family
from flexmdm.tasks.maze.data import (
    Cell,
    Maze,
    MazeDataset,
    build_dataset,
    evaluation_examples,
    split_by_pair,
)
from flexmdm.tasks.maze.encoding import (
    MazeTokens,
    flexmdm_prompt,
    flexmdm_training_batch,
    mdm_decode_path,
    mdm_prompt,
    mdm_training_batch,
)
from flexmdm.tasks.base import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = ["MazeConditioning", "MazeTask"]


@register_task("maze")
@dataclass
class MazeTask(Task):
    """Subgoal-conditioned paths in one fixed maze, in the FlexMDM or the MDM layout.

    Attributes:
        rooms: rooms per side; the maze is ``(2·rooms + 1)`` cells square (Listing 1's m = n).
        maze_seed: seed of the maze, the pairs, the split and the detours.
        num_pairs: start–goal pairs (95% train, 5% held out: half validation, half test).
        max_paths: candidate paths per pair (shortest + detours).
        k_min: fewest subgoals in training.
        k_max: most subgoals in training; K is uniform on ``k_min … k_max``.
        layout: "flexmdm" (frozen subgoals inside the path) or "mdm" (``g1 … gK SEP path PAD``).
        extra_doors: see :func:`flexmdm.tasks.maze.generate_maze` (None: Listing 1's half).
    """

    rooms: int = 5
    maze_seed: int = 0
    num_pairs: int = 2000
    max_paths: int = 10
    k_min: int = 2
    k_max: int = 12
    layout: Literal["flexmdm", "mdm"] = "flexmdm"
    extra_doors: int | None = None

    def __post_init__(self) -> None:
        if self.rooms < 1:
            raise ValueError(f"rooms must be >= 1, got {self.rooms}")
        layout_family(self.layout)  # raises for a layout no generating family trains on
        if not 2 <= self.k_min <= self.k_max:
            raise ValueError(f"k_min and k_max need 2 <= k_min <= k_max, got {self.k_min}, {self.k_max}")

    @cached_property
    def dataset(self) -> MazeDataset:
        side = 2 * self.rooms + 1
        return build_dataset(side, side, self.maze_seed, self.num_pairs, self.max_paths, self.extra_doors)

    @property
    def maze(self) -> Maze:
        return self.dataset.maze

    @cached_property
    def tokens(self) -> MazeTokens:
        return MazeTokens(*self.dataset.maze.shape)

    @property
    def vocab(self) -> Vocab:
        return self.tokens.vocab

    @property
    def sep_id(self) -> int:
        return self.tokens.sep_id

    @property
    def k_choices(self) -> range:
        return range(self.k_min, self.k_max + 1)

    @property
    def max_length(self) -> int:
        """Longest path (FlexMDM), or K_max + 1 + longest path (the MDM canvas)."""
        extra = 0 if layout_family(self.layout).inserts else self.k_max + 1
        return self.dataset.longest_path + extra

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        if layout_family(self.layout).inserts:
            x1, lengths, frozen, allowed = flexmdm_training_batch(
                self.dataset, batch_size, self.k_choices, generator, self.tokens, split=split
            )
            return TrainingBatch(x1, lengths, frozen, allowed)
        canvas, frozen = mdm_training_batch(
            self.dataset, batch_size, self.k_choices, generator, self.tokens, self.max_length, split=split
        )
        return TrainingBatch(canvas, (canvas != self.vocab.pad_id).sum(1), frozen)

    # The methods below serve inference and evaluation (flexmdm.bench.maze).
    @cached_property
    def pairs(self) -> dict[str, list[tuple[Cell, Cell]]]:
        """Start–goal pairs by split: ``train``, and the held-out pairs (the training runs' validation
        split) halved into ``validation`` and ``test``, a pair and its reverse on one side, the halves
        drawn from ``maze_seed``. No training pair, nor its reverse, is in either half."""
        validation, test = split_by_pair(self.dataset.val_pairs, random.Random(f"flexmdm.maze.test:{self.maze_seed}"),
                                         fraction=0.5)
        return {"train": self.dataset.train_pairs, "validation": validation, "test": test}

    def evaluation_set(self, k: int, count: int, seed: int,
                       split: Literal["validation", "test"]) -> list[tuple[list[Cell], list[Cell]]]:
        """Up to ``count`` ``(reference path, subgoals)`` with K subgoals on the pairs of ``split``."""
        if split not in ("validation", "test"):
            raise ValueError(f"split must be 'validation' or 'test', got {split!r}")
        return evaluation_examples(self.dataset, k, count, random.Random(seed * 1000 + k), self.pairs[split])

    def conditioning(self, subgoal_lists: Sequence[Sequence[Cell]]) -> MazeConditioning:
        """Paths through each list of subgoals, for either family (see :class:`MazeConditioning`)."""
        return MazeConditioning(self, [list(goals) for goals in subgoal_lists])

    def flexmdm_prompt(self, subgoal_lists: Sequence[Sequence[Cell]]) -> Prompt:
        return flexmdm_prompt(subgoal_lists, self.tokens)

    def mdm_canvas(self, subgoal_lists: Sequence[Sequence[Cell]]) -> tuple[Tensor, Tensor]:
        return mdm_prompt(subgoal_lists, self.tokens, self.max_length)

    def decode(self, tokens: Sequence[int]) -> list[Cell] | None:
        """Cells of a generated FlexMDM sequence; None if a token is not a cell."""
        try:
            return self.tokens.decode(tokens)
        except ValueError:
            return None

    def decode_mdm(self, tokens: Sequence[int], k: int) -> list[Cell] | None:
        return mdm_decode_path(tokens, k, self.tokens)


@dataclass(frozen=True)
class MazeConditioning(Conditioning):
    """Paths through subgoals g1 … gK: frozen subgoals with insertions between them (FlexMDM), or
    ``g1 … gK SEP`` then the path's MASKs on the canvas (MDM); read back as cells (None: not a path)."""

    task: MazeTask
    subgoals: list[list[Cell]]

    def flexmdm_prompt(self) -> Prompt:
        return self.task.flexmdm_prompt(self.subgoals)

    def mdm_canvas(self) -> tuple[Tensor, Tensor]:
        return self.task.mdm_canvas(self.subgoals)

    def read_flexmdm(self, sequences: list[list[int]]) -> list[list[Cell] | None]:
        return [self.task.decode(sequence) for sequence in sequences]

    def read_mdm(self, sequences: list[list[int]]) -> list[list[Cell] | None]:
        return [self.task.decode_mdm(sequence, len(goals)) for sequence, goals in zip(sequences, self.subgoals)]
