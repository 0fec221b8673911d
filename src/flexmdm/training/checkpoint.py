"""Atomic training checkpoints.

Layout under ``output_dir/checkpoints``::

    step_000100/
        model/              save_pretrained of the exported weights (EMA when EMA is on):
                            `flexmdm sample step_000100/model` works on it
        trainer_state.pt    raw weights, EMA weights, optimizer, scheduler, step, RNG states
    latest                  one line: the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary directory, which is renamed to ``step_NNNNNN``
only once complete; ``latest`` is then replaced atomically (temp file + ``os.replace``). A crash
at any moment leaves ``latest`` naming a complete checkpoint (or absent). Temporary directories
of a crashed writer are removed by :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flexmdm.atomic import fsync_tree, write_text_atomic
from flexmdm.models import save_pretrained

__all__ = [
    "checkpoint_dir",
    "latest_checkpoint",
    "load_trainer_state",
    "remove_stale_temporaries",
    "save_checkpoint",
]

LATEST = "latest"
STATE_FILE = "trainer_state.pt"
MODEL_DIR = "model"
_PREFIX = "step_"
_TEMP_PREFIX = ".tmp-"


def checkpoint_dir(output_dir: str | Path) -> Path:
    """``output_dir/checkpoints``."""
    return Path(output_dir) / "checkpoints"


def _write_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path)


def _step_of(path: Path) -> int:
    return int(path.name[len(_PREFIX):])


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
    if keep_last <= 0:
        return
    complete = sorted((p for p in directory.glob(f"{_PREFIX}*") if p.is_dir()), key=_step_of)
    for path in complete[:-keep_last]:
        if path != current:
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

    Returns:
        the checkpoint directory.
    """
    directory = checkpoint_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{_PREFIX}{step:06d}"
    temporary = directory / f"{_TEMP_PREFIX}{target.name}-{os.getpid()}"
    try:
        temporary.mkdir()
        save_pretrained(export_model, temporary / MODEL_DIR, metadata=metadata, tokenizer_dir=tokenizer_dir)
        _write_state(temporary / STATE_FILE, state)
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
