"""``flexmdm bench retrofit`` end to end on a tiny corpus and model, and its two measures."""

import json

import pytest

from flexmdm.bench import retrofit as retrofit_bench

pytestmark = pytest.mark.e2e

KEYS = {"scratch_final_val_loss", "scratch_steps", "retrofit_steps_to_scratch_final", "retrofit_length_tv",
        "command", "seed", "wall_seconds", "curves", "length_tv_noise_floor", "machine"}


def test_steps_to_reach():
    curve = [(10, 3.0), (20, 2.5), (30, 2.6), (40, 2.0)]
    assert retrofit_bench.steps_to_reach(curve, 2.55) == 20
    assert retrofit_bench.steps_to_reach(curve, 2.0) == 40
    assert retrofit_bench.steps_to_reach(curve, 1.9) is None


def test_retrofit_bench_record(tmp_path):
    words = ("sum", "mean", "size", "name", "kind", "path", "mode", "type")
    text = "\n\n".join(f"Return the {a} of the {b}." + " It is cached." * (i % 4)
                       for i, (a, b) in enumerate((a, b) for a in words for b in words))
    (tmp_path / "corpus.txt").write_text(text)

    settings = retrofit_bench.RetrofitBenchSettings(
        source=str(tmp_path / "corpus.txt"), vocab_size=300, max_length=24, pretrain_steps=3, flex_steps=4, batch_size=8,
        eval_every=2, eval_batches=1, samples=6, scratch_samples=3, sample_batch=3, sampling_steps=4)
    settings.model = {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_ratio": 2.0, "rope_theta": 10000.0}
    settings.retrofit = {"lora_rank": 2}
    settings.train.update(warmup_steps=1, log_every=1, save_every=0)
    out = tmp_path / "retrofit.json"
    retrofit_bench.run_retrofit_benchmark(out, work_dir=tmp_path / "work", argv=["bench", "retrofit"],
                                          settings=settings, retrofit={"time_groups": 1})
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
    # --retrofit values join the settings' retrofit section (the caller's settings are left as they were)
    assert record["config"]["retrofit"] == {"lora_rank": 2, "time_groups": 1} and settings.retrofit == {"lora_rank": 2}
    saved = json.loads((tmp_path / "work" / "scratch-flexmdm" / "model" / "config.json").read_text())
    assert saved["model"]["time_groups"] == 1 and saved["model"]["architecture"] == "llada"
