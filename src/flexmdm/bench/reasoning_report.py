"""The reasoning bench's summary, table and figure (:mod:`flexmdm.bench.reasoning`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["format_table", "plot", "summarize"]

COLORS = {"flexmdm": "tab:blue", "mdm": "tab:orange"}
MARKERS = {"confidence_1": "s", "med": "o", "eb": "^", "med_exit": "*"}


def _key(row: dict[str, Any]) -> tuple:
    return row["method"], row["param"], row.get("exit_reduce")


def summarize(results: list[dict[str, Any]], within: float) -> dict[str, Any]:
    """Per model: one token per call, and for MED, MED + exit and EB the decoder chosen on validation.

    The choice (``{method}_within``) is the decoder of that method with the fewest calls on the
    validation problems among those at most ``within`` below one token per call there (None if
    none is); the summary gives its test row and its speed-up over one token per call on test.
    """
    summary = {}
    for model in dict.fromkeys(r["model"] for r in results):
        rows = {split: {_key(r): r for r in results if r["model"] == model and r["split"] == split}
                for split in ("validation", "test")}
        one = {split: rows[split][("confidence_1", 1, None)] for split in rows}
        entry: dict[str, Any] = {"best_test_accuracy": max(r["accuracy"] for r in rows["test"].values()),
                                 "confidence_1": one["test"]}
        for method in ("med", "med_exit", "eb"):
            ok = [key for key, r in rows["validation"].items()
                  if key[0] == method and r["accuracy"] >= one["validation"]["accuracy"] - within]
            if not ok:
                entry[f"{method}_within"] = None
                continue
            choice = min(ok, key=lambda key: rows["validation"][key]["mean_nfe"])
            test = rows["test"][choice]
            entry[f"{method}_within"] = {
                **test, "speedup": one["test"]["mean_nfe"] / test["mean_nfe"],
                "accuracy_drop": one["test"]["accuracy"] - test["accuracy"],
                "validation_accuracy": rows["validation"][choice]["accuracy"]}
        summary[model] = entry
    return summary


def format_row(row: dict[str, Any]) -> str:
    extra = f" {row['exit_reduce']}" if "exit_reduce" in row else ""
    return (f"{row['model']:<8} {row['split']:<10} {row['method']:<13} {str(row['param']) + extra:<10} "
            f"{row['accuracy']:>8.3f} {row['trace_exact']:>6.3f} {row['mean_nfe']:>9.2f} "
            f"{row['mean_reasoning_length']:>8.2f} {row['n']:>5}")


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as text."""
    header = (f"{'model':<8} {'split':<10} {'method':<13} {'param':<10} {'accuracy':>8} {'exact':>6} "
              f"{'mean_nfe':>9} {'len':>8} {'n':>5}")
    return "\n".join([header, *(format_row(r) for r in results)])


def plot(results: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]], out_png: Path) -> None:
    """Left: test accuracy against network calls per decoder. Right: learning curves (one token per call)."""
    fig, (calls, steps) = plt.subplots(1, 2, figsize=(12, 4.5))
    for model, color in COLORS.items():
        for method, marker in MARKERS.items():
            rows = sorted((r for r in results if r["model"] == model and r["method"] == method and r["split"] == "test"),
                          key=lambda r: r["mean_nfe"])
            if rows:
                calls.plot([r["mean_nfe"] for r in rows], [100 * r["accuracy"] for r in rows], marker=marker,
                           color=color, ls="-" if method in ("med", "eb") else "none",
                           ms=9 if marker == "*" else 6, label=f"{model} {method}")
        curve = curves.get(model, [])
        steps.plot([p["step"] for p in curve], [100 * p["accuracy"] for p in curve], "o-", color=color,
                   label=f"{model} accuracy")
        steps.plot([p["step"] for p in curve], [100 * p["trace_exact"] for p in curve], "x--", color=color,
                   label=f"{model} exact trace")
    calls.set(xlabel="mean network calls per problem", ylabel="test accuracy (%)",
              title="Final models: accuracy vs network calls")
    steps.set(xlabel="optimizer steps", ylabel="test problems (%)", title="Learning curves, one token per call")
    for ax in (calls, steps):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
