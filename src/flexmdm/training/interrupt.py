"""Stopping a run cleanly on Ctrl-C (SIGINT) or SIGTERM.

While :meth:`StopRequest.catching` is active, the first SIGINT or SIGTERM only records a request:
the training loop finishes its current step, writes a checkpoint and raises
:class:`TrainingInterrupted`. The same signal repeated within :data:`REPEAT_GRACE_S` seconds is the
same request (under ``torchrun`` a worker receives Ctrl-C both from the terminal and from the
launcher); a signal after that stops the process at once, as it would without this module.
Handlers can only be installed from the main thread; elsewhere signals keep their usual effect.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["REPEAT_GRACE_S", "StopRequest", "TrainingInterrupted"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_GRACE_S = 1.0
"""A signal repeated within this many seconds of the first one is not a second request."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after writing a checkpoint.

    Attributes:
        signum: the signal (SIGINT or SIGTERM).
        step: the last completed step (the checkpoint's).
        checkpoint: the checkpoint directory.
    """

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(f"{signal.Signals(signum).name} at step {step}; checkpoint {checkpoint}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint

    @property
    def exit_code(self) -> int:
        """The conventional exit code of a process stopped by ``signum``: 128 + its number."""
        return 128 + self.signum


class StopRequest:
    """Whether a stop was requested by a signal, and which signal."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._when = 0.0
        self._previous: dict[int, Any] = {}

    @contextmanager
    def catching(self, announce: bool) -> Iterator[StopRequest]:
        """Record SIGINT/SIGTERM within the block (main thread only); ``announce`` prints one line
        on stderr when a stop is first requested."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {number: signal.getsignal(number) for number in SIGNALS}
        handler = self._handler(announce)
        for number in SIGNALS:
            signal.signal(number, handler)
        try:
            yield self
        finally:
            self._restore()

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)

    def _handler(self, announce: bool) -> Callable[[int, FrameType | None], None]:
        def handle(signum: int, frame: FrameType | None) -> None:
            now = time.monotonic()
            if self.signum is None:
                self.signum, self._when = signum, now
                if announce:
                    print(f"\n{signal.Signals(signum).name}: stopping after this step and writing a checkpoint "
                          "(send it again to stop at once)", file=sys.stderr, flush=True)
            elif signum != self.signum or now - self._when > REPEAT_GRACE_S:
                self._restore()
                signal.raise_signal(signum)

        return handle
