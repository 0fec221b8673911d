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
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from flexmdm.training.config import config_from_dict
from flexmdm.training.interrupt import TrainingInterrupted
from flexmdm.training.trainer import TrainResult, train

__all__ = ["train_side_by_side"]


def _train(config: dict[str, Any], threads: int, progress_line: int) -> TrainResult:
    """Train one model with ``threads`` CPU threads, its progress bar on terminal line ``progress_line``."""
    torch.set_num_threads(threads)
    return train(config_from_dict(config), progress_line=progress_line)


def _train_in_process(config: dict[str, Any], threads: int, progress_line: int, sender: Connection) -> None:
    """A training process: send ``("run", TrainResult)`` or ``("error", exception)`` to the parent; on a
    stop signal, say where it saved in one line and exit with the signal's code, sending nothing."""
    try:
        sender.send(("run", _train(config, threads, progress_line)))
    except TrainingInterrupted as stopped:
        print(f"{config['output_dir']}: stopped by {stopped}", file=sys.stderr, flush=True)
        raise SystemExit(stopped.exit_code) from None
    except Exception as error:  # every failure is the parent's to raise
        sender.send(("error", error))


def train_side_by_side(configs: dict[str, dict[str, Any]]) -> tuple[dict[str, TrainResult], int]:
    """Train every configuration (a ``config_from_dict`` mapping, by name).

    Side by side in spawned processes, each with ``cores // len(configs)`` threads and its own
    labelled progress-bar line, when the machine has at least one core per model; else one after
    the other in this process with every core. A process's error is raised here once the others
    have stopped at a checkpoint.

    Returns:
        the runs by name, and the CPU threads each one used.
    """
    for name, config in configs.items():
        print(f"training {name} ({config['train']['steps']} steps) in {config['output_dir']}", flush=True)
    cores = os.cpu_count() or 1
    if cores < len(configs):
        return {name: _train(config, cores, 0) for name, config in configs.items()}, cores
    threads = cores // len(configs)
    context = multiprocessing.get_context("spawn")
    processes: dict[str, tuple[BaseProcess, Connection]] = {}
    with _sigterm_as_exit():
        try:
            for line, (name, config) in enumerate(configs.items()):
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_train_in_process, args=(config, threads, line, sender),
                                          name=f"train-{name}")
                process.start()
                sender.close()
                processes[name] = process, receiver
            return _results(processes), threads
        except BaseException as stopping:
            _stop(processes, signal.SIGINT if isinstance(stopping, KeyboardInterrupt) else signal.SIGTERM)
            raise
        finally:
            for process, _ in processes.values():
                process.join()


def _results(processes: dict[str, tuple[BaseProcess, Connection]]) -> dict[str, TrainResult]:
    """Each process's run, in ``processes``' order, as they finish; the first failure is raised."""
    runs: dict[str, TrainResult] = {}
    waiting = {receiver: name for name, (_, receiver) in processes.items()}
    while waiting:
        for receiver in wait(list(waiting)):
            name = waiting.pop(receiver)
            runs[name] = _result(name, *processes[name])
    return {name: runs[name] for name in processes}


def _result(name: str, process: BaseProcess, receiver: Connection) -> TrainResult:
    try:
        outcome, value = receiver.recv()
    except EOFError:  # it ended without a word: stopped by a signal (it said so) or killed
        process.join()
        code = process.exitcode or 0
        if code > 128:
            raise SystemExit(code) from None
        raise RuntimeError(f"training {name} ended with exit code {code} before finishing") from None
    if outcome == "error":
        raise value
    return value


def _stop(processes: dict[str, tuple[BaseProcess, Connection]], signum: int) -> None:
    """Send the running processes the signal that stopped this one: each saves a checkpoint and exits
    (a process that already had the same signal from the terminal or a process-group kill takes the
    repeat as the same request)."""
    for process, _ in processes.values():
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signum)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Within the block, the first SIGTERM raises ``SystemExit`` (so cleanup code runs) instead of
    killing the process outright, and later ones are ignored while that cleanup waits for the training
    processes (``timeout`` signals its child, then the whole group). Only the main thread can install
    signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_once(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
