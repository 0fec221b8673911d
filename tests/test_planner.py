"""``flexmdm plan``: meta-device parameter counts equal the built networks', memory terms follow their formulas."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from flexmdm.cli import main
from flexmdm.models import ModelConfig, build_model
from flexmdm.models.llada import load_llada, save_llada
from flexmdm.models.retrofit import RetrofitConfig, retrofit
from flexmdm.planner import estimate_memory, plan, render
from flexmdm.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = {"architecture": "llada", "d_model": 32, "n_layers": 3, "n_heads": 4, "mlp_ratio": 2.0, "max_length": 48}


@pytest.fixture
def base_dir(tmp_path):
    torch.manual_seed(0)
    return save_llada(build_model(ModelConfig(kind="mdm", vocab_size=4, mask_id=2, pad_id=3, **TINY)), tmp_path / "base")


def write(tmp_path, raw):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"task": "toy"}, "output_dir": str(tmp_path / "run"), **raw}))
    return path


def counts(network):
    parameters = list(network.parameters())
    return sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if p.requires_grad)


def test_counts_of_fresh_networks_equal_the_built_ones(tmp_path):
    toy = ROOT / "configs" / "toy.yaml"
    llada = write(tmp_path, {"model": {"kind": "mdm", **TINY}})
    for path in (toy, llada):
        result = plan(path)
        total, trainable = counts(build_model(load_config(path).model))
        assert (result.parameters_total, result.parameters_trainable) == (total, trainable) and total == trainable
        assert result.trainable_fraction == 1.0


@pytest.mark.parametrize("options", [{}, {"time_rank": 4, "gap_hidden": 8, "lora_token_head": False}])
def test_counts_of_a_retrofit_equal_the_built_ones(base_dir, tmp_path, options):
    path = write(tmp_path, {"retrofit": {"base": str(base_dir), "lora_rank": 2, **options}})
    result = plan(path)
    built = retrofit(load_llada(base_dir), RetrofitConfig(lora_rank=2, **options))
    total, trainable = counts(built)
    assert (result.parameters_total, result.parameters_trainable) == (total, trainable) and trainable < total
    assert sum(result.trainable_by_module.values()) == trainable
    assert result.trainable_by_module["lora"] == sum(p.numel() for n, p in built.named_parameters() if ".lora_" in n)


def test_memory_terms_follow_the_formulas(base_dir, tmp_path):
    config = load_config(write(tmp_path, {"retrofit": {"base": str(base_dir), "lora_rank": 2}}))
    network = retrofit(load_llada(base_dir), RetrofitConfig(lora_rank=2))
    total, trainable = counts(network)
    frozen = total - trainable
    d, layers, m, vocab = 32, 3, 64, 4
    activations = 2 * 16 * layers * (13 * d + 4 * m) * 4 + 2 * 16 * vocab * 12
    ddp = estimate_memory(network, config.model, strategy="ddp", world_size=2, micro_batch=2, seq_len=16,
                          frozen_bytes=2, activation_bytes=4, ema=True)
    assert (ddp.weights, ddp.gathered, ddp.gradients, ddp.optimizer, ddp.ema, ddp.activations) == (
        2 * frozen + 4 * trainable, 0, 8 * trainable, 8 * trainable, 4 * trainable, activations)
    fsdp = estimate_memory(network, config.model, strategy="fsdp", world_size=4, micro_batch=2, seq_len=16,
                           frozen_bytes=2, activation_bytes=4, ema=False)
    blocks = "backbone.model.transformer.blocks."
    stored = {n: p.numel() * (4 if p.requires_grad else 2) for n, p in network.named_parameters()}
    block = max(sum(v for n, v in stored.items() if n.startswith(f"{blocks}{i}.")) for i in range(layers))
    root = sum(v for n, v in stored.items() if not n.startswith(blocks))
    assert fsdp.weights == pytest.approx((2 * frozen + 4 * trainable) / 4)
    assert fsdp.gathered == root + 2 * block
    assert (fsdp.gradients, fsdp.optimizer, fsdp.ema) == (trainable, 2 * trainable, 0)
    assert fsdp.total == pytest.approx(fsdp.weights + fsdp.gathered + fsdp.gradients + fsdp.optimizer
                                       + activations)


def test_plan_command_prints_json(base_dir, tmp_path, capsys):
    path = write(tmp_path, {"retrofit": {"base": str(base_dir)}, "train": {"batch_size": 8}})
    assert main(["plan", str(path), "--world-size", "2", "--seq-len", "32", "--strategy", "fsdp", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"parameters_total", "parameters_trainable", "trainable_fraction", "memory_per_device_gb"} <= set(record)
    assert record["micro_batch"] == 4 and record["seq_len"] == 32  # 8 sequences over 2 ranks
    assert record["trainable_fraction"] == pytest.approx(record["parameters_trainable"] / record["parameters_total"],
                                                         abs=1e-6)
    assert record["memory_per_device_gb"] == record["memory_gb"]["fsdp"]["total"]
    assert main(["plan", str(path), "--world-size", "3"]) == 2  # 8 sequences do not split over 3 ranks
    assert "train.batch_size=8 does not split into 3 rank(s)" in capsys.readouterr().err


def test_llada_8b_retrofit_plan_meets_the_targets_and_matches_the_committed_report():
    result = plan(ROOT / "configs" / "retrofit-llada-8b.yaml", world_size=8, micro_batch=1, seq_len=1024)
    d, layers, m, vocab = 4096, 32, 12288, 126464
    base = 2 * vocab * d + layers * (4 * d * d + 3 * d * m + 2 * d) + d
    assert result.parameters_total - result.parameters_trainable == base  # LLaDA-8B: 8.02 B
    assert result.trainable_fraction <= 0.02
    assert result.memory["fsdp"].total <= 60e9
    committed = (ROOT / "benchmarks" / "results" / "plan-llada-8b.txt").read_text()
    assert committed == render(result) + "\n"


def test_activation_checkpointing_keeps_each_block_input_and_one_block(base_dir, tmp_path):
    config = load_config(write(tmp_path, {"retrofit": {"base": str(base_dir), "lora_rank": 2}}))
    network = retrofit(load_llada(base_dir), RetrofitConfig(lora_rank=2))
    settings = dict(strategy="fsdp", world_size=2, micro_batch=2, seq_len=16, frozen_bytes=2, activation_bytes=4,
                    ema=True)
    plain = estimate_memory(network, config.model, **settings)
    checkpointed = estimate_memory(network, config.model, activation_checkpointing=True, **settings)
    d, layers, m, vocab = 32, 3, 64, 4
    assert checkpointed.activations == 2 * 16 * (layers * d + 13 * d + 4 * m) * 4 + 2 * 16 * vocab * 12
    assert plain.activations - checkpointed.activations == 2 * 16 * (layers - 1) * (13 * d + 4 * m) * 4 - 2 * 16 * layers * d * 4
    assert (checkpointed.weights, checkpointed.optimizer) == (plain.weights, plain.optimizer)


def test_the_plan_follows_the_config_strategy_dtype_and_checkpointing(base_dir, tmp_path):
    path = write(tmp_path, {"retrofit": {"base": str(base_dir), "lora_rank": 2, "base_dtype": "bfloat16"},
                            "train": {"strategy": "fsdp", "autocast": "bfloat16", "activation_checkpointing": True}})
    result = plan(path, world_size=2)
    assert (result.strategy, result.frozen_dtype, result.activation_checkpointing) == ("fsdp", "bfloat16", True)
    assert "with activation checkpointing" in render(result)
    assert plan(path, world_size=2, strategy="ddp", frozen_dtype="float32").frozen_dtype == "float32"
    fresh = plan(ROOT / "configs" / "toy.yaml")
    assert (fresh.strategy, fresh.frozen_dtype, fresh.activation_checkpointing) == ("ddp", "float32", False)
