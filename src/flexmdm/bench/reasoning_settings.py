"""What ``flexmdm bench reasoning`` (:mod:`flexmdm.bench.reasoning`) trains and evaluates."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexmdm.bench.train_config import Arm, arm_config
from flexmdm.sampling import Insertion
from flexmdm.tasks.reasoning import ReasoningTask, ReasoningTemplate

__all__ = ["ReasoningBenchSettings"]

_DATA_FIELDS = ("num_train", "problem_seed", "min_steps", "max_steps", "max_value", "max_operand", "operations")


def _default_arms() -> dict[str, Arm]:
    return {"flexmdm": Arm(steps=4000, save_every=500, model={"count_cap": 32, "length_conditioning": True},
                           schedules={"insertion": {"name": "power_decay", "power": 4.0}},
                           insertion=Insertion("exact", certainty=0.9)),
            "mdm": Arm(steps=4000, save_every=500)}


@dataclass
class ReasoningBenchSettings:
    """What the benchmark trains and evaluates: the full run by default, ``quick()`` a smoke run;
    ``num_validation`` (at most 256) and ``num_test`` problems of the held-out splits.

    The full run trained its three seeds in 27 minutes on a busy 2-core machine (2026-12-03; about 8
    FlexMDM and 8.4 MDM steps per second of one core's CPU time). With 2–6 steps per problem both
    models stayed near the floor in probes (MDM about 11 %, FlexMDM 4–8 %); with 2–4 (the default)
    the record's MDM reached 37 % and its FlexMDM 5 %. The first record trained d_model 128 on the
    basic problems for 12,000 / 2000 steps."""

    num_train: int = 20000
    min_steps: int = 2
    max_steps: int = 4
    max_value: int = 99
    max_operand: int = 9
    operations: str = "extended"
    seeds: int = 3
    num_validation: int = 256
    num_test: int = 300
    eval_batch: int = 300
    med_thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    eb_budgets: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0)
    exit_med_thresholds: tuple[float, ...] = (0.1, 0.2, 0.4)
    exit_threshold: float = 0.1
    exit_reduces: tuple[str, ...] = ("max",)
    within: float = 0.01
    num_posterior: int = 100
    prefix_fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    backbone: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layers": 4, "n_heads": 4})
    train: dict[str, Any] = field(default_factory=lambda: {"batch_size": 48, "lr": 1e-3, "warmup_steps": 100,
        "weight_decay": 0.01, "ema_decay": 0.995, "log_every": 50, "eval_every": 0, "eval_batches": 4})
    arms: dict[str, Arm] = field(default_factory=_default_arms)

    @classmethod
    def quick(cls) -> ReasoningBenchSettings:
        settings = cls(num_train=5000, max_steps=4, seeds=2, num_validation=100, num_test=100, med_thresholds=(0.1, 0.2),
                       eb_budgets=(0.1, 0.3), exit_med_thresholds=(0.2,), num_posterior=50)
        settings.arms["flexmdm"].steps, settings.arms["flexmdm"].save_every = 400, 100
        settings.arms["mdm"].steps, settings.arms["mdm"].save_every = 200, 100
        return settings

    def decode_steps(self, model: str, template: ReasoningTemplate) -> int:
        """The sampler's steps of ``model``: its arm's ``decode_steps``, else one per reasoning and answer slot."""
        return self.arms[model].decode_steps or template.reasoning_width + template.answer_width

    def train_configs(self, seed: int, problem_seed: int, work: Path) -> dict[str, dict[str, Any]]:
        """Both models' ``config_from_dict`` mappings for training seed ``seed``, runs in ``work/seed{seed}``."""
        configs = {}
        for name, arm in self.arms.items():
            task = self.task(name, problem_seed)
            data = {"task": "reasoning", **{key: getattr(task, key) for key in _DATA_FIELDS}}
            configs[name] = arm_config(name, arm, backbone=self.backbone, max_length=task.max_length, data=data,
                                       train=self.train, seed=seed, output_dir=work / f"seed{seed}" / name)
        return configs

    def task(self, layout: str, seed: int) -> ReasoningTask:
        return ReasoningTask(num_train=self.num_train, problem_seed=seed, min_steps=self.min_steps,
                             max_steps=self.max_steps, max_value=self.max_value, max_operand=self.max_operand,
                             operations=self.operations, layout=layout)
