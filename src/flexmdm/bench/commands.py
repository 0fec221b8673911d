"""``flexmdm bench maze|speed``: the benchmark subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_bench_command"]


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="run a benchmark and write its JSON (and plots)")
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")

    maze = benches.add_parser("maze", help="FlexMDM vs MDM on subgoal maze planning (paper Table 1)")
    maze.add_argument("--quick", action="store_true", help="the small setting of the README (about 15 CPU-minutes)")
    maze.add_argument("--out", type=Path, required=True, help="JSON result; the PNG is written beside it")
    maze.add_argument("--seed", type=int, default=0)
    maze.add_argument("--work-dir", type=Path, default=None,
                      help="where the two training runs go (default: next to --out); reruns resume")
    maze.set_defaults(run=run_maze)

    speed = benches.add_parser("speed", help="matmul peak, training throughput and MFU, sampler overhead")
    speed.add_argument("--quick", action="store_true", help="a tiny configuration (a smoke test, not a result)")
    speed.add_argument("--out", type=Path, required=True, help="JSON result")
    speed.add_argument("--seed", type=int, default=0)
    speed.set_defaults(run=run_speed)


def run_maze(args: argparse.Namespace) -> int:
    from flexmdm.bench.maze import run_maze_benchmark

    run_maze_benchmark(args.out, quick=args.quick, seed=args.seed, work_dir=args.work_dir, argv=sys.argv[1:])
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def run_speed(args: argparse.Namespace) -> int:
    from flexmdm.bench.speed import run_speed_benchmark

    record = run_speed_benchmark(args.out, quick=args.quick, seed=args.seed, argv=sys.argv[1:])
    for key in ("matmul_peak_gflops", "train_tokens_per_s", "mfu", "sampler_overhead_fraction",
                "flexmdm_vs_mdm_sample_cost", "wall_seconds"):
        print(f"{key:>28}: {record[key]:.4g}")
    return 0
