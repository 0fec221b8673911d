"""``flexmdm bench length`` writes a complete record and its plots (tiny settings, local corpus)."""

from __future__ import annotations

import json

import pytest
import yaml

from flexmdm.bench import length as length_bench

pytestmark = pytest.mark.e2e

ROW_KEYS = {"model", "steps", "length_tv", "length_w1", "gen_ppl", "n", "length", "unigram_entropy"}


def _documents() -> list[str]:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum".split()
    documents = []
    for i in range(60):
        sentence = " ".join(words[(i + j) % len(words)] for j in range(2 + i % 13)).capitalize() + "."
        documents.append(f"{sentence}\n\nParagraph {i}: {sentence.lower()} {sentence}")
    return documents


def test_length_record_and_plots(tmp_path):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in _documents()))
    settings = length_bench.LengthBenchSettings(sampling_steps=(2, 4), num_samples=12, sample_batch_size=5)
    settings.data = {"source": str(source), "max_length": 16, "vocab_size": 300, "validation_fraction": 0.2}
    settings.model = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    settings.steps = {"flexmdm": 3, "mdm": 2}
    settings.train.update(batch_size=8, warmup_steps=1, save_every=0, log_every=1, eval_batches=1)
    settings.reference_steps = 2
    out = tmp_path / "length.json"
    length_bench.run_length_benchmark(out, seed=3, argv=["bench", "length", "--seed", "3"], settings=settings)
    record = json.loads(out.read_text())
    assert {"command", "seed", "wall_seconds", "config", "machine", "reference", "noise_floor", "results"} <= set(record)
    assert record["seed"] == 3 and record["command"].startswith("flexmdm ")
    rows = record["results"]
    assert {(r["model"], r["steps"]) for r in rows} == {(m, s) for m in ("flexmdm", "mdm") for s in (2, 4)}
    assert {r["model"]: r["train_steps"] for r in rows} == {"flexmdm": 3, "mdm": 2}
    for row in rows:
        assert ROW_KEYS <= set(row) and row["n"] == 12 and row["train_threads"] >= 1
        assert 0 <= row["length_tv"] <= 1 and 0 <= row["length_w1"] <= 16
        assert row["gen_ppl"] is None or row["gen_ppl"] > 1
        assert 0 <= row["length"]["q25"] <= row["length"]["median"] <= row["length"]["q75"] <= 16
    # the three models were trained in the work dir, next to the output, the tokenizer exported
    for kind in ("flexmdm", "mdm", "autoregressive"):
        assert (tmp_path / "length" / kind / "model" / "tokenizer.json").is_file()
        saved = yaml.safe_load((tmp_path / "length" / kind / "config.yaml").read_text())
        assert saved["train"]["length_buckets"] == (4 if kind == "flexmdm" else 1)
        flexmdm_insertion = length_bench.LengthBenchSettings().flexmdm_insertion_schedule
        assert saved["schedules"]["insertion"] == (flexmdm_insertion if kind == "flexmdm" else {"name": "linear"})
    assert record["plots"] == ["length.png", "length-ppl.png"]
    assert all((tmp_path / name).stat().st_size > 0 for name in record["plots"])
