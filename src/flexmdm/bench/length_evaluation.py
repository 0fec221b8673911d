"""How ``flexmdm bench length`` scores a model: held-out text halved into validation and test,
unconditional samples of a checkpoint decoded with a sampler trial, their length distances to a
split and their perplexity under the reference LM, and the noise floor of those distances.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from flexmdm.atomic import write_text_atomic
from flexmdm.bench.budgets import Checkpoint
from flexmdm.bench.seeds import mean_stderr
from flexmdm.bench.tuning import TAU_LEAPING, DecoderTrial
from flexmdm.pipeline import Pipeline
from flexmdm.tasks.text import metrics
from flexmdm.tasks.text.evaluation import unconditional_samples
from flexmdm.training.streams import keyed_generator

__all__ = ["TEMPERATURE", "LengthEvaluation", "held_out_halves", "length_trials", "noise_floor"]

TEMPERATURE = 1.0
"""Unconditional samples are drawn from the model's distribution, not its argmax."""


def held_out_halves(sequences: list[list[int]], seed: int) -> dict[str, list[list[int]]]:
    """``{"validation", "test"}``: the held-out sequences in a random order fixed by ``seed``, the
    first half (rounded down) for validation, the rest for test."""
    order = np.random.default_rng(seed).permutation(len(sequences))
    half = len(sequences) // 2
    return {"validation": [sequences[i] for i in order[:half]], "test": [sequences[i] for i in order[half:]]}


def length_trials(steps: tuple[int, int]) -> dict[str, list[DecoderTrial]]:
    """Three trials each for a FlexMDM and an MDM: τ-leaping at both step counts and the adaptive rule
    that reveals the most confident masks (top probability) at the larger; FlexMDM inserts as in Algorithm 1."""
    grid = [(TAU_LEAPING, steps[0]), (TAU_LEAPING, steps[1]), ("top_probability", steps[1])]
    return {"flexmdm": [DecoderTrial(rule, n, "poisson") for rule, n in grid],
            "mdm": [DecoderTrial(rule, n) for rule, n in grid]}


def noise_floor(train_lengths: np.ndarray, test_lengths: np.ndarray, *, n: int, draws: int, seed: int) -> dict[str, Any]:
    """The length distances a perfect sampler would get with ``n`` samples: ``draws`` sets of ``n``
    training lengths (without replacement) against ``test_lengths``, as mean and standard error."""
    rng = np.random.default_rng(seed)
    rows = [metrics.length_distances(rng.choice(train_lengths, n, replace=False), test_lengths) for _ in range(draws)]
    floor: dict[str, Any] = {"n": n, "draws": draws}
    for key in ("length_w1", "length_tv"):
        floor[key], floor[f"{key}_stderr"] = mean_stderr([row[key] for row in rows])
    return floor


@dataclass
class LengthEvaluation:
    """The length bench's ``evaluate(model, checkpoint, trial, split, seed)`` for
    :func:`~flexmdm.bench.fair.fair_comparison`: ``num_samples`` unconditional samples of the
    checkpoint, drawn from a stream keyed by the bench seed, the training seed, the model, the split
    and the trial (test samples are fresh draws), scored against ``splits[split]``.

    Attributes:
        splits: held-out sequences by split (:func:`held_out_halves`).
        scorer: the reference causal LM of the generative perplexity.
        decode: token ids -> texts (the rows' ``example``).
        cache_dir: where each set of samples is also written, so that a bench stopped while scoring
            and run again draws only the sets it had not finished (None: kept in memory only).
    """

    splits: dict[str, list[list[int]]]
    scorer: nn.Module
    decode: Callable[[list[list[int]]], list[str]]
    pad_id: int
    max_length: int
    num_samples: int
    batch_size: int
    seed: int
    cache_dir: Path | None = None
    _samples: dict[tuple, tuple[list[list[int]], list[int]]] = field(default_factory=dict, repr=False)

    def samples(self, model: str, model_dir: Path, trial: DecoderTrial, split: str,
                seed: int) -> tuple[list[list[int]], list[int]]:
        """The token ids of the samples and the network calls each took (drawn once, then remembered)."""
        key = (model, model_dir, trial, split, seed)
        if key not in self._samples:
            self._samples[key] = self._cached(key, model_dir, lambda: self._draw(model, model_dir, trial, split, seed))
        return self._samples[key]

    def _draw(self, model: str, model_dir: Path, trial: DecoderTrial, split: str,
              seed: int) -> tuple[list[list[int]], list[int]]:
        pipe = Pipeline.from_pretrained(model_dir)
        generator = keyed_generator(self.seed, "bench-length", seed, model, split, trial.rule, trial.steps)
        return unconditional_samples(pipe, self.num_samples, options=trial.options(pipe.family.inserts, TEMPERATURE),
                                     batch_size=self.batch_size, max_length=self.max_length, generator=generator)

    def _cached(self, key: tuple, model_dir: Path, draw: Callable[[], tuple[list[list[int]], list[int]]]
                ) -> tuple[list[list[int]], list[int]]:
        """``draw()``, read from ``cache_dir`` when an earlier run wrote it for the same key, settings and
        checkpoint weights (the modification time of ``model_dir``'s weights is part of the name)."""
        if self.cache_dir is None:
            return draw()
        weights = max((path.stat().st_mtime_ns for path in Path(model_dir).glob("*.safetensors")), default=0)
        name = json.dumps([*map(str, key), weights, self.seed, self.num_samples, self.max_length])
        path = self.cache_dir / f"{hashlib.sha256(name.encode()).hexdigest()[:20]}.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            return saved["ids"], saved["calls"]
        ids, calls = draw()
        write_text_atomic(path, json.dumps({"key": name, "ids": ids, "calls": [int(c) for c in calls]}))
        return ids, calls

    def pooled_lengths(self, model: str, checkpoints: dict[int, Checkpoint], trial: DecoderTrial,
                       split: str) -> np.ndarray:
        """``[seeds · num_samples]`` the sample lengths of every seed's checkpoint (``checkpoints[seed]``)."""
        return np.array([len(ids) for seed, point in checkpoints.items()
                         for ids in self.samples(model, point.model_dir, trial, split, seed)[0]])

    def __call__(self, model: str, point: Checkpoint, trial: DecoderTrial, split: str, seed: int) -> list[dict[str, Any]]:
        """One row: :func:`~flexmdm.tasks.text.metrics.sample_statistics` against the split's lengths,
        ``mean_length``, ``mean_nfe`` and three decoded ``example`` samples."""
        ids, calls = self.samples(model, point.model_dir, trial, split, seed)
        reference = [len(sequence) for sequence in self.splits[split]]
        statistics = metrics.sample_statistics(ids, reference, self.scorer, pad_id=self.pad_id)
        return [{**statistics, "mean_length": statistics["length"]["mean"], "mean_nfe": float(np.mean(calls)),
                 "example": self.decode(ids[:3])}]
