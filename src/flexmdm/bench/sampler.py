"""``flexmdm bench sampler``: FlexMDM samplers driven by exact oracles, no network at all.

Every sampler of :data:`SAMPLERS` generates from the exact posterior of each structured oracle of
:mod:`flexmdm.testing.structured` — a dense toy, balanced brackets, aⁿbⁿ, the reasoning task's
held-out problems and maze subgoal problems — at several step budgets. With a perfect model,
whatever goes wrong is the sampler's: a sample outside the support (``invalid_rate``), a wrong
answer or path (``accuracy``), a reasoning trace not written exactly (``trace_exact``), or a
distance to the truth (``tv``, where the support is enumerable). ``mean_nfe`` counts every call,
the final fill and refresh calls included.

The samplers differ in how they insert (:class:`~flexmdm.sampling.Insertion`: the paper's Algorithm 1,
Poisson τ-leaping on the grid; binomial arrivals on it, gaps refreshed, certain counts at once; exact
arrivals one at a time by thinning) and reveal (τ-leaping, MED, one uncertain token per call).

The toy oracle also runs the unmasking rules at 200 steps under Algorithm 1 (Prop. 3: any order
is exact). Nothing is tuned: every sampler runs with its stated settings on every oracle.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from flexmdm.bench.figures import sampler_figure
from flexmdm.bench.record import Stopwatch
from flexmdm.bench.skeleton import BenchRun, choose
from flexmdm.families import SamplingOptions
from flexmdm.sampling import Adaptive, ConfidenceThreshold, EntropyBounded, Insertion, TauLeaping
from flexmdm.sampling.unmasking import UnmaskingRule
from flexmdm.testing.structured import OracleCase, oracle_case

__all__ = ["SAMPLERS", "RULES_AT_200", "SamplerBenchSettings", "main", "run_sampler_benchmark"]


SAMPLERS: dict[str, SamplingOptions] = {
    "poisson (Algorithm 1)": SamplingOptions(rule=TauLeaping(), insertion=Insertion()),
    "poisson + MED": SamplingOptions(rule=EntropyBounded(0.2), insertion=Insertion()),
    "binomial": SamplingOptions(rule=TauLeaping(), insertion=Insertion("binomial")),
    "binomial + refresh": SamplingOptions(rule=TauLeaping(), insertion=Insertion("binomial", refresh=True)),
    "binomial + certain + refresh": SamplingOptions(rule=TauLeaping(), insertion=Insertion("binomial", 1.0, True)),
    "exact": SamplingOptions(rule=ConfidenceThreshold(1.0), insertion=Insertion("exact")),
    "exact + certain": SamplingOptions(rule=ConfidenceThreshold(1.0), insertion=Insertion("exact", certainty=1.0)),
    "exact + certain + MED": SamplingOptions(rule=EntropyBounded(0.2), insertion=Insertion("exact", certainty=1.0)),
}
"""The samplers compared on every oracle (``steps`` set per run). ``ConfidenceThreshold(1.0)`` reveals every
certain token, else the single most confident one: the exact one-at-a-time order."""

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
    """Samples per oracle and step budgets (``steps``: grid intervals, or exact insertion's call budget)."""

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


def _run(case: OracleCase, options: SamplingOptions, seed: int) -> dict[str, Any]:
    watch = Stopwatch()
    out = case.sample(options, seed)
    return {"steps": options.steps, "mean_nfe": float(out.nfe.double().mean()), **case.score(out.tokens, out.lengths),
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


def run_sampler_benchmark(out: str | Path, *, quick: bool = False, seed: int = 0, argv: list[str] | None = None,
                          progress: Callable[[str], None] = print,
                          settings: SamplerBenchSettings | None = None) -> dict[str, Any]:
    """Run every sampler on every oracle and write the JSON record (and a plot beside it)."""
    run = BenchRun.start(out, seed=seed, argv=argv)
    settings = choose(SamplerBenchSettings, quick, settings)
    rows = []
    for oracle, budgets in settings.steps.items():
        case = oracle_case(oracle, settings.samples[oracle])
        runs = [(name, replace(options, steps=steps)) for steps in budgets for name, options in SAMPLERS.items()]
        if oracle == "toy" and settings.rules_at_200:
            runs += [(f"poisson + {name}", SamplingOptions(200, rule, insertion=Insertion(), final_fill="sequential"))
                     for name, rule in RULES_AT_200.items()]
        for name, options in runs:
            rows.append({"oracle": oracle, "sampler": name, **_run(case, options, seed)})
            progress(_describe(rows[-1]))
    plot = sampler_figure(rows, list(SAMPLERS), run.png())
    return run.write({
        "settings": asdict(settings),
        "samplers": {name: {"rule": repr(options.rule), "insertion": asdict(options.insertion),
                            "final_fill": options.fill} for name, options in SAMPLERS.items()},
        "tuned": "nothing: every sampler runs with the settings above on every oracle",
        "criteria": _criteria(rows),
        "results": rows,
        "plot": plot.name,
    })


def _describe(row: dict[str, Any]) -> str:
    metrics = " ".join(f"{key}={row[key]:.4f}" for key in ("invalid_rate", "accuracy", "trace_exact", "tv")
                       if row[key] is not None)
    return f"{row['oracle']:>9} {row['sampler']:<40} steps={row['steps']:<4} nfe={row['mean_nfe']:7.2f} {metrics}"


def main(args: argparse.Namespace) -> int:
    """``flexmdm bench sampler`` (``--work-dir`` is unused: nothing is trained)."""
    record = run_sampler_benchmark(args.out, quick=args.quick, seed=args.seed, argv=args.argv)
    print("\n".join(f"{key}: {value}" for key, value in record["criteria"].items()))
    print(f"wall time {record['wall_seconds']:.0f} s; wrote {args.out}")
    return 0
