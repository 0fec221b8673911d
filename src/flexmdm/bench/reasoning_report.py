"""The reasoning bench's decoders, parallel-decoding summary, claims, table and figure
(:mod:`flexmdm.bench.reasoning`)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from flexmdm.bench.seeds import mean_stderr, plus_minus
from flexmdm.bench.skeleton import Column
from flexmdm.sampling import ConfidenceThreshold, EntropyBounded, EntropySum
from flexmdm.tasks.reasoning.inference import AnswerEntropyExit

__all__ = ["ONE", "TABLE", "claims", "decoding_methods", "parallel_tuning", "plot", "summarize"]

ONE = ("confidence_1", 1, None)
"""The key of one token per call (no top probability reaches 2)."""
METHODS = ("med", "med_exit", "eb")
COLORS = {"flexmdm": "tab:blue", "mdm": "tab:orange"}
MARKERS = {"confidence_1": "s", "med": "o", "eb": "^", "med_exit": "*"}


def decoding_methods(settings, template) -> list[tuple[str, Any, Any, Any, dict]]:
    """``(method, param, rule, early_exit, extra row fields)`` of every decoder: one token per call, MED
    (entropy below λ), EB (entropy budget γ), MED with early exit on the answer's entropy; the same for
    both models (``settings``: a :class:`~flexmdm.bench.reasoning.ReasoningBenchSettings`)."""
    out = [(*ONE[:2], ConfidenceThreshold(threshold=2.0), None, {})]
    out += [("med", lam, EntropyBounded(lam), None, {}) for lam in settings.med_thresholds]
    out += [("eb", gamma, EntropySum(gamma), None, {}) for gamma in settings.eb_budgets]
    for lam in settings.exit_med_thresholds:
        for reduce in settings.exit_reduces:
            criterion = AnswerEntropyExit.for_template(template, threshold=settings.exit_threshold, reduce=reduce)
            out.append(("med_exit", lam, EntropyBounded(lam), criterion,
                        {"exit_threshold": settings.exit_threshold, "exit_reduce": reduce}))
    return out


def parallel_tuning(decoders: list[tuple], within: float, seeds: list[int]) -> dict[str, Any]:
    """The record's account of the parallel-decoding choice (:func:`summarize`): the decoders tried
    (``decoders``: :func:`decoding_methods`), on which split, budget and seeds, by what criterion."""
    return {"split": "validation", "budget": "plateau", "seeds": seeds,
            "trials": [{"method": method, "param": param, **extra} for method, param, _, _, extra in decoders],
            "criterion": f"per model and method, the fewest validation calls (mean over seeds) within {within} "
                         "of one token per call's validation accuracy; the same grid for both models"}


def _key(row: dict[str, Any]) -> tuple:
    return row["method"], row["param"], row.get("exit_reduce")


def summarize(rows: list[dict[str, Any]], within: float) -> dict[str, Any]:
    """Per model: one token per call on test, and for MED, MED + exit and EB the decoder chosen on validation.

    ``rows`` hold each seed's decoder rows (``seed``, ``model``, ``split``, ``method``, ``param``,
    ``accuracy``, ``mean_nfe``, …). The choice (``{method}_within``) is the decoder of that method with
    the fewest calls on validation (mean over seeds) among those whose validation accuracy is at most
    ``within`` below one token per call's (None if none is); its test accuracy, calls, ``speedup`` (one
    token per call's calls / its calls) and ``accuracy_drop`` are computed per seed on test and given
    as mean and ``_stderr`` over seeds. No test row takes part in a choice.
    """
    summary = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        by_split = {split: [r for r in rows if r["model"] == model and r["split"] == split]
                    for split in ("validation", "test")}
        validation = {}
        for row in by_split["validation"]:
            validation.setdefault(_key(row), []).append(row)
        mean = {key: {m: statistics.fmean(r[m] for r in group) for m in ("accuracy", "mean_nfe")}
                for key, group in validation.items()}
        test = {(_key(r), r["seed"]): r for r in by_split["test"]}
        seeds = list(dict.fromkeys(r["seed"] for r in by_split["test"]))
        entry: dict[str, Any] = {"confidence_1": _over_seeds(ONE, seeds, test)}
        for method in METHODS:
            ok = [key for key in mean if key[0] == method
                  and mean[key]["accuracy"] >= mean[ONE]["accuracy"] - within]
            choice = min(ok, key=lambda key: mean[key]["mean_nfe"]) if ok else None
            entry[f"{method}_within"] = None if choice is None else {
                "validation_accuracy": mean[choice]["accuracy"], **_over_seeds(choice, seeds, test)}
        summary[model] = entry
    return summary


def _over_seeds(key: tuple, seeds: list[int], test: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """Decoder ``key``'s test rows (``test[key, seed]``) over ``seeds``: mean and stderr of accuracy,
    exact traces, calls, and speed-up and accuracy drop against one token per call."""
    per_seed = [(test[key, s], test[ONE, s]) for s in seeds]
    values = {"accuracy": [r["accuracy"] for r, _ in per_seed], "mean_nfe": [r["mean_nfe"] for r, _ in per_seed],
              "trace_exact": [r["trace_exact"] for r, _ in per_seed],
              "speedup": [one["mean_nfe"] / r["mean_nfe"] for r, one in per_seed],
              "accuracy_drop": [one["accuracy"] - r["accuracy"] for r, one in per_seed]}
    out: dict[str, Any] = {"method": key[0], "param": key[1], "exit_reduce": key[2], "split": "test", "seeds": seeds}
    for name, series in values.items():
        out[name], out[f"{name}_stderr"] = mean_stderr(series)
    return out


def claims(budgets: list[dict[str, Any]], summary: dict[str, Any], *, gap: float = 0.05,
           speedup: float = 2.5, drop: float = 0.01) -> dict[str, Any]:
    """The bench's claims, judged on test: the FlexMDM's accuracy at its plateau within ``gap`` of the
    MDM's at its plateau (one token per call), and MED's choice at least ``speedup`` times fewer calls
    at most ``drop`` below one token per call, on both models (mean over seeds)."""
    plateau = {r["model"]: r["accuracy"] for r in budgets if r["budget"] == "plateau"}
    med = {model: entry["med_within"] for model, entry in summary.items()}
    return {"plateau_accuracy_gap": plateau["mdm"] - plateau["flexmdm"],
            "flexmdm_within_gap_of_mdm": plateau["mdm"] - plateau["flexmdm"] <= gap + 1e-9,
            "med_speedup": {m: None if c is None else c["speedup"] for m, c in med.items()},
            "med_accuracy_drop": {m: None if c is None else c["accuracy_drop"] for m, c in med.items()},
            "med_fast_and_accurate": all(c is not None and c["speedup"] >= speedup and c["accuracy_drop"] <= drop + 1e-9
                                         for c in med.values()),
            "thresholds": {"gap": gap, "speedup": speedup, "drop": drop}}


TABLE: list[Column] = [("budget", "budget", "<12"), ("model", "model", "<8"), ("steps", "step", ">6.0f"),
                       ("accuracy", plus_minus("accuracy"), ">15"), ("exact trace", plus_minus("trace_exact"), ">15"),
                       ("calls", plus_minus("mean_nfe", 1), ">12")]


def plot(rows: list[dict[str, Any]], budgets: list[dict[str, Any]], out_png: Path) -> None:
    """Left: test accuracy against network calls per decoder at the plateau (mean ± stderr over seeds).
    Right: test accuracy (one token per call) at each budget."""
    fig, (calls, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, (model, color) in enumerate(COLORS.items()):
        for method, marker in MARKERS.items():
            groups: dict[tuple, list[dict[str, Any]]] = {}
            for r in rows:
                if r["model"] == model and r["method"] == method and r["split"] == "test":
                    groups.setdefault(_key(r), []).append(r)
            points = sorted((mean_stderr([r["mean_nfe"] for r in g])[0], *mean_stderr([100 * r["accuracy"] for r in g]))
                            for g in groups.values())
            if points:
                calls.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] or 0 for p in points],
                               marker=marker, color=color, ls="-" if method in ("med", "eb") else "none",
                               ms=9 if marker == "*" else 6, capsize=2, label=f"{model} {method}")
        mine = [r for r in budgets if r["model"] == model]
        bars.bar([i + 0.4 * index for i in range(len(mine))], [100 * r["accuracy"] for r in mine], width=0.4,
                 yerr=[100 * (r["accuracy_stderr"] or 0) for r in mine], color=color, capsize=3, label=model)
        bars.set_xticks([i + 0.2 for i in range(len(mine))], [f"{r['budget']}" for r in mine])
    calls.set(xlabel="mean network calls per problem", ylabel="test accuracy (%)",
              title="Plateau checkpoints: accuracy vs network calls")
    bars.set(ylabel="test accuracy (%)", title="One token per call, by budget (mean ± stderr over seeds)")
    for ax in (calls, bars):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
