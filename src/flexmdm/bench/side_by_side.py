"""Train a benchmark's models at the same time, one process each, the cores shared between them.

On a machine with at least as many cores as models, training the models side by side (each
with its share of the cores) finishes sooner than one after the other with all of them: small
models use extra threads poorly. With fewer cores they train one after the other.

If the parent is interrupted (Ctrl-C or SIGTERM), the training processes are stopped with it
rather than left running; what they had checkpointed stays, so the same command resumes them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from flexmdm.training.config import config_from_dict
from flexmdm.training.interrupt import TrainingInterrupted
from flexmdm.training.trainer import TrainResult, train

__all__ = ["train_side_by_side"]


def _train_in_process(config: dict[str, Any], threads: int, progress_line: int) -> TrainResult:
    """Train one model with ``threads`` CPU threads, its progress bar on terminal line ``progress_line``."""
    torch.set_num_threads(threads)
    try:
        return train(config_from_dict(config), progress_line=progress_line)
    except TrainingInterrupted as stopped:  # the parent is stopping: say where it saved, no traceback
        print(f"{config['output_dir']}: stopped by {stopped}", file=sys.stderr, flush=True)
        raise SystemExit(stopped.exit_code) from None


def train_side_by_side(configs: dict[str, dict[str, Any]]) -> tuple[dict[str, TrainResult], int]:
    """Train every configuration (a ``config_from_dict`` mapping, by name).

    Side by side in spawned processes, each with ``cores // len(configs)`` threads and its own
    labelled progress-bar line, when the machine has at least one core per model; else one after
    the other in this process with every core.

    Returns:
        the runs by name, and the CPU threads each one used.
    """
    for name, config in configs.items():
        print(f"training {name} ({config['train']['steps']} steps) in {config['output_dir']}", flush=True)
    cores = os.cpu_count() or 1
    if cores < len(configs):
        return {name: _train_in_process(config, cores, 0) for name, config in configs.items()}, cores
    threads = cores // len(configs)
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(processes=len(configs))
    try:
        with _sigterm_as_exit():
            jobs = {name: pool.apply_async(_train_in_process, (config, threads, line))
                    for line, (name, config) in enumerate(configs.items())}
            runs = {name: job.get() for name, job in jobs.items()}
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.close()
        pool.join()
    return runs, threads


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM raises ``SystemExit`` (so cleanup code runs) instead of killing the
    process outright. Only the main thread can install signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
