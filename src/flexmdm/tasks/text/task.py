"""The text task registered for training (``data: {task: text, ...}`` in a configuration).

Building the corpus: documents (:func:`~flexmdm.tasks.text.corpus.load_texts`) → paragraphs →
exact duplicates dropped (optional) → deterministic train/validation split by paragraph hash
→ tokenizer (a byte-level BPE trained on the *training* paragraphs, or one given by path) →
token ids → paragraphs longer than ``max_length`` split at the delimiter nearest their middle.

The result is cached on disk (``cache_dir/text-<key>/``: ``tokenizer.json``, ``corpus.npz``,
``meta.json``) under a key of every option that changes it and of the source's identity (the
Python version for ``stdlib``; path, size and modification time of local files), so repeated
runs skip tokenization. The cache is written atomically (temporary folder, then rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer

from flexmdm.atomic import atomic_directory
from flexmdm.errors import InputFileError
from flexmdm.tasks.cache import cache_folder, load_or_build, progress, source_identity
from flexmdm.tasks.text.corpus import chunk_paragraph, load_texts, paragraphs_of, train_validation_split
from flexmdm.tasks.text.tokenizer import (
    delimiter_ids,
    load_tokenizer,
    save_tokenizer,
    text_vocab,
    train_bpe,
)
from flexmdm.training.data import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = ["TextCorpus", "TextTask", "build_corpus"]

CACHE_VERSION = 1


@dataclass
class TextCorpus:
    """Tokenized sequences of both splits, stored flat.

    Attributes:
        tokenizer: the tokenizer (``[MASK]`` and ``[PAD]`` included).
        ids: split → ``int32 [total tokens]`` every sequence's ids, concatenated.
        offsets: split → ``int64 [num sequences + 1]`` where each sequence starts (and the end).
    """

    tokenizer: Tokenizer
    ids: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]

    def lengths(self, split: Split) -> np.ndarray:
        """``[num sequences]`` token counts of ``split``."""
        return np.diff(self.offsets[split])

    def sequences(self, split: Split) -> list[list[int]]:
        """Every sequence of ``split`` as a list of ids."""
        ids, offsets = self.ids[split], self.offsets[split]
        return [ids[offsets[i]:offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


def _flatten(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in sequences])
    ids = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=int(offsets[-1]))
    return ids, offsets


def _encode(tokenizer: Tokenizer, texts: list[str], description: str, block: int = 1024) -> list[Encoding]:
    """``tokenizer.encode_batch(texts)`` (no special tokens) in blocks, with a progress bar."""
    blocks = range(0, len(texts), block)
    bar = progress(blocks, description, total=len(blocks), unit="block")
    return [e for start in bar for e in tokenizer.encode_batch(texts[start:start + block], add_special_tokens=False)]


def build_corpus(texts: list[str], *, max_length: int, vocab_size: int, tokenizer: Tokenizer | None = None,
                 validation_fraction: float = 0.05, split_seed: int = 0, deduplicate: bool = True,
                 min_tokens: int = 1) -> TextCorpus:
    """Paragraphs of ``texts`` tokenized and chunked to at most ``max_length`` (see the module docstring).

    Args:
        texts: the documents.
        max_length: the longest sequence.
        vocab_size: size of the BPE trained when ``tokenizer`` is None.
        tokenizer: a tokenizer to use instead of training one.
        validation_fraction: share of paragraphs held out.
        split_seed: seed of the split's hash.
        deduplicate: drop repeated paragraphs (keeping the first).
        min_tokens: drop sequences shorter than this.

    Raises:
        ValueError: no paragraph, or an empty split.
    """
    paragraphs = paragraphs_of(texts)
    if deduplicate:
        paragraphs = list(dict.fromkeys(paragraphs))
    if not paragraphs:
        raise ValueError("the text source holds no paragraph")
    splits = dict(zip(("train", "validation"), train_validation_split(paragraphs, validation_fraction, split_seed)))
    for name, items in splits.items():
        if not items and (name == "train" or validation_fraction > 0):
            raise ValueError(f"the {name} split is empty ({len(paragraphs)} paragraphs, "
                             f"validation_fraction={validation_fraction})")
    if tokenizer is None:
        tokenizer = train_bpe(progress(splits["train"], f"training a BPE of {vocab_size} ids", unit="paragraph"),
                              vocab_size)
    delimiters = delimiter_ids(tokenizer)
    ids, offsets = {}, {}
    for name, items in splits.items():
        chunks = [chunk for e in _encode(tokenizer, items, f"tokenizing the {name} split")
                  for chunk in chunk_paragraph(e.ids, max_length, delimiters)]
        ids[name], offsets[name] = _flatten([c for c in chunks if len(c) >= min_tokens])
    return TextCorpus(tokenizer, ids, offsets)


@register_task("text")
@dataclass(frozen=True)
class TextTask(Task):
    """Paragraphs of a text corpus, at most ``max_length`` tokens each, uniformly drawn.

    Attributes:
        source: ``"stdlib"``, a local ``.txt``/``.jsonl`` file or folder, or ``"hf:NAME[:split]"``.
        max_length: the longest sequence (longer paragraphs are split; also the MDM canvas).
        vocab_size: ids of the BPE trained on the training paragraphs, ``[MASK]``/``[PAD]`` included.
        tokenizer: a ``tokenizer.json`` (or folder with one, or GPT-2's ``vocab.json`` +
            ``merges.txt``) to use instead of training a BPE; ``vocab_size`` is then ignored.
        validation_fraction: share of paragraphs held out.
        split_seed: seed of the split.
        deduplicate: drop repeated paragraphs.
        min_tokens: drop shorter sequences.
        cache_dir: where tokenized corpora are cached (None: :func:`flexmdm.tasks.cache.default_cache_dir`).
    """

    source: str = "stdlib"
    max_length: int = 64
    vocab_size: int = 2048
    tokenizer: str | None = None
    validation_fraction: float = 0.05
    split_seed: int = 0
    deduplicate: bool = True
    min_tokens: int = 1
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")
        if self.min_tokens < 1:
            raise ValueError(f"min_tokens must be >= 1, got {self.min_tokens}")

    # -- the corpus -------------------------------------------------------------------------

    @cached_property
    def cache_path(self) -> Path:
        """``cache_dir/text-<key>``: the key digests every option that changes the corpus and the
        source's identity (fixed at first use, i.e. when the corpus is read)."""
        options = asdict(self)
        options.pop("cache_dir")
        if self.tokenizer is not None:
            options.pop("vocab_size")
            options["tokenizer"] = source_identity(self.tokenizer)
        payload = {"version": CACHE_VERSION, "options": options, "source": source_identity(self.source)}
        return cache_folder("text", self.cache_dir, payload)

    @cached_property
    def corpus(self) -> TextCorpus:
        """The tokenized corpus, from the cache when there (built and cached otherwise)."""
        return load_or_build(self.cache_path, self._read_cache, self._build_corpus, self._write_cache)

    def _build_corpus(self) -> TextCorpus:
        """Read, split, tokenize and chunk the source.

        Raises:
            InputFileError: the source cannot be read, or it is too poor for the options (no
                paragraph, an empty split, too few merges for ``vocab_size``).
        """
        texts = load_texts(self.source)
        tokenizer = None if self.tokenizer is None else load_tokenizer(self.tokenizer)
        try:
            return build_corpus(
                texts, max_length=self.max_length, vocab_size=self.vocab_size, tokenizer=tokenizer,
                validation_fraction=self.validation_fraction, split_seed=self.split_seed,
                deduplicate=self.deduplicate, min_tokens=self.min_tokens,
            )
        except ValueError as error:
            raise InputFileError(f"data.source {self.source!r}: {error}") from None

    def _read_cache(self, path: Path) -> TextCorpus:
        tokenizer = load_tokenizer(path / "tokenizer.json")
        with np.load(path / "corpus.npz") as arrays:
            ids = {split: arrays[f"{split}_ids"] for split in ("train", "validation")}
            offsets = {split: arrays[f"{split}_offsets"] for split in ("train", "validation")}
        return TextCorpus(tokenizer, ids, offsets)

    def _write_cache(self, corpus: TextCorpus, path: Path) -> None:
        with atomic_directory(path, replace=False) as temporary:  # another process may cache it first
            save_tokenizer(corpus.tokenizer, temporary)
            arrays = {f"{split}_{kind}": getattr(corpus, kind)[split]
                      for split in ("train", "validation") for kind in ("ids", "offsets")}
            np.savez(temporary / "corpus.npz", **arrays)
            meta = {"task": asdict(self), "sequences": {s: len(corpus.offsets[s]) - 1 for s in corpus.offsets},
                    "tokens": {s: int(corpus.offsets[s][-1]) for s in corpus.offsets}}
            (temporary / "meta.json").write_text(json.dumps(meta, indent=2))

    @property
    def tokenizer_object(self) -> Tokenizer:
        return self.corpus.tokenizer

    @cached_property
    def _tensors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {split: (torch.from_numpy(self.corpus.ids[split].astype(np.int64)),
                        torch.from_numpy(self.corpus.offsets[split]))
                for split in ("train", "validation")}

    # -- Task -------------------------------------------------------------------------------

    @cached_property
    def vocab(self) -> Vocab:
        return text_vocab(self.corpus.tokenizer)

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        """Sequences of ``split`` drawn uniformly with replacement, as a ``[B, max_length]`` batch.

        Raises:
            ValueError: ``split`` holds no sequence.
        """
        ids, offsets = self._tensors[split]
        count = len(offsets) - 1
        if count < 1:
            raise ValueError(f"the {split} split of the text corpus holds no sequence")
        index = torch.randint(count, (batch_size,), generator=generator)
        starts, lengths = offsets[index], offsets[index + 1] - offsets[index]
        position = torch.arange(self.max_length)[None, :]
        inside = position < lengths[:, None]
        gathered = ids[(starts[:, None] + position).clamp(max=max(len(ids) - 1, 0))] if len(ids) else position * 0
        x1 = torch.where(inside, gathered, self.vocab.pad_id)
        return TrainingBatch(x1, lengths, torch.zeros_like(inside))

    def write_tokenizer(self, directory: Path) -> bool:
        save_tokenizer(self.corpus.tokenizer, directory)
        return True

    # -- evaluation helpers -----------------------------------------------------------------

    def lengths(self, split: Split = "validation") -> np.ndarray:
        """``[num sequences]`` token counts of ``split`` (the reference length distribution)."""
        return self.corpus.lengths(split)

    def decode(self, sequences: list[list[int]]) -> list[str]:
        """Texts of generated sequences."""
        return self.corpus.tokenizer.decode_batch([list(map(int, s)) for s in sequences], skip_special_tokens=True)
