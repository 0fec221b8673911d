"""What the evaluation commands share: the model of a task, the decoding rule, the output file."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.cli import UserError, _model_dir, _unmasking_rule
from flexmdm.models import load_pretrained
from flexmdm.sampling import ConfidenceThreshold, UnmaskingRule
from flexmdm.schedules import Schedule, schedule_from_config

__all__ = ["EvalModel", "check_output", "decoding_rule", "load_task_model", "record_header", "write_record"]


@dataclass(frozen=True)
class EvalModel:
    """A model exported by ``flexmdm train`` and what its ``config.json`` says about it.

    Attributes:
        directory: the model folder (``config.json``, ``model.safetensors``, tokenizer).
        model: the network, in eval mode.
        kind: "flexmdm" or "mdm".
        task: the training task's options (``{"task": name, ...}``).
        schedules: ``{"unmasking": β}`` and, for FlexMDM, ``{"insertion": α}``.
        config: the whole ``config.json``.
    """

    directory: Path
    model: nn.Module
    kind: str
    task: dict[str, Any]
    schedules: dict[str, Schedule]
    config: dict[str, Any]

    @property
    def task_options(self) -> dict[str, Any]:
        """The task's options without its name (keyword arguments of the task class)."""
        return {key: value for key, value in self.task.items() if key != "task"}


def load_task_model(path: Path, task: str, command: str) -> EvalModel:
    """The FlexMDM or MDM model at ``path`` (or ``path/model``), which must have been trained on ``task``.

    Raises:
        UserError: no exported model there, not a FlexMDM/MDM model, or another task.
    """
    directory = _model_dir(path)
    model, config = load_pretrained(directory)
    kind = config["model"].get("kind")
    if kind not in ("flexmdm", "mdm") or "schedules" not in config:
        raise UserError(f"{directory} is not a FlexMDM/MDM model exported by 'flexmdm train'")
    trained_on = (config.get("task") or {}).get("task")
    if trained_on != task:
        raise UserError(f"{directory} was trained on the {trained_on!r} task; '{command}' needs a model trained "
                        f"with data.task: {task}")
    schedules = {name: schedule_from_config(spec) for name, spec in config["schedules"].items()
                 if name in ("insertion", "unmasking")}
    return EvalModel(directory, model, kind, dict(config["task"]), schedules, config)


def decoding_rule(policy: str, param: float | None) -> UnmaskingRule:
    """The unmasking rule of ``--policy`` and ``--param``.

    ``one`` reveals exactly one mask per network call, the most confident (a confidence
    threshold no probability reaches); the other policies are those of ``flexmdm sample``.
    """
    if policy == "one":
        if param is not None:
            raise UserError("--param is not used by --policy one")
        return ConfidenceThreshold(math.inf)
    return _unmasking_rule(policy, param)


def check_output(path: Path | None) -> None:
    """Fail before any work when ``--out`` cannot be written."""
    if path is None:
        return
    if path.is_dir():
        raise UserError(f"--out {path} is a directory; give a .json file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: cannot write in {parent}")


def record_header(argv: list[str] | None, seed: int, watch: Stopwatch, model: EvalModel,
                  data: Path | str) -> dict[str, Any]:
    """Provenance, as the benchmarks record it: command, seed, wall time, machine, model and data."""
    return {
        "command": command_line(argv),
        "seed": seed,
        "wall_seconds": watch.seconds,
        "machine": machine_info(),
        "model": {"path": str(model.directory.resolve()), "kind": model.kind, "task": model.task,
                  "step": model.config.get("step")},
        "data": str(Path(data).resolve()) if isinstance(data, Path) else data,
    }


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write ``record`` as JSON to ``path`` atomically (its folder created)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record, path)
    except OSError as error:
        raise UserError(f"--out {path}: {error.strerror or error}") from None
