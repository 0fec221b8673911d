"""The benchmark commands write complete, self-describing records (tiny settings)."""

import dataclasses
import json
import math
import statistics

import pytest

from flexmdm.bench import maze as maze_bench
from flexmdm.bench.maze_figures import reveal_example
from flexmdm.bench.tuning import DecoderTrial
from flexmdm.bench.speed import run_speed_benchmark
from flexmdm.cli import main
from flexmdm.tasks.maze import MazeTask

pytestmark = pytest.mark.e2e

SPEED_KEYS = {"matmul_peak_gflops", "train_tokens_per_s", "mfu", "mfu_real_tokens", "padding_fraction",
              "sampler_overhead_fraction", "flexmdm_vs_mdm_sample_cost", "recommended", "configurations",
              "attention_ms", "command", "seed", "wall_seconds", "machine"}


def test_speed_record(tmp_path):
    record = run_speed_benchmark(tmp_path / "speed.json", quick=True, argv=["bench", "speed", "--quick"])
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert SPEED_KEYS <= set(saved) and saved["command"] == "flexmdm bench speed --quick"
    assert 0 < saved["mfu_real_tokens"] <= saved["mfu"] and 0 <= saved["sampler_overhead_fraction"] < 1
    assert saved["flexmdm_vs_mdm_sample_cost"] > 0 and record["seed"] == 0
    assert set(saved["configurations"]) == {"padded", "packed", "padded_compiled", "packed_compiled"}
    padded, packed = saved["configurations"]["padded"], saved["configurations"]["packed"]
    for name, eager in (("padded", padded), ("packed", packed)):
        compiled = saved["configurations"][f"{name}_compiled"]
        assert compiled["padding_fraction"] == eager["padding_fraction"]  # the same batches
        assert compiled["flexmdm_mean_length"] == pytest.approx(eager["flexmdm_mean_length"], rel=0.05)
        assert compiled["train_first_step_seconds"] > 0 and compiled["mfu_real_tokens"]["median"] > 0
    assert packed["padding_fraction"]["median"] == 0.0 < padded["padding_fraction"]["median"]
    summary = padded["mfu_real_tokens"]
    assert summary["min"] <= summary["median"] <= summary["max"]
    recommended = saved["configurations"][saved["recommended"]]
    assert saved["mfu_real_tokens"] == recommended["mfu_real_tokens"]["median"]
    assert set(saved["attention_ms"]) == {f"{kernel}_{mode}" for kernel in ("padded_sdpa", "packed_rows_sdpa")
                                          for mode in ("forward", "forward_backward")}


def test_maze_record_is_fair_seeds_budgets_tuning_and_a_test_split(tmp_path):
    trials = {"flexmdm": [DecoderTrial("one_per_call", 4, "exact"),
                          DecoderTrial("top_probability", 4, "poisson")],
              "mdm": [DecoderTrial("one_per_call", 4), DecoderTrial("margin", 4)]}
    settings = maze_bench.MazeBenchSettings(rooms=3, num_pairs=100, ks=(2, 3), eval_per_k=3, trials=trials,
                                            steps={"flexmdm": 4, "mdm": 2})
    settings.model = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    settings.train.update(batch_size=8, warmup_steps=1, save_every=1, log_every=1, eval_batches=1)
    out = tmp_path / "maze.json"
    maze_bench.run_maze_benchmark(out, argv=["bench", "maze"], settings=settings)
    record = json.loads(out.read_text())
    assert {"command", "seed", "wall_seconds", "config", "results", "budgets", "per_seed", "train_threads"} <= set(record)
    assert record["seeds"] == [0, 1, 2] and record["split"] == "test" and record["headline_budget"] == "equal_steps"
    keys = {(r["budget"], r["model"], r["K"]) for r in record["budgets"]}
    assert keys == {(b, m, k) for b in ("equal_steps", "equal_cpu") for m in ("flexmdm", "mdm") for k in (2, 3)}
    last = settings.steps
    steps = {(r["budget"], r["model"]): r["step"] for r in record["budgets"]}
    assert steps[("equal_steps", "flexmdm")] == steps[("equal_steps", "mdm")] == last["mdm"]  # the shorter run's end
    # equal CPU, seed by seed (timing decides which run is cheaper): the run that used less time is at its last
    # step, the other at its last checkpoint within that time, or at its first if even that one took longer
    for seed in range(3):
        cpu = {r["model"]: r for r in record["per_seed"] if r["seed"] == seed and r["budget"] == "equal_cpu"}
        assert all(1 <= cpu[m]["step"] <= last[m] for m in last)
        ended = [cpu[m]["train_seconds"] for m in last if cpu[m]["step"] == last[m]]
        assert ended and all(row["train_seconds"] <= min(ended) or row["step"] == 1 for row in cpu.values())
    assert record["results"] == [r for r in record["budgets"] if r["budget"] == "equal_steps"]
    for row in record["budgets"]:
        assert row["seeds"] == [0, 1, 2] and 0 <= row["success_rate"] <= 1
        per_seed = [r["success_rate"] for r in record["per_seed"]
                    if (r["budget"], r["model"], r["K"]) == (row["budget"], row["model"], row["K"])]
        assert row["success_rate"] == pytest.approx(statistics.fmean(per_seed))
        assert row["success_rate_stderr"] == pytest.approx(statistics.stdev(per_seed) / math.sqrt(3))
    assert {(r["seed"], r["budget"], r["model"], r["K"]) for r in record["per_seed"]} == {
        (s, b, m, k) for s in range(3) for b in ("equal_steps", "equal_cpu") for m in ("flexmdm", "mdm") for k in (2, 3)}
    n = {(r["K"], r["model"]): r["n"] for r in record["per_seed"]}  # the same test problems in every row of a K
    assert {(r["K"], r["model"], r["n"]) for r in record["per_seed"]} == {(k, m, n[k, "mdm"]) for k, m in n}
    assert all(1 <= count <= 3 for count in n.values())
    tuning = record["tuning"]
    assert tuning["split"] == "validation" and tuning["budget"] == "equal_steps" and tuning["seeds"] == [0, 1, 2]
    assert [[{k: v for k, v in t.items() if k in ("rule", "steps", "insertion")} for t in tuning["trials"][m]]
            for m in ("flexmdm", "mdm")] == [[dataclasses.asdict(t) for t in trials[m]] for m in ("flexmdm", "mdm")]
    for model, scored in tuning["trials"].items():
        best = max(scored, key=lambda t: (t["success_rate"], -t["mean_nfe"]))
        assert tuning["choice"][model]["rule"] == best["rule"] and 0 <= best["success_rate"] <= 1
    # the seeds train apart, each model in its own folder; the test and validation pairs are apart
    assert all((tmp_path / "maze" / f"seed{s}" / m).is_dir() for s in range(3) for m in ("flexmdm", "mdm"))
    assert record["config"]["validation_pairs"] >= 1 and record["config"]["test_pairs"] >= 1
    assert out.with_suffix(".png").stat().st_size > 0
    assert record["reveal_plot"] == "maze-reveal.png" and (tmp_path / "maze-reveal.png").stat().st_size > 0


def test_reveal_example_prefers_the_success_with_most_generated_cells():
    task = MazeTask(rooms=3, num_pairs=50)
    path, _ = task.evaluation_set(2, 1, 0, "validation")[0]
    assert len(path) >= 3
    ends, first_three = [path[0], path[-1]], path[:3]
    jump = [path[0], path[-1]]  # start and goal are not neighbours: a failure
    # successes beat failures; among successes the one with more generated cells wins
    assert reveal_example(task, [None, jump, first_three, path],
                                     [ends, ends, first_three, ends]) == 3
    assert reveal_example(task, [jump, first_three], [ends, first_three]) == 1
    assert reveal_example(task, [None, jump], [ends, ends]) == 1
    assert reveal_example(task, [None, []], [ends, ends]) is None


def test_sampler_record_and_plot(tmp_path):
    out = tmp_path / "sampler.json"
    assert main(["bench", "sampler", "--quick", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert {"command", "seed", "wall_seconds", "machine", "settings", "samplers", "tuned", "criteria",
            "results"} <= set(record)
    assert record["command"] == f"flexmdm bench sampler --quick --out {out}"
    oracles = {r["oracle"] for r in record["results"]}
    assert oracles == {"toy", "brackets", "anbn", "reasoning", "maze"}
    for row in record["results"]:
        assert {"sampler", "steps", "mean_nfe", "invalid_rate", "accuracy", "tv", "trace_exact"} <= set(row)
        assert 0 <= row["invalid_rate"] <= 1 and row["mean_nfe"] >= 1
        assert (row["tv"] is not None) == (row["oracle"] in ("toy", "brackets", "anbn"))
        assert (row["trace_exact"] is not None) == (row["oracle"] == "reasoning")
    best = record["criteria"]["reasoning_trace_exact_at_nfe_32"]
    assert best["trace_exact"] == 1.0 and best["sampler"].startswith(("exact + certain", "binomial + certain"))
    assert out.with_suffix(".png").stat().st_size > 0
