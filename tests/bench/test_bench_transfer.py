"""``flexmdm bench transfer --quick`` end to end: a pretrained MDM, both instruction-tuned arms, a complete record."""

import json
from pathlib import Path

import pytest

from flexmdm.bench import transfer as transfer_bench
from flexmdm.bench.transfer_settings import TransferBenchSettings
from flexmdm.cli import main as cli_main

pytestmark = pytest.mark.e2e

ARMS = {"mdm", "flexmdm"}


def test_quick_run_record(tmp_path):
    out = tmp_path / "transfer.json"
    assert cli_main(["bench", "transfer", "--quick", "--out", str(out), "--seed", "2"]) == 0
    record = json.loads(out.read_text())
    quick = transfer_bench.TransferBenchSettings.quick()
    assert record["seeds"] == [2] and record["split"] == "test" and record["command"].startswith("flexmdm bench transfer")
    # math: every arm at every sampling step count, on the whole test split
    test_size = record["data"]["evaluation"]["test"]
    assert {(r["arm"], r["steps"]) for r in record["math"]} == {(a, s) for a in ARMS for s in quick.sampling_steps}
    for row in record["math"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n"] == test_size > 0 and row["mean_nfe"] >= 1
        assert row["train_steps"] == quick.ift["steps"] and row["split"] == "test"
    # whether each arm reads its question: its answer loss under its own question and under another's
    assert set(record["prompt_use"]) == ARMS
    for use in record["prompt_use"].values():
        assert use["own"] > 0 and use["gain"] == pytest.approx(use["other"] - use["own"]) and 0 < use["n"] <= test_size
    # infill: one row per arm, held-out modules and HumanEval
    assert {r["arm"] for r in record["infill"]} == ARMS and len(record["infill"]) == 2
    for row in record["infill"]:
        assert 0.0 <= row["exact_match"] <= 1.0 and 0.0 <= row["parse_rate"] <= 1.0 and row["length_abs_error"] >= 0
        assert 0.0 <= row["pass_at_1"] <= 1.0 and row["humaneval_n"] == quick.data.num_humaneval
        assert row["n"] == record["data"]["evaluation"]["infill"] // 2 > 0  # the test half of the held-out infills
    # budgets from the checkpoints: both arms at equal steps and at equal CPU time
    budgets = {(r["budget"], r["arm"]) for r in record["budget"]}
    assert {(b, a) for b in ("equal_steps", "equal_cpu") for a in ARMS} <= budgets
    checkpoints = quick.ift["steps"] // quick.ift["save_every"]
    assert all([p["step"] for p in curve] == [quick.ift["save_every"] * (i + 1) for i in range(checkpoints)]
               for curve in record["curves"].values())
    assert all(r["step"] == quick.ift["steps"] for r in record["budget"] if r["budget"] == "equal_steps")
    # the pretrained origin and the choices made on validation
    pretrain = record["pretrain"]
    assert pretrain["steps"] == quick.pretrain["steps"] and pretrain["final_val_loss"] > 0
    assert pretrain["corpus"]["tokens"] > pretrain["corpus"]["documents"] > 0
    for task in ("math", "infill"):  # the same number of sampler trials per arm, chosen on validation
        tuning = record["tuning"][task]
        assert tuning["split"] == "validation" and set(tuning["choice"]) == ARMS
        assert len(tuning["trials"]["mdm"]) == len(tuning["trials"]["flexmdm"]) == 3
        assert [t["insertion"] for t in tuning["trials"]["flexmdm"]] == ["exact"] + 2 * [quick.grid_insertion]
    assert {r["rule"] for r in record["math"] if r["arm"] == "flexmdm"} == {record["tuning"]["math"]["choice"]["flexmdm"]["rule"]}
    # both arms adapt from the one origin on the same corpus and steps, then tune from their adapted weights
    adapt, tune = record["adapt_configs"], record["train_configs"]
    origin = adapt["mdm"]["init"]["base"]
    assert adapt["flexmdm"]["retrofit"]["base"] == origin == tune["flexmdm"]["retrofit"]["base"]
    assert adapt["mdm"]["data"] == adapt["flexmdm"]["data"] and adapt["mdm"]["data"]["task"] == "text"
    assert {record["adapt"][arm]["train_steps"] for arm in ARMS} == {quick.adapt["steps"]}
    assert tune["mdm"]["init"]["base"] != origin and Path(tune["mdm"]["init"]["base"]).is_dir()
    assert tune["flexmdm"]["retrofit"]["adapters_from"] == str(Path(adapt["flexmdm"]["output_dir"]) / "adapters")
    assert tune["mdm"]["data"] == tune["flexmdm"]["data"] and tune["mdm"]["data"]["task"] == "instruct"
    assert tune["flexmdm"]["train"]["gap_weight"] == quick.gap_weight and "gap_weight" not in tune["mdm"]["train"]
    assert tune["flexmdm"]["train"]["time_power"] == quick.flex_time_power and "time_power" not in tune["mdm"]["train"]
    assert tune["flexmdm"]["schedules"]["insertion"] == quick.insertion_schedule
    assert set(record["arms"]) == ARMS
    for name in record["plots"]:
        assert (tmp_path / name).stat().st_size > 0


def test_grid_insertion_is_poisson_or_binomial():
    with pytest.raises(ValueError, match="grid_insertion must be 'poisson' or 'binomial', got 'exact'"):
        TransferBenchSettings(grid_insertion="exact")
