"""Static pictures of a sampling run (matplotlib, Agg canvas: the global backend is left alone)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, Normalize
from matplotlib.figure import Figure

__all__ = ["plot_lengths_over_time", "plot_maze_reveal"]


def _save(figure: Figure, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=150, bbox_inches="tight")
    return out_png


def plot_lengths_over_time(
    times: Any,
    lengths: Any,
    out_png: str | Path,
    *,
    title: str = "Sequence length during generation",
    max_curves: int = 64,
) -> Path:
    """Length of every sequence of a batch against time (steps), with the batch mean.

    Args:
        times: ``[S]`` times (e.g. from :func:`~flexmdm.viz.trace_io.length_over_time`).
        lengths: ``[S, B]`` lengths.
        out_png: where to write the PNG (parent folders are created).
        title: the figure title.
        max_curves: draw at most this many individual curves (the mean uses all).

    Returns:
        ``out_png`` as a Path.
    """
    times = np.asarray(times, dtype=float)
    lengths = np.asarray(lengths, dtype=float)
    if lengths.ndim == 1:
        lengths = lengths[:, None]
    if lengths.shape[0] != times.shape[0]:
        raise ValueError(f"{times.shape[0]} times for {lengths.shape[0]} rows of lengths")
    figure = Figure(figsize=(6.4, 3.8))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    batch = lengths.shape[1]
    shown = min(batch, max_curves)
    alpha = 0.9 if shown <= 4 else max(0.15, 2.0 / shown ** 0.5)
    colours = colormaps["viridis"](np.linspace(0.1, 0.9, max(shown, 1)))
    for b in range(shown):
        ax.step(times, lengths[:, b], where="post", lw=1.2, color=colours[b], alpha=alpha)
    if batch > 1:
        ax.step(times, lengths.mean(axis=1), where="post", lw=2.4, color="black", label=f"mean of {batch}")
        ax.legend(loc="upper left", frameon=False)
    ax.set_xlim(0.0, max(1.0, float(times.max(initial=1.0))))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time t")
    ax.set_ylabel("length (tokens + masks)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _save(figure, out_png)


def plot_maze_reveal(
    grid: Any,
    cells: Sequence[tuple[int, int]],
    reveal_steps: Sequence[int],
    out_png: str | Path,
    subgoals: Sequence[tuple[int, int]] | None = None,
    *,
    title: str = "Order in which the path was revealed",
) -> Path:
    """A maze path with each cell coloured by the step at which it was revealed.

    Args:
        grid: ``[H, W]`` bool, True for open cells (walls are drawn dark).
        cells: the path's ``(row, col)`` cells in path order.
        reveal_steps: the step at which each cell's token was revealed (same length as ``cells``).
        out_png: where to write the PNG (parent folders are created).
        subgoals: optional ``(row, col)`` subgoals, numbered in order.
        title: the figure title.

    Returns:
        ``out_png`` as a Path.
    """
    grid = np.asarray(grid, dtype=bool)
    if grid.ndim != 2:
        raise ValueError(f"grid must be [H, W], got shape {list(grid.shape)}")
    if len(cells) != len(reveal_steps):
        raise ValueError(f"{len(cells)} cells but {len(reveal_steps)} reveal steps")
    height, width = grid.shape
    scale = 5.5 / max(height, width)
    figure = Figure(figsize=(width * scale + 1.4, height * scale + 0.6))
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.imshow(np.where(grid, 0.97, 0.18), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if cells:
        rows = np.array([r for r, _ in cells])
        cols = np.array([c for _, c in cells])
        steps = np.asarray(reveal_steps, dtype=float)
        low, high = float(steps.min()), float(steps.max())
        distinct = np.unique(steps)
        cmap = colormaps["plasma"]
        if len(distinct) <= 12:  # few steps: one colour each
            edges = np.concatenate([distinct - 0.5, [distinct[-1] + 0.5]])
            norm = BoundaryNorm(edges, cmap.N)
        else:
            norm = Normalize(low, high if high > low else low + 1)
        ax.plot(cols, rows, color="0.55", lw=1.0, zorder=2)
        points = ax.scatter(cols, rows, c=steps, cmap=cmap, norm=norm, marker="s",
                            s=(50 * scale) ** 2, edgecolors="none", zorder=3)
        bar = figure.colorbar(points, ax=ax, fraction=0.046, pad=0.03)
        if len(distinct) <= 12:
            bar.set_ticks(distinct)
        bar.set_label("reveal step")
    for number, (r, c) in enumerate(subgoals or [], start=1):
        ax.scatter([c], [r], s=(26 * scale) ** 2, facecolors="white", edgecolors="black", linewidths=1.5, zorder=4)
        ax.annotate(str(number), (c, r), color="black", fontsize=max(5.0, min(9.0, 14 * scale)),
                    fontweight="bold", ha="center", va="center", zorder=5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return _save(figure, out_png)
