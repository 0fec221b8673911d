"""Atomic writes: a reader (or a run resumed after a crash) sees the old version or the new one,
never a half-written file or folder.

Everything is first written to a hidden sibling (``.NAME.*``), flushed to disk, given the usual
permissions (``0o666``/``0o777`` less the umask, as :func:`open` and :func:`os.mkdir` give, unlike
:mod:`tempfile`'s private ``0o600``/``0o700`` or writers that go through it, such as safetensors)
and then renamed into place with :func:`os.replace`. A target that exists and is not a regular file
(``/dev/stdout``, a named pipe) is written directly: renaming over it would replace the device.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flexmdm.errors import naming

__all__ = ["atomic_directory", "fsync_tree", "write_text_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_permissions(root: Path) -> None:
    """Give ``root`` and everything under it the permissions a plain ``open``/``mkdir`` would:
    ``0o777`` less the umask for folders and executables, ``0o666`` less the umask for other files."""
    mask = _umask()
    for path in [*root.rglob("*"), root]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o100
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` (and ``root`` itself) to disk."""
    for path in [*root.rglob("*"), root]:
        descriptor = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextmanager
def atomic_directory(directory: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """Fill an empty staging folder; when the block succeeds it becomes ``directory``.

    Args:
        directory: the folder to write (its parent is created).
        replace: an existing ``directory`` is replaced (True), or kept and the new content
            discarded (False: for caches that another process may have written first).

    Yields:
        the staging folder. If the block raises, it is deleted and ``directory`` is untouched.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        yield staging
        _usual_permissions(staging)
        fsync_tree(staging)
        if not directory.exists():
            try:
                os.replace(staging, directory)
                return
            except OSError:
                if not directory.exists():
                    raise
        if not replace:
            shutil.rmtree(staging)
            return
        retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
        os.replace(directory, retired / "previous")
        os.replace(staging, directory)
        shutil.rmtree(retired)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` (parent folders created) atomically; returns ``path``.

    A ``path`` that exists and is not a regular file (a device such as ``/dev/stdout``, a pipe) is
    written directly; an :class:`OSError` then names it.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        with naming(path), open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
