"""Traces on disk (JSON lines) and their replay in pure Python.

File format (one JSON object per line)::

    {"type": "header", "format": "flexmdm-trace", "version": 1, "start": [[...], ...],
     "mask_id": 5, "pad_id": 6, "num_sequences": B, "vocab_size": V | null,
     "tokens": {"id": "text", ...} | null, "final": [[...], ...] | null, "metadata": {...}}
    {"kind": "unmask", "step": 0, "time": 0.0, "sequence": 1, "position": 3, "value": 17}
    {"kind": "insert", "step": 0, "time": 0.0, "sequence": 1, "position": 0, "value": 2}
    ...

``start`` holds the start state of every sequence (prompt tokens, or ``[]``). Events follow the
conventions of :class:`~flexmdm.sampling.trace.Trace`: within a step the reveals come first (the
position is a slot of the current state), then the insertions (the position is gap ``i`` of the
state after the reveals: ``value`` masks go before slot ``i``; gap ``len`` is the tail), all
insertions of one step indexing the same pre-insertion state.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flexmdm.errors import jsonl_records
from flexmdm.sampling.trace import Trace, apply_step

__all__ = [
    "FORMAT",
    "length_over_time",
    "read_trace_jsonl",
    "replay_sequence",
    "reveal_steps",
    "replay_states",
    "step_table",
    "trace_header",
    "trace_lines",
    "write_trace_jsonl",
]

FORMAT = "flexmdm-trace"
VERSION = 1
START_STEP = -1
"""The ``step`` of the start state in :func:`replay_states` (before the first step)."""


def _token_table(vocab: Any) -> tuple[int | None, dict[str, str] | None]:
    """``(vocab_size, {id: text})`` from a :class:`~flexmdm.vocab.Vocab`, a list or a mapping."""
    if vocab is None:
        return None, None
    if hasattr(vocab, "size") and hasattr(vocab, "mask_id"):
        return int(vocab.size), None
    if isinstance(vocab, Mapping):
        return None, {str(int(k)): str(v) for k, v in vocab.items()}
    if isinstance(vocab, Sequence) and not isinstance(vocab, (str, bytes)):
        return len(vocab), {str(i): str(v) for i, v in enumerate(vocab)}
    raise TypeError(f"vocab must be a Vocab, a list of token strings or an id->string mapping, got {type(vocab).__name__}")


def trace_header(
    trace: Trace | Sequence[Trace],
    *,
    vocab: Any = None,
    final_sequences: Sequence[Sequence[int]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The header record of :func:`write_trace_jsonl` (see there for the arguments)."""
    traces = [trace] if isinstance(trace, Trace) else list(trace)
    if not traces:
        raise ValueError("no trace given")
    start: list[list[int]] = []
    for part in traces:
        lengths = part.start_lengths.tolist()
        start += [part.start_tokens[b, :n].tolist() for b, n in enumerate(lengths)]
    vocab_size, tokens = _token_table(vocab)
    if final_sequences is not None:
        final_sequences = [[int(v) for v in row] for row in final_sequences]
        if len(final_sequences) != len(start):
            raise ValueError(f"{len(final_sequences)} final sequences for {len(start)} traced sequences")
    return {
        "type": "header",
        "format": FORMAT,
        "version": VERSION,
        "start": start,
        "mask_id": int(traces[0].mask_id),
        "pad_id": int(traces[0].pad_id),
        "num_sequences": len(start),
        "vocab_size": vocab_size,
        "tokens": tokens,
        "final": final_sequences,
        "metadata": dict(metadata or {}),
    }


def write_trace_jsonl(
    trace: Trace | Sequence[Trace],
    path: str | Path,
    *,
    vocab: Any = None,
    final_sequences: Sequence[Sequence[int]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a header line, then one line per event.

    Args:
        trace: a recorded trace, or the traces of consecutive batches (their sequences are
            numbered on, in order).
        path: the ``.jsonl`` file (parent folders are created).
        vocab: optional: a :class:`~flexmdm.vocab.Vocab` (its size is kept), a list of token
            strings indexed by id, or an ``{id: string}`` mapping (kept for display).
        final_sequences: optional final samples (e.g. ``SampleOutput.sequences()``), kept so that
            a reader can check the replay.
        metadata: optional JSON-ready facts (model, steps, seed, ...).

    Returns:
        ``path`` as a Path.
    """
    lines = trace_lines(trace, vocab=vocab, final_sequences=final_sequences, metadata=metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(lines)
    return path


def trace_lines(
    trace: Trace | Sequence[Trace],
    *,
    vocab: Any = None,
    final_sequences: Sequence[Sequence[int]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[str]:
    """The lines of :func:`write_trace_jsonl` (same arguments), each ending in a newline.

    The header is built (and the arguments checked) at once; the event lines as they are read.
    """
    traces = [trace] if isinstance(trace, Trace) else list(trace)
    header = trace_header(traces, vocab=vocab, final_sequences=final_sequences, metadata=metadata)
    return itertools.chain([json.dumps(header) + "\n"], _event_lines(traces))


def _event_lines(traces: Sequence[Trace]) -> Iterator[str]:
    """One JSON line per event; the sequences of consecutive traces are numbered on."""
    offset = 0
    for part in traces:
        for record in part.to_records():
            record["sequence"] += offset
            yield json.dumps(record) + "\n"
        offset += int(part.start_tokens.shape[0])


def _check_event(record: Any, where: str) -> dict[str, Any]:
    if not isinstance(record, dict) or record.get("kind") not in ("unmask", "insert"):
        raise ValueError(f"{where}: not a trace event: {str(record)[:80]}")
    for key in ("step", "sequence", "position", "value"):
        if not isinstance(record.get(key), int) or record[key] < 0:
            raise ValueError(f"{where}: event field {key!r} missing or not a valid integer")
    try:
        record["time"] = float(record.get("time", 0.0))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: event field 'time' is not a number") from None
    return record


def read_trace_jsonl(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(header, events)`` from a file written by :func:`write_trace_jsonl`.

    Raises:
        ValueError: a line that is not JSON, a missing or misplaced header, a malformed event.
    """
    path = Path(path)
    header: dict[str, Any] | None = None
    events: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, record in jsonl_records(path, handle):
            if isinstance(record, dict) and record.get("type") == "header":
                if header is not None or events:
                    raise ValueError(f"{path}:{number}: a header must be the first line, and only one")
                if record.get("format") != FORMAT:
                    raise ValueError(f"{path}:{number}: not a {FORMAT} file (format {record.get('format')!r})")
                header = record
                continue
            if header is None:
                raise ValueError(f"{path}:{number}: the first line must be the {FORMAT} header")
            events.append(_check_event(record, f"{path}:{number}"))
    if header is None:
        raise ValueError(f"{path}: empty trace file")
    header["num_sequences"] = max(len(header["start"]), 1 + max((e["sequence"] for e in events), default=-1))
    return header, events


def _num_sequences(header: Mapping[str, Any]) -> int:
    return int(header.get("num_sequences") or len(header.get("start") or []))


def _start(header: Mapping[str, Any], sequence: int) -> list[int]:
    start = header.get("start") or []
    return list(start[sequence]) if sequence < len(start) else []


def step_table(events: Iterable[Mapping[str, Any]], sequence: int | None = None) -> list[tuple[int, float]]:
    """Sorted distinct ``(step, time)`` of the events (of one sequence, or of all)."""
    steps: dict[int, float] = {}
    for event in events:
        if sequence is None or event["sequence"] == sequence:
            steps.setdefault(int(event["step"]), float(event["time"]))
    return sorted(steps.items())


def replay_states(
    header: Mapping[str, Any], events: Sequence[Mapping[str, Any]], sequence: int
) -> list[dict[str, Any]]:
    """The state of one sequence before the first step and after every step of the trace.

    Returns:
        ``[{"step": -1, "time": 0.0, "tokens": start}, {"step": k, "time": t_k, "tokens": ...},
        ...]`` with one entry per distinct step of the whole trace (so every sequence of a batch
        gets aligned entries); masks appear as ``mask_id`` (or -1 when the header has none). The
        last entry is the final sample.
    """
    count = _num_sequences(header)
    if not 0 <= sequence < count:
        raise IndexError(f"sequence {sequence} outside [0, {count})")
    mask_id = header.get("mask_id")
    mask_id = -1 if mask_id is None else int(mask_id)
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for event in events:
        if event["sequence"] == sequence:
            by_step.setdefault(int(event["step"]), []).append(event)
    state = _start(header, sequence)
    states = [{"step": START_STEP, "time": 0.0, "tokens": list(state)}]
    for step, time in step_table(events):
        if step in by_step:
            apply_step(state, by_step[step], mask_id)
        states.append({"step": step, "time": time, "tokens": list(state)})
    return states


def replay_sequence(header: Mapping[str, Any], events: Sequence[Mapping[str, Any]], sequence: int) -> list[int]:
    """The final state of one sequence."""
    return replay_states(header, events, sequence)[-1]["tokens"]


def reveal_steps(header: Mapping[str, Any], events: Sequence[Mapping[str, Any]], sequence: int) -> list[int]:
    """The step at which each token of one sequence's final state was revealed.

    Returns:
        One entry per final token: its step, ``-1`` (:data:`START_STEP`) for tokens of the start
        state (the prompt), ``-2`` for a mask never revealed.
    """
    never = START_STEP - 1
    revealed = [START_STEP] * len(_start(header, sequence))
    by_step: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        if event["sequence"] == sequence:
            marked = {**event, "value": event["step"]} if event["kind"] == "unmask" else event
            by_step.setdefault(int(event["step"]), []).append(marked)
    for step in sorted(by_step):
        apply_step(revealed, by_step[step], never)
    return revealed


def length_over_time(header: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> tuple[Any, Any]:
    """Lengths of every sequence before the first step and after each step.

    Returns:
        ``(times [S], lengths [S, B])`` as numpy arrays (float, int); row 0 is the start state
        at time 0, then one row per distinct step (the time of its network call). Lengths never
        decrease (FlexMDM only inserts) and the last row holds the final lengths.
    """
    import numpy as np

    count = _num_sequences(header)
    table = step_table(events)
    row_of = {step: row for row, (step, _) in enumerate(table, start=1)}
    growth = np.zeros((len(table) + 1, count), dtype=np.int64)
    for event in events:
        if event["kind"] == "insert":
            growth[row_of[int(event["step"])], event["sequence"]] += int(event["value"])
    growth[0] = [len(_start(header, b)) for b in range(count)]
    times = np.array([0.0] + [time for _, time in table], dtype=np.float64)
    return times, np.cumsum(growth, axis=0)
