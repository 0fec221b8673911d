"""Errors about the user's files, reported by the ``flexmdm`` command as one line (exit code 2).

:class:`InputFileError` is raised where a file that was given (or that an earlier run wrote) cannot
be used: truncated, corrupted, malformed or unreachable. Its message names the file or source and
says what to do. :func:`naming` attaches a path to the :class:`OSError` of a write that failed
without one (``ENOSPC`` is raised when a file is flushed, with no file name), so that the command
can say which path could not be written.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["InputFileError", "naming"]


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
