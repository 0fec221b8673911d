"""``flexmdm bench infill`` writes a complete record and its plot (tiny settings, local modules)."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics

import pytest
import yaml

from flexmdm.bench import infill as infill_bench
from flexmdm.bench.commands import BENCHMARKS
from flexmdm.bench.tuning import DecoderTrial
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.infill import InfillTask
from flexmdm.tasks.infill.evaluation import fill_middles
from flexmdm.training.config import config_from_dict
from flexmdm.training.trainer import train
from tests.infill_fixtures import write_modules

pytestmark = pytest.mark.e2e

METRICS = {"exact_match", "parse_rate", "length_abs_error", "mean_nfe", "exact_plus_parse", "n"}
BUDGETS = ("equal_steps", "equal_cpu", "plateau")
SETTING = {"flexmdm": "flexible", "mdm": "fixed_budget"}


def _tiny_settings(source: str) -> infill_bench.InfillBenchSettings:
    trials = {"flexmdm": [DecoderTrial("one_per_call", 4, "exact"), DecoderTrial("top_probability", 4, "poisson")],
              "mdm": [DecoderTrial("one_per_call", 4), DecoderTrial("margin", 4)]}
    settings = infill_bench.InfillBenchSettings(examples_per_kind=3, trials=trials, sample_batch_size=4, seeds=2)
    settings.data.update(source=source, vocab_size=300, max_function_tokens=80, max_middle_tokens=24,
                         held_out_fraction=0.5)
    settings.model = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    settings.steps = {"flexmdm": 4, "mdm": 2}
    settings.train.update(batch_size=8, warmup_steps=1, save_every=1, log_every=1, eval_batches=1)
    return settings


def test_infill_record_is_fair_seeds_budgets_tuning_and_a_test_split(tmp_path, monkeypatch):
    source = write_modules(tmp_path / "src")
    assert "infill" in BENCHMARKS
    settings = _tiny_settings(str(source))
    task = InfillTask(**settings.data, cache_dir=str(tmp_path / "infill" / "corpus-cache"))
    parts = {part: {e.name for kind in ("single_line", "multi_line") for e in task.evaluation_examples(kind, 3, part, 2)}
             for part in ("validation", "test")}
    filled = []  # the examples of every fill_middles call
    fill = infill_bench.fill_middles

    def recording_fill(pipe, prefixes, suffixes, **options):
        filled.append((pipe.family.inserts, tuple(map(tuple, prefixes))))
        return fill(pipe, prefixes, suffixes, **options)

    monkeypatch.setattr(infill_bench, "fill_middles", recording_fill)
    out = tmp_path / "infill.json"
    infill_bench.run_infill_benchmark(out, seed=2, argv=["bench", "infill", "--seed", "2"], settings=settings)
    record = json.loads(out.read_text())
    assert {"command", "seed", "wall_seconds", "config", "machine", "results", "budgets", "per_seed", "tuning",
            "plateau_gain", "results_by_span", "samples", "train_threads"} <= set(record)
    assert record["seed"] == 2 and record["command"].startswith("flexmdm bench infill")
    assert record["seeds"] == [0, 1] and record["split"] == "test" and record["headline_budget"] == "equal_steps"
    assert parts["validation"] and parts["test"] and not parts["validation"] & parts["test"]
    n = record["config"]["examples"]
    assert n == {part: len(names) for part, names in parts.items()}

    # every budget, model and seed on test; the summary is the mean ± stderr of the per-seed rows
    assert [(r["budget"], r["model"], r["setting"]) for r in record["budgets"]] == [
        (b, m, SETTING[m]) for b in BUDGETS for m in ("flexmdm", "mdm")]
    steps = {(r["budget"], r["model"]): r["step"] for r in record["budgets"]}
    assert steps[("equal_steps", "flexmdm")] == steps[("equal_steps", "mdm")] == 2  # the MDM's last step
    assert steps[("plateau", "flexmdm")] == 4 and steps[("plateau", "mdm")] == 2
    # equal CPU follows measured times: whichever model finished first bounds the other, per seed
    assert all(1 <= steps[("equal_cpu", model)] <= last for model, last in (("flexmdm", 4), ("mdm", 2)))
    cpu = {(r["seed"], r["model"]): r["step"] for r in record["per_seed"] if r["budget"] == "equal_cpu"}
    assert all(cpu[seed, "flexmdm"] == 4 or cpu[seed, "mdm"] == 2 for seed in (0, 1))  # the first to finish: its last
    assert record["results"] == [r for r in record["budgets"] if r["budget"] == "equal_steps"]
    for row in record["budgets"]:
        per_seed = [r for r in record["per_seed"] if (r["budget"], r["model"]) == (row["budget"], row["model"])]
        assert [r["seed"] for r in per_seed] == [0, 1] and all(r["n"] == n["test"] for r in per_seed)
        for key in ("exact_match", "parse_rate", "length_abs_error"):
            values = [r[key] for r in per_seed]
            assert row[key] == pytest.approx(statistics.fmean(values))
            assert row[f"{key}_stderr"] == pytest.approx(statistics.stdev(values) / math.sqrt(2))
        for r in per_seed:
            assert METRICS <= set(r) and 0 <= r["exact_match"] <= 1 and 0 <= r["parse_rate"] <= 1
            assert r["exact_plus_parse"] == pytest.approx(r["exact_match"] + r["parse_rate"])
            assert 0 <= r["length_abs_error"] <= 24 and r["mean_nfe"] >= 1
    gains = {(g["seed"], g["model"]): g for g in record["plateau_gain"]}
    assert set(gains) == {(s, m) for s in (0, 1) for m in ("flexmdm", "mdm")}
    assert gains[0, "flexmdm"]["step"] == 4 and gains[0, "flexmdm"]["previous_step"] == 3
    g = gains[1, "mdm"]
    assert g["gain"] == pytest.approx(g["validation_exact_plus_parse"] - g["previous_validation_exact_plus_parse"])

    # equal tuning on validation: the same trials each, the best validation score chosen
    tuning = record["tuning"]
    assert tuning["split"] == "validation" and tuning["budget"] == "equal_steps" and tuning["seeds"] == [0, 1]
    assert "exact_plus_parse" in tuning["criterion"] and "length_abs_error" in tuning["criterion"]
    for model, scored in tuning["trials"].items():
        assert [{k: t[k] for k in ("rule", "steps", "insertion")} for t in scored] == [
            dataclasses.asdict(t) for t in settings.trials[model]]
        best = max(scored, key=lambda t: (t["exact_plus_parse"], -t["length_abs_error"]))
        assert tuning["choice"][model]["rule"] == best["rule"]
    # each call filled one part's examples; FlexMDM and MDM were asked the same ones
    prefixes = {part: {tuple(e.prefix) for kind in ("single_line", "multi_line")
                       for e in task.evaluation_examples(kind, 3, part, 2)} for part in parts}
    assert all(set(called) in (prefixes["validation"], prefixes["test"]) for _, called in filled)
    assert {inserts for inserts, _ in filled} == {True, False}

    # by span kind: the n-weighted mean of the two span rows is the headline row, seed by seed
    spans = record["per_seed_by_span"]
    assert {(r["seed"], r["model"], r["span"]) for r in spans} == {
        (s, m, k) for s in (0, 1) for m in ("flexmdm", "mdm") for k in ("single_line", "multi_line")}
    for row in record["per_seed"]:
        if row["budget"] == "equal_steps":
            parts_of = [r for r in spans if (r["seed"], r["model"]) == (row["seed"], row["model"])]
            assert sum(r["n"] for r in parts_of) == row["n"]
            for key in ("exact_match", "parse_rate", "length_abs_error", "mean_nfe"):
                assert sum(r[key] * r["n"] for r in parts_of) / row["n"] == pytest.approx(row[key])
    assert len(record["results_by_span"]) == 4 and all(r["seeds"] == [0, 1] for r in record["results_by_span"])
    assert {s["function"] for m in ("flexmdm", "mdm") for s in record["samples"][m]} <= parts["test"]
    assert (tmp_path / "infill.png").stat().st_size > 0 and record["plots"] == ["infill.png"]
    for s in (0, 1):  # each seed trains both models apart, on their own layouts
        for kind in ("flexmdm", "mdm"):
            saved = yaml.safe_load((tmp_path / "infill" / f"seed{s}" / kind / "config.yaml").read_text())
            assert saved["data"]["layout"] == kind and saved["train"]["seed"] == s
            assert saved["train"]["length_buckets"] == (4 if kind == "flexmdm" else 1)
            flexmdm_insertion = infill_bench.InfillBenchSettings().flexmdm_insertion_schedule
            assert saved["schedules"]["insertion"] == (flexmdm_insertion if kind == "flexmdm" else {"name": "linear"})


def test_fill_middles_keeps_each_model_within_the_budget(tmp_path):
    """Generated middles of either family: no MASK or PAD, at most the budget, a network call or more each."""
    source = write_modules(tmp_path / "src")
    settings = _tiny_settings(str(source))
    work, cache = tmp_path / "work", tmp_path / "work" / "corpus-cache"
    task = InfillTask(**settings.data, cache_dir=str(cache))
    examples = task.evaluation_examples("single_line", 3, "test") + task.evaluation_examples("multi_line", 3, "test")
    for kind in ("flexmdm", "mdm"):
        pipe = Pipeline.from_pretrained(train(config_from_dict(
            infill_bench._train_config(settings, kind, work, cache, seed=0))).model_dir)
        for trial in settings.trials[kind]:
            middles, calls = fill_middles(pipe, [e.prefix for e in examples], [e.suffix for e in examples],
                                          budget=task.max_middle_tokens, options=trial.options(pipe.family.inserts, 0.0),
                                          batch_size=4, seed=0)
            assert len(middles) == len(examples) and calls.shape == (len(examples),) and bool((calls >= 1).all())
            for middle in middles:
                assert task.vocab.mask_id not in middle and task.vocab.pad_id not in middle
                assert len(middle) <= task.max_middle_tokens
