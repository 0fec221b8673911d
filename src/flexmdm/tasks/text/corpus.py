"""Variable-length paragraphs from text corpora (paper appendix F.1).

A corpus is a list of documents (strings). Documents are cut into paragraphs at blank lines
(:func:`split_paragraphs`); after tokenization a paragraph longer than the maximum length is
split recursively at the delimiter token nearest its middle (:func:`chunk_paragraph`).

Sources understood by :func:`load_texts`:

* ``"stdlib"`` — the docstrings of the installed Python standard library (offline, on every
  machine): :func:`stdlib_docstrings`;
* a local ``.txt`` file (one document), a ``.jsonl`` file (one document per line, its
  ``"text"`` field) or a folder of such files (read recursively in sorted order);
* ``"hf:NAME[:split]"`` — a Hugging Face dataset with a ``text`` column, e.g.
  ``hf:openwebtext:train``; ``NAME`` may also be a local dataset folder, either written by
  ``Dataset.save_to_disk`` or holding data files that ``datasets.load_dataset`` recognises.

:func:`train_validation_split` assigns each paragraph to a split by a hash of its text, so the
split is deterministic, independent of the corpus order, and identical paragraphs never
straddle the two splits.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
import sysconfig
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from flexmdm.errors import InputFileError, jsonl_records
from flexmdm.tasks.cache import progress

__all__ = [
    "TEXT_FIELD",
    "chunk_paragraph",
    "load_texts",
    "paragraphs_of",
    "split_paragraphs",
    "stdlib_docstrings",
    "train_validation_split",
]

TEXT_FIELD = "text"
"""The column / JSON field holding a document's text."""

_HUB_HTTP_LOGGER = "huggingface_hub.utils._http"
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_SKIPPED_STDLIB_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


def split_paragraphs(text: str) -> list[str]:
    """The paragraphs of ``text``: pieces between blank lines, stripped, empty ones dropped.

    A line holding only whitespace counts as blank; single newlines stay inside a paragraph.
    """
    pieces = _BLANK_LINE.split(text.replace("\r\n", "\n"))
    return [piece.strip() for piece in pieces if piece.strip()]


def paragraphs_of(texts: Iterable[str]) -> list[str]:
    """Every paragraph of every document, in order."""
    return [paragraph for text in texts for paragraph in split_paragraphs(text)]


def chunk_paragraph(ids: Sequence[int], max_length: int, delimiter_ids: Iterable[int]) -> list[list[int]]:
    """Split a tokenized paragraph into pieces of at most ``max_length`` tokens.

    A piece that is too long is cut right after the delimiter token nearest its middle (ties:
    the earlier one), and both halves are split again the same way; a piece without any
    delimiter (other than its last token) is cut at its middle.

    Args:
        ids: the paragraph's token ids.
        max_length: the longest piece allowed (>= 1).
        delimiter_ids: ids of the tokens a piece may end with (full stops, newlines, ...).

    Returns:
        the pieces, in order; concatenated they give back ``ids``. Empty input gives ``[]``.

    Raises:
        ValueError: ``max_length < 1``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids = list(ids)
    delimiters = frozenset(delimiter_ids)
    pieces: list[list[int]] = []
    stack = [ids] if ids else []
    while stack:  # depth-first, left piece first, so pieces come out in order
        piece = stack.pop()
        if len(piece) <= max_length:
            pieces.append(piece)
            continue
        middle = len(piece) / 2
        # a cut after position p leaves piece[:p + 1]; it must leave both halves non-empty
        cuts = [p + 1 for p in range(len(piece) - 1) if piece[p] in delimiters]
        cut = min(cuts, key=lambda c: (abs(c - middle), c)) if cuts else len(piece) // 2
        stack.append(piece[cut:])
        stack.append(piece[:cut])
    return pieces


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if not any(part in _SKIPPED_STDLIB_DIRS for part in parts[:-1]):
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_docstrings(root: str | Path | None = None) -> list[str]:
    """The docstrings of the standard library's Python files, in a deterministic order.

    Files are read in sorted order of their path under ``root``, and within a file in
    source order (module, then classes and functions as :func:`ast.walk` meets them). The
    ``test`` packages and ``site-packages`` are skipped; files that do not parse are skipped.

    Args:
        root: the library folder; default ``sysconfig.get_paths()["stdlib"]``.

    Returns:
        the cleaned (dedented) docstrings, empty ones dropped.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"standard library folder {root} does not exist")
    docstrings: list[str] = []
    for path in progress(_stdlib_files(root), "reading standard-library docstrings", unit="file"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escape sequences in old files
                tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, UnicodeDecodeError):
            continue
        nodes = [tree] + sorted(
            (n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))),
            key=lambda n: (n.lineno, n.col_offset),
        )
        for node in nodes:
            doc = ast.get_docstring(node, clean=True)
            if doc and doc.strip():
                docstrings.append(doc)
    return docstrings


def _read_jsonl(path: Path) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as handle:
        for number, row in jsonl_records(path, handle):
            if not isinstance(row, dict) or not isinstance(row.get(TEXT_FIELD), str):
                raise InputFileError(f"{path}:{number}: expected an object with a string {TEXT_FIELD!r} field")
            texts.append(row[TEXT_FIELD])
    return texts


def _read_file(path: Path) -> list[str]:
    if path.suffix not in (".txt", ".jsonl"):
        raise InputFileError(f"{path}: unsupported file type {path.suffix!r}; expected .txt or .jsonl")
    try:
        return [path.read_text(encoding="utf-8")] if path.suffix == ".txt" else _read_jsonl(path)
    except UnicodeDecodeError as error:
        raise InputFileError(f"{path}: not UTF-8 text (byte {error.start}); convert it to UTF-8") from None


@contextmanager
def _quiet_retries() -> Iterator[None]:
    """Without network, ``huggingface_hub`` warns about each of its retries (two lines each) before
    giving up; within the block only its errors are logged."""
    logger = logging.getLogger(_HUB_HTTP_LOGGER)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_hf(spec: str) -> list[str]:
    """``NAME[:split]`` through ``datasets`` (a saved dataset folder via ``load_from_disk``)."""
    import datasets

    name, _, split = spec.partition(":")
    if not name:
        raise InputFileError("hf: source needs a dataset name, e.g. 'hf:openwebtext:train'")
    split = split or "train"
    local = Path(name)
    if local.is_dir() and ((local / "dataset_info.json").is_file() or (local / "dataset_dict.json").is_file()):
        dataset = datasets.load_from_disk(str(local))
        if isinstance(dataset, datasets.DatasetDict):
            if split not in dataset:
                raise InputFileError(f"dataset {name!r} has no split {split!r}; splits: {sorted(dataset)}")
            dataset = dataset[split]
    else:
        try:
            with _quiet_retries():
                dataset = datasets.load_dataset(name, split=split)
        except ConnectionError as error:
            raise InputFileError(
                f"data source 'hf:{spec}': cannot reach the Hugging Face Hub ({error}); connect to the network, "
                f"or save the dataset to a folder while online and give 'hf:FOLDER'"
            ) from None
    if TEXT_FIELD not in dataset.column_names:
        raise InputFileError(f"dataset {name!r} has no {TEXT_FIELD!r} column; columns: {dataset.column_names}")
    return [text for text in dataset[TEXT_FIELD] if isinstance(text, str)]


def load_texts(source: str | Path) -> list[str]:
    """The documents of ``source`` (see the module docstring for the forms it takes).

    Raises:
        FileNotFoundError: a local path that does not exist.
        InputFileError: an unsupported file type, a malformed JSONL line, a file that is not
            UTF-8, a folder holding no ``.txt``/``.jsonl`` file, or a Hugging Face dataset that
            cannot be reached or lacks the split or the ``text`` column.
    """
    source_text = str(source)
    if source_text == "stdlib":
        return stdlib_docstrings()
    if source_text.startswith("hf:"):
        return _load_hf(source_text[3:])
    path = Path(source_text)
    if not path.exists():
        raise FileNotFoundError(
            f"text source {source_text!r} is neither 'stdlib', 'hf:NAME[:split]' nor an existing file or folder"
        )
    if path.is_file():
        return _read_file(path)
    files = sorted((p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file()),
                   key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise InputFileError(f"folder {path} holds no .txt or .jsonl file")
    return [text for file in progress(files, f"reading {path}", unit="file") for text in _read_file(file)]


def _unit_hash(text: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def train_validation_split(paragraphs: Sequence[str], validation_fraction: float, seed: int = 0,
                           ) -> tuple[list[str], list[str]]:
    """``(train, validation)``: each paragraph goes to validation iff a hash of
    ``(seed, paragraph)`` falls below ``validation_fraction`` (order kept within each split).

    Raises:
        ValueError: ``validation_fraction`` outside [0, 1).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in [0, 1), got {validation_fraction}")
    train: list[str] = []
    validation: list[str] = []
    for paragraph in paragraphs:
        (validation if _unit_hash(paragraph, seed) < validation_fraction else train).append(paragraph)
    return train, validation
