"""Errors about the user's files, reported by the ``flexmdm`` command as one line (exit code 2).

:class:`InputFileError` is raised where a file that was given (or that an earlier run wrote) cannot
be used: truncated, corrupted, malformed or unreachable. Its message names the file or source and
says what to do. :func:`jsonl_records` reads JSON lines and names the line that is not JSON.
:func:`naming` attaches a path to the :class:`OSError` of a write that failed
without one (``ENOSPC`` is raised when a file is flushed, with no file name), so that the command
can say which path could not be written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["InputFileError", "jsonl_records", "naming"]


class InputFileError(ValueError):
    """A file or data source is truncated, corrupted, malformed or unreachable (the message names it)."""


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Within the block, an :class:`OSError` without a file name is given ``path`` as its file name."""
    try:
        yield
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise


def jsonl_records(path: str | Path, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, decoded value)`` of every non-blank line of ``path`` (read from ``lines``).

    Raises:
        InputFileError: ``PATH:N: not JSON (...)`` for the first line that is not JSON.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise InputFileError(f"{path}:{number}: not JSON ({error.msg}); fix or remove the line") from None
