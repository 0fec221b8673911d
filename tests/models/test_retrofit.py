"""Retrofitting an MDM into a FlexMDM: identity at start, exactly the new parameters train,
adapters re-attach exactly, and instruction couplings keep prompts frozen."""

import copy
import json
import re

import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from flexmdm.interpolant import FlexInterpolant
from flexmdm.models import ModelConfig, build_model, load_pretrained
from flexmdm.models.llada import load_llada, write_tiny_llada_checkpoint
from flexmdm.models.retrofit import (
    ADAPTER_WEIGHTS_NAME,
    MODULES_WEIGHTS_NAME,
    RetrofitConfig,
    load_retrofit,
    merge_adapters,
    merged_state_dict,
    retrofit,
    save_retrofit,
)
from flexmdm.sampling import sample_flexmdm
from flexmdm.schedules import LinearSchedule
from flexmdm.tasks.instruct import InstructTask, read_pairs
from flexmdm.training.config import config_from_dict
from flexmdm.training.trainer import ADAPTERS_DIR, train
from tests.tasks.word_tokenizer import write_word_tokenizer

V, MASK, PAD = 40, 39, 38
LIVE = torch.tensor([i not in (MASK, PAD) for i in range(V)])


@pytest.fixture
def base_dir(tmp_path):
    return write_tiny_llada_checkpoint(tmp_path / "base", seed=1, n_layers=3)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 4, 0, 5])
    x = torch.randint(0, V - 1, (4, 7), generator=g)  # MASK tokens included
    x = torch.where(torch.arange(7) < lengths[:, None], x, PAD)
    frozen = (torch.arange(7) < 2) & (torch.arange(7) < lengths[:, None])
    return x, torch.rand(4, generator=g), lengths, frozen


def randomise_new_parameters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("config", [RetrofitConfig(), RetrofitConfig(time_rank=4, gap_hidden=8),
                                    RetrofitConfig(train_base=True)],
                         ids=["full-modulation", "low-rank-modulation", "full-fine-tuning"])
def test_retrofitted_model_starts_as_the_mdm(base_dir, config):
    mdm = load_llada(base_dir)
    x, t, lengths, frozen = batch()
    with torch.no_grad():
        expected = mdm(x, None, lengths)
        model = retrofit(load_llada(base_dir), config, seed=3)
        logits, gaps = model(x, t, lengths, frozen)
        logits_other_time, _ = model(x, 1 - t, lengths, None)
    live_rows = torch.arange(7) < lengths[:, None]
    assert torch.equal(logits[..., LIVE][live_rows], expected[..., LIVE][live_rows])
    assert torch.equal(logits_other_time, logits)  # time and frozen flags are silent at start
    assert bool(torch.isinf(logits[..., PAD]).all()) and bool(torch.isinf(logits[..., MASK]).all())
    slots = torch.arange(8)[None, :]
    assert gaps.shape == (4, 8) and bool((gaps[slots <= lengths[:, None]] > 0).all())
    assert bool((gaps[slots > lengths[:, None]] == 0).all())


def test_exactly_the_new_parameters_require_gradients(base_dir):
    model = retrofit(load_llada(base_dir))
    layers = range(3)
    block_targets = ("q_proj", "k_proj", "v_proj", "ff_proj", "up_proj", "ff_out")
    adapted = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    prefix = "backbone.model.transformer"
    assert adapted == {f"{prefix}.blocks.{n}.{m}" for n in layers for m in block_targets} | {f"{prefix}.ff_out"}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    lora = {f"{module}.lora_{ab}.default.weight" for module in adapted for ab in "AB"}
    new = {name for name, _ in model.named_parameters()
           if name.split(".")[0] in ("time_embedding", "time_modulations", "frozen_embedding", "gap_head")}
    assert trainable == lora | new
    assert {n for n in new if n.startswith("time_modulations")} == {f"time_modulations.{i}.{w}"
                                                                    for i in range(2) for w in ("weight", "bias")}
    x, t, lengths, frozen = batch()
    logits, gaps = model(x, t, lengths, frozen)
    (logits[..., LIVE].logsumexp(-1).sum() + gaps.sum()).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_full_fine_tuning_trains_and_saves_every_weight(base_dir, tmp_path):
    """``train_base``: no adapters, every parameter trains, and the saved folder restores the trained base
    weights too (a saver that kept only the new modules would reload the untrained base)."""
    model = retrofit(load_llada(base_dir), RetrofitConfig(train_base=True))
    assert not any(isinstance(module, LoraLayer) for module in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    randomise_new_parameters(model)  # every weight, the base's included
    x, t, lengths, frozen = batch(1)
    with torch.no_grad():
        logits, gaps = model(x, t, lengths, frozen)
    save_retrofit(model, tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["retrofit_config.json", MODULES_WEIGHTS_NAME]
    assert set(load_file(tmp_path / "full" / MODULES_WEIGHTS_NAME)) == set(model.state_dict())
    again, record = load_retrofit(base_dir, tmp_path / "full")
    assert record["retrofit"]["train_base"] is True
    with torch.no_grad():
        logits_again, gaps_again = again(x, t, lengths, frozen)
    assert torch.equal(logits_again, logits) and torch.equal(gaps_again, gaps)
    assert set(merged_state_dict(again)) == set(model.state_dict())


def test_lora_targets_follow_the_config(base_dir):
    config = RetrofitConfig(lora_rank=2, attention_targets=("q_proj",), mlp_targets=("ff_out",),
                            lora_token_head=False, time_groups=3)
    model = retrofit(load_llada(base_dir), config)
    adapted = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    assert adapted == {f"backbone.model.transformer.blocks.{n}.{m}" for n in range(3) for m in ("q_proj", "ff_out")}
    assert len(model.time_modulations) == 1
    with pytest.raises(ValueError, match="mlp_targets"):
        RetrofitConfig(mlp_targets=("down_proj",))


def test_adapters_save_separately_and_reattach_exactly(base_dir, tmp_path):
    model = retrofit(load_llada(base_dir), RetrofitConfig(lora_rank=4))
    randomise_new_parameters(model)
    x, t, lengths, frozen = batch(1)
    with torch.no_grad():
        logits, gaps = model(x, t, lengths, frozen)
    save_retrofit(model, tmp_path / "adapters", metadata={"schedules": {"insertion": {"name": "linear"}}})
    adapters = load_file(tmp_path / "adapters" / ADAPTER_WEIGHTS_NAME)
    modules = load_file(tmp_path / "adapters" / MODULES_WEIGHTS_NAME)
    saved = {**modules, **{"backbone." + k.removeprefix("base_model.model.").replace(".weight", ".default.weight"): v
                           for k, v in adapters.items()}}
    assert not any("base_layer" in k or k.endswith("norm.weight") or "wte" in k for k in saved)
    assert set(saved) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in k for k in adapters) and not any(".lora_" in k for k in modules)
    again, record = load_retrofit(base_dir, tmp_path / "adapters")
    assert record["retrofit"]["lora_rank"] == 4 and record["schedules"]["insertion"]["name"] == "linear"
    with torch.no_grad():
        logits_again, gaps_again = again(x, t, lengths, frozen)
    assert torch.equal(logits_again, logits) and torch.equal(gaps_again, gaps)
    with torch.no_grad():
        merged_logits, merged_gaps = merge_adapters(again)(x, t, lengths, frozen)
    live = torch.arange(7) < lengths[:, None]
    torch.testing.assert_close(merged_logits[..., LIVE][live], logits[..., LIVE][live], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(merged_gaps, gaps, rtol=1e-4, atol=1e-5)
    # a different base does not silently accept the adapters
    other = write_tiny_llada_checkpoint(tmp_path / "other", n_layers=2)
    with pytest.raises(ValueError, match="does not fit the base"):
        load_retrofit(other, tmp_path / "adapters")


def test_peft_reads_the_saved_adapters_onto_the_base(base_dir, tmp_path):
    """``PeftModel.from_pretrained(base, adapters/)`` gives the base the retrofit's LoRA updates: each adapted
    projection of the peft model computes what the retrofit's does."""
    from peft import PeftModel

    model = retrofit(load_llada(base_dir), RetrofitConfig(lora_rank=4, lora_token_head=True))
    randomise_new_parameters(model)
    save_retrofit(model, tmp_path / "adapters")
    assert json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())["r"] == 4
    peft_model = PeftModel.from_pretrained(load_llada(base_dir), tmp_path / "adapters").eval()
    ours = dict(model.named_modules())
    theirs = dict(peft_model.base_model.model.named_modules())
    adapted = [name for name in ours if name.startswith("backbone.") and hasattr(ours[name], "lora_A")]
    assert {name.rsplit(".", 1)[-1] for name in adapted} == {"q_proj", "k_proj", "v_proj", "ff_proj", "up_proj", "ff_out"}
    assert "backbone.model.transformer.ff_out" in adapted  # the token head
    torch.manual_seed(0)
    with torch.no_grad():
        for name in adapted:
            h = torch.randn(2, 5, ours[name].in_features)
            other = theirs[name.removeprefix("backbone.")]
            assert other.merged is False and other.lora_B["default"].weight.abs().sum() > 0
            torch.testing.assert_close(other(h), ours[name](h), rtol=0, atol=0)


def test_retrofitted_model_is_a_sampler_denoiser(base_dir):
    model = retrofit(load_llada(base_dir)).eval()
    alpha = LinearSchedule()
    out = sample_flexmdm(model, FlexInterpolant(alpha, alpha, model.config.vocab),
                         steps=8, max_length=12, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert bool((out.lengths <= 12).all()) and out.lengths.shape == (5,)
    for sequence in out.sequences():
        assert MASK not in sequence and PAD not in sequence


# -- instruction fine-tuning couplings -------------------------------------------------------------

WORDS = ["a", "b", "c", "d", "e", "f", "[MASK]", "[PAD]"]


@pytest.fixture
def instruct_files(tmp_path):
    write_word_tokenizer(tmp_path / "tokenizer.json", WORDS)
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(60):
        n_prompt, n_response = (int(v) for v in torch.randint(1, 5, (2,), generator=g))
        prompt = " ".join(WORDS[int(i)] for i in torch.randint(0, 3, (n_prompt,), generator=g))
        rows.append({"prompt": prompt, "response": " ".join(["d"] * n_response + ["e"])})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path / "pairs.jsonl", tmp_path / "tokenizer.json"


@pytest.mark.parametrize("coupling", ["prompt", "infill"])
def test_couplings_freeze_prompt_and_restrict_insertions(instruct_files, coupling):
    path, tokenizer = instruct_files
    task = InstructTask(path=str(path), tokenizer=str(tokenizer), coupling=coupling, max_length=12)
    assert task.vocab.mask_id == 6 and task.vocab.pad_id == 7
    g = torch.Generator().manual_seed(1)
    data = task.sample_batch(32, g)
    prompt_lengths = [len(e.prompt) for e in task.examples["train"]]
    assert max(prompt_lengths) >= 2
    interpolant = FlexInterpolant(LinearSchedule(), LinearSchedule(), task.vocab)
    for t in (0.0, 0.4, 0.9):
        states = interpolant.sample(data.x1, data.lengths, torch.full((32,), t), frozen=data.frozen,
                                    allowed_regions=data.allowed_regions, generator=g)
        assert torch.equal(states.frozen.sum(1), data.frozen.sum(1))  # frozen tokens always present
        assert not bool((states.masked & states.frozen).any())
        regions = torch.cat([torch.zeros(32, 1, dtype=torch.long), states.frozen.long().cumsum(1)], dim=1)
        for b in range(32):
            frozen_row = data.frozen[b, : data.lengths[b]]
            (region,) = data.allowed_regions[b].nonzero().squeeze(1).tolist()  # a single open region
            frozen_before = torch.cat([torch.zeros(1, dtype=torch.long), frozen_row.long().cumsum(0)[:-1]])
            assert bool((frozen_before[~frozen_row] == region).all())  # the generated part lies in it
            if coupling == "prompt":
                assert region == int(frozen_row.sum()) and bool(frozen_row[:region].all())
            open_gaps = states.gap_allowed[b].nonzero().squeeze(1)
            assert bool((regions[b, open_gaps] == region).all())
            # every missing token lies in an allowed gap
            assert int(states.gaps[b][states.gap_allowed[b]].sum()) == int(data.lengths[b] - states.lengths[b])
    if coupling == "infill":  # some draws keep a frozen suffix after the middle
        suffixes = [int(data.frozen[b, : data.lengths[b]].sum()) - int(data.allowed_regions[b].nonzero())
                    for b in range(32)]
        assert max(suffixes) > 0 and min(suffixes) == 0


def test_bad_jsonl_line_is_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": 3}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_pairs(tmp_path / "bad.jsonl")


def test_instruction_fine_tuning_trains_only_adapters_and_samples_after_the_prompt(instruct_files, tmp_path):
    path, tokenizer = instruct_files
    model_settings = {"kind": "flexmdm", "architecture": "llada", "d_model": 32, "n_layers": 2, "n_heads": 4,
                      "mlp_ratio": 2.0, "max_length": 12}
    torch.manual_seed(0)
    base_config = ModelConfig(kind="mdm", **{k: v for k, v in model_settings.items() if k != "kind"},
                              vocab_size=8, mask_id=6, pad_id=7)
    base = build_model(base_config)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    built = []

    def factory(config):
        built.append(retrofit(base, RetrofitConfig(lora_rank=4)))
        return built[-1]

    config = config_from_dict({
        "model": model_settings,
        "data": {"task": "instruct", "path": str(path), "tokenizer": str(tokenizer), "max_length": 12},
        "train": {"steps": 3, "batch_size": 8, "lr": 1e-2, "warmup_steps": 1, "ema_decay": 0.0, "log_every": 1,
                  "eval_batches": 1, "device": "cpu"},
        "output_dir": str(tmp_path / "run"),
    })
    assert train(config, model_factory=factory).steps == 3
    model = built[0].eval()
    weights = {re.sub(r"\.base_layer\.", ".", k.removeprefix("backbone.")): v
               for k, v in model.state_dict().items() if k.startswith("backbone.") and ".lora_" not in k}
    assert set(weights) == set(base_state)
    assert all(torch.equal(weights[k], v) for k, v in base_state.items())  # base weights untouched
    assert any(bool(p.abs().sum() > 0) for n, p in model.named_parameters() if "lora_B" in n)  # adapters moved

    # the run exports the merged network for load_pretrained / flexmdm sample, and the adapters alone
    exported, saved = load_pretrained(tmp_path / "run" / "model")
    assert saved["model"]["architecture"] == "llada" and not any(".lora_" in k for k in exported.state_dict())
    x, t, lengths, frozen = torch.randint(0, 6, (3, 9)), torch.rand(3), torch.tensor([9, 4, 0]), None
    x = torch.where(torch.arange(9) < lengths[:, None], x, 7)
    with torch.no_grad():
        (logits, gaps), (exported_logits, exported_gaps) = model(x, t, lengths, frozen), exported(x, t, lengths, frozen)
    live = torch.arange(9) < lengths[:, None]
    torch.testing.assert_close(exported_logits[live][:, :6], logits[live][:, :6], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(exported_gaps, gaps, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "run" / ADAPTERS_DIR / ADAPTER_WEIGHTS_NAME).is_file()

    task = config.data.build_task()
    prompt, _ = task.prompts("validation", count=4)
    alpha = LinearSchedule()
    out = sample_flexmdm(model, FlexInterpolant(alpha, alpha, task.vocab), steps=6,
                         max_length=12, prompt=prompt, generator=torch.Generator().manual_seed(0))
    for row, sequence in enumerate(out.sequences()):
        given = prompt.tokens[row, : prompt.lengths[row]].tolist()
        assert sequence[: len(given)] == given and len(sequence) >= len(given)


def test_gap_head_sees_the_time_even_on_the_empty_state(base_dir):
    model = retrofit(load_llada(base_dir))
    randomise_new_parameters(model, seed=2)
    empty, none = torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        _, gaps = model(empty, torch.tensor([0.0, 0.5]), none)
    assert gaps.shape == (2, 1) and float((gaps[0, 0] - gaps[1, 0]).abs()) > 1e-4


def test_gap_head_sees_the_state_length(base_dir):
    model = retrofit(load_llada(base_dir))
    randomise_new_parameters(model, seed=4)
    head, hidden = model.gap_head, torch.randn(1, 3, 32)
    cond = torch.randn(1, 32)
    with torch.no_grad():
        short = head(hidden, torch.tensor([2]), cond)  # same hidden states, a different length
        long = head(hidden, torch.tensor([3]), cond)
    assert float((short[0, :2] - long[0, :2]).abs().max()) > 1e-5


def test_low_rank_time_conditioning_and_narrow_gap_head_sizes(base_dir):
    """d = 32, 3 blocks in groups of 2: full 2 · (6d² + 6d), rank r 2 · (7dr + 6d); the gap head
    (3d + 3)·h + 2h + 1 weights and biases, 2d START / END."""
    d, r, h = 32, 4, 8

    def count(model, prefix):
        return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))

    full = retrofit(load_llada(base_dir))
    low = retrofit(load_llada(base_dir), RetrofitConfig(time_rank=r, gap_hidden=h))
    assert count(full, "time_modulations") == 2 * (6 * d * d + 6 * d)
    assert count(low, "time_modulations") == 2 * (7 * d * r + 6 * d)
    assert count(full, "gap_head") == (3 * d + 3) * d + 2 * d + 1 + 2 * d
    assert count(low, "gap_head") == (3 * d + 3) * h + 2 * h + 1 + 2 * d
    # the zero output layer gets a gradient at the start, so the conditioning can learn
    x, t, lengths, frozen = batch()
    logits, gaps = low(x, t, lengths, frozen)
    (logits[..., LIVE].logsumexp(-1).sum() + gaps.sum()).backward()
    for name, p in low.named_parameters():
        if name.startswith("time_modulations"):
            assert p.requires_grad and p.grad is not None, name
    assert all(float(module[1].weight.grad.abs().sum()) > 0 for module in low.time_modulations)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_merged_state_is_peft_merge_without_copying_the_network(base_dir, dtype):
    model = retrofit(load_llada(base_dir, dtype=dtype), RetrofitConfig(lora_rank=4))
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()  # trainable in float32 (retrofit.base_dtype)
    randomise_new_parameters(model)
    state = merged_state_dict(model)
    merged = merge_adapters(copy.deepcopy(model)).state_dict()
    expected = {name.replace(".base_layer.", "."): t for name, t in merged.items() if ".lora_" not in name}
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[name], expected[name]) and state[name].dtype == expected[name].dtype
               for name in expected)
    live = dict(model.state_dict())
    assert state["time_embedding.mlp.0.weight"].data_ptr() == live["time_embedding.mlp.0.weight"].data_ptr()  # not copied
    changed = [n for n in expected if n.endswith("q_proj.weight")]
    assert changed and all(not torch.equal(state[n], live[n.replace("q_proj.", "q_proj.base_layer.")]) for n in changed)
