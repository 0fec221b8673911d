"""Atomic training checkpoints.

Layout under ``output_dir/checkpoints``::

    step_000100/
        model/              save_pretrained of the exported weights (EMA when EMA is on):
                            `flexmdm sample step_000100/model` works on it
        trainer_state.pt    raw weights, EMA weights, optimizer, scheduler, step, RNG states
        sharded/            train.strategy fsdp only: raw weights, optimizer and EMA averages, written
                            by every rank with torch.distributed.checkpoint (then not in trainer_state.pt)
    latest                  one line: the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary directory, which is renamed to ``step_NNNNNN``
only once complete; ``latest`` is then replaced atomically (temp file + ``os.replace``). A crash
at any moment leaves ``latest`` naming a complete checkpoint (or absent). Temporary directories
of a crashed writer are removed by :func:`remove_stale_temporaries`.

A checkpoint damaged afterwards (a truncated file, weights that fail their checksum) is skipped
by :func:`resume_point`, which falls back to the newest intact older checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from flexmdm.atomic import fsync_tree, write_text_atomic
from flexmdm.errors import InputFileError
from flexmdm.models import save_pretrained
from flexmdm.models.pretrained import verify_pretrained

__all__ = [
    "SHARDS_DIR",
    "ResumePoint",
    "checkpoint_dir",
    "checkpoint_path",
    "latest_checkpoint",
    "load_trainer_state",
    "remove_stale_temporaries",
    "resume_point",
    "save_checkpoint",
    "load_shards",
    "save_shards",
]

LATEST = "latest"
STATE_FILE = "trainer_state.pt"
MODEL_DIR = "model"
SHARDS_DIR = "sharded"
_PREFIX = "step_"
_TEMP_PREFIX = ".tmp-"
_STEP_NAME = re.compile(r"step_\d+")


def checkpoint_dir(output_dir: str | Path) -> Path:
    """``output_dir/checkpoints``."""
    return Path(output_dir) / "checkpoints"


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    """``output_dir/checkpoints/step_<step>``: where the checkpoint of ``step`` is written."""
    return checkpoint_dir(output_dir) / f"{_PREFIX}{step:06d}"


def _write_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def _step_of(path: Path) -> int:
    return int(path.name[len(_PREFIX):])


def _checkpoints(directory: Path) -> list[Path]:
    """The ``step_NNNNNN`` folders of ``directory``, oldest first."""
    return sorted((p for p in directory.glob(f"{_PREFIX}*") if _STEP_NAME.fullmatch(p.name) and p.is_dir()),
                  key=_step_of)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` names, or None when there is none.

    Raises:
        FileNotFoundError: ``latest`` names a directory that does not exist.
    """
    pointer = checkpoint_dir(output_dir) / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def remove_stale_temporaries(output_dir: str | Path) -> None:
    """Delete temporaries left by a writer that was killed mid-checkpoint."""
    directory = checkpoint_dir(output_dir)
    if directory.is_dir():
        for path in directory.glob(f"{_TEMP_PREFIX}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _prune(directory: Path, keep_last: int, current: Path) -> None:
    """Keep the ``keep_last`` newest checkpoints up to ``current``; later ones (left by an earlier
    attempt that a resumed run will overwrite) do not count."""
    if keep_last <= 0:
        return
    complete = [p for p in _checkpoints(directory) if _step_of(p) <= _step_of(current)]
    for path in complete[:-keep_last]:
        shutil.rmtree(path)


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    export_model: nn.Module,
    state: dict[str, Any],
    metadata: dict[str, Any],
    tokenizer_dir: Path | None = None,
    keep_last: int = 0,
    shards: Path | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically, point ``latest`` at it, prune old ones.

    Args:
        output_dir: the run directory.
        step: completed optimizer steps.
        export_model: the model to save with ``save_pretrained`` (the EMA model when EMA is on).
        state: everything needed to resume, saved with ``torch.save``.
        metadata: extra ``config.json`` entries of the exported model.
        tokenizer_dir: a directory holding ``tokenizer.json`` to ship with the model.
        keep_last: keep this many newest checkpoints (0: all).
        shards: a directory :func:`save_shards` wrote, moved into the checkpoint as ``sharded/``.

    Returns:
        the checkpoint directory.
    """
    directory = checkpoint_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(output_dir, step)
    temporary = directory / f"{_TEMP_PREFIX}{target.name}-{os.getpid()}"
    try:
        temporary.mkdir()
        save_pretrained(export_model, temporary / MODEL_DIR, metadata=metadata, tokenizer_dir=tokenizer_dir)
        _write_state(temporary / STATE_FILE, state)
        if shards is not None:
            os.replace(shards, temporary / SHARDS_DIR)
        fsync_tree(temporary)
        if target.exists():  # left by a crashed run after its rename but before `latest` moved
            shutil.rmtree(target)
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    write_text_atomic(directory / LATEST, target.name + "\n")
    _prune(directory, keep_last, target)
    return target


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """The ``trainer_state.pt`` of checkpoint directory ``path`` (tensors on the CPU)."""
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run resumes from.

    Attributes:
        path: the checkpoint directory.
        state: its ``trainer_state.pt``.
        damaged: why each newer checkpoint was skipped (one line each, newest first).
    """

    path: Path
    state: dict[str, Any]
    damaged: tuple[str, ...]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def _first_sentence(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0]


def _load_intact(path: Path) -> dict[str, Any]:
    """The trainer state of checkpoint ``path`` once every file of it has been checked.

    Raises:
        InputFileError: a file is missing, truncated or fails its checksum (the message names it).
    """
    if not path.is_dir():
        raise InputFileError(f"{path} is missing")
    try:
        verify_pretrained(path / MODEL_DIR)
    except (FileNotFoundError, InputFileError) as error:
        raise InputFileError(str(error)) from None
    try:
        state = load_trainer_state(path)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        raise InputFileError(f"{path / STATE_FILE} is unreadable ({_first_sentence(error)})") from None
    if state.get("sharded") and not (path / SHARDS_DIR / ".metadata").is_file():
        raise InputFileError(f"{path / SHARDS_DIR} is missing or incomplete")
    return state


def resume_point(output_dir: str | Path) -> ResumePoint | None:
    """The newest intact checkpoint: the one ``latest`` names, else (when it is damaged) the newest
    intact older one. None when there is no checkpoint.

    Raises:
        InputFileError: there are checkpoints, but none is intact.
    """
    directory = checkpoint_dir(output_dir)
    pointer = directory / LATEST
    if not pointer.is_file():
        return None
    named = directory / pointer.read_text().strip()
    newest = _step_of(named) if _STEP_NAME.fullmatch(named.name) else None
    older = [p for p in reversed(_checkpoints(directory)) if newest is None or _step_of(p) < newest]
    damaged: list[str] = []
    for path in [named, *older]:
        try:
            state = _load_intact(path)
        except InputFileError as error:
            damaged.append(str(error))
            continue
        return ResumePoint(path, state, tuple(damaged))
    raise InputFileError(f"no intact checkpoint in {directory} (the newest: {damaged[0]}); "
                         "move the folder away to train from scratch")


@contextlib.contextmanager
def _one_process_is_fine() -> Iterator[None]:
    """Silence torch.distributed.checkpoint's warning that it runs in a single process
    (``train.strategy: fsdp`` without ``torchrun``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _sharded_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                   averages: dict[str, Tensor] | None) -> dict[str, Any]:
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    return state if averages is None else {**state, "ema": averages}


def save_shards(output_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                averages: dict[str, Tensor] | None, ctx: Any) -> Path:
    """Every rank writes its shards of the weights, the optimizer and the EMA ``averages`` with
    :func:`torch.distributed.checkpoint.save` into a temporary folder, which it returns (for
    :func:`save_checkpoint`'s ``shards``). A collective; ``ctx`` is the
    :class:`~flexmdm.training.distributed.DistributedContext`."""
    staging = checkpoint_dir(output_dir) / f"{_TEMP_PREFIX}{SHARDS_DIR}-{_PREFIX}{step:06d}"
    if ctx.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    ctx.barrier()
    with _one_process_is_fine():
        dcp.save(_sharded_state(model, optimizer, averages), checkpoint_id=staging)
    ctx.barrier()
    return staging


def load_shards(directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                averages: dict[str, Tensor] | None) -> None:
    """Restore what :func:`save_shards` wrote into ``model``, ``optimizer`` and (in place) the EMA
    ``averages``, resharded for this job's ranks. A collective."""
    state = _sharded_state(model, optimizer, averages)
    with _one_process_is_fine():
        dcp.load(state, checkpoint_id=directory)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
