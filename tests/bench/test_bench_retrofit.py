"""``flexmdm bench retrofit`` end to end on a tiny corpus and model, and its two measures."""

import json

import numpy as np
import pytest

from flexmdm.bench import retrofit as retrofit_bench
from flexmdm.cli import main

pytestmark = pytest.mark.e2e

KEYS = {"scratch_final_val_loss", "scratch_steps", "retrofit_steps_to_scratch_final", "retrofit_length_tv",
        "command", "seed", "wall_seconds", "curves", "length_tv_noise_floor", "machine"}


def test_steps_to_reach_and_length_tv():
    curve = [(10, 3.0), (20, 2.5), (30, 2.6), (40, 2.0)]
    assert retrofit_bench.steps_to_reach(curve, 2.55) == 20
    assert retrofit_bench.steps_to_reach(curve, 2.0) == 40
    assert retrofit_bench.steps_to_reach(curve, 1.9) is None
    # lengths {1, 1, 2, 3} vs {1, 2, 2, 2}: |0.5-0.25| + |0.25-0.75| + |0.25-0| = 1.0, TV = 0.5
    assert retrofit_bench.length_tv(np.array([1, 1, 2, 3]), np.array([1, 2, 2, 2]), 4) == 0.5
    assert retrofit_bench.length_tv(np.array([3, 1]), np.array([1, 3]), 4) == 0.0


def test_retrofit_bench_record(tmp_path, monkeypatch):
    words = ("sum", "mean", "size", "name", "kind", "path", "mode", "type")
    text = "\n\n".join(f"Return the {a} of the {b}." + " It is cached." * (i % 4)
                       for i, (a, b) in enumerate((a, b) for a in words for b in words))
    (tmp_path / "corpus.txt").write_text(text)

    def tiny(cls):
        settings = cls(source=str(tmp_path / "corpus.txt"), vocab_size=300, max_length=24, pretrain_steps=3,
                       flex_steps=4, batch_size=8, eval_every=2, eval_batches=1, samples=6, scratch_samples=3, sample_batch=3,
                       sampling_steps=4)
        settings.model = {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_ratio": 2.0, "rope_theta": 10000.0}
        settings.retrofit = {"lora_rank": 2, "time_groups": 1}
        settings.train.update(warmup_steps=1, log_every=1, save_every=0)
        return settings

    monkeypatch.setattr(retrofit_bench.RetrofitBenchSettings, "quick", classmethod(tiny))
    out = tmp_path / "retrofit.json"
    assert main(["bench", "retrofit", "--quick", "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0
    record = json.loads(out.read_text())
    assert KEYS <= set(record) and record["command"].startswith("flexmdm ") and record["seed"] == 0
    assert record["scratch_steps"] == 4 and [p["step"] for p in record["curves"]["scratch"]] == [2, 4]
    assert record["scratch_final_val_loss"] == record["curves"]["scratch"][-1]["val_loss"]
    reached = record["retrofit_steps_to_scratch_final"]
    assert reached is None or reached in (2, 4)
    assert 0.0 <= record["retrofit_length_tv"] <= 1.0 and 0.0 <= record["length_tv_noise_floor"] <= 1.0
    assert 0 < record["parameters"]["retrofit_trainable"] < record["parameters"]["total"]
    assert (tmp_path / "work" / "base-llada" / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "work" / "retrofit-flexmdm" / "adapters").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "retrofit_config.json", "retrofit_modules.safetensors"]
    assert record["checkpoint_bytes"]["adapters"] < record["checkpoint_bytes"]["base"]
    assert out.with_suffix(".png").stat().st_size > 0
