"""Pictures of generated maze paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flexmdm.tasks.maze.data import Cell, Maze

__all__ = ["render_samples"]

_SUCCESS, _FAILURE, _SUBGOAL = "tab:green", "tab:red", "tab:blue"


def render_samples(
    maze: Maze,
    examples: Sequence[tuple[Sequence[Cell] | None, Sequence[Cell], bool]],
    out_png: str | Path,
    title: str,
    *,
    columns: int = 4,
    labels: Sequence[str] | None = None,
) -> Path:
    """Draw a grid of panels, one per example: walls, the path, its numbered subgoals.

    The path and the panel title are green for a success, red for a failure. Uses the Agg
    canvas directly, so the global matplotlib backend is left alone.

    Args:
        maze: the maze.
        examples: ``(path or None, subgoals g1 … gK, success)`` per panel.
        out_png: where to write the PNG (parent folders are created).
        title: the figure title.
        columns: panels per row.
        labels: a word before each panel's title (e.g. the model).

    Returns:
        ``out_png`` as a Path.
    """
    out_png = Path(out_png)
    columns = max(1, min(columns, len(examples)))
    rows = max(1, -(-len(examples) // columns))
    figure = Figure(figsize=(3 * columns, 3.2 * rows + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    labels = [f"{label} " for label in labels] if labels is not None else [""] * len(examples)
    for ax, (path, subgoals, success), label in zip(axes.flat, examples, labels):
        colour = _SUCCESS if success else _FAILURE
        ax.imshow(~maze.grid, cmap="Greys", vmin=0, vmax=1.4, interpolation="nearest")
        if path:
            ax.plot([c for _, c in path], [r for r, _ in path], color=colour, lw=2, alpha=0.85)
        for number, (r, c) in enumerate(subgoals, start=1):
            ax.scatter([c], [r], s=60, color=_SUBGOAL, zorder=3)
            ax.annotate(str(number), (c, r), color="white", fontsize=6, ha="center", va="center", zorder=4)
        length = len(path) if path else 0
        ax.set_title(f"{label}K={len(subgoals)}, {length} cells: {'success' if success else 'failure'}",
                     fontsize=9, color=colour)
    figure.suptitle(title)
    figure.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    return out_png
