"""What ``flexmdm bench transfer`` (:mod:`flexmdm.bench.transfer`) trains, as ``config_from_dict`` mappings.

Three stages from the data (:mod:`flexmdm.tasks.transfer`), each arm's stage starting where its last
one stopped:

1. **pretrain** an MDM of the LLaDA architecture on the corpus (the text task): the common origin;
2. **adapt** (paper §5.2's adaptation; skipped when ``adapt["steps"]`` is 0, the default), side by
   side on the same corpus for the same steps: the MDM arm continues pretraining every weight
   (``init``), the FlexMDM arm is the retrofit of the origin (``retrofit``: time conditioning, gap
   head, and LoRA or every weight) trained as a FlexMDM;
3. **instruction-tune** both on the same pairs for the same steps: the MDM arm as LLaDA's SFT of its
   weights (``init``), the FlexMDM arm the retrofit of the origin, continuing its adapted weights if
   there are any (``retrofit.adapters_from``).

The default is the committed record's recipe: no adaptation, 6000 instruction-tuning steps at the
same learning rate for both arms, the FlexMDM arm training every weight (``train_base``), as the MDM
arm does. (With LoRA rank 16 and 2000 steps the FlexMDM arm did not learn to read its question.)
The FlexMDM inserts on a steep schedule, 1 - α(t) = (1 - t)^50: nearly every token is inserted by
t ≈ 0.1, so the unmasking head's states are as complete as an MDM's (with power 4 it learned to
unmask about half as fast per step). The steep schedule's rate is 50 / (1 - t), so the insertion
loss is weighted 0.05 (``gap_weight``), and its training times are drawn as t = u² (``flex_time_power``)
so that the few early times at which gaps still hold tokens are seen often enough to count them.
The FlexMDM's grid samplers insert with binomial arrivals, each interval's exact probability
(:class:`~flexmdm.sampling.Insertion`), rather than Algorithm 1's left-point Poisson rate
(``grid_insertion="poisson"``, the record before 2026-12-04).
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexmdm.families import family
from flexmdm.sampling.insertion import GRID_ARRIVALS
from flexmdm.tasks.transfer import TransferData, TransferFiles
from flexmdm.training.network import retrofit_run_config

__all__ = ["Start", "TransferBenchSettings", "adapt_configs", "ift_configs", "pretrain_config"]


@dataclass
class TransferBenchSettings:
    """What the benchmark trains and evaluates (the default is the committed run)."""

    data: TransferData = field(default_factory=lambda: TransferData(num_test=100))
    model: dict[str, Any] = field(default_factory=lambda: {
        "d_model": 128, "n_layers": 4, "n_heads": 4, "mlp_ratio": 2.75, "rope_theta": 10000.0})
    pretrain: dict[str, Any] = field(default_factory=lambda: {
        "steps": 800, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "weight_decay": 0.01, "ema_decay": 0.99,
        "log_every": 50, "eval_every": 200, "eval_batches": 8})
    adapt: dict[str, Any] = field(default_factory=lambda: {
        "steps": 0, "save_every": 200, "batch_size": 64, "warmup_steps": 50, "weight_decay": 0.01,
        "ema_decay": 0.99, "log_every": 50, "eval_every": 200, "eval_batches": 8})
    retrofit: dict[str, Any] = field(default_factory=lambda: {"train_base": True, "time_groups": 2})
    insertion_schedule: dict[str, Any] = field(default_factory=lambda: {"name": "power_decay", "power": 50.0})
    gap_weight: float = 0.05
    flex_time_power: float = 2.0
    grid_insertion: str = "binomial"
    ift: dict[str, Any] = field(default_factory=lambda: {
        "steps": 6000, "save_every": 1500, "batch_size": 32, "warmup_steps": 50, "weight_decay": 0.01,
        "ema_decay": 0.99, "log_every": 50, "eval_every": 0, "eval_batches": 4})
    lr: dict[str, float] = field(default_factory=lambda: {"mdm": 5e-4, "flexmdm": 5e-4})
    sampling_steps: tuple[int, ...] = (8, 16, 32, 64)
    curve_steps: int = 16
    curve_examples: int = 50
    eval_batch: int = 100

    def __post_init__(self) -> None:
        if self.grid_insertion not in GRID_ARRIVALS:
            choices = " or ".join(map(repr, GRID_ARRIVALS))
            raise ValueError(f"grid_insertion must be {choices}, got {self.grid_insertion!r}")

    @classmethod
    def quick(cls) -> TransferBenchSettings:
        """A smoke run (about a minute on one thread; not a result): one standard-library package, a tiny model."""
        settings = cls(data=TransferData(
            vocab_size=512, max_length=96, middle_budget=16, held_out_fraction=0.3, num_train_problems=300,
            num_validation=12, num_test=16, max_steps=3, num_infill=12, num_humaneval=4,
            stdlib_root=str(Path(sysconfig.get_paths()["stdlib"]) / "email")),
            model={**cls().model, "d_model": 32, "n_layers": 2, "n_heads": 2},
            sampling_steps=(4, 8), curve_steps=4, curve_examples=8, eval_batch=16)
        settings.pretrain.update(steps=40, batch_size=16, warmup_steps=5, eval_every=20, eval_batches=1)
        settings.adapt.update(steps=10, save_every=10, batch_size=16, warmup_steps=2, log_every=5, eval_every=10,
                              eval_batches=1)
        settings.ift.update(steps=20, save_every=10, batch_size=8, warmup_steps=2, log_every=10)
        return settings


@dataclass
class Start:
    """Where an arm's stage starts: an MDM's native LLaDA checkpoint, or the origin a FlexMDM retrofits
    and the adapters (a saved retrofit run's ``adapters/``) it continues, if any."""

    checkpoint: Path
    adapters: Path | None = None


def _corpus(settings: TransferBenchSettings, files: TransferFiles, work: Path) -> dict[str, Any]:
    return {"task": "text", "source": str(files.corpus), "tokenizer": str(files.tokenizer),
            "max_length": settings.data.max_length, "cache_dir": str(work / "cache")}


def pretrain_config(settings: TransferBenchSettings, files: TransferFiles, work: Path, seed: int) -> dict[str, Any]:
    """Stage 1: the origin, an MDM of the LLaDA architecture pretrained on the corpus."""
    return {"model": {"kind": "mdm", "architecture": "llada", **settings.model, "max_length": settings.data.max_length},
            "data": _corpus(settings, files, work), "train": {**settings.pretrain, "seed": seed},
            "output_dir": str(work / "pretrain")}


def _arm_config(settings: TransferBenchSettings, arm: str, start: Start, data: dict[str, Any],
                train: dict[str, Any], output_dir: Path, seed: int) -> dict[str, Any]:
    """One arm's run from ``start``: every weight of an MDM (LLaDA's SFT), or a FlexMDM's retrofit."""
    config = {"data": data, "output_dir": str(output_dir), "train": {
        **train, "lr": settings.lr[arm], "seed": seed, "keep_last": train["steps"] // train["save_every"] + 1}}
    if not family(arm).inserts:
        return {**config, "init": {"base": str(start.checkpoint)}}
    adapters = settings.retrofit if start.adapters is None else {**settings.retrofit, "adapters_from": str(start.adapters)}
    config["train"].update(gap_weight=settings.gap_weight, time_power=settings.flex_time_power)
    return retrofit_run_config({**config, "model": {}, "schedules": {"insertion": settings.insertion_schedule}},
                               start.checkpoint, adapters)


def adapt_configs(settings: TransferBenchSettings, files: TransferFiles, work: Path, seed: int,
                  origin: Path) -> dict[str, dict[str, Any]]:
    """Stage 2, by arm: the same corpus and steps from the pretrained ``origin``."""
    return {arm: _arm_config(settings, arm, Start(origin), _corpus(settings, files, work), settings.adapt,
                             work / f"adapt-{arm}", seed) for arm in ("mdm", "flexmdm")}


def ift_configs(settings: TransferBenchSettings, files: TransferFiles, work: Path, seed: int,
                starts: dict[str, Start]) -> dict[str, dict[str, Any]]:
    """Stage 3, by arm: the same instruction pairs and steps, each from its ``starts[arm]``."""
    data = {"task": "instruct", "path": str(files.ift), "tokenizer": str(files.tokenizer), "coupling": "infill",
            "max_length": settings.data.max_length, "middle_budget": settings.data.middle_budget}
    return {arm: _arm_config(settings, arm, start, data, settings.ift, work / arm, seed)
            for arm, start in starts.items()}
