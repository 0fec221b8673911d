"""LLaDA backbone: native checkpoint layout, an independent reference forward, round trips."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from flexmdm.models import ModelConfig, build_model, load_pretrained, save_pretrained
from flexmdm.models.llada import LLaDAConfig, LLaDAModel, load_llada, save_llada, write_tiny_llada_checkpoint

V, EMB = 40, 48
MASK, EOS = V - 1, V - 2


def reference_logits(tensors, x, n_heads=4, n_kv_heads=2, theta=500000.0, eps=1e-5):
    """LLaDA forward written from the checkpoint tensors alone (per-head loops, explicit softmax)."""
    p = "model.transformer"
    h = tensors[f"{p}.wte.weight"][x]  # [B, n, d]
    batch, n, d = h.shape
    hd = d // n_heads

    def rms(v, w):
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + eps) * w

    inv = theta ** (-torch.arange(0, hd, 2).double() / hd)
    ang = torch.arange(n).double()[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1).float(), torch.cat([ang.sin(), ang.sin()], -1).float()

    def rope(v):  # rotate_half convention: (x1, x2) -> (-x2, x1)
        half = v.shape[-1] // 2
        return v * cos + torch.cat([-v[..., half:], v[..., :half]], -1) * sin

    layer = 0
    while f"{p}.blocks.{layer}.q_proj.weight" in tensors:
        w = {k.split(".")[-2]: t for k, t in tensors.items() if k.startswith(f"{p}.blocks.{layer}.")}
        a = rms(h, w["attn_norm"])
        q, k, v = a @ w["q_proj"].T, a @ w["k_proj"].T, a @ w["v_proj"].T
        heads = []
        for head in range(n_heads):
            kv = head // (n_heads // n_kv_heads)
            qh, kh = rope(q[..., head * hd:(head + 1) * hd]), rope(k[..., kv * hd:(kv + 1) * hd])
            scores = qh @ kh.transpose(1, 2) / math.sqrt(hd)  # no causal mask
            heads.append(torch.softmax(scores, -1) @ v[..., kv * hd:(kv + 1) * hd])
        h = h + torch.cat(heads, -1) @ w["attn_out"].T
        m = rms(h, w["ff_norm"])
        gate, up = m @ w["ff_proj"].T, m @ w["up_proj"].T
        h = h + (gate * torch.sigmoid(gate) * up) @ w["ff_out"].T
        layer += 1
    return (rms(h, tensors[f"{p}.ln_f.weight"]) @ tensors[f"{p}.ff_out.weight"].T)[..., :V]


@pytest.fixture
def checkpoint(tmp_path):
    return write_tiny_llada_checkpoint(tmp_path / "llada", seed=3)


def tokens(batch=2, n=7, seed=0):
    return torch.randint(0, V - 2, (batch, n), generator=torch.Generator().manual_seed(seed))


def test_loads_the_llada_layout_and_matches_the_reference(checkpoint):
    model = load_llada(checkpoint)
    file_tensors = load_file(checkpoint / "model.safetensors")
    assert set(model.state_dict()) == set(file_tensors)
    cfg = model.llada_config
    assert (cfg.n_kv_heads, cfg.embedding_size, cfg.vocab_size, cfg.rope_theta) == (2, EMB, V, 500000.0)
    assert (cfg.mask_token_id, cfg.pad_token_id) == (MASK, EOS)
    x = tokens()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 7, V)  # cut from embedding_size to vocab_size
    assert bool(torch.isinf(logits[..., MASK]).all())
    expected = reference_logits(file_tensors, x)
    live = torch.arange(V) != MASK
    torch.testing.assert_close(logits[..., live], expected[..., live], rtol=1e-4, atol=1e-4)


def test_bidirectional_and_padding_invariant(checkpoint):
    model = load_llada(checkpoint)
    x = tokens(1, 6)
    changed = x.clone()
    changed[0, -1] = (x[0, -1] + 1) % (V - 2)
    with torch.no_grad():
        assert not torch.allclose(model(x)[0, 0], model(changed)[0, 0])  # the first slot sees the last
        wide = torch.cat([x, torch.full((1, 3), EOS)], dim=1)
        torch.testing.assert_close(model(wide, None, torch.tensor([6]))[:, :6], model(x), rtol=1e-5, atol=1e-5)


def test_save_round_trip_single_file_and_sharded(checkpoint, tmp_path):
    model = load_llada(checkpoint)
    x = tokens()
    with torch.no_grad():
        before = model(x)
    for shard in (None, 20_000):
        target = save_llada(model, tmp_path / f"saved-{shard}", max_shard_bytes=shard)
        config = json.loads((target / "config.json").read_text())
        assert "auto_map" not in config and config["mask_token_id"] == MASK and config["n_kv_heads"] == 2
        if shard:
            index = json.loads((target / "model.safetensors.index.json").read_text())
            assert len(set(index["weight_map"].values())) > 1
        again = load_llada(target)
        for key, tensor in model.state_dict().items():
            assert torch.equal(again.state_dict()[key], tensor), key
        with torch.no_grad():
            assert torch.equal(again(x), before)


def test_sharded_checkpoint_written_independently(tmp_path):
    single = load_llada(write_tiny_llada_checkpoint(tmp_path / "one", seed=5))
    sharded = load_llada(write_tiny_llada_checkpoint(tmp_path / "many", seed=5, max_shard_bytes=10_000))
    x = tokens()
    with torch.no_grad():
        assert torch.equal(single(x), sharded(x))


def test_dtype_conversion(checkpoint):
    model = load_llada(checkpoint, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    with torch.no_grad():
        assert model(tokens()).dtype == torch.float32


@pytest.mark.parametrize(("key", "value", "message"), [
    ("include_bias", True, "include_bias"),
    ("weight_tying", True, "weight_tying"),
    ("block_type", "sequential", "block_type"),
    ("n_kv_heads", 3, "n_kv_heads"),
])
def test_unsupported_configs_are_refused(checkpoint, key, value, message):
    path = checkpoint / "config.json"
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_llada(checkpoint)


def test_missing_pieces_are_named(checkpoint, tmp_path):
    config = json.loads((checkpoint / "config.json").read_text())
    del config["mask_token_id"]
    with pytest.raises(ValueError, match="mask_token_id"):
        LLaDAConfig.from_json_dict(config)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_llada(tmp_path)
    (checkpoint / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_llada(checkpoint)


@pytest.mark.parametrize("kind", ["mdm", "flexmdm"])
def test_model_config_builds_llada_and_flexmdm_checkpoints_round_trip(kind, tmp_path):
    config = ModelConfig(kind=kind, vocab_size=12, mask_id=10, pad_id=11, d_model=32, n_layers=3, n_heads=4,
                         n_kv_heads=2, mlp_ratio=2.0, max_length=16, architecture="llada", time_groups=2)
    torch.manual_seed(0)
    model = build_model(config).eval()
    backbone = model if kind == "mdm" else model.backbone
    assert isinstance(backbone, LLaDAModel) and backbone.llada_config.mlp_hidden_size == 64
    save_pretrained(model, tmp_path / "m")
    again, saved = load_pretrained(tmp_path / "m")
    assert saved["model"]["architecture"] == "llada"
    x = torch.randint(0, 10, (2, 5))
    t, lengths = torch.tensor([0.2, 0.8]), torch.tensor([5, 3])
    with torch.no_grad():
        first, second = model(x, t, lengths), again(x, t, lengths)
    for a, b in zip(first if kind == "flexmdm" else [first], second if kind == "flexmdm" else [second]):
        assert torch.equal(a, b)
    if kind == "flexmdm":
        assert len(model.time_modulations) == 2  # 3 blocks in groups of 2
    else:
        assert set(model.state_dict()) == {k for k in model.state_dict() if k.startswith("model.transformer.")}
