"""Text metrics on inputs with known answers, and the causal LM objective of the trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from flexmdm.models import AutoregressiveLM, ModelConfig, load_pretrained
from flexmdm.tasks.text.metrics import (
    generative_perplexity,
    length_distances,
    length_summary,
    length_total_variation,
    length_wasserstein1,
    sample_statistics,
    text_statistics,
    unigram_entropy,
)
from flexmdm.tasks.toy import ToyLanguage
from flexmdm.training.config import config_from_dict
from flexmdm.training.streams import keyed_generator
from flexmdm.families import family
from flexmdm.training.trainer import train


def test_length_distances_known_answers():
    assert length_total_variation([1, 1, 2, 2], [2, 2, 3, 3]) == pytest.approx(0.5)
    assert length_wasserstein1([1, 1, 2, 2], [2, 2, 3, 3]) == pytest.approx(1.0)
    assert length_wasserstein1([0, 10], [5, 5]) == pytest.approx(5.0)
    assert length_wasserstein1([0, 0, 0], [7]) == pytest.approx(7.0)
    assert length_total_variation([0, 0, 0], [7]) == pytest.approx(1.0)
    # identical distributions, different sample counts
    assert length_total_variation([3, 4], [4, 3, 3, 4]) == 0.0 == length_wasserstein1([3, 4], [4, 3, 3, 4])
    # W1 equals the mean difference when one distribution dominates the other
    rng = np.random.default_rng(0)
    a = rng.integers(0, 30, 500)
    assert length_wasserstein1(a, a + 3) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="at least one sample"):
        length_wasserstein1([], [1])
    with pytest.raises(ValueError, match=">= 0"):
        length_total_variation([-1], [1])


def test_length_summary_and_unigram_entropy():
    assert length_summary([1, 2, 3, 4, 5]) == {"mean": 3.0, "q25": 2.0, "median": 3.0, "q75": 4.0}
    assert unigram_entropy([[1, 1, 2, 2]]) == pytest.approx(math.log(2))
    assert unigram_entropy([[3, 3, 3], [1, 1, 2, 2], []]) == pytest.approx(math.log(2) / 2)
    assert unigram_entropy([[0, 1, 2, 3]]) == pytest.approx(math.log(4))
    assert math.isnan(unigram_entropy([[]]))


class _FixedDistribution(nn.Module):
    """A 'language model' predicting the same distribution ``probs`` at every position."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.log_probs = probs.log()

    def forward(self, x, lengths):
        return self.log_probs.expand(x.shape[0], x.shape[1] + 1, -1).clone()


def test_generative_perplexity_known_answer_and_exclusion():
    probs = torch.tensor([0.5, 0.25, 0.125, 0.125])
    model = _FixedDistribution(probs)
    long_a = [0] * 12                      # 12 tokens of log 2
    long_b = [1] * 11 + [2] * 5            # 11 of log 4, 5 of log 8
    short = [3] * 10                       # excluded (<= 10 tokens)
    nll = 12 * math.log(2) + 11 * math.log(4) + 5 * math.log(8)
    ppl, scored = generative_perplexity(model, [long_a, short, long_b], pad_id=3, batch_size=2)
    assert scored == 2
    assert ppl == pytest.approx(math.exp(nll / 28))
    assert generative_perplexity(model, [short], pad_id=3) == (pytest.approx(math.nan, nan_ok=True), 0)
    uniform = _FixedDistribution(torch.full((4,), 0.25))
    assert generative_perplexity(uniform, [long_a, long_b], pad_id=3)[0] == pytest.approx(4.0)


def test_text_and_sample_statistics_gather_the_metrics():
    model = _FixedDistribution(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    long_a, long_b, short = [0] * 12, [1] * 11 + [2] * 5, [3] * 10
    stats = text_statistics([long_a, short, long_b], model, pad_id=3)
    ppl, _ = generative_perplexity(model, [long_a, long_b], pad_id=3)
    assert stats == {"n": 3, "n_scored": 2, "gen_ppl": pytest.approx(ppl), "length": length_summary([12, 10, 16]),
                     "unigram_entropy": pytest.approx(unigram_entropy([long_a, short, long_b]))}
    nothing = text_statistics([short], model, pad_id=3)  # nothing long enough to score: JSON null, not NaN
    assert nothing["gen_ppl"] is None and nothing["n_scored"] == 0 and nothing["unigram_entropy"] == 0.0
    assert length_distances([1, 1, 2, 2], [2, 2, 3, 3]) == {"length_tv": pytest.approx(0.5),
                                                            "length_w1": pytest.approx(1.0)}
    together = sample_statistics([long_a, short], [12, 12, 11], model, pad_id=3)
    assert together == {**text_statistics([long_a, short], model, pad_id=3), **length_distances([12, 10], [12, 12, 11])}
    assert together["length_tv"] == pytest.approx(0.5)  # ½ (|½ − ⅔| + ½ + ⅓)


def test_generative_perplexity_matches_causal_lm_likelihood_despite_padding():
    torch.manual_seed(0)
    config = ModelConfig(kind="autoregressive", vocab_size=12, mask_id=10, pad_id=11, d_model=32, n_layers=2,
                         n_heads=2, max_length=32)
    model = AutoregressiveLM(config).eval()
    generator = torch.Generator().manual_seed(1)
    sequences = [torch.randint(0, 10, (n,), generator=generator).tolist() for n in (11, 17, 25)]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for sequence in sequences:  # one at a time: no padding at all
            x = torch.tensor([sequence])
            lengths = torch.tensor([len(sequence)])
            end_log_prob = torch.log_softmax(model(x, lengths)[0, len(sequence)], dim=-1)[config.pad_id]
            total_nll -= float(model.log_likelihood(x, lengths)[0] - end_log_prob)
            total_tokens += len(sequence)
    ppl, scored = generative_perplexity(model, sequences, pad_id=config.pad_id, batch_size=3)
    assert scored == 3 and ppl == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-5)


def test_autoregressive_objective_is_the_causal_likelihood():
    task = ToyLanguage()
    config = config_from_dict({"model": {"kind": "autoregressive", "d_model": 32, "n_layers": 1, "n_heads": 2,
                                         "max_length": 40}, "output_dir": "unused"})
    torch.manual_seed(0)
    model = AutoregressiveLM(config.model).eval()
    objective = family("autoregressive").objective({}, task.vocab, task.max_length)
    generator = keyed_generator(0, "test")
    batch = task.sample_batch(8, generator)
    states = objective.states(batch, torch.zeros(8), generator)
    assert states.tokens.shape[1] == int(batch.lengths.max())
    with torch.no_grad():
        out = objective.loss(model, states)
        expected = -model.log_likelihood(batch.x1, batch.lengths)
    assert torch.allclose(out.per_sequence, expected, atol=1e-4)
    assert int(out.num_tokens) == int(batch.lengths.sum()) + 8 == int(objective.normaliser(batch))
    assert float(out.loss) == pytest.approx(float(expected.sum()) / int(out.num_tokens), rel=1e-5)


def test_trainer_fits_an_autoregressive_model(tmp_path):
    config = config_from_dict({
        "model": {"kind": "autoregressive", "d_model": 32, "n_layers": 1, "n_heads": 2, "max_length": 40},
        "data": {"task": "toy"},
        "train": {"steps": 40, "batch_size": 16, "lr": 3e-3, "warmup_steps": 5, "log_every": 40, "eval_batches": 1,
                  "ema_decay": 0.0},
        "output_dir": str(tmp_path / "ar"),
    })
    result = train(config)
    model, saved = load_pretrained(result.model_dir)
    assert isinstance(model, AutoregressiveLM) and saved["vocab"]["pad_id"] == 3
    # a^n b^m: after training, far below the uniform 2-symbol-plus-end cost of log 3 per token
    assert result.val_loss is not None and result.val_loss < 0.9 * math.log(3)
