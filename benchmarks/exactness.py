"""Total-variation distance of every sampler driven by the exact oracle (issue 2, criterion 3).

    .venv/bin/python benchmarks/exactness.py --out benchmarks/results/exactness.json

Same distribution and settings as ``tests/test_sampler_exactness.py`` (all 31 binary strings of
length <= 4 with random weights, 20,000 samples, 200 steps), one seed for every sampler; the
tests assert TV <= 0.03 with their own seeds.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flexmdm.bench.record import Stopwatch, machine_info, write_json  # noqa: E402
from flexmdm.sampling import Adaptive, EntropyBounded, TauLeaping, sample_flexmdm  # noqa: E402
from flexmdm.schedules import CosineSchedule, LinearSchedule, PolynomialSchedule  # noqa: E402
from flexmdm.testing import ExactFlexOracle, empirical_distribution, total_variation  # noqa: E402
from tests.oracle_cases import P1, VOCAB  # noqa: E402

CASES = {
    "tau-leaping": (TauLeaping(), {}),
    "tau-leaping, alpha=t^2, beta=cosine": (TauLeaping(), {"alpha": PolynomialSchedule(2.0), "beta": CosineSchedule()}),
    "adaptive top_probability": (Adaptive("top_probability"), {}),
    "adaptive margin": (Adaptive("margin"), {}),
    "adaptive entropy": (Adaptive("entropy"), {}),
    "adaptive left_most": (Adaptive("left_most"), {}),
    "adaptive random": (Adaptive("random"), {}),
    "adaptive right_most (adversarial)": (Adaptive("right_most"), {}),
    "adaptive sliding window (1, 2)": (Adaptive("top_probability", window_factor=1.0, window_max=2), {}),
    "MED lambda=0": (EntropyBounded(0.0), {}),
    "tau-leaping, parallel final fill": (TauLeaping(), {"final_fill": "parallel"}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    watch = Stopwatch()
    rows = []
    for name, (rule, options) in CASES.items():
        alpha = options.get("alpha", LinearSchedule())
        out = sample_flexmdm(
            ExactFlexOracle(P1, VOCAB, alpha), vocab=VOCAB, insertion_schedule=alpha,
            unmasking_schedule=options.get("beta", LinearSchedule()), steps=200, max_length=8,
            batch_size=args.samples, rule=rule, final_fill=options.get("final_fill", "sequential"),
            generator=torch.Generator().manual_seed(args.seed),
        )
        tv = total_variation(empirical_distribution(out.tokens, out.lengths), P1)
        rows.append({"sampler": name, "tv": tv, "n": args.samples})
        print(f"{name:40s} TV = {tv:.4f}", flush=True)
    command = shlex.join(["python", "benchmarks/exactness.py", *sys.argv[1:]])
    write_json({"command": command,
                "seed": args.seed, "wall_seconds": watch.seconds, "machine": machine_info(), "results": rows}, args.out)


if __name__ == "__main__":
    main()
