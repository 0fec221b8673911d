"""On-disk caches of tokenized corpora (the text and infill tasks).

A cache is a folder ``cache_dir/<kind>-<key>`` whose key digests every option that changes the
corpus and the identity of its source (:func:`source_identity`), written atomically and read back
when present; a damaged cache is rebuilt. While a corpus is built, :func:`progress` shows what is
being done on a terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import sysconfig
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["CACHE_ENV", "cache_folder", "default_cache_dir", "load_or_build", "progress", "source_identity"]

CACHE_ENV = "FLEXMDM_CACHE_DIR"
Corpus = TypeVar("Corpus")
Item = TypeVar("Item")


def default_cache_dir() -> Path:
    """``$FLEXMDM_CACHE_DIR`` or ``~/.cache/flexmdm``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "flexmdm")


def source_identity(source: str) -> dict[str, Any]:
    """What makes a source's content: the Python build for ``"stdlib"``, file names, sizes and
    modification times for a local file or folder (also behind ``hf:PATH``), else the name."""
    if source == "stdlib":
        return {"python": platform.python_version(), "stdlib": sysconfig.get_paths()["stdlib"]}
    path = Path(source)
    if source.startswith("hf:") or not path.exists():
        local = Path(source[3:].partition(":")[0]) if source.startswith("hf:") else None
        if local is None or not local.exists():
            return {"source": source}
        path = local
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {"source": source, "path": str(path.resolve()),
            "files": [(p.relative_to(path).as_posix() if p != path else p.name, p.stat().st_size,
                       p.stat().st_mtime_ns) for p in files]}


def cache_folder(kind: str, cache_dir: str | Path | None, payload: dict[str, Any]) -> Path:
    """``cache_dir/<kind>-<digest of payload>`` (``cache_dir`` default: :func:`default_cache_dir`)."""
    key = hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=10).hexdigest()
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{kind}-{key}"


def load_or_build(path: Path, read: Callable[[Path], Corpus], build: Callable[[], Corpus],
                  write: Callable[[Corpus, Path], None]) -> Corpus:
    """``read(path)`` when the cache is complete and readable, else ``build()`` then ``write`` it."""
    if (path / "corpus.npz").is_file():
        try:
            return read(path)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    corpus = build()
    write(corpus, path)
    return corpus


def progress(items: Iterable[Item], description: str, *, total: int | None = None, unit: str = "it") -> tqdm:
    """``items`` with a progress bar on stderr when it is a terminal (on rank 0 only under torchrun)."""
    shown = sys.stderr.isatty() and os.environ.get("RANK", "0") == "0"
    return tqdm(items, desc=description, total=total, unit=unit, disable=not shown, file=sys.stderr,
                dynamic_ncols=True)
