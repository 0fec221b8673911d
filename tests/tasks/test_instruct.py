"""Instruction pairs in both layouts: the FlexMDM couplings and the MDM's fixed-canvas SFT."""

import json

import pytest
import torch

from flexmdm.sampling.mdm import mdm_canvas
from flexmdm.tasks.instruct import InstructTask
from flexmdm.training.config import config_from_dict
from tests.tasks.word_tokenizer import write_word_tokenizer

WORDS = ["a", "b", "c", "d", "e", "f", "[MASK]", "[PAD]"]
MASK, PAD = 6, 7


@pytest.fixture
def mixed_pairs(tmp_path):
    """Math-like pairs (empty suffix: the prompt coupling) and code-like pairs (a real suffix)."""
    write_word_tokenizer(tmp_path / "tokenizer.json", WORDS)
    g = torch.Generator().manual_seed(0)

    def words(low, high, count):
        return " ".join(WORDS[int(i)] for i in torch.randint(low, high, (count,), generator=g))

    rows = []
    for index in range(80):
        n_prompt, n_response, n_suffix = (int(v) for v in torch.randint(1, 6, (3,), generator=g))
        suffix = "" if index % 2 else words(4, 6, n_suffix)
        rows.append({"prompt": words(0, 3, n_prompt), "response": words(3, 4, n_response), "suffix": suffix})
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return tmp_path / "pairs.jsonl", tmp_path / "tokenizer.json"


def task(files, **options):
    path, tokenizer = files
    return InstructTask(path=str(path), tokenizer=str(tokenizer), coupling="infill", max_length=14, **options)


def test_the_mdm_layout_is_the_sampling_canvas_with_the_middle_and_pad_targets(mixed_pairs):
    mdm = task(mixed_pairs, layout="mdm", middle_budget=4)
    batch = mdm.sample_batch(64, torch.Generator().manual_seed(1))
    assert batch.x1.shape == (64, 14) and bool((batch.lengths == 14).all())
    seen_suffix = seen_empty = False
    for row, frozen in zip(batch.x1.tolist(), batch.frozen.tolist()):
        # recover the pair: the prompt is a..c, the middle d, the suffix e/f
        prefix = [t for t in row if t < 3]
        middle = [t for t in row if t == 3]
        suffix = [t for t in row if t in (4, 5)]
        seen_suffix, seen_empty = seen_suffix or bool(suffix), seen_empty or not suffix
        budget = [4] if suffix else [14 - len(prefix)]
        canvas, canvas_frozen = mdm_canvas([prefix], 14, mdm.vocab, [suffix], budget)
        assert frozen == canvas_frozen[0].tolist()  # what is given is what sampling gives
        masks = canvas[0] == MASK
        assert torch.tensor(row)[~masks].tolist() == canvas[0][~masks].tolist()
        targets = torch.tensor(row)[masks].tolist()  # the middle, then PAD targets up to the budget
        assert targets == middle + [PAD] * (len(targets) - len(middle))
    assert seen_suffix and seen_empty


def test_both_layouts_train_on_the_same_pairs(mixed_pairs):
    flexmdm, mdm = task(mixed_pairs, middle_budget=3), task(mixed_pairs, layout="mdm", middle_budget=3)
    assert flexmdm.examples == mdm.examples
    unlimited = task(mixed_pairs).examples["train"]
    kept = flexmdm.examples["train"]
    assert len(kept) < len(unlimited)  # middles of 4-5 tokens before a suffix are left out
    assert all(len(e.response) <= 3 for e in kept if e.suffix)
    assert any(len(e.response) > 3 for e in kept if not e.suffix)  # the prompt coupling has no budget


def test_layout_errors_are_one_line(mixed_pairs, tmp_path):
    with pytest.raises(ValueError, match="^middle_budget: the mdm layout of infilling pairs needs a budget"):
        task(mixed_pairs, layout="mdm")
    with pytest.raises(ValueError, match="^middle_budget must be >= 1, got 0"):
        task(mixed_pairs, middle_budget=0)
    no_suffix = tmp_path / "no-suffix.jsonl"
    no_suffix.write_text(json.dumps({"prompt": "a", "response": "d"}) + "\n")
    cut_at_random = InstructTask(path=str(no_suffix), tokenizer=str(mixed_pairs[1]), coupling="infill",
                                 layout="mdm", middle_budget=2, max_length=8)
    with pytest.raises(ValueError, match="the mdm layout needs every infilling pair's 'suffix'"):
        cut_at_random.examples


@pytest.mark.parametrize("kind", ["mdm", "flexmdm"])
def test_the_layout_follows_the_model_family(mixed_pairs, tmp_path, kind):
    path, tokenizer = mixed_pairs
    config = config_from_dict({
        "model": {"kind": kind, "d_model": 16, "n_layers": 1, "n_heads": 2, "max_length": 14},
        "data": {"task": "instruct", "path": str(path), "tokenizer": str(tokenizer), "coupling": "infill",
                 "max_length": 14, "middle_budget": 3},
        "output_dir": str(tmp_path / "run")})
    assert config.data.options["layout"] == kind
    batch = config.data.build_task().sample_batch(4, torch.Generator().manual_seed(0))
    assert (batch.allowed_regions is None) == (kind == "mdm")
