"""Tokenizers for the text task: a byte-level BPE trained locally, or GPT-2's from local files.

**Special ids.** The model vocabulary is the tokenizer's vocabulary with two special tokens,
``[MASK]`` and ``[PAD]``, appended as the last two ids when the tokenizer lacks them:
``mask_id = V − 2`` and ``pad_id = V − 1`` for a freshly trained BPE of ``V`` ids (its ``V − 2``
learned ids hold the 256 bytes and the merges), and ``50257`` / ``50258`` for GPT-2's
50,257 tokens. :func:`text_vocab` reads them back by name, so a saved ``tokenizer.json``
carries the whole convention and a model exported with it decodes its own samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from flexmdm.errors import InputFileError
from flexmdm.vocab import Vocab

__all__ = [
    "MASK_TOKEN",
    "PAD_TOKEN",
    "decode_batch",
    "delimiter_ids",
    "gpt2_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
    "text_vocab",
    "train_bpe",
    "with_special_tokens",
]

MASK_TOKEN = "[MASK]"
PAD_TOKEN = "[PAD]"
SPECIAL_TOKENS = (MASK_TOKEN, PAD_TOKEN)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + 1
DELIMITER_ENDINGS = (".", "!", "?", ";", ":", "\n")


def with_special_tokens(tokenizer: Tokenizer) -> Tokenizer:
    """Append ``[MASK]`` and ``[PAD]`` (in that order) if missing; returns ``tokenizer``."""
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        tokenizer.add_special_tokens(missing)
    return tokenizer


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE of exactly ``vocab_size`` ids, ``[MASK]`` and ``[PAD]`` last.

    Every byte is in the alphabet, so any text encodes (no unknown token) and decoding
    inverts encoding. Training is deterministic for given texts.

    Args:
        texts: the training documents or paragraphs.
        vocab_size: total ids including the two special ones (>= 259).
        min_frequency: a pair must occur this often to be merged.

    Raises:
        ValueError: ``vocab_size`` too small, or the texts too poor to reach it.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (256 bytes, a merge, [MASK], [PAD]), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=min_frequency, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    with_special_tokens(tokenizer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(
            f"the texts support only {tokenizer.get_vocab_size()} ids (merges stop at min_frequency="
            f"{min_frequency}), fewer than vocab_size={vocab_size}: use a smaller vocab_size or more text"
        )
    return tokenizer


def gpt2_tokenizer(directory: str | Path) -> Tokenizer:
    """GPT-2's byte-level BPE from its ``vocab.json`` and ``merges.txt`` in ``directory``.

    Raises:
        FileNotFoundError: a file is missing (no download is attempted).
    """
    directory = Path(directory)
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    for path in (vocab, merges):
        if not path.is_file():
            raise FileNotFoundError(f"GPT-2 tokenizer file {path} not found (supply vocab.json and merges.txt locally)")
    tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return with_special_tokens(tokenizer)


def _tokenizer_file(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a malformed file
        raise InputFileError(f"{path} is not a valid tokenizer ({error})") from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from ``tokenizer.json`` (a file, or a folder holding one) or from GPT-2's
    ``vocab.json`` + ``merges.txt`` in a folder; ``[MASK]`` and ``[PAD]`` are added if missing.

    Raises:
        FileNotFoundError: none of these files exists at ``path``.
        InputFileError: the ``tokenizer.json`` is malformed.
    """
    path = Path(path)
    if path.is_file():
        return with_special_tokens(_tokenizer_file(path))
    if (path / "tokenizer.json").is_file():
        return with_special_tokens(_tokenizer_file(path / "tokenizer.json"))
    if (path / "vocab.json").is_file() or (path / "merges.txt").is_file():
        return gpt2_tokenizer(path)
    raise FileNotFoundError(f"no tokenizer at {path}: expected tokenizer.json, or vocab.json and merges.txt")


def save_tokenizer(tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write ``directory/tokenizer.json`` (the format ``flexmdm sample`` decodes with)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def text_vocab(tokenizer: Tokenizer) -> Vocab:
    """The model vocabulary: every tokenizer id, MASK and PAD found by name.

    Raises:
        ValueError: the tokenizer lacks ``[MASK]`` or ``[PAD]`` (see :func:`with_special_tokens`).
    """
    mask_id, pad_id = (tokenizer.token_to_id(token) for token in SPECIAL_TOKENS)
    if mask_id is None or pad_id is None:
        raise ValueError(f"tokenizer lacks {MASK_TOKEN} or {PAD_TOKEN}; pass it through with_special_tokens")
    return Vocab(size=tokenizer.get_vocab_size(), mask_id=mask_id, pad_id=pad_id)


def delimiter_ids(tokenizer: Tokenizer) -> list[int]:
    """Ids of the tokens that end a sentence or a line (their text ends with one of
    ``. ! ? ; :`` or holds a newline): where :func:`~flexmdm.tasks.text.corpus.chunk_paragraph` cuts."""
    vocab = tokenizer.get_vocab()
    special = set(SPECIAL_TOKENS)
    found = []
    for token, index in vocab.items():
        if token in special:
            continue
        text = tokenizer.decode([index])
        if "\n" in text or text.rstrip(" ").endswith(DELIMITER_ENDINGS[:-1]):
            found.append(index)
    return sorted(found)


def decode_batch(tokenizer: Tokenizer, sequences: Sequence[Sequence[int]]) -> list[str]:
    """Texts of token-id sequences (special tokens skipped)."""
    return tokenizer.decode_batch([list(map(int, s)) for s in sequences], skip_special_tokens=True)
