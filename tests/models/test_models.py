"""Networks: shapes, padding invariance, forbidden ids, causality, checkpoints."""

import hashlib
import json
import os
import shutil
import stat

import pytest
import torch

from flexmdm.errors import InputFileError
from flexmdm.interpolant import FlexInterpolant
from flexmdm.models import ModelConfig, build_model, load_pretrained, save_pretrained
from flexmdm.models import pretrained as pretrained_module
from flexmdm.models.pretrained import CHECKSUM_KEY
from flexmdm.sampling import sample_flexmdm
from flexmdm.schedules import LinearSchedule
from flexmdm.tasks.toy import ToyLanguage

V, MASK, PAD = 10, 8, 9


def config(kind="flexmdm", **kw):
    return ModelConfig(kind=kind, vocab_size=V, mask_id=MASK, pad_id=PAD, d_model=32, n_layers=2, n_heads=4, **kw)


def perturbed(kind="flexmdm", seed=0, **kw):
    """A model whose zero-initialised adaLN parameters are randomised (so time matters)."""
    torch.manual_seed(seed)
    model = build_model(config(kind, **kw))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "modulation" in name or "frozen_embedding" in name:
                p.normal_(std=0.1)
    return model.eval()


def batch(lengths, width=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    x = torch.randint(0, MASK + 1, (len(lengths), width), generator=g)
    lengths = torch.tensor(lengths)
    x = torch.where(torch.arange(width) < lengths[:, None], x, PAD)
    return x, lengths


def test_flexmdm_shapes_and_heads():
    model = perturbed()
    x, lengths = batch([0, 3, 6])
    logits, gaps = model(x, torch.rand(3), lengths, torch.zeros_like(x, dtype=torch.bool))
    assert logits.shape == (3, 6, V) and gaps.shape == (3, 7)
    assert bool(torch.isinf(logits[..., MASK]).all()) and bool(torch.isinf(logits[..., PAD]).all())
    assert bool(torch.isfinite(logits[..., :MASK]).all())
    assert bool((gaps >= 0).all())
    assert bool((gaps[torch.arange(7) > lengths[:, None]] == 0).all())
    assert bool((gaps[torch.arange(7) <= lengths[:, None]] > 0).all())


@pytest.mark.parametrize("kind, options", [("flexmdm", {}), ("mdm", {}),
                                           ("flexmdm", {"length_conditioning": True})])
def test_padding_invariance(kind, options):
    model = perturbed(kind, **options)
    x, lengths = batch([2, 5, 0])
    t = torch.tensor([0.3, 0.7, 0.1])
    frozen = torch.zeros_like(x, dtype=torch.bool)
    frozen[1, 1] = True
    wide = torch.cat([x, torch.full((3, 4), PAD)], dim=1)
    wide_frozen = torch.cat([frozen, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    narrow_out, wide_out = model(x, t, lengths, frozen), model(wide, t, lengths, wide_frozen)
    if kind == "flexmdm":
        (a, ga), (b, gb) = narrow_out, wide_out
        for row, n in enumerate(lengths.tolist()):
            assert torch.allclose(ga[row, : n + 1], gb[row, : n + 1], atol=1e-5)
    else:
        a, b = narrow_out, wide_out
    for row, n in enumerate(lengths.tolist()):
        assert torch.allclose(a[row, :n], b[row, :n], atol=1e-5)
        # alone in its own batch, cropped to its own length
        alone = model(x[row : row + 1, : max(n, 0)], t[row : row + 1], lengths[row : row + 1], frozen[row : row + 1, :n])
        alone_logits = alone[0] if kind == "flexmdm" else alone
        assert torch.allclose(alone_logits[0, :n], a[row, :n], atol=1e-5)


def test_time_and_frozen_flags_matter_and_zero_init_ignores_time():
    x, lengths = batch([4, 4])
    frozen = torch.zeros_like(x, dtype=torch.bool)
    fresh = build_model(config()).eval()
    a, ga = fresh(x, torch.tensor([0.1, 0.1]), lengths, frozen)
    b, gb = fresh(x, torch.tensor([0.9, 0.9]), lengths, frozen)
    # adaLN-Zero: every modulation starts at zero, so at initialisation t has no effect
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(ga, gb, atol=1e-6)
    model = perturbed()
    a, ga = model(x, torch.tensor([0.1, 0.1]), lengths, frozen)
    b, gb = model(x, torch.tensor([0.9, 0.9]), lengths, frozen)
    assert not torch.allclose(ga, gb, atol=1e-4)
    c, _ = model(x, torch.tensor([0.1, 0.1]), lengths, torch.ones_like(frozen))
    assert not torch.allclose(a, c, atol=1e-4)


def test_length_conditioning_reaches_only_rows_of_that_length():
    model = perturbed(length_conditioning=True, max_length=8)
    x, lengths = batch([3, 5, 5, 0])
    t, frozen = torch.full((4,), 0.3), torch.zeros_like(x, dtype=torch.bool)
    logits, gaps = model(x, t, lengths, frozen)
    with torch.no_grad():
        model.trunk.length_embedding.weight[5 + 1].normal_(std=1.0)  # the trunk sees n + 1 (END slot)
    new_logits, new_gaps = model(x, t, lengths, frozen)
    for row, n in enumerate(lengths.tolist()):
        same = torch.allclose(gaps[row], new_gaps[row]) and torch.allclose(logits[row, :n], new_logits[row, :n])
        assert same == (n != 5)
    too_long, too_long_lengths = batch([9])
    with pytest.raises(ValueError, match="longer than"):
        model(too_long, torch.full((1,), 0.3), too_long_lengths)


def test_mdm_predicts_pad_never_mask():
    model = perturbed("mdm")
    x, lengths = batch([5])
    logits = model(x, torch.rand(1), lengths, None)
    assert bool(torch.isinf(logits[..., MASK]).all()) and bool(torch.isfinite(logits[..., PAD]).all())


def test_autoregressive_is_causal_and_consistent():
    model = build_model(config("autoregressive")).eval()
    x, lengths = batch([6, 4], seed=1)
    x = torch.where(x == MASK, 0, x)
    logits = model(x, lengths)
    assert logits.shape == (2, 7, V)
    changed = x.clone()
    changed[0, 3] = (changed[0, 3] + 1) % MASK
    other = model(changed, lengths)
    assert torch.allclose(logits[0, :4], other[0, :4], atol=1e-5)  # positions <= 3 don't see x[3]
    assert not torch.allclose(logits[0, 4:], other[0, 4:], atol=1e-5)
    total_tokens = float((lengths + 1).sum())
    with torch.no_grad():
        likelihood, loss = model.log_likelihood(x, lengths), model.loss(x, lengths)
    assert float(-likelihood.sum() / total_tokens) == pytest.approx(float(loss), rel=1e-5)


@pytest.mark.parametrize("kind, options", [("flexmdm", {}), ("mdm", {}), ("autoregressive", {}),
                                           ("flexmdm", {"length_conditioning": True}),
                                           ("flexmdm", {"count_cap": 5})])
def test_save_load_round_trip(kind, options, tmp_path):
    model = perturbed(kind, **options)
    metadata = {"schedules": {"insertion": {"name": "linear"}}}
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    ToyLanguage().write_tokenizer(tokenizer)  # load_pretrained parses it
    save_pretrained(model, tmp_path / "ckpt", metadata=metadata, tokenizer_dir=tokenizer)
    loaded, saved = load_pretrained(tmp_path / "ckpt")
    assert saved["schedules"] == metadata["schedules"] and saved["model"] == model.config.to_dict()
    assert (tmp_path / "ckpt" / "tokenizer.json").exists()
    x, lengths = batch([3, 5])
    if kind == "autoregressive":
        x = torch.where(x == MASK, 0, x)
        assert torch.equal(model(x, lengths), loaded(x, lengths))
    else:
        args = (x, torch.tensor([0.2, 0.8]), lengths, torch.zeros_like(x, dtype=torch.bool))
        out, again = model(*args), loaded(*args)
        for a, b in zip(out if isinstance(out, tuple) else (out,), again if isinstance(again, tuple) else (again,)):
            assert torch.equal(a, b)


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first = perturbed(seed=0)
    save_pretrained(first, tmp_path / "ckpt")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pretrained_module, "save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        save_pretrained(perturbed(seed=1), tmp_path / "ckpt")
    loaded, _ = load_pretrained(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), loaded.state_dict().values()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model config keys.*'widht'"):
        ModelConfig.from_dict({**config().to_dict(), "widht": 3})
    with pytest.raises(ValueError, match="kind"):
        config("gpt")
    with pytest.raises(ValueError, match="heads"):
        ModelConfig(kind="mdm", vocab_size=V, mask_id=MASK, pad_id=PAD, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="differ"):
        ModelConfig(kind="mdm", vocab_size=V, mask_id=PAD, pad_id=PAD)
    with pytest.raises(ValueError, match="length_conditioning is for the 'dit' FlexMDM only"):
        config("mdm", length_conditioning=True)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"nothing": 1}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="'model'"):
        load_pretrained(tmp_path)


def test_count_head_gives_a_distribution_per_gap_and_certain_zero_past_the_end():
    model = perturbed(count_cap=5)
    x, lengths = batch([0, 3, 6])
    logits, gaps, count_log_probs = model(x, torch.rand(3), lengths, torch.zeros_like(x, dtype=torch.bool))
    assert count_log_probs.shape == (3, 7, 6)
    assert torch.allclose(count_log_probs.exp().sum(-1), torch.ones(3, 7))
    past = torch.arange(7) > lengths[:, None]
    assert bool((count_log_probs[past][:, 0] == 0).all()) and bool(torch.isinf(count_log_probs[past][:, 1:]).all())
    assert bool(torch.isfinite(count_log_probs[~past]).all())
    with pytest.raises(ValueError, match="count head"):
        config("mdm", count_cap=3)
    with pytest.raises(ValueError, match="count_cap"):
        config(count_cap=-1)


def test_untrained_model_drives_the_sampler():
    model = perturbed()
    process = FlexInterpolant(LinearSchedule(), LinearSchedule(), model.config.vocab)
    out = sample_flexmdm(model, process, steps=8, max_length=12, batch_size=4,
                         generator=torch.Generator().manual_seed(0))
    inside = torch.arange(out.tokens.shape[1]) < out.lengths[:, None]
    assert bool((out.tokens[inside] < MASK).all()) and bool((out.lengths <= 12).all())


def test_saved_files_have_the_usual_permissions(tmp_path):
    """Not tempfile's private 0o600: what a plain open() gives under the umask (0o644 under 022)."""
    mask = os.umask(0o022)
    try:
        save_pretrained(perturbed(), tmp_path / "ckpt")
    finally:
        os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "ckpt").iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.json": 0o644}
    assert stat.S_IMODE((tmp_path / "ckpt").stat().st_mode) == 0o755


def test_weights_are_checked_against_their_checksum(tmp_path):
    save_pretrained(perturbed(), tmp_path / "ckpt")
    weights, config_path = tmp_path / "ckpt" / "model.safetensors", tmp_path / "ckpt" / "config.json"
    config = json.loads(config_path.read_text())
    assert config[CHECKSUM_KEY] == hashlib.sha256(weights.read_bytes()).hexdigest()
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit of a tensor: still a valid file
    with pytest.raises(InputFileError, match="model.safetensors does not match the checksum"):
        load_pretrained(tmp_path / "ckpt")
    del config[CHECKSUM_KEY]  # as written before checksums were recorded: loaded unchecked
    config_path.write_text(json.dumps(config))
    load_pretrained(tmp_path / "ckpt")


@pytest.mark.parametrize("name, damage, message", [
    ("model.safetensors", lambda data: data[:100], "model.safetensors does not match the checksum"),
    ("config.json", lambda data: data[:50], "config.json is not valid JSON"),
    ("tokenizer.json", lambda data: data[:50], "tokenizer.json is not a valid tokenizer"),
])
def test_damaged_files_are_named(tmp_path, name, damage, message):
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    ToyLanguage().write_tokenizer(tokenizer)
    save_pretrained(perturbed(), tmp_path / "ckpt", tokenizer_dir=tokenizer)
    path = tmp_path / "ckpt" / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InputFileError, match=message):
        load_pretrained(tmp_path / "ckpt")


def test_weights_that_do_not_fit_the_config_are_named(tmp_path):
    save_pretrained(perturbed(), tmp_path / "mixed")
    save_pretrained(perturbed(mlp_ratio=2.0), tmp_path / "wide")
    shutil.copy(tmp_path / "wide" / "model.safetensors", tmp_path / "mixed" / "model.safetensors")
    config = json.loads((tmp_path / "mixed" / "config.json").read_text())
    del config[CHECKSUM_KEY]  # unchecked, so that the shapes are what fails
    (tmp_path / "mixed" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputFileError, match="does not fit the network of config.json"):
        load_pretrained(tmp_path / "mixed")


def test_flexmdm_token_head_sees_only_the_token_slots():
    """The padded network's gradients are those of the head applied to the n token slots, bit for
    bit: running the head over the END slot too and slicing changes the weight gradient's rounding,
    and with it every recorded training run."""
    torch.manual_seed(0)
    config = ModelConfig(kind="flexmdm", vocab_size=40, mask_id=38, pad_id=39, d_model=128, n_layers=2, n_heads=4,
                         max_length=64, dropout=0.0)
    model = build_model(config)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    batch, n = 16, 37
    x, lengths, t = torch.randint(0, 38, (batch, n)), torch.randint(0, n + 1, (batch,)), torch.rand(batch)

    def head_gradient(logits_of) -> torch.Tensor:
        model.zero_grad()
        logits = logits_of()
        torch.where(torch.isfinite(logits), logits, 0.0).square().mean().backward()
        return model.token_head.weight.grad.clone()

    def by_hand() -> torch.Tensor:
        slots = torch.arange(n + 1)[None, :]
        extended = torch.cat([x, x.new_full((batch, 1), config.pad_id)], dim=1)
        extended = torch.where(slots == lengths[:, None], config.vocab_size, extended)
        logits = model.token_head(model.trunk(extended, t, lengths + 1, None)[:, :n]).float()
        return logits.index_fill(-1, torch.tensor([config.mask_id, config.pad_id]), float("-inf"))

    assert torch.equal(head_gradient(lambda: model(x, t, lengths)[0]), head_gradient(by_hand))
