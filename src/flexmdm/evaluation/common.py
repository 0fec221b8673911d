"""What the evaluation commands share: the model of a task, the decoding rule, the output file."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.cli import UserError, _model_dir, _unmasking_rule
from flexmdm.pipeline import Pipeline
from flexmdm.sampling import ConfidenceThreshold, UnmaskingRule

__all__ = ["check_output", "decoding_rule", "load_task_model", "record_header", "task_options", "write_record"]


def load_task_model(path: Path, task: str, command: str, device: str = "cpu") -> Pipeline:
    """The FlexMDM or MDM model at ``path`` (or ``path/model``), which must have been trained on ``task``,
    on ``device``.

    Raises:
        UserError: no exported model there, not a FlexMDM/MDM model, another task, or an unusable device.
    """
    directory = _model_dir(path)
    try:
        pipe = Pipeline.from_pretrained(directory, device=device)
    except ValueError as error:
        raise UserError(str(error)) from None
    trained_on = pipe.task.get("task")
    if trained_on != task:
        raise UserError(f"{directory} was trained on the {trained_on!r} task; '{command}' needs a model trained "
                        f"with data.task: {task}")
    return pipe


def task_options(pipe: Pipeline) -> dict[str, Any]:
    """The training task's options without its name (keyword arguments of the task class)."""
    return {key: value for key, value in pipe.task.items() if key != "task"}


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


def record_header(argv: list[str] | None, seed: int, watch: Stopwatch, model: Pipeline,
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
