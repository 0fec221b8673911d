"""What recording a trace costs the FlexMDM sampler (issue 9, criterion 1).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trace_overhead.py --out benchmarks/results/trace_overhead.json

A small FlexMDM DiT (the size of configs/toy.yaml: d_model 64, 2 layers) with the exact expected
gaps of a uniform length distribution on [8, 64], so that the sampler's own bookkeeping is a large
share of the time (the worst case for tracing). Sampling runs with tracing off and on alternate,
``--repeats`` times each, same seed; the record keeps every time and the medians. With tracing off
the sampler only tests ``trace is not None`` twice per step; with it on it also keeps the selected
positions of each step (``nonzero``) for the replay.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import torch

from flexmdm.bench.record import Stopwatch, machine_info, write_json
from flexmdm.bench.oracle_gaps import LengthOracleGaps
from flexmdm.interpolant import FlexInterpolant
from flexmdm.models import FlexMDMModel, ModelConfig
from flexmdm.sampling import sample_flexmdm
from flexmdm.schedules import LinearSchedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    watch = Stopwatch()
    torch.manual_seed(args.seed)
    max_length = 64
    config = ModelConfig(kind="flexmdm", vocab_size=34, mask_id=32, pad_id=33, d_model=64, n_layers=2,
                         n_heads=4, max_length=max_length)
    length_probs = torch.zeros(max_length + 1)
    length_probs[8:] = 1.0
    schedule = LinearSchedule()
    denoiser = LengthOracleGaps(FlexMDMModel(config).eval(), length_probs / length_probs.sum(), schedule)
    process = FlexInterpolant(schedule, schedule, config.vocab)

    def run(record_trace: bool) -> tuple[float, list[list[int]]]:
        clock = Stopwatch()
        out = sample_flexmdm(denoiser, process, steps=args.steps, max_length=max_length, batch_size=args.batch,
                             generator=torch.Generator().manual_seed(args.seed), record_trace=record_trace)
        seconds = clock.seconds
        if record_trace:
            assert out.trace.replay() == out.sequences()
        return seconds, out.sequences()

    run(False)  # warm-up
    times: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            seconds, samples = run(mode == "on")
            times[mode].append(seconds)
    _, off_samples = run(False)
    _, on_samples = run(True)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    record = {
        "trace_off_seconds": off,
        "trace_on_seconds": on,
        "trace_on_over_off": on / off,
        "same_samples_on_and_off": off_samples == on_samples,
        "times": times,
        "settings": {"batch": args.batch, "steps": args.steps, "max_length": max_length, "d_model": 64,
                     "n_layers": 2, "repeats": args.repeats},
        "command": shlex.join(["python", *sys.argv]),
        "seed": args.seed,
        "machine": machine_info(),
        "wall_seconds": watch.seconds,
    }
    write_json(record, args.out)
    print(f"tracing off {off:.3f}s, on {on:.3f}s (on/off {on / off:.3f}); same samples: {off_samples == on_samples}")


if __name__ == "__main__":
    main()
