"""Maze planning through subgoals (paper §5.1.2, appendix F.2, Listing 1).

One maze is fixed and never shown to the model. Given subgoals g1 … gK, the model must output a
path of cells that starts at g1, visits every subgoal in order, ends at gK, steps between
4-neighbours only and never enters a wall.

* :mod:`~flexmdm.tasks.maze.data` — the Listing 1 maze, BFS shortest paths and detours,
  subgoals, the dataset split 95/5 by start–goal pair (:class:`MazeTask` halves the 5% into
  validation and test).
* :mod:`~flexmdm.tasks.maze.encoding` — one token per cell, the FlexMDM layout (frozen
  subgoals, insertions between them) and the MDM layout (``g1 … gK SEP path PAD …``).
* :mod:`~flexmdm.tasks.maze.metric` — the success criterion and length against the shortest path.
* :mod:`~flexmdm.tasks.maze.render` — PNG panels of generated paths.
* :mod:`~flexmdm.tasks.maze.task` — :class:`MazeTask`, registered as ``maze`` for training.
"""

from flexmdm.tasks.maze.data import (
    Cell,
    Maze,
    MazeDataset,
    build_dataset,
    candidate_paths,
    draw_subgoals,
    evaluation_examples,
    generate_maze,
    shortest_path,
)
from flexmdm.tasks.maze.encoding import (
    MazeTokens,
    flexmdm_example,
    flexmdm_prompt,
    flexmdm_training_batch,
    mdm_decode_path,
    mdm_example,
    mdm_prompt,
    mdm_training_batch,
)
from flexmdm.tasks.maze.metric import (
    evaluate_paths,
    path_success,
    shortest_length_through,
)
from flexmdm.tasks.maze.render import render_samples
from flexmdm.tasks.maze.task import MazeTask

__all__ = [
    "Cell",
    "Maze",
    "MazeDataset",
    "MazeTask",
    "MazeTokens",
    "build_dataset",
    "candidate_paths",
    "draw_subgoals",
    "evaluate_paths",
    "evaluation_examples",
    "flexmdm_example",
    "flexmdm_prompt",
    "flexmdm_training_batch",
    "generate_maze",
    "mdm_decode_path",
    "mdm_example",
    "mdm_prompt",
    "mdm_training_batch",
    "path_success",
    "render_samples",
    "shortest_length_through",
    "shortest_path",
]
