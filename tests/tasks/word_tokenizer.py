"""A word-level ``tokenizer.json`` for instruction-pair tests: one id per listed word, in order."""

from pathlib import Path


def write_word_tokenizer(path: Path, words: list[str]) -> Path:
    """Save a whitespace-split word-level tokenizer of ``words`` (unknown words map to ``[PAD]``) at ``path``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    tokenizer = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[PAD]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.save(str(path))
    return path
