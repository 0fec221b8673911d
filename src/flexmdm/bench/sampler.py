"""``flexmdm bench sampler``: FlexMDM samplers driven by exact oracles, no network at all.

Every sampler of :data:`SAMPLERS` generates from the exact posterior of each structured oracle of
:mod:`flexmdm.testing.structured` — a dense toy, balanced brackets, aⁿbⁿ, the reasoning task's
held-out problems and maze subgoal problems — at several step budgets. With a perfect model,
whatever goes wrong is the sampler's: a sample outside the support (``invalid_rate``), a wrong
answer or path (``accuracy``), a reasoning trace not written exactly (``trace_exact``), or a
distance to the truth (``tv``, where the support is enumerable). ``mean_nfe`` counts every call,
the final fill and refresh calls included.

The samplers differ in how they insert (:class:`~flexmdm.sampling.Insertion`) and reveal:

* the paper's Algorithm 1 (Poisson τ-leaping on the grid), with τ-leaping or MED reveals;
* grid variants: binomial arrivals with the exact interval probability, gaps refreshed after the
  reveals, certain counts inserted at once;
* exact insertion: arrivals one at a time by thinning, reveals between them (one uncertain
  token per call, or MED), certain counts and tokens at once.

The toy oracle also runs the unmasking rules at 200 steps under Algorithm 1 (Prop. 3: any order
is exact). Nothing is tuned: every sampler runs with its stated settings on every oracle.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.sampling import (
    Adaptive,
    ConfidenceThreshold,
    EntropyBounded,
    Insertion,
    TauLeaping,
    UnmaskingRule,
    sample_flexmdm,
)
from flexmdm.schedules import LinearSchedule
from flexmdm.testing.structured import OracleCase, oracle_case

__all__ = ["SAMPLERS", "RULES_AT_200", "SamplerBenchSettings", "main", "run_sampler_benchmark"]


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: an unmasking rule and insertion options (final fill: sequential for rate rules)."""

    rule: UnmaskingRule
    insertion: Insertion

    @property
    def final_fill(self) -> str:
        return "sequential" if self.rule.uses_rates else "rule"


SAMPLERS: dict[str, SamplerSpec] = {
    "poisson (Algorithm 1)": SamplerSpec(TauLeaping(), Insertion()),
    "poisson + MED": SamplerSpec(EntropyBounded(0.2), Insertion()),
    "binomial": SamplerSpec(TauLeaping(), Insertion("binomial")),
    "binomial + refresh": SamplerSpec(TauLeaping(), Insertion("binomial", refresh=True)),
    "binomial + certain + refresh": SamplerSpec(TauLeaping(), Insertion("binomial", certainty=1.0, refresh=True)),
    "exact": SamplerSpec(ConfidenceThreshold(1.0), Insertion("exact")),
    "exact + certain": SamplerSpec(ConfidenceThreshold(1.0), Insertion("exact", certainty=1.0)),
    "exact + certain + MED": SamplerSpec(EntropyBounded(0.2), Insertion("exact", certainty=1.0)),
}
"""The samplers compared on every oracle. ``ConfidenceThreshold(1.0)`` reveals every token whose
posterior is certain and otherwise the single most confident one: the exact one-at-a-time order."""

RULES_AT_200: dict[str, UnmaskingRule] = {
    "adaptive top_probability": Adaptive("top_probability"),
    "adaptive margin": Adaptive("margin"),
    "adaptive entropy": Adaptive("entropy"),
    "adaptive left_most": Adaptive("left_most"),
    "adaptive random": Adaptive("random"),
    "adaptive right_most (adversarial)": Adaptive("right_most"),
    "adaptive sliding window (1, 2)": Adaptive("top_probability", window_factor=1.0, window_max=2),
    "MED lambda=0": EntropyBounded(0.0),
}
"""Unmasking rules run on the toy oracle at 200 steps under Algorithm 1's insertion."""


@dataclass
class SamplerBenchSettings:
    """Samples per oracle and the step budgets (``steps``: grid intervals, or the call budget of
    exact insertion)."""

    samples: dict[str, int] = field(default_factory=lambda: {
        "toy": 20_000, "brackets": 10_000, "anbn": 10_000, "reasoning": 300, "maze": 200})
    steps: dict[str, tuple[int, ...]] = field(default_factory=lambda: {
        "toy": (8, 200), "brackets": (8, 32, 64, 200), "anbn": (8, 32, 64), "reasoning": (8, 16, 32),
        "maze": (8, 32, 64)})
    rules_at_200: bool = True

    @classmethod
    def quick(cls) -> SamplerBenchSettings:
        """A smoke run for the tests (seconds, not a result)."""
        return cls(samples={"toy": 500, "brackets": 300, "anbn": 200, "reasoning": 12, "maze": 10},
                   steps={name: (8,) for name in ("toy", "brackets", "anbn", "reasoning", "maze")},
                   rules_at_200=False)


def _run(case: OracleCase, rule: UnmaskingRule, insertion: Insertion, final_fill: str, steps: int,
         seed: int) -> dict[str, Any]:
    watch = Stopwatch()
    schedule = LinearSchedule()
    out = sample_flexmdm(
        case.oracle, vocab=case.vocab, insertion_schedule=schedule, unmasking_schedule=schedule, steps=steps,
        max_length=case.max_length, prompt=case.prompt, rule=rule, insertion=insertion, final_fill=final_fill,
        generator=torch.Generator().manual_seed(seed),
    )
    return {"steps": steps, "mean_nfe": float(out.nfe.double().mean()), **case.score(out.tokens, out.lengths),
            "samples": case.prompt.batch_size, "dropped_insertions": int(out.dropped_insertions.sum()),
            "seconds": watch.seconds}


def _criteria(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance numbers, read off the rows: the best sampler within each budget."""

    def best(oracle: str, key: str, max_nfe: float, lower: bool) -> dict[str, Any] | None:
        fits = [r for r in rows if r["oracle"] == oracle and r["mean_nfe"] <= max_nfe and r[key] is not None]
        if not fits:
            return None
        # the best value, then the fewest calls
        row = min(fits, key=lambda r: (r[key] if lower else -r[key], r["mean_nfe"]))
        return {"sampler": row["sampler"], "steps": row["steps"], "mean_nfe": row["mean_nfe"], key: row[key]}

    toy = [r for r in rows if r["oracle"] == "toy" and r["steps"] >= 200]
    worst = max(toy, key=lambda r: r["tv"]) if toy else None
    return {
        "reasoning_trace_exact_at_nfe_32": best("reasoning", "trace_exact", 32, lower=False),
        "brackets_invalid_rate_at_nfe_64": best("brackets", "invalid_rate", 64, lower=True),
        "toy_worst_tv_at_200_steps": worst and {"sampler": worst["sampler"], "tv": worst["tv"]},
    }


def plot_sampler_benchmark(rows: list[dict[str, Any]], out_png: str | Path) -> Path:
    """One panel per oracle: its headline metric against mean network calls, a line per sampler."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    panels = [("toy", "tv", "total variation"), ("brackets", "invalid_rate", "invalid rate"),
              ("anbn", "invalid_rate", "invalid rate"), ("reasoning", "trace_exact", "fully correct traces"),
              ("maze", "accuracy", "valid paths")]
    figure = Figure(figsize=(17, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels))
    for ax, (oracle, key, label) in zip(axes, panels):
        for name in SAMPLERS:
            points = sorted((r["mean_nfe"], r[key]) for r in rows if r["oracle"] == oracle and r["sampler"] == name
                            and r[key] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, lw=1.2, label=name)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("mean network calls (log scale)")
        ax.set_ylabel(label)
        ax.set_title(oracle)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
                  bbox_to_anchor=(0.5, -0.06))
    figure.suptitle("FlexMDM samplers driven by exact oracles (no network)")
    figure.subplots_adjust(wspace=0.3)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=130, bbox_inches="tight")
    return out_png


def run_sampler_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, argv: list[str] | None = None,
                          progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every sampler on every oracle and write the JSON record (and a plot beside it)."""
    watch = Stopwatch()
    settings = SamplerBenchSettings.quick() if quick else SamplerBenchSettings()
    rows = []
    for oracle, budgets in settings.steps.items():
        case = oracle_case(oracle, settings.samples[oracle])
        for steps in budgets:
            for name, spec in SAMPLERS.items():
                row = {"oracle": oracle, "sampler": name,
                       **_run(case, spec.rule, spec.insertion, spec.final_fill, steps, seed)}
                rows.append(row)
                progress(_describe(row))
        if oracle == "toy" and settings.rules_at_200:
            for name, rule in RULES_AT_200.items():
                row = {"oracle": oracle, "sampler": f"poisson + {name}",
                       **_run(case, rule, Insertion(), "sequential", 200, seed)}
                rows.append(row)
                progress(_describe(row))
    plot = plot_sampler_benchmark(rows, Path(out).with_suffix(".png"))
    record = {
        "command": command_line(argv),
        "seed": seed,
        "settings": asdict(settings),
        "samplers": {name: {"rule": repr(spec.rule), "insertion": asdict(spec.insertion),
                            "final_fill": spec.final_fill} for name, spec in SAMPLERS.items()},
        "tuned": "nothing: every sampler runs with the settings above on every oracle",
        "criteria": _criteria(rows),
        "results": rows,
        "plot": plot.name,
        "machine": machine_info(),
        "wall_seconds": watch.seconds,
    }
    write_json(record, out)
    return record


def _describe(row: dict[str, Any]) -> str:
    metrics = " ".join(f"{key}={row[key]:.4f}" for key in ("invalid_rate", "accuracy", "trace_exact", "tv")
                       if row[key] is not None)
    return f"{row['oracle']:>9} {row['sampler']:<40} steps={row['steps']:<4} nfe={row['mean_nfe']:7.2f} {metrics}"


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench sampler`` (``--work-dir`` is unused: nothing is trained)."""
    record = run_sampler_benchmark(args.out, quick=args.quick, seed=args.seed, argv=args.argv)
    for key, value in record["criteria"].items():
        print(f"{key}: {value}")
    print(f"wall time {record['wall_seconds']:.0f} s; wrote {args.out}")
    return 0
