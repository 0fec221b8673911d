"""``flexmdm bench reasoning`` writes a complete record (tiny settings)."""

import json

import pytest

from flexmdm.bench import reasoning as reasoning_bench
from flexmdm.bench.reasoning_report import summarize

pytestmark = pytest.mark.e2e


def tiny_settings() -> reasoning_bench.ReasoningBenchSettings:
    settings = reasoning_bench.ReasoningBenchSettings(
        num_train=200, min_steps=2, max_steps=3, num_test=6, eval_batch=4, med_thresholds=(0.2,), eb_budgets=(0.3,),
        exit_med_thresholds=(0.2,), exit_reduces=("max", "mean"), num_posterior=3, prefix_fractions=(0.0, 1.0))
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
    assert {"command", "seed", "seeds", "split", "tuning", "budgets", "curves", "wall_seconds", "config", "results",
            "summary", "reasoning_as_infilling"} <= set(record)
    assert record["seed"] == 1 and record["command"].startswith("flexmdm bench reasoning")
    methods = {(r["model"], r["split"], r["method"], r["param"], r.get("exit_reduce")) for r in record["results"]}
    assert methods == {(m, split, *rest) for m in ("flexmdm", "mdm") for split in ("validation", "test") for rest in
                       [("confidence_1", 1, None), ("med", 0.2, None), ("eb", 0.3, None),
                        ("med_exit", 0.2, "max"), ("med_exit", 0.2, "mean")]}
    for row in record["results"]:
        assert 0 <= row["trace_exact"] <= 1 and 0 <= row["accuracy"] <= 1
        assert row["n"] == (6 if row["split"] == "test" else 256) and row["mean_nfe"] >= 1
    mdm_one = next(r for r in record["results"] if r["model"] == "mdm" and r["method"] == "confidence_1"
                   and r["split"] == "test")
    assert mdm_one["mean_nfe"] == 3 * 6 - 1 + 1  # one call per generable slot of the canvas
    # one curve point per checkpoint, in step order, with the seconds spent to reach it
    assert [p["step"] for p in record["curves"]["flexmdm"]] == [1, 2, 3]
    assert [p["step"] for p in record["curves"]["mdm"]] == [1, 2]
    seconds = [p["train_seconds"] for p in record["curves"]["flexmdm"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    budgets = {(r["budget"], r["model"]): r["step"] for r in record["budgets"]}
    assert budgets[("equal_steps", "flexmdm")] == 2 and budgets[("equal_steps", "mdm")] == 2
    assert budgets[("plateau", "flexmdm")] == 3 and budgets[("plateau", "mdm")] == 2
    for kind in ("flexmdm", "mdm"):
        extra = record["reasoning_as_infilling"][kind]
        assert extra["answer_unchanged"] == 1.0
        assert set(extra["mean_log_p_gold_answer_by_prefix"]) == {"0.0", "1.0"}
        assert all(v <= 0 for v in extra["mean_log_p_gold_answer_by_prefix"].values())
    assert set(record["summary"]) == {"flexmdm", "mdm"}
    assert out.with_suffix(".png").stat().st_size > 0


def _row(split, method, param, accuracy, nfe):
    return {"model": "m", "split": split, "method": method, "param": param, "accuracy": accuracy, "mean_nfe": nfe}


def test_summary_chooses_on_validation_and_reports_test():
    """The cheapest MED within a point of one token per call on validation is chosen, whatever test says."""
    results = [_row("validation", "confidence_1", 1, 0.90, 30), _row("test", "confidence_1", 1, 0.95, 30),
               _row("validation", "med", 0.1, 0.895, 10), _row("test", "med", 0.1, 0.80, 10),
               _row("validation", "med", 0.4, 0.85, 4), _row("test", "med", 0.4, 0.95, 4)]
    choice = summarize(results, within=0.01)["m"]["med_within"]
    assert choice["param"] == 0.1 and choice["split"] == "test" and choice["accuracy"] == 0.80
    assert choice["validation_accuracy"] == 0.895 and choice["speedup"] == 3.0
    assert summarize(results, within=0.001)["m"]["med_within"] is None
