"""Seeing generation happen: traces on disk, their replay, plots and an HTML replay page."""

from flexmdm.viz.page import (
    page_data,
    render_page,
    tokenizer_decoder,
)
from flexmdm.viz.plots import plot_lengths_over_time, plot_maze_reveal
from flexmdm.viz.trace_io import (
    length_over_time,
    read_trace_jsonl,
    replay_sequence,
    replay_states,
    reveal_steps,
    step_table,
    trace_header,
    trace_lines,
    write_trace_jsonl,
)

__all__ = [
    "length_over_time",
    "page_data",
    "plot_lengths_over_time",
    "plot_maze_reveal",
    "read_trace_jsonl",
    "render_page",
    "replay_sequence",
    "replay_states",
    "reveal_steps",
    "step_table",
    "tokenizer_decoder",
    "trace_header",
    "trace_lines",
    "write_trace_jsonl",
]
