"""GSM8K records: loading the JSONL files, extracting and scoring final answers.

GSM8K's ``answer`` field is a rationale with calculator annotations ``<<48/2=24>>`` and a last
line ``#### 72``. Works on the real files (``train.jsonl``, ``test.jsonl``, read from a local
path) and on the generated problems of :mod:`~flexmdm.tasks.reasoning.problems` alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from flexmdm.atomic import write_text_atomic
from flexmdm.errors import jsonl_records

__all__ = [
    "accuracy",
    "answers_match",
    "calculator_annotations",
    "extract_answer",
    "load_gsm8k",
    "normalize_number",
    "write_gsm8k",
]

_FINAL = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
_NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def load_gsm8k(path: str | Path) -> list[dict[str, str]]:
    """The ``{"question", "answer"}`` records of a local GSM8K JSONL file (blank lines skipped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object with string ``question`` and ``answer`` fields
            (the message names the file and the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no GSM8K file at {path}")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, record in jsonl_records(path, handle):
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            missing = [key for key in ("question", "answer") if not isinstance(record.get(key), str)]
            if missing:
                raise ValueError(f"{path}:{number}: lacks the text field(s) {missing}")
            records.append({"question": record["question"], "answer": record["answer"]})
    return records


def write_gsm8k(records: Sequence[dict[str, str]], path: str | Path) -> Path:
    """Write ``{"question", "answer"}`` records as GSM8K JSONL, atomically."""
    lines = "".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n" for r in records)
    return write_text_atomic(path, lines)


def normalize_number(text: str) -> str | None:
    """A number as a canonical string: ``"$1,234.50"`` → ``"1234.5"``, ``"7.0"`` → ``"7"``.

    Returns None when ``text`` holds no number; the last number wins when it holds several.
    """
    found = _NUMBER.findall(text.replace("$", ""))
    if not found:
        return None
    raw = found[-1].replace(",", "")
    if "." in raw:
        raw = raw.rstrip("0").rstrip(".")
    sign, digits = ("-", raw[1:]) if raw.startswith("-") else ("", raw)
    digits = digits.lstrip("0") or "0"
    if digits.startswith("."):
        digits = "0" + digits
    return "0" if digits == "0" else sign + digits


def extract_answer(text: str) -> str | None:
    """The normalised number after the last ``####`` of a rationale (None if absent)."""
    finals = _FINAL.findall(text)
    return normalize_number(finals[-1]) if finals else None


def calculator_annotations(text: str) -> list[str]:
    """The ``<<…>>`` expressions of a rationale, spaces removed: ``["48/2=24", …]``."""
    return [re.sub(r"\s+", "", a) for a in _ANNOTATION.findall(text)]


def answers_match(prediction: str | None, reference: str | None) -> bool:
    """True when both hold a number and the numbers are equal after normalisation."""
    if prediction is None or reference is None:
        return False
    left, right = normalize_number(prediction), normalize_number(reference)
    return left is not None and left == right


def accuracy(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference (both normalised).

    References may be full GSM8K answers (the number after ``####`` is used) or plain numbers.

    Raises:
        ValueError: the sequences differ in length or are empty.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not references:
        raise ValueError("no references to score")
    hits = 0
    for prediction, reference in zip(predictions, references):
        gold = extract_answer(reference) if "####" in reference else normalize_number(reference)
        hits += answers_match(prediction, gold)
    return hits / len(references)
