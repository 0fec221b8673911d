"""``flexmdm bench length`` under the fair rules: the held-out halves, the noise floor, and a complete
record with its plots (tiny settings, local corpus), its tuning reading validation alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from flexmdm.bench import length as length_bench
from flexmdm.bench.length_evaluation import LengthEvaluation, held_out_halves, length_trials, noise_floor

ROW_KEYS = {"seed", "budget", "model", "step", "train_seconds", "length_tv", "length_w1", "gen_ppl", "n", "length",
            "mean_length", "mean_nfe", "unigram_entropy", "example"}


def test_held_out_halves_partition_the_held_out_set_by_seed():
    sequences = [[i] * (1 + i % 5) for i in range(11)]
    halves = held_out_halves(sequences, seed=4)
    assert len(halves["validation"]) == 5 and len(halves["test"]) == 6
    assert sorted(halves["validation"] + halves["test"]) == sorted(sequences)
    assert halves == held_out_halves(sequences, seed=4)
    assert halves["validation"] != held_out_halves(sequences, seed=5)["validation"]


def test_noise_floor_is_a_mean_over_draws_of_training_lengths():
    floor = noise_floor(np.full(50, 2), np.array([4, 4, 4]), n=10, draws=5, seed=0)
    assert floor == {"n": 10, "draws": 5, "length_w1": 2.0, "length_w1_stderr": 0.0, "length_tv": 1.0,
                     "length_tv_stderr": 0.0}
    train = np.arange(40) % 8
    varied = noise_floor(train, np.array([0, 7]), n=6, draws=20, seed=1)
    draws = np.random.default_rng(1)
    by_hand = [np.abs(np.cumsum(np.bincount(draws.choice(train, 6, replace=False), minlength=8) / 6)
                      - np.cumsum(np.bincount([0, 7], minlength=8) / 2)).sum() for _ in range(20)]
    assert varied["length_w1"] == pytest.approx(np.mean(by_hand))
    assert varied["length_w1_stderr"] == pytest.approx(np.std(by_hand, ddof=1) / np.sqrt(20))


def test_length_trials_are_the_same_knobs_for_both_models():
    trials = length_trials((8, 32))
    assert [(t.rule, t.steps, t.insertion) for t in trials["flexmdm"]] == [
        ("tau_leaping", 8, "poisson"), ("tau_leaping", 32, "poisson"), ("top_probability", 32, "poisson")]
    assert [(t.rule, t.steps, t.insertion) for t in trials["mdm"]] == [
        ("tau_leaping", 8, None), ("tau_leaping", 32, None), ("top_probability", 32, None)]


def _documents() -> list[str]:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum".split()
    documents = []
    for i in range(60):
        sentence = " ".join(words[(i + j) % len(words)] for j in range(2 + i % 13)).capitalize() + "."
        documents.append(f"{sentence}\n\nParagraph {i}: {sentence.lower()} {sentence}")
    return documents


@pytest.mark.e2e
def test_length_record_and_plots(tmp_path, monkeypatch):
    splits_read = []

    class Recording(LengthEvaluation):
        def __call__(self, model, point, trial, split, seed):
            splits_read.append(split)
            return super().__call__(model, point, trial, split, seed)

    monkeypatch.setattr(length_bench, "LengthEvaluation", Recording)
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in _documents()))
    settings = length_bench.LengthBenchSettings(trials=length_trials((2, 4)), num_samples=12, sample_batch_size=5,
                                                noise_draws=4)
    settings.data = {"source": str(source), "max_length": 16, "vocab_size": 300, "validation_fraction": 0.2}
    settings.model = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    settings.steps = {"flexmdm": 4, "mdm": 2}
    settings.train.update(batch_size=8, warmup_steps=1, save_every=2, log_every=1, eval_batches=1)
    settings.reference_steps = 2
    out = tmp_path / "length.json"
    length_bench.run_length_benchmark(out, seed=3, argv=["bench", "length", "--seed", "3"], settings=settings, seeds=2)
    record = json.loads(out.read_text())
    assert record["seed"] == 3 and record["command"].startswith("flexmdm ")
    assert record["seeds"] == [0, 1] and record["split"] == "test" and record["headline_budget"] == "equal_steps"

    # tuning: three trials each, scored on validation only, before any test sample was scored
    tuning = record["tuning"]
    assert tuning["split"] == "validation" and tuning["budget"] == "equal_steps" and tuning["seeds"] == [0, 1]
    assert "lowest validation length_w1" in tuning["criterion"] and "gen_ppl within 15%" in tuning["criterion"]
    assert {model: len(trials) for model, trials in tuning["trials"].items()} == {"flexmdm": 3, "mdm": 3}
    assert set(tuning["training_recipes"]) == {"flexmdm", "mdm"}
    first_test = splits_read.index("test")
    assert set(splits_read[:first_test]) == {"validation"} and set(splits_read[first_test:]) == {"test"}
    assert first_test == 2 * 3 * 2  # models × trials × seeds

    # both budgets, summarised over both seeds; FlexMDM's checkpoints at 2 and 4 steps, the MDM's at 2
    budgets = {(row["budget"], row["model"]): row for row in record["budgets"]}
    assert set(budgets) == {(b, m) for b in ("equal_steps", "equal_cpu") for m in ("flexmdm", "mdm")}
    assert budgets["equal_steps", "flexmdm"]["step"] == budgets["equal_steps", "mdm"]["step"] == 2
    assert 2 <= budgets["equal_cpu", "flexmdm"]["step"] <= 4 and budgets["equal_cpu", "mdm"]["step"] == 2  # seed means
    for row in record["budgets"]:
        assert row["seeds"] == [0, 1] and 0 <= row["length_w1"] <= 16 and row["length_w1_stderr"] >= 0
        assert {f"{metric}_stderr" for metric in length_bench.METRICS} <= set(row)
    assert record["results"] == [row for row in record["budgets"] if row["budget"] == "equal_steps"]
    assert len(record["per_seed"]) == 2 * 2 * 2  # seeds × budgets × models
    for row in record["per_seed"]:
        assert ROW_KEYS <= set(row) and row["n"] == 12 and len(row["example"]) == 3
        assert row["mean_nfe"] >= 1 and 0 <= row["length_tv"] <= 1
        choice = tuning["choice"][row["model"]]
        assert choice["rule"] in ("tau_leaping", "top_probability") and choice["steps"] in (2, 4)

    sizes = record["config"]["sequences"]
    assert abs(sizes["validation"] - sizes["test"]) <= 1 and record["reference"]["n"] == sizes["test"]
    floor = record["noise_floor"]
    assert floor["n"] == 12 and floor["draws"] == 4 and floor["length_w1_stderr"] is not None
    # the diffusion models trained per seed with checkpoints kept, the reference LM once
    for seed in (0, 1):
        for kind in ("flexmdm", "mdm"):
            saved = yaml.safe_load((tmp_path / "length" / f"seed{seed}" / kind / "config.yaml").read_text())
            assert saved["train"]["seed"] == seed and saved["train"]["keep_last"] == 0
            assert saved["train"]["length_buckets"] == (4 if kind == "flexmdm" else 1)
            flexmdm_insertion = length_bench.LengthBenchSettings().flexmdm_insertion_schedule
            assert saved["schedules"]["insertion"] == (flexmdm_insertion if kind == "flexmdm" else {"name": "linear"})
    assert (tmp_path / "length" / "autoregressive" / "model" / "tokenizer.json").is_file()
    assert not (tmp_path / "length" / "seed2").exists()
    assert record["plots"] == ["length.png", "length-ppl.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in record["plots"])

    # run again: the training runs are complete and every set of samples is read back from the work
    # folder, none drawn again, so the record's rows are the same
    monkeypatch.setattr(Recording, "_draw", lambda self, *args: pytest.fail(f"drew {args} again"))
    length_bench.run_length_benchmark(out, seed=3, argv=["bench", "length", "--seed", "3"], settings=settings, seeds=2)
    assert json.loads(out.read_text())["per_seed"] == record["per_seed"]
