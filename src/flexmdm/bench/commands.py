"""``flexmdm bench NAME``: the benchmark subcommands.

Every benchmark takes ``--out FILE.json`` (plots are written beside it), ``--seed``, ``--quick``
(a small setting; for most benchmarks a smoke run, not a result) and ``--work-dir`` (where its
training runs go; default: next to ``--out``; a rerun resumes them); ``maze``, ``length``,
``infill`` and ``reasoning`` also take ``--seeds N`` (training seeds, :mod:`flexmdm.bench.seeds`).
Running ``flexmdm bench NAME`` calls ``flexmdm.bench.<name>.main(args) -> exit code``, imported only then, so that
``flexmdm --help`` stays light.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "BENCH_OPTIONS", "add_bench_command", "retrofit_overrides"]

BENCHMARKS: dict[str, str] = {
    "maze": "FlexMDM vs MDM on subgoal maze planning (paper Table 1)",
    "length": "length fidelity and generative perplexity on variable-length text (paper §5.1.1)",
    "reasoning": "reasoning-as-infilling: one token per step vs MED, EB and early exit",
    "retrofit": "an MDM retrofitted into a FlexMDM vs a FlexMDM trained from scratch (paper §5.2)",
    "speed": "matmul peak, training throughput and MFU, sampler overhead",
    "infill": "code infilling: FlexMDM vs an MDM with a fixed middle budget, under fair rules",
    "transfer": "pretrain an MDM, retrofit it, instruction-tune both on math and code infilling (paper §5.2)",
    "sampler": "FlexMDM samplers driven by exact oracles (no training): structure, accuracy, TV per call",
}
"""Benchmark name -> one-line help; ``flexmdm.bench.<name>`` implements it."""


def _retrofit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retrofit", action="append", default=[], metavar="KEY=VALUE",
                        help="change a retrofit setting (a key of the training config's retrofit section), "
                        "e.g. --retrofit time_rank=32; repeatable; give the variant its own --work-dir")


def _seeds_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                        help="training seeds 0 … N-1, the models trained side by side for each; rows report "
                        "mean ± standard error over them (default: 3; --seed fixes the data)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def retrofit_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["time_rank=32", ...]`` (``--retrofit``) as ``{"time_rank": 32, ...}``, checked against
    :class:`~flexmdm.models.retrofit.RetrofitConfig`.

    Raises:
        ConfigError: a malformed pair, an unknown key or an invalid value (one line).
    """
    from flexmdm.models.retrofit import RetrofitConfig  # torch: only when the command runs
    from flexmdm.training.config import ConfigError, parse_override

    values = {}
    for pair in pairs:
        keys, value = parse_override(pair)
        values[".".join(keys)] = value
    try:
        RetrofitConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--retrofit: {error}") from None
    return values


BENCH_OPTIONS = {"retrofit": _retrofit_options,
                 **{name: _seeds_option for name in ("maze", "length", "infill", "reasoning")}}
"""Benchmark name -> a function adding the options of that benchmark alone."""


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    """Register ``flexmdm bench`` with one subcommand per entry of :data:`BENCHMARKS`."""
    parser = commands.add_parser("bench", help="run a benchmark and write its JSON (and plots)")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name, help_text in BENCHMARKS.items():
        bench = benches.add_parser(name, help=help_text, description=help_text)
        bench.add_argument("--quick", action="store_true", help="a small setting (see benchmarks/README.md)")
        bench.add_argument("--out", type=Path, required=True, help="JSON result; plots are written beside it")
        bench.add_argument("--seed", type=int, default=0)
        bench.add_argument("--work-dir", type=Path, default=None,
                           help="where training runs go (default: next to --out); reruns resume")
        if name in BENCH_OPTIONS:
            BENCH_OPTIONS[name](bench)
        bench.set_defaults(run=_runner(name))


def _runner(name: str):
    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"flexmdm.bench.{name}").main(args)

    return run
