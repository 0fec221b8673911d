"""Result files written as work goes on, which never pass for finished when they are not.

A :class:`PartialFile` for ``NAME`` is created as ``NAME.partial`` before any work starts (so a
path that cannot be written fails at once), receives complete lines as they are produced, and
becomes ``NAME`` only when :meth:`PartialFile.finish` is called: a file under its final name is
always complete. An interrupted run keeps ``NAME.partial`` holding every line whose write had
completed; a failed one removes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OutputError", "PARTIAL_SUFFIX", "PartialFile"]

PARTIAL_SUFFIX = ".partial"


class OutputError(ValueError):
    """An output path that cannot be written (the message names the option and the path)."""


class PartialFile:
    """``path`` written as ``path.partial`` until :meth:`finish` renames it.

    A ``path`` that is a symbolic link (``/dev/stdout``) or exists and is not a regular file (a
    device, a FIFO) is written in place: renaming onto it would replace the link or the device.

    Args:
        path: the final file; missing parent folders are created.
        option: the command-line option that named it, for error messages (e.g. ``--out``).

    Raises:
        OutputError: ``path`` is a folder, or the partial file cannot be created.
    """

    def __init__(self, path: Path, option: str) -> None:
        self.path, self.option = Path(path), option
        if self.path.is_dir():
            raise OutputError(f"{option} {path} is a directory: give a file name")
        in_place = self.path.is_symlink() or (self.path.exists() and not self.path.is_file())
        self.partial = self.path if in_place else self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.partial, "wb", buffering=0)
        except OSError as error:
            blocker = next((parent for parent in self.path.parents if parent.exists() and not parent.is_dir()), None)
            reason = error.strerror if blocker is None else f"{blocker} is not a directory"
            raise OutputError(f"{option} {path}: cannot write there ({reason})") from None
        self._committed = 0

    @property
    def in_place(self) -> bool:
        """Whether ``path`` is written directly (a link, a device or a FIFO)."""
        return self.partial == self.path

    def write_lines(self, lines: Iterable[str]) -> None:
        """Append ``lines`` (each ending in a newline), unbuffered: they are in the file on return.

        Raises:
            OutputError: the write failed (a full disk, ``/dev/full``); the partial file is removed.
        """
        data = "".join(lines).encode("utf-8")
        rest = memoryview(data)
        try:
            while rest:
                rest = rest[self._file.write(rest):]
        except OSError as error:
            self.discard()
            raise OutputError(f"{self.option} {self.path}: {error.strerror}") from None
        self._committed += len(data)

    def finish(self) -> Path:
        """Flush to disk and give the file its final name; returns it.

        Raises:
            OutputError: flushing or renaming failed; the partial file is removed.
        """
        try:
            if not self.in_place:
                os.fsync(self._file.fileno())
            self._file.close()
            if not self.in_place:
                os.replace(self.partial, self.path)
        except OSError as error:
            self.discard()
            raise OutputError(f"{self.option} {self.path}: {error.strerror}") from None
        return self.path

    def keep(self) -> Path:
        """Close the partial file, cut to the last complete :meth:`write_lines`; returns its path."""
        if not self.in_place:
            self._file.truncate(self._committed)
        self._file.close()
        return self.partial

    def discard(self) -> None:
        """Close and remove the partial file (a file written in place stays)."""
        self._file.close()
        if not self.in_place:
            self.partial.unlink(missing_ok=True)
