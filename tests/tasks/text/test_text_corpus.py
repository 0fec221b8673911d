"""The text pipeline: paragraphs, chunking, loaders, split, tokenizer, the cached ``text`` task."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch

from flexmdm.errors import InputFileError
from flexmdm.tasks.text import (
    TextTask,
    build_corpus,
    chunk_paragraph,
    delimiter_ids,
    gpt2_tokenizer,
    load_texts,
    load_tokenizer,
    save_tokenizer,
    split_paragraphs,
    stdlib_docstrings,
    text_vocab,
    train_bpe,
    train_validation_split,
)
from flexmdm.tasks.base import get_task_class

DOCS = [
    "The first paragraph.\nIt has two lines.\n\nThe second one.  \n \t \nThird: last!",
    "Another document with a single paragraph of words.",
    "Alpha beta gamma. Delta epsilon zeta. Eta theta iota. Kappa lambda mu.\n\nNu xi omicron.",
]


def _corpus_texts(repeat: int = 40) -> list[str]:
    """Varied English-like documents for training a small BPE."""
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum".split()
    texts = []
    for i in range(repeat):
        sentence = " ".join(words[(i + j) % len(words)] for j in range(3 + i % 9)).capitalize() + "."
        texts.append(sentence + " " + sentence.lower() + f"\n\nParagraph {i} ends here; really.")
    return texts


# -- paragraphs and chunking ----------------------------------------------------------------

def test_split_paragraphs_on_blank_lines_only():
    assert split_paragraphs(DOCS[0]) == ["The first paragraph.\nIt has two lines.", "The second one.", "Third: last!"]
    assert split_paragraphs("\n\n  \n") == []
    assert split_paragraphs("a\r\n\r\nb") == ["a", "b"]
    assert split_paragraphs("one\nline") == ["one\nline"]


def test_chunk_short_paragraph_is_kept_whole():
    assert chunk_paragraph([1, 2, 3], 3, {0}) == [[1, 2, 3]]
    assert chunk_paragraph([], 3, {0}) == []


def test_chunk_cuts_after_delimiter_nearest_middle():
    # 0 is the delimiter; positions of 0: 1 and 6 -> cuts after them at 2 and 7; middle 5 -> cut 7
    ids = [5, 0, 5, 5, 5, 5, 0, 5, 5, 5]
    assert chunk_paragraph(ids, 8, {0}) == [[5, 0, 5, 5, 5, 5, 0], [5, 5, 5]]


def test_chunk_tie_prefers_earlier_cut_and_recurses():
    # length 8, middle 4; delimiters at 2 and 4 -> cuts 3 and 5 tie at distance 1 -> cut at 3
    ids = [1, 1, 0, 1, 0, 1, 1, 1]
    assert chunk_paragraph(ids, 7, {0}) == [[1, 1, 0], [1, 0, 1, 1, 1]]
    # recursion: each half longer than max_length is split again
    pieces = chunk_paragraph(ids, 2, {0})
    assert sum(pieces, []) == ids and all(1 <= len(p) <= 2 for p in pieces)


def test_chunk_without_delimiter_cuts_in_the_middle():
    assert chunk_paragraph(list(range(10)), 5, set()) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    # a delimiter as the last token gives no cut (both halves must be non-empty)
    assert chunk_paragraph([1, 1, 1, 0], 3, {0}) == [[1, 1], [1, 0]]


def test_chunk_invariants_on_random_input():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(0, 60, (1,), generator=generator))
        ids = torch.randint(0, 4, (n,), generator=generator).tolist()
        max_length = int(torch.randint(1, 12, (1,), generator=generator))
        pieces = chunk_paragraph(ids, max_length, {0})
        assert sum(pieces, []) == ids
        assert all(1 <= len(p) <= max_length for p in pieces)


def test_chunk_rejects_bad_max_length():
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        chunk_paragraph([1], 0, {0})


# -- loaders --------------------------------------------------------------------------------

@pytest.mark.e2e
def test_stdlib_docstrings_are_real_and_deterministic(tmp_path):
    package = tmp_path / "lib"
    (package / "pkg").mkdir(parents=True)
    (package / "test").mkdir()
    (package / "b.py").write_text('"""Module b."""\ndef f():\n    """Function f.\n\n    Details."""\n')
    (package / "a.py").write_text('class A:\n    """Class A."""\n    def g(self):\n        """Method g."""\n')
    (package / "pkg" / "c.py").write_text('"""Module c."""\n')
    (package / "test" / "t.py").write_text('"""Skipped test module."""\n')
    (package / "broken.py").write_text("def (:\n")
    assert stdlib_docstrings(package) == ["Class A.", "Method g.", "Module b.", "Function f.\n\nDetails.", "Module c."]

    real = stdlib_docstrings()
    assert len(real) > 1000
    import json as json_module
    assert json_module.__doc__.strip().splitlines()[0] in {d.splitlines()[0] for d in real}


def test_load_texts_local_files_and_folders(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "b.txt").write_text(DOCS[0])
    (tmp_path / "docs" / "sub" / "a.jsonl").write_text(
        json.dumps({"text": DOCS[1]}) + "\n\n" + json.dumps({"text": DOCS[2], "id": 3}) + "\n")
    (tmp_path / "docs" / "ignored.csv").write_text("x")
    assert load_texts(tmp_path / "docs" / "b.txt") == [DOCS[0]]
    assert load_texts(str(tmp_path / "docs" / "sub" / "a.jsonl")) == [DOCS[1], DOCS[2]]
    assert load_texts(tmp_path / "docs") == [DOCS[0], DOCS[1], DOCS[2]]  # b.txt sorts before sub/


def test_load_texts_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'stdlib'"):
        load_texts(tmp_path / "missing.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: expected an object with a string 'text'"):
        load_texts(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: not JSON"):
        load_texts(bad)
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_texts(tmp_path / "x.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .txt or .jsonl"):
        load_texts(tmp_path / "empty")


def test_load_texts_hugging_face_fixtures(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    # a folder written by save_to_disk (a DatasetDict with two splits)
    saved = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": DOCS[:2], "id": [0, 1]}),
        "test": datasets.Dataset.from_dict({"text": DOCS[2:], "id": [2]}),
    }).save_to_disk(str(saved))
    assert load_texts(f"hf:{saved}") == DOCS[:2]
    assert load_texts(f"hf:{saved}:test") == DOCS[2:]
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_texts(f"hf:{saved}:validation")
    # a folder of data files, read by datasets.load_dataset as a dataset repository would be
    files = tmp_path / "repo"
    (files / "data").mkdir(parents=True)
    (files / "data" / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    assert load_texts(f"hf:{files}:train") == DOCS
    # a dataset without a text column
    other = tmp_path / "other"
    datasets.Dataset.from_dict({"body": ["x"]}).save_to_disk(str(other))
    with pytest.raises(ValueError, match="no 'text' column"):
        load_texts(f"hf:{other}")


def test_train_validation_split_is_deterministic_and_order_free():
    paragraphs = [f"paragraph number {i}" for i in range(2000)]
    train, validation = train_validation_split(paragraphs, 0.1, seed=3)
    assert sorted(train + validation) == sorted(paragraphs)
    assert not set(train) & set(validation)
    assert 140 < len(validation) < 260  # Binomial(2000, 0.1): mean 200, sd 13
    train_r, validation_r = train_validation_split(paragraphs[::-1], 0.1, seed=3)
    assert set(validation_r) == set(validation) and validation_r == validation[::-1]
    assert set(train_validation_split(paragraphs, 0.1, seed=4)[1]) != set(validation)
    assert train_validation_split(paragraphs, 0.0)[1] == []
    with pytest.raises(ValueError, match="validation_fraction"):
        train_validation_split(paragraphs, 1.0)


# -- tokenizer ------------------------------------------------------------------------------

def test_train_bpe_vocabulary_round_trip_and_special_ids(tmp_path):
    tokenizer = train_bpe(_corpus_texts(), 300)
    vocab = text_vocab(tokenizer)
    assert (vocab.size, vocab.mask_id, vocab.pad_id) == (300, 298, 299)
    text = "The lazy wizards hum. Ünïcödé bytes — and emoji 🙂 too!\n"
    ids = tokenizer.encode(text).ids
    assert max(ids) < 298 and tokenizer.decode(ids) == text
    assert train_bpe(_corpus_texts(), 300).to_str() == tokenizer.to_str()  # deterministic
    path = save_tokenizer(tokenizer, tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json"
    for where in (path, tmp_path / "tok"):
        loaded = load_tokenizer(where)
        assert loaded.encode(text).ids == ids and text_vocab(loaded) == vocab
    period = tokenizer.token_to_id(".")
    newline = tokenizer.encode("\n").ids[0]
    delimiters = delimiter_ids(tokenizer)
    assert period in delimiters and newline in delimiters
    assert tokenizer.encode("quick").ids[0] not in delimiters
    assert vocab.mask_id not in delimiters


def test_train_bpe_errors():
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        train_bpe(["abc"], 100)
    with pytest.raises(ValueError, match="fewer than vocab_size=5000"):
        train_bpe(["tiny text"], 5000)


def test_gpt2_style_files_load_with_special_ids_appended(tmp_path):
    bpe = train_bpe(_corpus_texts(), 300)
    bpe.model.save(str(tmp_path))  # writes vocab.json and merges.txt, GPT-2's format
    vocabulary = json.loads((tmp_path / "vocab.json").read_text())
    assert "[MASK]" not in vocabulary and len(vocabulary) == 298
    tokenizer = gpt2_tokenizer(tmp_path)
    assert text_vocab(tokenizer).mask_id == 298 and text_vocab(tokenizer).pad_id == 299
    text = "seven quick dogs jump."
    assert tokenizer.encode(text).ids == bpe.encode(text).ids
    assert load_tokenizer(tmp_path).encode(text).ids == bpe.encode(text).ids
    (tmp_path / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match="merges.txt not found"):
        gpt2_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer at"):
        load_tokenizer(tmp_path / "nothing")


# -- corpus and task -----------------------------------------------------------------------

def test_build_corpus_chunks_splits_and_deduplicates():
    texts = _corpus_texts() + _corpus_texts()  # every paragraph twice
    corpus = build_corpus(texts, max_length=8, vocab_size=300, validation_fraction=0.2)
    for split in ("train", "validation"):
        lengths = corpus.lengths(split)
        assert len(lengths) > 0 and lengths.max() <= 8 and lengths.min() >= 1
    decoded = {corpus.tokenizer.decode(s) for s in corpus.sequences("train")}
    held_out = {corpus.tokenizer.decode(s) for s in corpus.sequences("validation")}
    paragraphs = set(p for t in texts for p in split_paragraphs(t))
    # joining the chunks of one paragraph gives it back; duplicates were dropped
    total = corpus.lengths("train").sum() + corpus.lengths("validation").sum()
    tokens_once = sum(len(corpus.tokenizer.encode(p).ids) for p in paragraphs)
    assert total == tokens_once
    assert decoded and held_out
    with pytest.raises(ValueError, match="no paragraph"):
        build_corpus(["\n\n"], max_length=8, vocab_size=300)


def test_text_task_batches_cache_and_tokenizer(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in _corpus_texts()))
    options = dict(source=str(source), max_length=12, vocab_size=300, validation_fraction=0.2,
                   cache_dir=str(tmp_path / "cache"))
    assert get_task_class("text") is TextTask
    task = TextTask(**options)
    assert (task.vocab.size, task.vocab.mask_id, task.vocab.pad_id) == (300, 298, 299)
    batch = task.sample_batch(64, torch.Generator().manual_seed(0), "validation")
    assert batch.x1.shape == (64, 12) and not batch.frozen.any()
    position = torch.arange(12)[None, :]
    assert ((batch.x1 == task.vocab.pad_id) == (position >= batch.lengths[:, None])).all()
    held_out = {tuple(s) for s in task.corpus.sequences("validation")}
    assert all(tuple(row[:n].tolist()) in held_out for row, n in zip(batch.x1, batch.lengths))
    again = task.sample_batch(64, torch.Generator().manual_seed(0), "validation")
    assert torch.equal(batch.x1, again.x1)
    # the cache: one entry, reused by a new task object, keyed by the options and the source
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and (entries[0] / "corpus.npz").is_file()
    cached = TextTask(**options)
    assert cached.cache_path == task.cache_path
    assert torch.equal(cached.sample_batch(64, torch.Generator().manual_seed(0), "validation").x1, batch.x1)
    assert TextTask(**{**options, "max_length": 10}).cache_path != task.cache_path
    source.write_text(source.read_text() + json.dumps({"text": "A new document."}) + "\n")
    assert TextTask(**options).cache_path != task.cache_path
    # the exported tokenizer decodes the batch
    assert task.write_tokenizer(tmp_path / "export")
    exported = load_tokenizer(tmp_path / "export")
    assert exported.decode(batch.x1[0, : batch.lengths[0]].tolist()) == task.decode([batch.x1[0, : batch.lengths[0]]])[0]


def test_text_task_rejects_bad_options():
    with pytest.raises(ValueError, match="max_length must be >= 1"):
        TextTask(max_length=0)
    with pytest.raises(ValueError, match="validation_fraction"):
        TextTask(validation_fraction=1.5)


def test_text_training_exports_tokenizer_and_resumes_after_the_cache_moves(tmp_path):
    from flexmdm.training.config import config_from_dict
    from flexmdm.training.trainer import train

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in _corpus_texts()))

    def config(steps: int, cache: str):
        return config_from_dict({
            "model": {"kind": "flexmdm", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_length": 12},
            "data": {"task": "text", "source": str(source), "max_length": 12, "vocab_size": 300, "cache_dir": cache},
            "train": {"steps": steps, "batch_size": 4, "warmup_steps": 1, "eval_batches": 1},
            "output_dir": str(tmp_path / "run"),
        })

    first = train(config(2, str(tmp_path / "cache-a")))
    assert load_tokenizer(first.model_dir).get_vocab_size() == 300
    resumed = train(config(3, str(tmp_path / "cache-b")))
    assert resumed.steps == 3


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_building_a_corpus_shows_progress_on_a_terminal(tmp_path, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / f"{name}.txt").write_text("the cat sat on the mat.\n\nthe dog sat on the cat.\n")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    build_corpus(load_texts(tmp_path), max_length=8, vocab_size=259, validation_fraction=0.0)
    shown = terminal.getvalue()
    for stage in (f"reading {tmp_path}", "training a BPE of 259 ids", "tokenizing the train split"):
        assert f"{stage}: 100%" in shown, stage
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: silent
    load_texts(tmp_path)
    assert sys.stderr.getvalue() == ""


def test_malformed_sources_are_input_file_errors(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(InputFileError, match=r"latin1\.txt: not UTF-8 text"):
        load_texts(tmp_path / "latin1.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(InputFileError, match=r"bad\.jsonl:2: not JSON"):
        load_texts(tmp_path / "bad.jsonl")
