"""Training data: a registry of tasks and reproducible, shardable random streams.

A task is a dataclass (its fields are the ``data:`` options of a configuration) registered
under a name with :func:`register_task`. ``get_task_class(name)`` imports
``flexmdm.tasks.<name>`` on first use, so a new task only needs its module;
:func:`registered_tasks` imports them all to list them.

**Randomness.** Every micro-batch draws its data, times and noise from its own generator,
``keyed_generator(seed, purpose, step, shard)``, where ``shard = rank * grad_accum + micro``
numbers the micro-batches of one global batch. A resumed run, a run with gradient accumulation
and a data-parallel run therefore see exactly the same global batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import torch
from torch import Tensor

from flexmdm.vocab import Vocab

__all__ = [
    "Split",
    "Task",
    "TrainingBatch",
    "get_task_class",
    "keyed_generator",
    "register_task",
    "registered_tasks",
]

Split = Literal["train", "validation"]


@dataclass
class TrainingBatch:
    """Clean sequences and their constraints.

    Attributes:
        x1: ``[B, L]`` sequences, left-aligned, PAD after ``lengths``.
        lengths: ``[B]`` sequence lengths.
        frozen: ``[B, L]`` bool, tokens given to the model (prompts); False at padding.
        allowed_regions: ``[B, R]`` bool, regions open to insertion (see
            :mod:`flexmdm.constraints`); None: insert anywhere.
    """

    x1: Tensor
    lengths: Tensor
    frozen: Tensor
    allowed_regions: Tensor | None = None

    @property
    def num_generated(self) -> Tensor:
        """Scalar: tokens the model must generate (non-frozen data tokens)."""
        return self.lengths.sum() - self.frozen.sum()

    def canvas(self, width: int, pad_id: int) -> tuple[Tensor, Tensor]:
        """The MDM form: every sequence padded with PAD to a fixed canvas.

        Returns:
            ``(canvas [B, width], frozen [B, width])``; PAD positions are not frozen (MDM
            must predict them).

        Raises:
            ValueError: a sequence is longer than the canvas.
        """
        if bool((self.lengths > width).any()):
            raise ValueError(f"a sequence of length {int(self.lengths.max())} does not fit a canvas of {width}")
        batch, length = self.x1.shape
        canvas = torch.full((batch, width), pad_id, dtype=self.x1.dtype)
        frozen = torch.zeros(batch, width, dtype=torch.bool)
        keep = min(width, length)
        canvas[:, :keep] = self.x1[:, :keep]
        frozen[:, :keep] = self.frozen[:, :keep]
        return canvas, frozen


class Task(ABC):
    """A source of training sequences; concrete tasks are dataclasses of their options."""

    @property
    @abstractmethod
    def vocab(self) -> Vocab:
        """Token ids, MASK and PAD included."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """The longest sequence the task produces (the MDM canvas, the sampling cap)."""

    @abstractmethod
    def sample_batch(self, batch_size: int, generator: torch.Generator, split: Split = "train") -> TrainingBatch:
        """Draw ``batch_size`` sequences from ``split`` using only ``generator``."""

    def write_tokenizer(self, directory: Path) -> bool:
        """Write a HF ``tokenizer.json`` into ``directory`` if the task has one; True if written."""
        return False


TaskClass = TypeVar("TaskClass", bound=type[Task])
_TASKS: dict[str, type[Task]] = {}


def register_task(name: str) -> Callable[[TaskClass], TaskClass]:
    """Class decorator registering a :class:`Task` dataclass under ``name``."""

    def register(cls: TaskClass) -> TaskClass:
        if not (isinstance(cls, type) and issubclass(cls, Task) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"task {name!r} must be a dataclass subclassing Task")
        if _TASKS.get(name, cls) is not cls:
            raise ValueError(f"task name {name!r} is already registered by {_TASKS[name].__qualname__}")
        _TASKS[name] = cls
        return cls

    return register


def get_task_class(name: str) -> type[Task]:
    """The task registered as ``name``, importing ``flexmdm.tasks.<name>`` if needed.

    Raises:
        KeyError: no such task (the message lists the registered ones).
    """
    if name not in _TASKS and name.isidentifier():
        try:
            importlib.import_module(f"flexmdm.tasks.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"flexmdm.tasks.{name}" and error.name != "flexmdm.tasks":
                raise
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(registered_tasks())}")
    return _TASKS[name]


def registered_tasks() -> list[str]:
    """Sorted names of every task: those registered so far and those of ``flexmdm.tasks``'
    modules, which are imported for it (tasks are otherwise imported on first use)."""
    import flexmdm.tasks

    for module in pkgutil.iter_modules(flexmdm.tasks.__path__, prefix="flexmdm.tasks."):
        importlib.import_module(module.name)
    return sorted(_TASKS)


def keyed_generator(*key: int | str) -> torch.Generator:
    """A CPU generator seeded by a stable 63-bit hash of ``key`` (same key, same stream)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)
