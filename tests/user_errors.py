"""Running the ``flexmdm`` command as a user would, and judging how it fails.

Each row of the table-driven tests in ``tests/test_user_errors*.py`` is a :class:`Case`: a command
line (``{tmp}`` and ``{model}`` are filled in), an optional ``setup`` that breaks or prepares files
under ``tmp``, and what must hold afterwards. :func:`check_user_error` is the contract for wrong
input: exit code 2, no traceback, at most three lines on stderr, the file or argument named, and
nothing partial left where the output was to go.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Case", "check_user_error", "run_flexmdm"]


@dataclass(frozen=True)
class Case:
    """One command that a user got wrong.

    ``argv`` follows ``flexmdm``; ``fragment`` must appear in the error message (with ``{tmp}`` and
    ``{model}`` filled in); ``absent`` lists paths (relative to ``tmp``) that must not exist
    afterwards; ``setup(tmp, model)`` runs first.
    """

    name: str
    argv: list[str]
    fragment: str
    setup: Callable[[Path, Path], None] | None = None
    absent: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.name


def run_flexmdm(argv: list[str], *, cwd: Path | None = None, timeout: float = 300,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m flexmdm.cli ARGV`` in a subprocess with one torch thread; text output."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "flexmdm.cli", *argv], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def check_user_error(case: Case, tmp: Path, model: Path) -> None:
    """Set up ``case``, run it, and assert the one-line-error contract."""
    if case.setup is not None:
        case.setup(tmp, model)
    argv = [word.format(tmp=tmp, model=model) for word in case.argv]
    done = run_flexmdm(argv, cwd=tmp)
    err = done.stderr.strip()
    assert done.returncode == 2, f"{case.name}: exit {done.returncode}\n{err}"
    assert "Traceback" not in err, f"{case.name}: traceback\n{err}"
    assert len(err.splitlines()) <= 3, f"{case.name}: {len(err.splitlines())} lines\n{err}"
    fragment = case.fragment.format(tmp=tmp, model=model)
    assert fragment in err, f"{case.name}: {fragment!r} not in\n{err}"
    for relative in case.absent:
        assert not (tmp / relative).exists(), f"{case.name}: left {relative} behind"
