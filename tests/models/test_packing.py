"""Packed batches: the layout, and packed == padded for the networks, objectives and sampler."""

from __future__ import annotations

import functools

import pytest
import torch
import yaml

from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.losses import flexmdm_loss, mdm_loss
from flexmdm.models import ModelConfig, build_model
from flexmdm.models.packing import Packing, first_fit_decreasing
from flexmdm.sampling import sample_flexmdm
from flexmdm.schedules import LinearSchedule
from flexmdm.training import ConfigError, load_config
from flexmdm.vocab import Vocab
from tests.models.switched_runs import train_each_way

V, MASK, PAD = 12, 10, 11
ATOL = 1e-5


def model_of(kind: str, seed: int = 0, **options) -> torch.nn.Module:
    """A small network with every parameter random (adaLN, gap and count heads included)."""
    torch.manual_seed(seed)
    config = ModelConfig(kind=kind, vocab_size=V, mask_id=MASK, pad_id=PAD, d_model=32, n_layers=2, n_heads=4,
                         max_length=16, **options)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.2)
    return model.eval()


def clean_batch(lengths: list[int], width: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths)
    x = torch.randint(0, MASK, (len(lengths), width), generator=g)
    return torch.where(torch.arange(width) < lengths_t[:, None], x, PAD), lengths_t


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same_gradients(padded: dict, packed: dict) -> None:
    assert padded.keys() == packed.keys() and padded
    for name, grad in padded.items():
        assert torch.allclose(packed[name], grad, atol=ATOL, rtol=1e-4), name


# -- the layout ---------------------------------------------------------------------------------


def test_first_fit_decreasing_fills_rows_longest_first():
    bins, offsets = first_fit_decreasing([3, 8, 5, 2, 0, 6], budget=8)
    # 8 -> row 0, 6 -> row 1, 5 -> row 2, 3 after the 5, 2 after the 6, 0 after the 8
    assert bins == [2, 0, 2, 1, 0, 1] and offsets == [5, 0, 0, 6, 8, 0]
    assert first_fit_decreasing([], 4) == ([], [])


def test_packing_layout():
    lengths = torch.tensor([3, 0, 5, 1])
    packing = Packing(lengths, width=6)
    assert packing.tokens == 9 and packing.budget == 5 and packing.rows == 2
    assert packing.segment.tolist() == [0, 0, 0, 2, 2, 2, 2, 2, 3]
    assert packing.positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0]  # restart in every sequence
    x = torch.arange(24).view(4, 6)
    packed = packing.pack(x)
    assert packed.tolist() == [[0, 1, 2, 12, 13, 14, 15, 16, 18]]
    valid = torch.arange(6)[None, :] < lengths[:, None]
    assert torch.equal(packing.unpack(packed, fill=-1), torch.where(valid, x, -1))
    assert torch.equal(packing.spread(torch.tensor([[10], [11], [12], [13]]))[0, :, 0], 10 + packing.segment)
    # the mask is block-diagonal: two positions may attend to each other iff same sequence
    row_of = packing.row_index
    same = packing.segment[:, None] == packing.segment[None, :]
    mask = packing.mask[:, 0].flatten(1)  # [R, budget²]
    rows, cols = row_of // packing.budget, row_of % packing.budget
    pairs = mask[rows[:, None], cols[:, None] * packing.budget + cols[None, :]]
    assert torch.equal(pairs & (rows[:, None] == rows[None, :]), same)
    assert bool(packing.mask.any(dim=-1).all())  # no empty query, padding included


def test_causal_packing_is_causal_within_each_sequence():
    packing = Packing(torch.tensor([2, 3]), width=3, budget=5, causal=True)
    assert packing.rows == 1 and packing.row_index.tolist() == [3, 4, 0, 1, 2]  # longest first
    assert packing.mask[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1],
    ]


# -- networks and objectives ----------------------------------------------------------------------


LENGTHS = [0, 16, 3, 9, 1, 0, 12]  # very different lengths, empty states (the END slot only)


@pytest.mark.parametrize("options", [{}, {"count_cap": 3}, {"length_conditioning": True}])
def test_flexmdm_objective_packed_equals_padded(options):
    model = model_of("flexmdm", **options)
    x1, data_lengths = clean_batch([16, 16, 12, 10, 4, 2, 16])
    schedule = LinearSchedule()
    frozen = torch.zeros_like(x1, dtype=torch.bool)
    frozen[1, :2] = True
    t = torch.tensor([0.0, 0.95, 0.2, 0.5, 0.9, 0.05, 0.7])
    states = FlexInterpolant(schedule, schedule, Vocab(V, MASK, PAD)).sample(
        x1, data_lengths, t, frozen=frozen, generator=torch.Generator().manual_seed(1))
    assert 0 in states.lengths.tolist() and int(states.lengths.max()) > 3 * float(states.lengths.float().mean()) / 2

    def run(packed: bool):
        outputs = model(states.tokens, states.t, states.lengths, states.frozen, packed=packed)
        out = flexmdm_loss(outputs[0], outputs[1], states, schedule, schedule, *outputs[2:])
        return outputs, out, gradients(model, out.loss)

    (padded_outputs, padded, padded_grads), (packed_outputs, packed, packed_grads) = run(False), run(True)
    exists = torch.arange(states.tokens.shape[1] + 1)[None, :] <= states.lengths[:, None]
    live = exists[:, :-1] & (torch.arange(states.tokens.shape[1])[None, :] < states.lengths[:, None])
    assert torch.allclose(packed_outputs[0][live], padded_outputs[0][live], atol=ATOL)
    for a, b in zip(padded_outputs[1:], packed_outputs[1:]):
        assert torch.allclose(b, a, atol=ATOL)  # gaps and counts: every slot, past the END too
    for field in ("loss", "token_loss", "gap_loss", "num_tokens", "per_sequence"):
        assert torch.allclose(getattr(packed, field), getattr(padded, field), atol=ATOL), field
    assert_same_gradients(padded_grads, packed_grads)


def test_mdm_objective_packed_equals_padded():
    model = model_of("mdm")
    canvas, _ = clean_batch([16, 3, 9, 1], seed=2)
    schedule = LinearSchedule()
    states = MDMInterpolant(schedule, Vocab(V, MASK, PAD)).sample(
        canvas, torch.tensor([0.1, 0.5, 0.9, 0.3]), generator=torch.Generator().manual_seed(3))

    def run(packed: bool):
        out = mdm_loss(model(states.tokens, states.t, states.lengths, states.frozen, packed=packed), states, schedule)
        return out, gradients(model, out.loss)

    (padded, padded_grads), (packed, packed_grads) = run(False), run(True)
    assert torch.allclose(packed.per_sequence, padded.per_sequence, atol=ATOL)
    assert_same_gradients(padded_grads, packed_grads)


def test_autoregressive_packed_equals_padded():
    model = model_of("autoregressive")
    x, lengths = clean_batch(LENGTHS, seed=4)
    padded_logits, packed_logits = model(x, lengths), model(x, lengths, packed=True)
    live = torch.arange(17)[None, :] <= lengths[:, None]
    assert torch.allclose(packed_logits[live], padded_logits[live], atol=ATOL)

    def loss(logits: torch.Tensor) -> torch.Tensor:
        targets = torch.cat([x, torch.full((len(x), 1), PAD)], dim=1)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return torch.where(live, nll, 0.0).sum() / live.sum()

    assert_same_gradients(gradients(model, loss(model(x, lengths))),
                          gradients(model, loss(model(x, lengths, packed=True))))


@pytest.mark.parametrize("kind", ["flexmdm", "mdm", "autoregressive"])
def test_packed_sequences_do_not_see_each_other(kind):
    """Every packed sequence gives what it gives alone; changing one changes no other."""
    model = model_of(kind)
    lengths = [5, 16, 1, 9, 0, 3] if kind != "mdm" else [16] * 4
    x, lengths_t = clean_batch(lengths, seed=5)
    t = torch.linspace(0.1, 0.9, len(lengths))

    def outputs(tokens: torch.Tensor, packed: bool = True) -> torch.Tensor:
        args = (tokens, lengths_t) if kind == "autoregressive" else (tokens, t, lengths_t)
        out = model(*args, packed=packed)
        return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():
        before = outputs(x)
        changed = x.clone()
        changed[1, :3] = (changed[1, :3] + 1) % MASK
        after = outputs(changed)
        for row in range(len(lengths)):
            same = torch.allclose(after[row], before[row], atol=1e-6)
            assert same == (row != 1), row
            alone_args = (x[row:row + 1], lengths_t[row:row + 1])
            alone = model(*alone_args) if kind == "autoregressive" else model(x[row:row + 1], t[row:row + 1],
                                                                               lengths_t[row:row + 1])
            alone = alone[0] if isinstance(alone, tuple) else alone
            n = lengths[row] + (kind == "autoregressive")
            assert torch.allclose(before[row, :n], alone[0, :n], atol=ATOL), row


@pytest.mark.parametrize("kind", ["flexmdm", "autoregressive"])
def test_rotary_positions_restart_in_every_sequence(kind, monkeypatch):
    model = model_of(kind)
    rotary = model.trunk.rotary if kind == "flexmdm" else model.rotary
    seen = []
    original = rotary.at
    monkeypatch.setattr(rotary, "at", lambda positions: seen.append(positions) or original(positions))
    x, lengths = clean_batch([2, 0, 3])
    with torch.no_grad():
        model(x, lengths, packed=True) if kind == "autoregressive" else model(x, torch.rand(3), lengths, packed=True)
    # n + 1 slots per sequence: FlexMDM's END slot, the autoregressive model's BOS
    assert [p.tolist() for p in seen] == [[0, 1, 2, 0, 0, 1, 2, 3]]


# -- sampler and trainer --------------------------------------------------------------------------


def test_sampler_packed_gives_the_same_samples():
    """Same seed, same samples: packing changes the network's arithmetic order only, never the
    random draws (the sampler sees the same padded outputs, up to float rounding)."""
    model = model_of("flexmdm", seed=1)
    with torch.no_grad():
        model.gap_head.bias.fill_(1.0)  # sequences grow to different lengths
    schedule = LinearSchedule()

    def sample(denoiser):
        return sample_flexmdm(denoiser, FlexInterpolant(schedule, schedule, Vocab(V, MASK, PAD)), steps=12,
                              max_length=16, batch_size=8, generator=torch.Generator().manual_seed(7))

    padded, packed = sample(model), sample(functools.partial(model, packed=True))
    assert len(set(padded.lengths.tolist())) > 3
    assert torch.equal(packed.tokens, padded.tokens) and torch.equal(packed.lengths, padded.lengths)
    assert torch.equal(packed.nfe, padded.nfe)


@pytest.mark.parametrize("kind", ["flexmdm", "autoregressive"])
def test_training_with_packing_follows_the_padded_run(tmp_path, kind):
    """``train.packing``: the same losses, gradients and weights (up to rounding), no padding."""
    raw = {
        "model": {"kind": kind, "d_model": 32, "n_layers": 1, "n_heads": 2, "max_length": 16, "dropout": 0.0},
        "data": {"task": "toy", "max_a": 6, "max_b": 6, "prefix_probability": 0.2},
        "train": {"steps": 3, "batch_size": 8, "micro_batch_size": 4, "warmup_steps": 1, "ema_decay": 0.0,
                  "log_every": 1, "eval_batches": 1, "seed": 3},
    }
    metrics, weights = train_each_way(tmp_path, raw, "packing")
    for key in ("loss", "grad_norm", "val_loss"):
        a = [row[key] for row in metrics[False] if key in row]
        b = [row[key] for row in metrics[True] if key in row]
        assert len(a) == len(b) > 0 and b == pytest.approx(a, rel=1e-4, abs=1e-6), key
    assert all(row["padding_fraction"] == 0.0 for row in metrics[True])
    assert all(row["padding_fraction"] > 0.0 for row in metrics[False])
    for name, weight in weights[False].items():
        assert torch.allclose(weights[True][name], weight, rtol=1e-4, atol=1e-5), name


def test_packing_is_for_dit_networks(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"kind": "flexmdm", "architecture": "llada"},
                                    "data": {"task": "toy"}, "output_dir": str(tmp_path / "run")}))
    with pytest.raises(ConfigError, match=r"train\.packing needs model\.architecture 'dit'"):
        load_config(path, ["train.packing=true"])
