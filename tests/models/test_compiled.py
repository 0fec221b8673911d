"""Compiled networks (``train.compile``): the eager results, few graphs, an eager fallback."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
import torch._inductor.config

from flexmdm.models import FlexMDMModel, ModelConfig
from flexmdm.models.compiled import CompiledNetwork
from tests.models.switched_runs import train_each_way


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()


def test_a_failed_compilation_says_so_once_and_runs_eagerly(capsys, fresh_dynamo):
    """No working C++ compiler (inductor's CPU backend needs one): one line on stderr, eager results."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))
    network.config = object()
    compiled = CompiledNetwork(network)
    x = torch.randn(4, 3)
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
        assert torch.equal(compiled(x), network(x))
        assert torch.equal(compiled(x[:2]), network(x[:2]))
    assert compiled.compiled is False
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flexmdm: torch.compile failed, running eagerly (")
    assert "C++ compiler" in lines[0]
    # the network's parameters and state, registered once; attributes looked up on the network
    assert list(compiled.state_dict()) == [f"network.{key}" for key in network.state_dict()]
    assert len(list(compiled.parameters())) == len(list(network.parameters()))
    assert compiled.config is network.config


def _loss_and_grads(network, x, t, lengths, packed):
    network.zero_grad(set_to_none=True)
    logits, gaps = network(x, t, lengths, None, packed=packed)
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    loss = (logits.log_softmax(-1)[..., 1] * valid).sum() + (gaps * torch.arange(x.shape[1] + 1)).sum()
    loss.backward()
    params = network.parameters()
    return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.slow
def test_compiled_network_matches_eager_without_recompiling(fresh_dynamo):
    """Same loss and gradients as eager, padded and packed; new widths and packed sizes reuse the
    graphs of the first call (dynamic shapes); a user error inside still raises itself."""
    config = ModelConfig(kind="flexmdm", vocab_size=12, mask_id=10, pad_id=11, d_model=32, n_layers=1, n_heads=2,
                         max_length=16, length_conditioning=True)
    torch.manual_seed(0)
    eager = FlexMDMModel(config)
    compiled = CompiledNetwork(copy.deepcopy(eager))
    generator = torch.Generator().manual_seed(1)
    for packed in (False, True):
        graphs = None
        for lengths in ([9, 4, 7], [3, 11, 5], [12, 2, 6]):
            lengths = torch.tensor(lengths)
            x = torch.randint(0, 10, (3, int(lengths.max())), generator=generator)
            t = torch.rand(3, generator=generator)
            loss, grads = _loss_and_grads(eager, x, t, lengths, packed)
            compiled_loss, compiled_grads = _loss_and_grads(compiled, x, t, lengths, packed)
            assert compiled_loss == pytest.approx(float(loss), rel=1e-5)
            for grad, compiled_grad in zip(grads, compiled_grads):
                assert torch.allclose(compiled_grad, grad, rtol=1e-4, atol=1e-6)
            graphs = graphs or fresh_dynamo["stats"]["unique_graphs"]
            assert fresh_dynamo["stats"]["unique_graphs"] == graphs, "recompiled for a new shape"
    assert compiled.compiled
    with pytest.raises(ValueError, match="longer than this length-conditioned model's max_length"):
        compiled(torch.zeros(1, 17, dtype=torch.long), torch.rand(1), torch.tensor([17]), None)


@pytest.mark.slow
def test_training_with_compile_follows_the_eager_run(tmp_path, fresh_dynamo):
    """``train.compile``: the same losses, gradients and weights (up to rounding), packed; the
    checkpoint holds the network's own state dict."""
    raw = {
        "model": {"kind": "flexmdm", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_length": 16, "dropout": 0.0},
        "data": {"task": "toy", "max_a": 6, "max_b": 6, "prefix_probability": 0.2},
        "train": {"steps": 3, "batch_size": 8, "micro_batch_size": 4, "warmup_steps": 1, "ema_decay": 0.0,
                  "log_every": 1, "eval_batches": 1, "seed": 3, "packing": True},
    }
    metrics, weights = train_each_way(tmp_path, raw, "compile")
    assert fresh_dynamo["stats"]["unique_graphs"] > 0  # it did compile
    for key in ("loss", "grad_norm", "val_loss"):
        a = [row[key] for row in metrics[False] if key in row]
        b = [row[key] for row in metrics[True] if key in row]
        assert len(a) == len(b) > 0 and b == pytest.approx(a, rel=1e-4, abs=1e-6), key
    assert list(weights[True]) == list(weights[False])
    for name, weight in weights[False].items():
        assert torch.allclose(weights[True][name], weight, rtol=1e-4, atol=1e-5), name
