"""Instruction fine-tuning from JSONL prompt/response pairs, with FlexMDM couplings (paper §5.2).

Each line of the file is a JSON object ``{"prompt": str, "response": str}``, optionally with a
``"suffix": str``. Two couplings say what the model is given and where it may insert:

* ``"prompt"`` — the prompt is frozen (present from t = 0, never masked) and insertions happen
  only after it: the response is generated at its own length.
* ``"infill"`` — prefix and suffix are frozen and insertions happen only between them. With a
  ``suffix`` field, prefix = prompt, middle = response. Without one, every draw cuts the
  response at two uniform points a ≤ b: prefix = prompt + response[:a], middle =
  response[a:b], suffix = response[b:] (code infilling from plain pairs).

A row whose ``suffix`` is ``""`` is the prompt coupling inside an infilling file, so one file can
mix math (prompt) and code (infill) pairs.

Two layouts of the same draw, by the model's family:

* ``layout="flexmdm"`` — ``prefix + middle + suffix`` (:func:`affix_batch`), prefix and suffix frozen,
  insertions only in region ``len(prefix)`` (:mod:`flexmdm.constraints`' ``allowed_regions``, built with
  :meth:`flexmdm.constraints.Prompt.infill`), which the FlexMDM interpolant and sampler honour.
  :meth:`InstructTask.prompts` gives the matching :class:`~flexmdm.constraints.Prompt` for sampling.
* ``layout="mdm"`` — LLaDA's supervised fine-tuning on a fixed canvas of ``max_length``: prefix,
  middle, PAD up to the middle's budget, suffix, PAD to the end. The budget is ``middle_budget``
  when the suffix is not empty and the rest of the canvas when it is (the response padded with
  PAD targets); prefix, suffix and the PAD after a suffix are frozen. This is the canvas that
  :func:`flexmdm.sampling.mdm.mdm_canvas` builds for sampling with ``middle_lengths`` the budget.

Pairs go to the validation split by a hash of their text (deterministic, order-independent).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import torch

from flexmdm.constraints import Prompt, pad_sequences
from flexmdm.families import layout_family
from flexmdm.tasks.base import Split, Task, TrainingBatch, register_task
from flexmdm.vocab import Vocab

__all__ = ["InstructTask", "InstructExample", "affix_batch", "read_pairs"]


@dataclass(frozen=True)
class InstructExample:
    """One tokenized pair: ``prompt``, ``response`` and (infilling only) ``suffix`` token ids."""

    prompt: tuple[int, ...]
    response: tuple[int, ...]
    suffix: tuple[int, ...] | None = None


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    """The JSONL rows; each needs string ``prompt`` and ``response`` (``suffix`` optional).

    Raises:
        ValueError: a malformed line (its number is named).
    """
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not (isinstance(row, dict) and isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str)):
            raise ValueError(f"{path}:{number}: needs string fields 'prompt' and 'response'")
        if "suffix" in row and not isinstance(row["suffix"], str):
            raise ValueError(f"{path}:{number}: 'suffix' must be a string")
        rows.append(row)
    return rows


def _in_validation(row: dict[str, str], fraction: float) -> bool:
    digest = hashlib.blake2b(json.dumps(row, sort_keys=True).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def affix_batch(parts: list[tuple[Sequence[int], Sequence[int], Sequence[int]]], pad_id: int,
                max_length: int) -> TrainingBatch:
    """The FlexMDM layout of ``(prefix, middle, suffix)`` draws: ``prefix + middle + suffix`` padded to
    ``max_length``, prefix and suffix frozen, insertions only between them."""
    x1, lengths = pad_sequences([[*p, *m, *s] for p, m, s in parts], pad_id)
    x1 = torch.cat([x1, x1.new_full((len(parts), max_length - x1.shape[1]), pad_id)], dim=1)
    frozen = torch.zeros_like(x1, dtype=torch.bool)
    for b, (prefix, middle, _) in enumerate(parts):
        frozen[b, : len(prefix)] = True
        frozen[b, len(prefix) + len(middle): lengths[b]] = True
    prompt = Prompt.infill([p for p, _, _ in parts], [s for _, _, s in parts], pad_id)
    allowed = torch.zeros(len(parts), max_length + 1, dtype=torch.bool)
    allowed[:, : prompt.allowed_regions.shape[1]] = prompt.allowed_regions
    return TrainingBatch(x1, lengths, frozen, allowed)


@register_task("instruct")
@dataclass
class InstructTask(Task):
    """Prompt/response pairs with the prompt or infilling coupling (see the module docstring).

    Attributes:
        path: the JSONL file.
        tokenizer: a Hugging Face ``tokenizer.json`` holding the MASK and PAD tokens.
        coupling: "prompt" or "infill".
        max_length: longest prompt + response (+ suffix) kept; longer pairs are skipped.
        mask_token: the tokenizer's MASK token.
        pad_token: the tokenizer's PAD (end-of-text) token.
        validation_fraction: share of pairs held out.
        layout: "flexmdm" or "mdm" (see the module docstring); it follows the model's family.
        middle_budget: the most tokens of a middle before a non-empty suffix: the MDM's masks
            there. Such pairs with a longer middle, or whose prefix, budget and suffix exceed
            ``max_length``, are left out in both layouts, so that both train on the same pairs.
            None: no limit (``layout="flexmdm"`` only).
    """

    path: str = ""
    tokenizer: str = ""
    coupling: Literal["prompt", "infill"] = "prompt"
    max_length: int = 256
    mask_token: str = "[MASK]"
    pad_token: str = "[PAD]"
    validation_fraction: float = 0.05
    layout: Literal["flexmdm", "mdm"] = "flexmdm"
    middle_budget: int | None = None

    def __post_init__(self) -> None:
        self._fixed_canvas = not layout_family(self.layout).inserts  # raises for a layout no family trains on
        if self.middle_budget is not None and self.middle_budget < 1:
            raise ValueError(f"middle_budget must be >= 1, got {self.middle_budget}")
        if self._fixed_canvas and self.coupling == "infill" and self.middle_budget is None:
            raise ValueError("middle_budget: the mdm layout of infilling pairs needs a budget for the middle")
        if not Path(self.path).is_file():
            raise ValueError(f"path: no JSONL file at {self.path!r}")
        if not Path(self.tokenizer).is_file():
            raise ValueError(f"tokenizer: no tokenizer.json at {self.tokenizer!r}")
        if self.coupling not in ("prompt", "infill"):
            raise ValueError(f"coupling must be 'prompt' or 'infill', got {self.coupling!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction}")

    @cached_property
    def _tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(self.tokenizer)

    @cached_property
    def _vocab(self) -> Vocab:
        ids = {name: self._tokenizer.token_to_id(token)
               for name, token in (("mask", self.mask_token), ("pad", self.pad_token))}
        missing = [name for name, value in ids.items() if value is None]
        if missing:
            raise ValueError(f"the tokenizer has no {' / '.join(missing)} token "
                             f"({self.mask_token!r}, {self.pad_token!r})")
        return Vocab(self._tokenizer.get_vocab_size(), ids["mask"], ids["pad"])

    @property
    def vocab(self) -> Vocab:
        return self._vocab

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer.encode(text, add_special_tokens=False).ids)

    @cached_property
    def examples(self) -> dict[str, list[InstructExample]]:
        """Tokenized pairs per split (pairs longer than ``max_length`` left out)."""
        splits: dict[str, list[InstructExample]] = {"train": [], "validation": []}
        for row in read_pairs(self.path):
            if self._fixed_canvas and self.coupling == "infill" and "suffix" not in row:
                raise ValueError(f"{self.path}: the mdm layout needs every infilling pair's 'suffix' (its canvas "
                                 "fixes where the middle ends); a pair without one is cut at random")
            example = InstructExample(self._encode(row["prompt"]), self._encode(row["response"]),
                                      self._encode(row["suffix"]) if "suffix" in row else None)
            if example.response and self._fits(example):
                split = "validation" if _in_validation(row, self.validation_fraction) else "train"
                splits[split].append(example)
        if not splits["train"]:
            raise ValueError(f"{self.path}: no training pair fits max_length={self.max_length}")
        if not splits["validation"]:
            splits["validation"] = splits["train"][-1:]
        return splits

    def _fits(self, example: InstructExample) -> bool:
        """Whether the pair fits ``max_length`` (and, before a non-empty suffix, ``middle_budget``)."""
        outside = len(example.prompt) + len(example.suffix or ())
        if not example.suffix or self.middle_budget is None:
            return outside + len(example.response) <= self.max_length
        return len(example.response) <= self.middle_budget and outside + self.middle_budget <= self.max_length

    def _parts(self, example: InstructExample, generator: torch.Generator) -> tuple[tuple, tuple, tuple]:
        """``(prefix, middle, suffix)`` of one draw (the prompt coupling has an empty suffix)."""
        if self.coupling == "prompt":
            return example.prompt, example.response, ()
        if example.suffix is not None:
            return example.prompt, example.response, example.suffix
        cuts = torch.randint(0, len(example.response) + 1, (2,), generator=generator).sort().values.tolist()
        a, b = cuts
        return example.prompt + example.response[:a], example.response[a:b], example.response[b:]

    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        """Draw pairs in the task's layout (see the module docstring)."""
        pool = self.examples[split]
        rows = torch.randint(len(pool), (batch_size,), generator=generator).tolist()
        parts = [self._parts(pool[row], generator) for row in rows]
        if self._fixed_canvas:
            return self._canvas_batch(parts)
        return affix_batch(parts, self.vocab.pad_id, self.max_length)

    def _canvas_batch(self, parts: list[tuple[tuple, tuple, tuple]]) -> TrainingBatch:
        """The MDM layout: ``[B, max_length]`` canvases, the middle padded to its budget with PAD targets."""
        width, pad = self.max_length, self.vocab.pad_id
        x1 = torch.full((len(parts), width), pad, dtype=torch.long)
        frozen = torch.zeros(len(parts), width, dtype=torch.bool)
        for b, (prefix, middle, suffix) in enumerate(parts):
            end = len(prefix) + (self.middle_budget if suffix else width - len(prefix))
            x1[b, :len(prefix) + len(middle)] = torch.tensor(prefix + middle, dtype=torch.long)
            x1[b, end:end + len(suffix)] = torch.tensor(suffix, dtype=torch.long)
            frozen[b, :len(prefix)] = True
            frozen[b, end:] = True
        return TrainingBatch(x1, torch.full((len(parts),), width), frozen)

    def prompts(self, split: Split = "validation", count: int | None = None,
                generator: torch.Generator | None = None) -> tuple[Prompt, list[tuple[int, ...]]]:
        """``(the Prompt to sample from, the reference middles)`` for the first ``count`` pairs."""
        generator = generator or torch.Generator().manual_seed(0)
        pool = self.examples[split][:count]
        parts = [self._parts(example, generator) for example in pool]
        prompt = Prompt.infill([p for p, _, _ in parts], [s for _, _, s in parts], self.vocab.pad_id)
        return prompt, [m for _, m, _ in parts]

    def write_tokenizer(self, directory: Path) -> bool:
        shutil.copy2(self.tokenizer, Path(directory) / "tokenizer.json")
        return True
