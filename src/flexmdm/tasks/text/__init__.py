"""Variable-length text (paper §5.1.1, appendix F.1).

* :mod:`~flexmdm.tasks.text.corpus` — documents from the standard library's docstrings, local
  ``.txt``/``.jsonl`` files or a Hugging Face dataset; paragraphs; chunking at delimiters;
  the deterministic train/validation split.
* :mod:`~flexmdm.tasks.text.tokenizer` — a byte-level BPE trained locally, GPT-2's from local
  files, and where ``[MASK]`` and ``[PAD]`` sit in the model vocabulary.
* :mod:`~flexmdm.tasks.text.task` — :class:`TextTask`, registered as ``text`` for training,
  with an on-disk cache of the tokenized corpus.
* :mod:`~flexmdm.tasks.text.metrics` — length fidelity, generative perplexity, unigram entropy.
* :mod:`~flexmdm.tasks.text.evaluation` — unconditional samples of a trained model (imported on its own).
"""

from flexmdm.tasks.text.corpus import (
    chunk_paragraph,
    load_texts,
    paragraphs_of,
    split_paragraphs,
    stdlib_docstrings,
    train_validation_split,
)
from flexmdm.tasks.text.task import TextCorpus, TextTask, build_corpus
from flexmdm.tasks.text.tokenizer import (
    MASK_TOKEN,
    PAD_TOKEN,
    decode_batch,
    delimiter_ids,
    gpt2_tokenizer,
    load_tokenizer,
    save_tokenizer,
    text_vocab,
    train_bpe,
    with_special_tokens,
)

__all__ = [
    "MASK_TOKEN",
    "PAD_TOKEN",
    "TextCorpus",
    "TextTask",
    "build_corpus",
    "chunk_paragraph",
    "decode_batch",
    "delimiter_ids",
    "gpt2_tokenizer",
    "load_texts",
    "load_tokenizer",
    "paragraphs_of",
    "save_tokenizer",
    "split_paragraphs",
    "stdlib_docstrings",
    "text_vocab",
    "train_bpe",
    "train_validation_split",
    "with_special_tokens",
]
