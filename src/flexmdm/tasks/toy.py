"""A toy variable-length regular language: ``a^n b^m``.

Strings are some a's followed by some b's. The pair (n, m) is uniform over
0 <= n <= ``max_a``, 0 <= m <= ``max_b``, n + m >= ``min_length``, so with the defaults lengths
run from 1 to 40 with a triangular distribution peaking at 20. A model must learn both the
length distribution (insertions) and the order constraint "no a after a b" (unmasking), and
both are cheap to check: :meth:`ToyLanguage.length_distribution` and
:meth:`ToyLanguage.is_member`.

With probability ``prefix_probability`` a sequence (of length >= 2) comes with a frozen prefix
of uniform length 1..len−1 and insertions allowed only after it, which trains prompting.

Token ids: a = 0, b = 1, MASK = 2, PAD = 3. The task ships a word-level tokenizer, so sampled
sequences read as text like ``"a a a b"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from flexmdm.tasks.base import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = ["ToyLanguage"]

SYMBOLS = ("a", "b")
VOCAB = Vocab(size=4, mask_id=2, pad_id=3)


@register_task("toy")
@dataclass(frozen=True)
class ToyLanguage(Task):
    """``a^n b^m`` with (n, m) uniform over the allowed pairs; see the module docstring.

    Attributes:
        max_a: the most a's.
        max_b: the most b's.
        min_length: the shortest string (>= 1).
        prefix_probability: probability that a sequence comes with a frozen prefix.
    """

    max_a: int = 20
    max_b: int = 20
    min_length: int = 1
    prefix_probability: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_a", "max_b"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 1 <= self.min_length <= self.max_a + self.max_b:
            raise ValueError(f"min_length must lie in [1, max_a + max_b = {self.max_a + self.max_b}], got {self.min_length}")
        if not 0.0 <= self.prefix_probability <= 1.0:
            raise ValueError(f"prefix_probability must lie in [0, 1], got {self.prefix_probability}")

    @property
    def vocab(self) -> Vocab:
        return VOCAB

    @property
    def max_length(self) -> int:
        return self.max_a + self.max_b

    def _pairs(self) -> Tensor:
        """``[P, 2]`` every allowed (n, m)."""
        n, m = torch.meshgrid(torch.arange(self.max_a + 1), torch.arange(self.max_b + 1), indexing="ij")
        pairs = torch.stack([n.flatten(), m.flatten()], dim=1)
        return pairs[pairs.sum(dim=1) >= self.min_length]

    def length_distribution(self) -> Tensor:
        """``[max_length + 1]`` float64 probability of each length."""
        lengths = self._pairs().sum(dim=1)
        return torch.bincount(lengths, minlength=self.max_length + 1).double() / len(lengths)

    @staticmethod
    def is_member(sequence: Sequence[int]) -> bool:
        """Whether ``sequence`` (token ids) is a non-empty ``a^n b^m`` string."""
        text = "".join("ab"[i] if i in (0, 1) else "?" for i in sequence)
        return len(text) > 0 and "?" not in text and "ba" not in text

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        """Draw strings (both splits share the distribution; they differ by their streams).

        Returns:
            a batch of width ``max_length``; ``allowed_regions`` is ``[B, max_length + 1]``
            when ``prefix_probability > 0``, else None.
        """
        pairs = self._pairs()
        n, m = pairs[torch.randint(len(pairs), (batch_size,), generator=generator)].unbind(dim=1)
        lengths = n + m
        position = torch.arange(self.max_length)[None, :]
        x1 = torch.where(position < n[:, None], 0, 1)
        x1 = torch.where(position < lengths[:, None], x1, VOCAB.pad_id)
        if self.prefix_probability == 0.0:
            return TrainingBatch(x1, lengths, torch.zeros_like(x1, dtype=torch.bool))
        with_prefix = (torch.rand(batch_size, generator=generator) < self.prefix_probability) & (lengths >= 2)
        # prefix length uniform on 1..len-1 (0 where no prefix)
        u = torch.rand(batch_size, generator=generator)
        prefix = torch.where(with_prefix, 1 + (u * (lengths - 1).clamp(min=1)).long(), 0)
        frozen = position < prefix[:, None]
        regions = torch.arange(self.max_length + 1)[None, :]
        return TrainingBatch(x1, lengths, frozen, regions == prefix[:, None])

    def write_tokenizer(self, directory: Path) -> bool:
        """A word-level tokenizer over ``a b [MASK] [PAD]`` (unknown words map to PAD)."""
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from tokenizers.pre_tokenizers import WhitespaceSplit

        words = {symbol: i for i, symbol in enumerate(SYMBOLS)}
        words.update({"[MASK]": VOCAB.mask_id, "[PAD]": VOCAB.pad_id})
        tokenizer = Tokenizer(WordLevel(words, unk_token="[PAD]"))
        tokenizer.pre_tokenizer = WhitespaceSplit()
        tokenizer.save(str(Path(directory) / "tokenizer.json"))
        return True
