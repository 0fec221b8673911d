"""``flexmdm bench reasoning`` writes a complete record (tiny monkeypatched settings)."""

import json
import sys

import pytest

from flexmdm.bench import reasoning as reasoning_bench
from flexmdm.cli import main

pytestmark = pytest.mark.e2e


def test_reasoning_record_and_plot(tmp_path, monkeypatch):
    def tiny(cls):
        settings = reasoning_bench.ReasoningBenchSettings(
            num_train=200, min_steps=2, max_steps=3, num_eval=6, eval_batch=4, flexmdm_grid_steps=3,
            med_thresholds=(0.2,), eb_budgets=(0.3,), exit_med_thresholds=(0.2,), exit_reduces=("max", "mean"),
            num_posterior=3,
            prefix_fractions=(0.0, 1.0))
        settings.model = {"d_model": 16, "n_layers": 1, "n_heads": 2}
        settings.train.update(steps=2, batch_size=8, warmup_steps=1, save_every=0, log_every=1, eval_batches=1)
        return settings

    monkeypatch.setattr(reasoning_bench.ReasoningBenchSettings, "quick", classmethod(tiny))
    out = tmp_path / "reasoning.json"
    argv = ["bench", "reasoning", "--quick", "--out", str(out), "--seed", "1"]
    monkeypatch.setattr(sys, "argv", ["flexmdm", *argv])
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert {"command", "seed", "wall_seconds", "config", "results", "summary", "reasoning_as_infilling"} <= set(record)
    assert record["seed"] == 1 and record["command"].startswith("flexmdm bench reasoning")
    methods = {(r["model"], r["method"], r["param"], r.get("exit_reduce")) for r in record["results"]}
    assert methods == {(m, *rest) for m in ("flexmdm", "mdm") for rest in
                       [("confidence_1", 1, None), ("med", 0.2, None), ("eb", 0.3, None),
                        ("med_exit", 0.2, "max"), ("med_exit", 0.2, "mean")]}
    for row in record["results"]:
        assert {"model", "method", "param", "accuracy", "mean_nfe", "n", "mean_reasoning_length"} <= set(row)
        assert 0 <= row["accuracy"] <= 1 and row["n"] == 6 and row["mean_nfe"] >= 1
    mdm_one = next(r for r in record["results"] if r["model"] == "mdm" and r["method"] == "confidence_1")
    assert mdm_one["mean_nfe"] == 3 * 6 - 1 + 1  # one call per generable slot of the canvas
    for kind in ("flexmdm", "mdm"):
        extra = record["reasoning_as_infilling"][kind]
        assert extra["answer_unchanged"] == 1.0
        assert set(extra["mean_log_p_gold_answer_by_prefix"]) == {"0.0", "1.0"}
        assert all(v <= 0 for v in extra["mean_log_p_gold_answer_by_prefix"].values())
    assert set(record["summary"]) == {"flexmdm", "mdm"}
    assert out.with_suffix(".png").stat().st_size > 0
