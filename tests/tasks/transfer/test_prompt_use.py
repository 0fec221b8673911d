"""``prompt_use``: the answer loss under its own question and under another's, for both families."""

import pytest
import torch
from torch import nn

from flexmdm.pipeline import Pipeline
from flexmdm.tasks.transfer.evaluation import prompt_use
from tests.tasks.word_tokenizer import write_word_tokenizer

WORDS = ["a", "b", "c", "d", "[MASK]", "[PAD]"]
V, MASK, PAD = 6, 4, 5
PROBLEMS = [{"question": w, "answer": f"{w} {w} {w}"} for w in "abcd"]  # each answer repeats its question


class Network(nn.Module):
    """Token logits that either favour the sequence's first token (the question: it reads its prompt),
    and PAD past question and answer (an MDM's canvas), or are the same everywhere (it ignores its prompt);
    a FlexMDM also returns gap expectations."""

    def __init__(self, inserts: bool, reads: bool):
        super().__init__()
        self.inserts, self.reads = inserts, reads
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, lengths, frozen=None):
        logits = torch.zeros(*x.shape, V)
        if self.reads:
            after = (torch.arange(x.shape[1]) >= 4)[None, :]
            logits += 8.0 * nn.functional.one_hot(torch.where(after, PAD, x[:, :1]), V).float()
        if not self.inserts:
            return logits
        return logits, torch.ones(x.shape[0], x.shape[1] + 1)


def pipeline(tmp_path, kind, reads):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(write_word_tokenizer(tmp_path / f"{kind}.json", WORDS)))
    schedules = {"unmasking": {"name": "linear"}}
    if kind == "flexmdm":
        schedules["insertion"] = {"name": "linear"}
    config = {"model": {"kind": kind, "max_length": 8}, "schedules": schedules,
              "vocab": {"size": V, "mask_id": MASK, "pad_id": PAD}}
    return Pipeline.from_model(Network(kind == "flexmdm", reads), config, tokenizer=tokenizer)


@pytest.mark.parametrize("kind", ["mdm", "flexmdm"])
def test_a_model_that_reads_its_question_gains_and_one_that_ignores_it_does_not(tmp_path, kind):
    reader = prompt_use(pipeline(tmp_path, kind, reads=True), PROBLEMS, seed=0)
    assert reader["n"] == 4 and reader["other"] - reader["own"] == pytest.approx(reader["gain"])
    assert reader["own"] < 0.1 < 1.0 < reader["gain"]  # its own question gives the answer away
    ignorer = prompt_use(pipeline(tmp_path, kind, reads=False), PROBLEMS, seed=0)
    assert ignorer["own"] == ignorer["other"] > 0 and ignorer["gain"] == 0.0
    assert prompt_use(pipeline(tmp_path, kind, reads=True), PROBLEMS, seed=0) == reader  # seeded


def test_problems_that_do_not_fit_after_either_question_are_left_out(tmp_path):
    long_question = {"question": " ".join("abcdab"), "answer": "a a"}  # 6 + 2 tokens fit the 8 of max_length
    use = prompt_use(pipeline(tmp_path, "flexmdm", reads=True), [*PROBLEMS, long_question], seed=0)
    assert use["n"] == 4  # "d d d" is left out: the next question (the long one) leaves it no room
