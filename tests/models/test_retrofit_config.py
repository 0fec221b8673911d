"""Retrofitting a native LLaDA checkpoint through the training configuration's ``retrofit`` section."""

import copy
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from flexmdm.bench.commands import retrofit_overrides
from flexmdm.cli import build_parser, main
from flexmdm.models import ModelConfig, build_model, load_pretrained
from flexmdm.models.llada import load_llada, save_llada, write_tiny_llada_checkpoint
from flexmdm.models.retrofit import ADAPTER_WEIGHTS_NAME, RetrofitConfig, load_retrofit, retrofit, retrofit_state_dict
from flexmdm.pipeline import Pipeline
from flexmdm.training.config import ConfigError, config_from_dict, load_config
from flexmdm.training.network import build_network
from flexmdm.training.trainer import ADAPTERS_DIR, train

BASE = {"kind": "mdm", "architecture": "llada", "vocab_size": 4, "mask_id": 2, "pad_id": 3, "d_model": 32,
        "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "mlp_ratio": 2.0, "max_length": 48}


@pytest.fixture
def base_dir(tmp_path):
    """A native LLaDA checkpoint whose vocabulary is the toy task's (a, b, MASK = 2, PAD = 3)."""
    torch.manual_seed(5)
    return save_llada(build_model(ModelConfig(**BASE)), tmp_path / "base")


def settings(base_dir, tmp_path, name="run", **retrofit_options):
    return {
        "retrofit": {"base": str(base_dir), "lora_rank": 4, **retrofit_options},
        "data": {"task": "toy", "max_a": 8, "max_b": 8},
        "train": {"steps": 3, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "ema_decay": 0.9, "log_every": 1,
                  "eval_batches": 1, "seed": 3, "device": "cpu"},
        "output_dir": str(tmp_path / name),
    }


def test_the_network_comes_from_the_base(base_dir, tmp_path):
    config = config_from_dict(settings(base_dir, tmp_path, time_groups=3, time_rank=4, gap_hidden=8))
    assert config.model == ModelConfig(**{**BASE, "kind": "flexmdm", "time_groups": 3, "time_rank": 4,
                                          "gap_hidden": 8})
    network = build_network(config)
    assert network.config == config.model and network.retrofit_config.time_rank == 4
    base = load_llada(base_dir)
    frozen = {name.replace("backbone.", "", 1).replace(".base_layer", ""): p for name, p in network.named_parameters()
              if not p.requires_grad}
    assert set(frozen) == set(base.state_dict())
    assert all(torch.equal(frozen[name], tensor) for name, tensor in base.state_dict().items())
    # the saved configuration names the base and reloads as it was
    config.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


def test_training_through_the_config_equals_training_with_a_model_factory(base_dir, tmp_path):
    """The config path builds and trains exactly what ``flexmdm bench retrofit`` built with its factory."""
    through_config = train(config_from_dict(settings(base_dir, tmp_path, "config")))
    factory_settings = settings(base_dir, tmp_path, "factory")
    del factory_settings["retrofit"]
    factory_settings["model"] = {**BASE, "kind": "flexmdm"}
    adapters = RetrofitConfig(lora_rank=4)
    def factory(_model_config):
        return retrofit(load_llada(base_dir, dtype=torch.float32), adapters, seed=3)

    through_factory = train(config_from_dict(factory_settings), model_factory=factory)
    assert through_config.steps == through_factory.steps == 3 and through_config.loss == through_factory.loss
    ours = load_file(through_config.output_dir / ADAPTERS_DIR / ADAPTER_WEIGHTS_NAME)
    theirs = load_file(through_factory.output_dir / ADAPTERS_DIR / ADAPTER_WEIGHTS_NAME)
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(bool(v.abs().sum() > 0) for k, v in ours.items() if "lora_B" in k)  # the adapters trained


def test_low_rank_conditioning_trains_and_exports(base_dir, tmp_path):
    result = train(config_from_dict(settings(base_dir, tmp_path, time_rank=4, gap_hidden=8)))
    exported, saved = load_pretrained(result.model_dir)
    assert saved["model"]["time_rank"] == 4 and saved["model"]["gap_hidden"] == 8
    attached, record = load_retrofit(base_dir, result.output_dir / ADAPTERS_DIR)
    assert record["retrofit"]["time_rank"] == 4
    assert any(bool(p.abs().sum() > 0) for n, p in attached.named_parameters() if n.startswith("time_modulations"))
    x = torch.tensor([[0, 0, 1, 3], [1, 1, 1, 1]])
    t, lengths = torch.tensor([0.2, 0.7]), torch.tensor([3, 4])
    with torch.no_grad():
        (logits, gaps), (exported_logits, exported_gaps) = attached(x, t, lengths), exported(x, t, lengths)
    live = torch.arange(4) < lengths[:, None]
    torch.testing.assert_close(exported_logits[live][:, :2], logits[live][:, :2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(exported_gaps, gaps, rtol=1e-4, atol=1e-5)
    texts = Pipeline.from_pretrained(result.model_dir).generate("a b", num=3, steps=4).texts  # the 3-line use
    assert len(texts) == 3 and all(text.startswith("a b") for text in texts)


def test_a_bfloat16_base_keeps_its_weights_and_trains_float32_adapters(base_dir, tmp_path):
    raw = settings(base_dir, tmp_path, base_dtype="bfloat16", time_rank=4)
    raw["train"]["autocast"] = "bfloat16"
    config = config_from_dict(raw)
    network = build_network(config)
    base = load_llada(base_dir)
    frozen = {name.replace("backbone.", "", 1).replace(".base_layer", ""): p for name, p in network.named_parameters()
              if not p.requires_grad}
    assert all(torch.equal(frozen[name], tensor.bfloat16()) for name, tensor in base.state_dict().items())
    assert {p.dtype for p in frozen.values()} == {torch.bfloat16}
    assert {p.dtype for p in network.parameters() if p.requires_grad} == {torch.float32}
    result = train(config)
    assert result.steps == 3 and math.isfinite(result.loss) and math.isfinite(result.val_loss)
    adapters = load_file(result.output_dir / ADAPTERS_DIR / ADAPTER_WEIGHTS_NAME)
    assert {v.dtype for v in adapters.values()} == {torch.float32}
    assert any(bool(v.abs().sum() > 0) for k, v in adapters.items() if "lora_B" in k)  # the adapters trained


def test_a_run_starts_from_an_earlier_runs_adapters(base_dir, tmp_path):
    """``retrofit.adapters_from``: instruction tuning continues the adapters an adaptation run trained."""
    first = train(config_from_dict(settings(base_dir, tmp_path, "adapt", time_rank=4)))
    saved = first.output_dir / ADAPTERS_DIR
    raw = settings(base_dir, tmp_path, "tune", time_rank=4, adapters_from=str(saved))
    network = build_network(config_from_dict(raw))
    attached, _ = load_retrofit(base_dir, saved)
    ours, theirs = retrofit_state_dict(network), retrofit_state_dict(attached)
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert any(bool(v.abs().sum() > 0) for k, v in ours.items() if "lora_B" in k)  # trained, not fresh
    assert all(p.dtype == torch.float32 for p in network.parameters() if p.requires_grad)
    second = train(config_from_dict(raw))
    assert second.steps == 3 and math.isfinite(second.loss)
    raw["retrofit"]["lora_rank"] = 8
    with pytest.raises(ConfigError, match=r"^retrofit.adapters_from: .* was saved with lora_rank=4; give this "
                                          r"retrofit the same settings$"):
        config_from_dict(raw)


def test_a_fully_fine_tuned_run_continues_from_its_saved_weights(base_dir, tmp_path):
    """``train_base`` with ``adapters_from``: the second run starts from every weight the first one trained."""
    first = train(config_from_dict(settings(base_dir, tmp_path, "adapt", train_base=True)))
    saved = first.output_dir / ADAPTERS_DIR
    network = build_network(config_from_dict(settings(base_dir, tmp_path, "tune", train_base=True,
                                                      adapters_from=str(saved))))
    trained, base = load_pretrained(first.model_dir)[0].state_dict(), load_llada(base_dir).state_dict()
    ours = network.state_dict()
    assert set(ours) == set(trained) and all(torch.equal(ours[k], trained[k]) for k in ours)
    assert not torch.equal(ours["backbone.model.transformer.blocks.0.q_proj.weight"],
                           base["model.transformer.blocks.0.q_proj.weight"])  # the base weights trained
    assert all(p.requires_grad and p.dtype == torch.float32 for p in network.parameters())


@pytest.mark.parametrize("change, message", [
    ({"retrofit": {"base": "BASE", "base_dtype": "bfloat16"}},
     "retrofit.base_dtype=bfloat16 needs train.autocast=bfloat16"),
    ({"retrofit": {"base": "BASE", "base_dtype": "bfloat16", "train_base": True}},
     "retrofit.base_dtype stores the frozen base weights; with train_base every weight trains in float32"),
    ({"retrofit": {"base": "BASE", "base_dtype": "float16"}}, "retrofit.base_dtype: must be one of"),
    ({"model": {"d_model": 64}}, "model.d_model=64 contradicts the retrofit of "),
    ({"model": {"kind": "mdm"}}, "model.kind='mdm' contradicts the retrofit of "),
    ({"model": {"dimension": 3}}, "unknown key 'model.dimension'"),
    ({"retrofit": {"lora_rank": 4}}, "retrofit.base must name a LLaDA checkpoint folder"),
    ({"retrofit": {"base": "nowhere"}}, "retrofit.base: nowhere is not a LLaDA checkpoint: config.json is missing"),
    ({"retrofit": {"base": "BASE", "time_rank": -1}}, "retrofit.time_rank must be >= 0, got -1"),
    ({"retrofit": {"base": "BASE", "mlp_targets": ["down_proj"]}}, "retrofit.mlp_targets ['down_proj'] not among"),
    ({"retrofit": {"base": "BASE", "lora_ranks": 4}}, "unknown key 'retrofit.lora_ranks'"),
    ({"retrofit": {"base": "BASE", "adapters_from": "nowhere"}},
     "retrofit.adapters_from: nowhere holds no saved retrofit adapters"),
    ({"data": {"task": "toy", "max_a": 30, "max_b": 30}},
     "retrofit.base: the task's longest sequence (60) exceeds the base's max_sequence_length (48)"),
])
def test_invalid_retrofit_configs_are_one_line_errors(base_dir, tmp_path, change, message):
    assert_one_line_config_error(settings(base_dir, tmp_path), change, base_dir, message)


def assert_one_line_config_error(raw, change, base_dir, message):
    """``raw`` with ``change``'s sections replaced ("BASE" standing for ``base_dir``) fails with a one-line
    ConfigError starting with ``message``."""
    for section, values in change.items():
        raw[section] = {k: str(base_dir) if v == "BASE" else v for k, v in values.items()}
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_task_vocabulary_must_be_the_base_one(tmp_path, capsys):
    other = write_tiny_llada_checkpoint(tmp_path / "tiny")  # 40 ids, MASK 39, PAD 38
    raw = settings(other, tmp_path)
    with pytest.raises(ConfigError, match=r"^retrofit.base: the task's vocabulary \{'vocab_size': 4, 'mask_id': 2, "
                       r"'pad_id': 3\} is not the base's \{'vocab_size': 40, 'mask_id': 39, 'pad_id': 38\}"):
        config_from_dict(raw)
    path = tmp_path / "config.yaml"
    path.write_text(f"retrofit: {{base: {other}}}\ndata: {{task: toy}}\noutput_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flexmdm: error: retrofit.base: the task's vocabulary") and err.count("\n") == 1


def test_base_config_stands_in_for_the_weights_and_must_agree_with_them(base_dir, tmp_path):
    other = write_tiny_llada_checkpoint(tmp_path / "tiny", vocab_size=4, embedding_size=4, d_model=16,
                                        n_heads=2, n_kv_heads=2)
    raw = settings(tmp_path / "not-downloaded", tmp_path, base_config=str(other / "config.json"))
    raw["data"] = {"task": "instruct", "path": "missing.jsonl", "tokenizer": "missing.json"}
    with pytest.raises(ConfigError, match="^data.path: no JSONL file"):
        config_from_dict(copy.deepcopy(raw))
    config = config_from_dict(raw, check_data=False)  # as flexmdm plan reads it
    assert config.model.d_model == 16 and config.data.options["path"] == "missing.jsonl"
    assert sum(p.numel() for p in build_network(config, meta=True).parameters()) > 0
    with pytest.raises(FileNotFoundError, match="not-downloaded is not a LLaDA checkpoint"):
        build_network(config)
    described = json.loads((base_dir / "config.json").read_text())
    (tmp_path / "wrong.json").write_text(json.dumps({**described, "rope_theta": 1234.0}))
    disagreeing = config_from_dict(settings(base_dir, tmp_path, base_config=str(tmp_path / "wrong.json")))
    with pytest.raises(ConfigError, match=r"^retrofit.base_config: .* does not describe the checkpoint"):
        build_network(disagreeing)


def test_bench_retrofit_takes_retrofit_settings():
    args = build_parser().parse_args(["bench", "retrofit", "--out", "x.json", "--retrofit", "time_rank=8",
                                      "--retrofit", "gap_hidden=32"])
    assert retrofit_overrides(args.retrofit) == {"time_rank": 8, "gap_hidden": 32}
    with pytest.raises(ConfigError, match=r"^--retrofit: unknown retrofit config keys \['rank'\]"):
        retrofit_overrides(["rank=8"])
    with pytest.raises(ConfigError, match=r"^--retrofit: time_rank must be >= 0"):
        retrofit_overrides(["time_rank=-2"])
    assert not hasattr(build_parser().parse_args(["bench", "maze", "--out", "x.json"]), "retrofit")


def test_retrofit_recipe_mappings():
    """The retrofit run keeps the scratch run's data and training and takes its network from the base."""
    from flexmdm.training.network import retrofit_run_config, scratch_model_like

    scratch = {"model": {"kind": "flexmdm", "d_model": 16}, "data": {"task": "text"}, "train": {"lr": 1e-3},
               "output_dir": "runs/x"}
    config = retrofit_run_config(scratch, "base-llada", {"lora_rank": 4, "time_rank": 8})
    assert config == {"data": {"task": "text"}, "train": {"lr": 1e-3}, "output_dir": "runs/x",
                      "retrofit": {"base": "base-llada", "lora_rank": 4, "time_rank": 8}}
    assert "model" in scratch and config["train"] is not scratch["train"]  # a copy
    assert scratch_model_like(scratch["model"], {"lora_rank": 4, "time_rank": 8, "gap_hidden": 32}) == {
        "kind": "flexmdm", "d_model": 16, "time_rank": 8, "gap_hidden": 32}
