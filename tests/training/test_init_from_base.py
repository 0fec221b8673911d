"""``init: {base: DIR}``: supervised fine-tuning of every weight of a native LLaDA checkpoint as an MDM."""

import pytest
import torch

from flexmdm.cli import main
from flexmdm.models import ModelConfig, build_model, load_pretrained
from flexmdm.models.llada import load_llada, save_llada
from flexmdm.training.config import config_from_dict, load_config
from flexmdm.training.network import build_network
from flexmdm.training.trainer import train
from tests.models.test_retrofit_config import assert_one_line_config_error

BASE = {"kind": "mdm", "architecture": "llada", "vocab_size": 4, "mask_id": 2, "pad_id": 3, "d_model": 32,
        "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "mlp_ratio": 2.0, "max_length": 48}


@pytest.fixture
def base_dir(tmp_path):
    """A native LLaDA checkpoint whose vocabulary is the toy task's (a, b, MASK = 2, PAD = 3)."""
    torch.manual_seed(7)
    return save_llada(build_model(ModelConfig(**BASE)), tmp_path / "base")


def settings(base_dir, tmp_path, name="sft"):
    return {
        "init": {"base": str(base_dir)},
        "data": {"task": "toy", "max_a": 8, "max_b": 8},
        "train": {"steps": 4, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "ema_decay": 0.0, "log_every": 1,
                  "eval_batches": 1, "seed": 3, "device": "cpu"},
        "output_dir": str(tmp_path / name),
    }


def test_the_network_starts_from_every_base_weight_and_all_of_them_train(base_dir, tmp_path):
    config = config_from_dict(settings(base_dir, tmp_path))
    assert config.model == ModelConfig(**BASE)
    network = build_network(config)
    base = load_llada(base_dir).state_dict()
    assert network.state_dict().keys() == base.keys()
    assert all(torch.equal(network.state_dict()[k], v) for k, v in base.items())
    assert all(p.requires_grad and p.dtype == torch.float32 for p in network.parameters())
    config.save(tmp_path / "config.yaml")  # the saved configuration names the base and reloads as it was
    assert load_config(tmp_path / "config.yaml") == config

    result = train(config)
    tuned, saved = load_pretrained(result.model_dir)
    assert saved["model"]["kind"] == "mdm" and saved["model"]["architecture"] == "llada"
    moved = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base[k])]
    assert len(moved) == len(base)  # every weight trained, none frozen


def test_fine_tuning_from_the_base_differs_from_training_from_scratch(base_dir, tmp_path):
    """The base's weights are the start: the first loss is the base's, not a fresh network's."""
    tuned = train(config_from_dict(settings(base_dir, tmp_path, "tuned")))
    scratch_raw = settings(base_dir, tmp_path, "scratch")
    del scratch_raw["init"]
    scratch_raw["model"] = {k: v for k, v in BASE.items() if k not in ("vocab_size", "mask_id", "pad_id")}
    scratch = train(config_from_dict(scratch_raw))
    assert tuned.steps == scratch.steps == 4
    first = [(run.output_dir / "metrics.jsonl").read_text().splitlines()[0] for run in (tuned, scratch)]
    assert first[0] != first[1]


@pytest.mark.parametrize("change, message", [
    ({"init": {"base": "nowhere"}}, "init.base: nowhere is not a LLaDA checkpoint: config.json is missing"),
    ({"init": {"base": ""}}, "init.base must name a LLaDA checkpoint folder"),
    ({"retrofit": {"base": "BASE"}}, "init: a retrofit already starts from its base; give either retrofit or init"),
    ({"model": {"kind": "flexmdm"}}, "model.kind='flexmdm' contradicts the init of"),
    ({"data": {"task": "toy", "max_a": 30, "max_b": 30}},
     "init.base: the task's longest sequence (60) exceeds the base's max_sequence_length (48)"),
])
def test_invalid_init_configs_are_one_line_errors(base_dir, tmp_path, change, message):
    assert_one_line_config_error(settings(base_dir, tmp_path), change, base_dir, message)


def test_flexmdm_train_fine_tunes_a_native_checkpoint(base_dir, tmp_path, capsys):
    path = tmp_path / "sft.yaml"
    path.write_text(f"init: {{base: {base_dir}}}\ndata: {{task: toy, max_a: 8, max_b: 8}}\n"
                    f"train: {{steps: 2, batch_size: 4, log_every: 1, eval_batches: 1, device: cpu}}\n"
                    f"output_dir: {tmp_path / 'cli'}\n")
    assert main(["train", str(path)]) == 0
    assert (tmp_path / "cli" / "model").is_dir()
