"""A trained model and how it generates: :class:`Pipeline`.

    >>> from flexmdm import Pipeline
    >>> pipe = Pipeline.from_pretrained("runs/toy/model")
    >>> pipe.generate("a a", num=4).texts

:meth:`Pipeline.from_pretrained` is the one reader of a saved model's ``config.json`` for
generation: its family (``model.kind``), schedules, vocabulary, maximum length and tokenizer.
:meth:`Pipeline.generate` takes a prompt (text with a tokenizer, else token ids), an optional
suffix to infill before, the sampling options of :class:`~flexmdm.families.SamplingOptions`, and
returns decoded text and ids with their lengths and network calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexmdm.families import Affixes, Conditioning, Family, SamplingOptions, family
from flexmdm.interpolant import FlexInterpolant, MDMInterpolant
from flexmdm.models import load_pretrained
from flexmdm.sampling import SampleOutput
from flexmdm.schedules import Schedule, schedule_from_config
from flexmdm.vocab import Vocab

__all__ = ["Generation", "Pipeline", "usable_device"]

PromptInput = str | Sequence[int] | None
"""Text (decoded by the model's tokenizer), token ids, or nothing."""


def usable_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` once a tensor could be placed on it.

    Raises:
        ValueError: not a device name, the meta device, or a device this machine lacks (one line).
    """
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device {str(device)!r} is not a device name (e.g. cpu, cuda, cuda:1)") from None
    if chosen.type == "meta":
        raise ValueError("device 'meta' holds no weights; give cpu or an accelerator such as cuda")
    try:
        torch.empty(0, device=chosen)
    except (RuntimeError, AssertionError, NotImplementedError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise ValueError(f"device {str(device)!r} is not available here ({reason})") from None
    return chosen


@dataclass
class Generation:
    """What :meth:`Pipeline.generate` returns.

    Attributes:
        ids: one token-id list per sample (the prompt and suffix included).
        texts: the decoded samples (None without a tokenizer).
        nfe: network calls spent on each sample.
        output: the sampler's whole output (frozen flags, dropped insertions, trace).
    """

    ids: list[list[int]]
    texts: list[str] | None
    nfe: list[int]
    output: SampleOutput

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]


@dataclass
class Pipeline:
    """A trained FlexMDM or MDM with what it needs to generate.

    Attributes:
        model: the denoiser, in eval mode.
        family: how models of its kind generate.
        schedules: ``{"unmasking": β}`` and, for FlexMDM, ``{"insertion": α}``, as trained.
        vocab: special-token ids.
        max_length: the longest sample (FlexMDM) or canvas (MDM) by default.
        model_limit: the longest the network accepts.
        tokenizer: a Hugging Face ``tokenizers.Tokenizer``, or None (ids in, ids out).
        config: the whole saved ``config.json``.
        directory: where it was loaded from (None: built by :meth:`from_model` from a model in memory).
    """

    model: nn.Module
    family: Family
    schedules: dict[str, Schedule]
    vocab: Vocab
    max_length: int
    model_limit: int
    tokenizer: Any | None
    config: dict[str, Any]
    directory: Path | None

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> Pipeline:
        """Load a model exported by ``flexmdm train`` (the folder holding ``config.json``) onto ``device``.

        Raises:
            ValueError: not such a model, or ``device`` is not usable (see :func:`usable_device`).
        """
        device = usable_device(device)
        directory = Path(directory)
        model, config = load_pretrained(directory)
        tokenizer = None
        if (directory / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        return cls.from_model(model, config, tokenizer=tokenizer, directory=directory, device=device)

    @classmethod
    def from_model(cls, model: nn.Module, config: dict[str, Any], *, tokenizer: Any | None = None,
                   directory: str | Path | None = None, device: str | torch.device = "cpu") -> Pipeline:
        """A pipeline for an already-loaded ``model`` and its saved ``config`` (``model.kind``, ``schedules``,
        ``vocab``, optionally ``max_length``): e.g. adapters re-attached to their base by
        :func:`flexmdm.models.retrofit.load_retrofit`, which returns both."""
        kind_family = family(config["model"]["kind"])
        if not kind_family.generates or "schedules" not in config or "vocab" not in config:
            raise ValueError(f"{directory or 'this model'} is not a FlexMDM or MDM model exported by 'flexmdm train'")
        schedules = {name: schedule_from_config(value) for name, value in config["schedules"].items()}
        model_limit = int(config["model"]["max_length"])
        return cls(model=model.to(device).eval(), family=kind_family, schedules=schedules,
                   vocab=Vocab(**config["vocab"]), max_length=int(config.get("max_length", model_limit)),
                   model_limit=model_limit, tokenizer=tokenizer, config=config,
                   directory=None if directory is None else Path(directory))

    @property
    def kind(self) -> str:
        return self.family.kind

    @property
    def process(self) -> FlexInterpolant | MDMInterpolant:
        """The interpolant of the saved schedules and vocabulary, what the samplers take
        (:meth:`~flexmdm.families.Family.process`)."""
        return self.family.process(self.schedules, self.vocab)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (and where generation runs)."""
        return next(self.model.parameters()).device

    @property
    def task(self) -> dict[str, Any]:
        """The training task: ``{"task": name, **options}`` (empty when the config has none)."""
        return dict(self.config.get("task") or {})

    def encode(self, prompt: PromptInput, *, name: str = "prompt") -> list[int]:
        """Token ids of ``prompt``; the error names the words the vocabulary lacks."""
        if prompt is None:
            return []
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError(f"{name} {prompt!r} is text, but the model has no tokenizer: give token ids")
            encoding = self.tokenizer.encode(prompt)  # unknown words map to a special id: name them as typed
            pairs = [(i, prompt[start:end]) for i, (start, end) in zip(encoding.ids, encoding.offsets)]
        else:
            pairs = [(int(i), str(i)) for i in prompt]
        vocab = self.vocab
        bad = list(dict.fromkeys(word for i, word in pairs if not 0 <= i < vocab.size or i in (vocab.mask_id, vocab.pad_id)))
        if bad and isinstance(prompt, str):
            raise ValueError(f"{name} {prompt!r}: {', '.join(map(repr, bad))} not in the model's vocabulary (or MASK/PAD)")
        if bad:
            raise ValueError(f"{name} {list(prompt)}: token id {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not "
                             f"a real token of the model (ids 0 to {vocab.size - 1} but MASK {vocab.mask_id} and PAD "
                             f"{vocab.pad_id})")
        return [i for i, _ in pairs]

    def decode(self, ids: Sequence[int]) -> str | None:
        """Text of ``ids`` (None without a tokenizer)."""
        return None if self.tokenizer is None else self.tokenizer.decode(list(ids))

    @torch.no_grad()
    def generate(
        self,
        prompt: PromptInput = None,
        *,
        suffix: PromptInput = None,
        num: int = 1,
        max_length: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        options: SamplingOptions | None = None,
        **option_values: Any,
    ) -> Generation:
        """``num`` samples continuing ``prompt`` (or infilling between it and ``suffix``).

        Args:
            prompt: text or token ids; None or empty: from nothing.
            suffix: text or token ids to end every sample with; the model fills in between.
            num: how many samples (one batch).
            max_length: the longest sample (FlexMDM) or the canvas width (MDM); default the model's.
            seed: a fresh random stream (ignored when ``generator`` is given).
            generator: continue this random stream.
            options: a :class:`~flexmdm.families.SamplingOptions`; ``option_values`` (``steps``,
                ``rule``, ``temperature``, ``final_fill``, ``insertion``, ``early_exit``,
                ``trace``) replace its fields.
        """
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}")
        options = dataclasses.replace(options or SamplingOptions(), **option_values)
        max_length = self.max_length if max_length is None else max_length
        if not 1 <= max_length <= self.model_limit:
            raise ValueError(f"max_length must be in [1, {self.model_limit}] for this model, got {max_length}")
        prefix = self.encode(prompt)
        ending = None if suffix is None else self.encode(suffix, name="suffix")
        if len(prefix) + len(ending or []) >= max_length:
            raise ValueError(f"the prompt and suffix have {len(prefix) + len(ending or [])} tokens, not less than "
                             f"max_length {max_length}")
        affixes = Affixes([prefix] * num, None if ending is None else [ending] * num, self.vocab, max_length)
        out = self.sample(affixes, max_length=max_length, seed=seed, generator=generator, options=options)
        ids = out.sequences()
        texts = None if self.tokenizer is None else [self.decode(row) for row in ids]
        return Generation(ids=ids, texts=texts, nfe=out.nfe.tolist(), output=out)

    @torch.no_grad()
    def sample(
        self,
        conditioning: Conditioning,
        *,
        max_length: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        options: SamplingOptions | None = None,
        **option_values: Any,
    ) -> SampleOutput:
        """The sampler's output for a task's ``conditioning`` (arguments as in :meth:`generate`);
        ``self.family.read(conditioning, out.sequences())`` reads it back."""
        options = dataclasses.replace(options or SamplingOptions(), **option_values)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0 if seed is None else seed)
        return self.family.generate(self.model, schedules=self.schedules, vocab=self.vocab,
                                    max_length=self.max_length if max_length is None else max_length,
                                    conditioning=conditioning, options=options, generator=generator,
                                    device=self.device)
