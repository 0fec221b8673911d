"""``flexmdm bench infill`` writes a complete record and its plot (tiny settings, local modules)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from flexmdm.bench import infill as infill_bench
from flexmdm.bench.commands import BENCHMARKS
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.infill import InfillTask
from flexmdm.tasks.infill.evaluation import fill_middles
from flexmdm.training.config import config_from_dict
from flexmdm.training.trainer import train
from tests.infill_fixtures import write_modules

pytestmark = pytest.mark.e2e

ROW_KEYS = {"model", "setting", "exact_match", "parse_rate", "length_abs_error", "n"}


def _tiny_settings(source: str) -> infill_bench.InfillBenchSettings:
    settings = infill_bench.InfillBenchSettings(examples_per_kind=4, sampling_steps=4, sample_batch_size=3)
    settings.data.update(source=source, vocab_size=300, max_function_tokens=80, max_middle_tokens=24,
                         held_out_fraction=0.3)
    settings.model = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    settings.steps = {"flexmdm": 3, "mdm": 2}
    settings.train.update(batch_size=8, warmup_steps=1, save_every=0, log_every=1, eval_batches=1)
    return settings


def test_infill_record_and_plot(tmp_path):
    source = write_modules(tmp_path / "src")
    assert "infill" in BENCHMARKS
    out = tmp_path / "infill.json"
    infill_bench.run_infill_benchmark(out, seed=2, argv=["bench", "infill", "--seed", "2"],
                                      settings=_tiny_settings(str(source)))
    record = json.loads(out.read_text())
    assert {"command", "seed", "wall_seconds", "config", "machine", "results", "results_by_span", "samples"} <= set(record)
    assert record["seed"] == 2 and record["command"].startswith("flexmdm ")
    assert record["wall_seconds"] > 0
    rows = record["results"]
    assert [(r["model"], r["setting"]) for r in rows] == [
        ("flexmdm", "flexible"), ("mdm", "true_length"), ("mdm", "fixed_budget")]
    examples = record["config"]["examples"]
    assert 0 < examples["single_line"] <= 4 and 0 < examples["multi_line"] <= 4
    for row in rows:
        assert ROW_KEYS <= set(row) and row["n"] == examples["single_line"] + examples["multi_line"]
        assert 0 <= row["exact_match"] <= 1 and 0 <= row["parse_rate"] <= 1
        assert 0 <= row["length_abs_error"] <= 24
    assert rows[1]["length_abs_error"] == 0.0  # told the true length, PAD ruled out
    by_span = record["results_by_span"]
    assert len(by_span) == 6 and {r["span"] for r in by_span} == {"single_line", "multi_line"}
    for row in rows:  # the overall row is the n-weighted mean of its span rows
        parts = [r for r in by_span if r["setting"] == row["setting"]]
        assert sum(r["n"] for r in parts) == row["n"]
        for key in ("exact_match", "parse_rate", "length_abs_error"):
            assert abs(sum(r[key] * r["n"] for r in parts) / row["n"] - row[key]) < 1e-9
    assert (tmp_path / "infill.png").stat().st_size > 0 and record["plots"] == ["infill.png"]
    assert {r["model"]: r["train_steps"] for r in rows} == {"flexmdm": 3, "mdm": 2}
    for kind in ("flexmdm", "mdm"):
        assert (tmp_path / "infill" / kind / "model" / "tokenizer.json").is_file()
        saved = yaml.safe_load((tmp_path / "infill" / kind / "config.yaml").read_text())
        assert saved["train"]["length_buckets"] == (4 if kind == "flexmdm" else 1)
        flexmdm_insertion = infill_bench.InfillBenchSettings().flexmdm_insertion_schedule
        assert saved["schedules"]["insertion"] == (flexmdm_insertion if kind == "flexmdm" else {"name": "linear"})


def test_fill_middles_respects_each_setting(tmp_path):
    """Generated middles: FlexMDM within the budget, MDM exactly the true length or at most the budget."""
    source = write_modules(tmp_path / "src")
    settings = _tiny_settings(str(source))
    work = tmp_path / "work"
    trained = {}
    for kind in ("flexmdm", "mdm"):
        config = config_from_dict(infill_bench._train_config(settings, kind, work, seed=0))
        trained[kind] = train(config).model_dir
    task = InfillTask(**{k: v for k, v in settings.data.items()}, cache_dir=str(work / "corpus-cache"))
    examples = task.evaluation_examples("single_line", 3) + task.evaluation_examples("multi_line", 3)
    for kind, setting in infill_bench.SETTINGS:
        pipe = Pipeline.from_pretrained(trained[kind])
        middles = fill_middles(pipe, setting, examples, task, steps=4, generator=torch.Generator().manual_seed(0))
        assert len(middles) == len(examples)
        for example, middle in zip(examples, middles):
            assert task.vocab.mask_id not in middle and task.vocab.pad_id not in middle
            if setting == "true_length":
                assert len(middle) == len(example.middle)
            else:
                assert len(middle) <= task.max_middle_tokens
    with pytest.raises(ValueError, match="'flexible' is for a FlexMDM, not a MDM model"):
        fill_middles(Pipeline.from_pretrained(trained["mdm"]), "flexible", examples, task, steps=4,
                     generator=torch.Generator())
    with pytest.raises(ValueError, match="unknown setting 'oracle'"):
        fill_middles(pipe, "oracle", examples, task, steps=4, generator=torch.Generator())
