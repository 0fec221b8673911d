"""``flexmdm bench reasoning`` writes a complete fair record (tiny settings); its parallel-decoding
choices are made on validation alone."""

import json
import statistics

import pytest

from flexmdm.bench import reasoning as reasoning_bench
from flexmdm.bench.reasoning_report import claims, summarize

pytestmark = pytest.mark.e2e


def tiny_settings() -> reasoning_bench.ReasoningBenchSettings:
    settings = reasoning_bench.ReasoningBenchSettings(
        num_train=200, min_steps=2, max_steps=3, seeds=2, num_validation=5, num_test=6, eval_batch=8,
        med_thresholds=(0.2,), eb_budgets=(0.3,), exit_med_thresholds=(0.2,), exit_reduces=("max", "mean"),
        num_posterior=3, prefix_fractions=(0.0, 1.0))
    settings.backbone = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    settings.train.update(batch_size=8, warmup_steps=1, log_every=1, eval_batches=1)
    settings.arms["flexmdm"].steps, settings.arms["flexmdm"].save_every = 3, 1
    settings.arms["flexmdm"].decode_steps = 3
    settings.arms["mdm"].steps, settings.arms["mdm"].save_every = 2, 1
    return settings


def test_reasoning_record_and_plot(tmp_path):
    out = tmp_path / "reasoning.json"
    argv = ["bench", "reasoning", "--out", str(out), "--seed", "1"]
    reasoning_bench.run_reasoning_benchmark(out, settings=tiny_settings(), seed=1, argv=argv)
    record = json.loads(out.read_text())
    assert {"command", "seed", "seeds", "split", "headline_budget", "tuning", "budgets", "results", "per_seed",
            "plateau_gain", "parallel_decoding", "claims", "reasoning_as_infilling", "config", "plot"} <= set(record)
    assert record["seed"] == 1 and record["command"].startswith("flexmdm bench reasoning")
    assert record["seeds"] == [0, 1] and record["split"] == "test" and record["headline_budget"] == "equal_steps"
    assert record["train_configs"]["mdm"]["data"]["operations"] == "extended"
    # the headline: one token per call, each model's checkpoint at every budget, over both seeds
    steps = {(r["budget"], r["model"]): r["step"] for r in record["budgets"]}
    assert steps == {("equal_steps", "flexmdm"): 2, ("equal_steps", "mdm"): 2, ("equal_cpu", "flexmdm"): steps[
        "equal_cpu", "flexmdm"], ("equal_cpu", "mdm"): steps["equal_cpu", "mdm"], ("plateau", "flexmdm"): 3,
        ("plateau", "mdm"): 2}
    for row in record["budgets"]:
        mine = [r for r in record["per_seed"] if (r["budget"], r["model"]) == (row["budget"], row["model"])]
        assert [r["seed"] for r in mine] == [0, 1] and all(r["n"] == 6 for r in mine)
        assert row["accuracy"] == pytest.approx(statistics.fmean(r["accuracy"] for r in mine))
        assert "accuracy_stderr" in row and "trace_exact_stderr" in row and "mean_nfe_stderr" in row
    mdm_calls = {r["mean_nfe"] for r in record["per_seed"] if r["model"] == "mdm"}
    assert mdm_calls == {3 * 8 - 1 + 2}  # one call per generable slot of the canvas: "a op k = c ;" per step, answer
    assert record["results"] == [r for r in record["budgets"] if r["budget"] == "equal_steps"]
    assert {(g["seed"], g["model"], g["step"], g["previous_step"]) for g in record["plateau_gain"]} == {
        (s, "flexmdm", 3, 2) for s in (0, 1)} | {(s, "mdm", 2, 1) for s in (0, 1)}
    tuning = record["tuning"]
    assert tuning["split"] == "validation" and tuning["parallel_decoding"]["split"] == "validation"
    assert tuning["choice"]["flexmdm"]["rule"] == "one_per_call" and tuning["choice"]["mdm"]["insertion"] is None
    assert len(tuning["parallel_decoding"]["trials"]) == 5
    # parallel decoding: every decoder at each seed's plateau checkpoints, on validation and test
    rows = record["parallel_decoding"]["rows"]
    keys = {(r["seed"], r["model"], r["split"], r["method"], r["param"], r.get("exit_reduce")) for r in rows}
    assert keys == {(s, m, split, *rest) for s in (0, 1) for m in ("flexmdm", "mdm") for split in ("validation", "test")
                    for rest in [("confidence_1", 1, None), ("med", 0.2, None), ("eb", 0.3, None),
                                 ("med_exit", 0.2, "max"), ("med_exit", 0.2, "mean")]}
    for row in rows:
        assert 0 <= row["trace_exact"] <= 1 and 0 <= row["accuracy"] <= 1 and row["mean_nfe"] >= 1
        assert row["n"] == (6 if row["split"] == "test" else 5)
    plateau_test = {(r["seed"], r["model"]): r for r in record["per_seed"] if r["budget"] == "plateau"}
    for row in rows:  # one token per call at the plateau: the same decode as the headline's plateau row
        if (row["split"], row["method"]) == ("test", "confidence_1"):
            assert row["accuracy"] == plateau_test[row["seed"], row["model"]]["accuracy"]
    assert set(record["parallel_decoding"]["summary"]) == {"flexmdm", "mdm"}
    assert set(record["claims"]["med_speedup"]) == {"flexmdm", "mdm"}
    infilling = record["reasoning_as_infilling"]
    assert infilling["seed"] == 0 and infilling["budget"] == "plateau"
    for kind in ("flexmdm", "mdm"):
        assert infilling[kind]["answer_unchanged"] == 1.0
        assert set(infilling[kind]["mean_log_p_gold_answer_by_prefix"]) == {"0.0", "1.0"}
    assert out.with_suffix(".png").stat().st_size > 0


def _rows(seed, split, method, param, accuracy, nfe):
    return {"seed": seed, "model": "m", "split": split, "method": method, "param": param, "accuracy": accuracy,
            "mean_nfe": nfe, "trace_exact": accuracy}


def test_summary_chooses_on_validation_and_reports_test():
    """The cheapest MED within a point of one token per call on validation (mean over seeds) is chosen,
    whatever test says; its test row is summarised over seeds against each seed's one token per call."""
    results = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        results += [_rows(seed, "validation", "confidence_1", 1, 0.90 + shift, 30),
                    _rows(seed, "test", "confidence_1", 1, 0.95 - shift, 30),
                    _rows(seed, "validation", "med", 0.1, 0.895 + shift, 10),
                    _rows(seed, "test", "med", 0.1, 0.80 - shift, 10 + 5 * seed),
                    _rows(seed, "validation", "med", 0.4, 0.85 + shift, 4),
                    _rows(seed, "test", "med", 0.4, 0.95, 4)]
    choice = summarize(results, within=0.01)["m"]["med_within"]
    assert choice["param"] == 0.1 and choice["split"] == "test" and choice["seeds"] == [0, 1]
    assert choice["accuracy"] == pytest.approx(0.79) and choice["accuracy_stderr"] == pytest.approx(0.01)
    assert choice["validation_accuracy"] == pytest.approx(0.905)
    assert choice["speedup"] == pytest.approx((3.0 + 2.0) / 2) and choice["accuracy_drop"] == pytest.approx(0.15)
    assert summarize(results, within=0.001)["m"]["med_within"] is None
    assert summarize(results, within=0.01)["m"]["eb_within"] is None  # no EB decoder was run


def test_claims_read_the_plateau_and_med_choices():
    budgets = [{"budget": "plateau", "model": "flexmdm", "accuracy": 0.62}, {"budget": "plateau", "model": "mdm",
                                                                           "accuracy": 0.70}]
    summary = {"flexmdm": {"med_within": {"speedup": 3.0, "accuracy_drop": 0.005}},
               "mdm": {"med_within": {"speedup": 2.4, "accuracy_drop": 0.0}}}
    verdict = claims(budgets, summary)
    assert verdict["plateau_accuracy_gap"] == pytest.approx(0.08) and not verdict["flexmdm_within_gap_of_mdm"]
    assert not verdict["med_fast_and_accurate"]  # the MDM's MED saves only 2.4x
    summary["mdm"]["med_within"]["speedup"] = 2.5
    assert claims(budgets, summary, gap=0.1)["flexmdm_within_gap_of_mdm"] and claims(budgets, summary)[
        "med_fast_and_accurate"]
    summary["mdm"]["med_within"] = None
    assert not claims(budgets, summary)["med_fast_and_accurate"]
