"""The benchmarks' figures, drawn from their result rows (matplotlib, no display needed).

Shared pieces: :func:`save_figure` and :func:`length_histograms` (length distributions on one
axis, as the length and retrofit benchmarks compare them with the data's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from flexmdm.families import family

__all__ = ["accuracy_against_steps", "infill_bars", "length_figures", "retrofit_figure", "sampler_figure", "save_figure"]


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Lay out, write and close ``fig``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def length_histograms(ax, series: dict[str, np.ndarray], max_length: int, colors: list[str | None] | None = None,
                      reference: np.ndarray | None = None) -> None:
    """One step histogram of lengths 0..``max_length`` per labelled series (a filled grey ``reference``)."""
    bins = np.arange(max_length + 2) - 0.5
    if reference is not None:
        ax.hist(reference, bins=bins, density=True, color="0.75", label="held-out data")
    for (label, lengths), color in zip(series.items(), colors or [None] * len(series)):
        ax.hist(lengths, bins=bins, density=True, histtype="step", lw=1.6, color=color, label=label)
    ax.set_xlabel("length (tokens)")


def infill_bars(rows: list[dict[str, Any]], out_png: Path) -> Path:
    """Exact match, parse rate and length error of each ``(model, setting)`` row, with error bars where a
    row has ``<metric>_stderr`` (a summary over seeds)."""
    metrics = (("exact_match", "exact match"), ("parse_rate", "ast.parse rate"),
               ("length_abs_error", "|middle length error| (tokens)"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    labels = [f"{r['model']}\n{r['setting']}" for r in rows]
    colors = ["tab:blue", "tab:orange", "tab:red"][:len(rows)]
    for ax, (key, title) in zip(axes, metrics):
        ax.bar(range(len(rows)), [r[key] for r in rows], yerr=[r.get(f"{key}_stderr") or 0.0 for r in rows],
               capsize=4, color=colors)
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"Infilling held-out standard-library functions (n = {rows[0]['n']:g})")
    return save_figure(fig, out_png)


def accuracy_against_steps(rows: list[dict[str, Any]], out_png: Path, title: str) -> Path:
    """Accuracy (left) and mean network calls (right) against sampling steps, a line per ``arm``."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for arm in dict.fromkeys(r["arm"] for r in rows):
        points = sorted((r["steps"], r["accuracy"], r["mean_nfe"]) for r in rows if r["arm"] == arm)
        steps, accuracy, calls = zip(*points)
        axes[0].plot(steps, accuracy, marker="o", label=family(arm).label)
        axes[1].plot(steps, calls, marker="o", label=family(arm).label)
    for ax, label in zip(axes, ("accuracy", "mean network calls")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set(xlabel="sampling steps", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return save_figure(fig, out_png)


def length_figures(reference: np.ndarray, lengths: dict[tuple[str, str], np.ndarray], rows: list[dict[str, Any]],
                   data_ppl: float | None, max_length: int, histogram_png: Path, perplexity_png: Path) -> None:
    """Length histograms of each model at each budget (``lengths[model, budget]``), and each model's
    generative perplexity ± standard error at each budget (``rows``: ``model``, ``budget``, ``gen_ppl``,
    ``gen_ppl_stderr``)."""
    kinds = list(dict.fromkeys(kind for kind, _ in lengths))
    budgets = list(dict.fromkeys(budget for _, budget in lengths))
    colors = ["tab:blue", "tab:red"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.6 * len(budgets), 3.2), squeeze=False, sharey=True)
    for ax, budget in zip(axes[0], budgets):
        length_histograms(ax, {family(kind).label: lengths[kind, budget] for kind in kinds}, max_length, colors,
                          reference)
        ax.set_title(budget.replace("_", " "), fontsize=10)
    axes[0][0].set_ylabel("fraction of samples")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Length distribution of generated paragraphs vs held-out test data")
    save_figure(fig, histogram_png)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for offset, (kind, color) in enumerate(zip(kinds, colors)):
        points = [(i + 0.1 * (offset - 0.5), row["gen_ppl"], row["gen_ppl_stderr"] or 0.0)
                  for i, budget in enumerate(budgets) for row in rows if (row["model"], row["budget"]) == (kind, budget)]
        ax.errorbar(*zip(*points), fmt="o", capsize=3, color=color, label=family(kind).label)
    if data_ppl is not None:
        ax.axhline(data_ppl, color="0.4", ls="--", label="held-out test data")
    ax.set_xticks(range(len(budgets)), [budget.replace("_", " ") for budget in budgets])
    ax.set_xlim(-0.5, len(budgets) - 0.5)
    ax.set_ylabel("generative perplexity (reference LM)")
    ax.legend(fontsize=8)
    save_figure(fig, perplexity_png)


def retrofit_figure(curves: dict[str, list[tuple[int, float]]], target: float, reached: int | None,
                    histograms: dict[str, np.ndarray], max_length: int, out_png: Path) -> Path:
    """Validation-loss curves (retrofit vs scratch) beside the sample-length histograms."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, curve in curves.items():
        left.plot(*zip(*curve), marker=".", label=name)
    left.axhline(target, color="grey", ls="--", lw=1, label=f"scratch final {target:.3f}")
    if reached is not None:
        left.axvline(reached, color="tab:green", ls=":", lw=1, label=f"retrofit reaches it at step {reached}")
    left.set_xlabel("optimizer step")
    left.set_ylabel("validation loss (FlexMDM, per token)")
    left.set_title("Validation loss: retrofitted MDM vs FlexMDM from scratch")
    left.set_ylim(top=min(max(loss for c in curves.values() for _, loss in c), 3 * target))
    left.legend()
    length_histograms(right, histograms, max_length)
    right.set_ylabel("frequency")
    right.set_title("Sample lengths vs data")
    right.legend()
    return save_figure(fig, out_png)


SAMPLER_PANELS = (("toy", "tv", "total variation"), ("brackets", "invalid_rate", "invalid rate"),
                  ("anbn", "invalid_rate", "invalid rate"), ("reasoning", "trace_exact", "fully correct traces"),
                  ("maze", "accuracy", "valid paths"))


def sampler_figure(rows: list[dict[str, Any]], samplers: list[str], out_png: Path) -> Path:
    """One panel per oracle: its headline metric against mean network calls, a line per sampler."""
    fig, axes = plt.subplots(1, len(SAMPLER_PANELS), figsize=(17, 4.2))
    for ax, (oracle, key, label) in zip(axes, SAMPLER_PANELS):
        for name in samplers:
            points = sorted((r["mean_nfe"], r[key]) for r in rows if r["oracle"] == oracle and r["sampler"] == name
                            and r[key] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, lw=1.2, label=name)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="mean network calls (log scale)", ylabel=label, title=oracle)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    fig.suptitle("FlexMDM samplers driven by exact oracles (no network)")
    fig.subplots_adjust(wspace=0.3)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out_png
