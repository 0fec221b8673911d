"""A self-contained HTML page that replays the generation of one sequence.

:func:`render_page` embeds the start state and the events of one sequence as JSON in a single
HTML file with inline CSS and JavaScript (no network access needed). The page has a step slider
(``id="step"``) and a play/pause button (``id="play"``); the current state is shown in
``id="sequence"`` with one ``<span class="tok">`` per token (``class="tok mask"`` for masks),
whose text content is the token's text. Masks appear as grey boxes when they are inserted,
tokens when they are revealed; the tokens of the current step are outlined, revealed tokens are
coloured by their reveal time, and the length, time and masks left are shown.

``flexmdm view TRACE.jsonl`` (:mod:`flexmdm.cli`) writes this page from the command line.
"""

from __future__ import annotations

import html
import json
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from flexmdm.viz.trace_io import read_trace_jsonl, replay_sequence, step_table

__all__ = ["page_data", "render_page", "tokenizer_decoder"]

Decoder = Callable[[list[int]], list[str]]
"""Token ids -> one display string per id."""

_PLACEHOLDER = re.compile(r"\{\{(TITLE|DATA)\}\}")


def _embed_json(value: Any) -> str:
    """JSON safe inside ``<script>``: no ``<``, ``>``, ``&`` nor line separators appear raw."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def tokenizer_decoder(path: str | Path) -> Decoder | None:
    """A decoder from an HF ``tokenizer.json`` (``path`` is the file or a folder holding it).

    Each id is decoded on its own (special tokens kept); ids the tokenizer does not know (e.g. a
    model's extra MASK/PAD ids) are shown as ``<id>``. Returns None when there is no tokenizer.
    """
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(file))
    size = tokenizer.get_vocab_size(with_added_tokens=True)

    def decode(ids: list[int]) -> list[str]:
        out = []
        for token_id in ids:
            if not 0 <= token_id < size:
                out.append(f"<{token_id}>")
                continue
            text = tokenizer.decode([token_id], skip_special_tokens=False)
            if text == "":
                text = tokenizer.id_to_token(token_id) or f"<{token_id}>"
            out.append(text)
        return out

    return decode


def _header_decoder(header: Mapping[str, Any]) -> Decoder | None:
    table = header.get("tokens")
    if not table:
        return None
    return lambda ids: [str(table.get(str(i), i)) for i in ids]


def page_data(
    header: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    *,
    decode: Decoder | None = None,
    sequence: int = 0,
    title: str | None = None,
) -> dict[str, Any]:
    """The JSON object embedded in the page (one sequence's start state, steps and events)."""
    count = int(header.get("num_sequences") or len(header.get("start") or []))
    if not 0 <= sequence < count:
        raise IndexError(f"sequence {sequence} outside [0, {count}) (the trace has {count} sequences)")
    mine = [e for e in events if e["sequence"] == sequence]
    table = step_table(mine)
    index = {step: row for row, (step, _) in enumerate(table, start=1)}
    compact = sorted(
        ([index[int(e["step"])], 0 if e["kind"] == "unmask" else 1, int(e["position"]), int(e["value"])] for e in mine),
        key=lambda e: (e[0], e[1]),
    )
    all_starts = header.get("start") or []
    start = [int(v) for v in all_starts[sequence]] if sequence < len(all_starts) else []
    final = replay_sequence(header, events, sequence)  # also validates the events

    warning = None
    recorded = header.get("final")
    if recorded is not None and sequence < len(recorded) and list(recorded[sequence]) != final:
        warning = "The replayed events do not reach the final sample recorded in the trace header."
        warnings.warn(warning, stacklevel=2)

    ids = sorted({*start, *(e[3] for e in compact if e[1] == 0)})
    decode = decode or _header_decoder(header)
    if decode is None:
        strings = {str(i): str(i) for i in ids}
    else:
        texts = list(decode(list(ids)))
        if len(texts) != len(ids):
            raise ValueError(f"decode returned {len(texts)} strings for {len(ids)} ids")
        strings = {str(i): str(t) for i, t in zip(ids, texts)}

    metadata = dict(header.get("metadata") or {})
    mask_id = header.get("mask_id")
    steps_total = len(step_table(events))
    subtitle = (f"Sequence {sequence} of {count} \u00b7 {len(table)} steps \u00b7 final length {len(final)}"
                + (f" \u00b7 prompt {len(start)} tokens" if start else ""))
    details = {"sequence": f"{sequence} of {count}", "events (this sequence)": len(mine),
               "steps (whole trace)": steps_total, "mask id": mask_id, "pad id": header.get("pad_id")}
    details.update({str(k): v for k, v in metadata.items()})
    return {
        "title": title or f"FlexMDM generation \u2014 sequence {sequence}",
        "subtitle": subtitle,
        "sequence": sequence,
        "num_sequences": count,
        "start": start,
        "steps": [[step, time] for step, time in table],
        "events": compact,
        "strings": strings,
        "final_length": len(final),
        "details": details,
        "warning": warning,
        "initial_step": 0,
    }


def _template() -> str:
    return resources.files("flexmdm.viz").joinpath("page_template.html").read_text(encoding="utf-8")


def render_page(
    trace: str | Path | tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]],
    out_html: str | Path,
    *,
    decode: Decoder | None = None,
    sequence: int = 0,
    title: str | None = None,
) -> Path:
    """Write one self-contained HTML page replaying ``sequence`` of a trace.

    Args:
        trace: a trace ``.jsonl`` file (:func:`~flexmdm.viz.trace_io.write_trace_jsonl`) or
            ``(header, events)`` as returned by :func:`~flexmdm.viz.trace_io.read_trace_jsonl`.
        out_html: where to write the page (parent folders are created).
        decode: ids -> display strings (e.g. :func:`tokenizer_decoder`); default: the header's
            token table when it has one, else the ids themselves.
        sequence: which sequence of the batch to show.
        title: the page title.

    Returns:
        ``out_html`` as a Path.
    """
    header, events = read_trace_jsonl(trace) if isinstance(trace, (str, Path)) else trace
    data = page_data(header, events, decode=decode, sequence=sequence, title=title)
    values = {"TITLE": html.escape(data["title"]), "DATA": _embed_json(data)}
    page = _PLACEHOLDER.sub(lambda match: values[match.group(1)], _template())
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
