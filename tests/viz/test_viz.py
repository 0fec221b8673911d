"""Traces on disk, their replay, plots and the HTML replay page (fast; no browser)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from flexmdm.cli import main
from flexmdm.constraints import Prompt
from flexmdm.interpolant import FlexInterpolant
from flexmdm.sampling import sample_flexmdm
from flexmdm.schedules import LinearSchedule
from flexmdm.viz import (
    length_over_time,
    page_data,
    plot_lengths_over_time,
    plot_maze_reveal,
    read_trace_jsonl,
    render_page,
    replay_states,
    reveal_steps,
    tokenizer_decoder,
    write_trace_jsonl,
)
from flexmdm.vocab import Vocab

LETTERS = "abcdefghijklmnopqrstuvwxyz "
VOCAB = Vocab(size=len(LETTERS) + 2, mask_id=len(LETTERS), pad_id=len(LETTERS) + 1)
PHRASE = "the quick brown fox jumps over the lazy dog"
LINEAR = LinearSchedule()
PROCESS = FlexInterpolant(LINEAR, LINEAR, VOCAB)


def letters_decode(ids: list[int]) -> list[str]:
    """Ids as letters (MASK and PAD as bracketed names)."""
    names = {VOCAB.mask_id: "[MASK]", VOCAB.pad_id: "[PAD]"}
    return [LETTERS[i] if i < len(LETTERS) else names.get(i, f"<{i}>") for i in ids]


def phrase_denoiser(x, t, lengths, frozen):
    """Noisy logits that lean towards PHRASE, gaps that aim at PHRASE's length.

    Slot j of a length-n state leans towards the phrase character where the j-th of n
    characters drawn from the phrase would be expected, so that the text reads a bit like it.
    """
    g = torch.Generator().manual_seed(int(x.sum()) * 31 + x.shape[1])
    batch, n = x.shape
    logits = torch.randn(batch, n, VOCAB.size, generator=g)
    target = torch.tensor([LETTERS.index(c) for c in PHRASE])
    size = len(PHRASE)
    where = ((torch.arange(n)[None, :] + 1) * (size + 1) / (lengths[:, None] + 1)).round().long() - 1
    logits.scatter_add_(2, target[where.clamp(0, size - 1)][..., None], torch.full((batch, n, 1), 6.0))
    logits[..., VOCAB.mask_id] += 30.0  # the sampler must ignore these
    remaining = (len(PHRASE) - lengths).clamp(min=0).float()
    spread = 0.5 + torch.rand(batch, n + 1, generator=g)
    gaps = remaining[:, None] / (lengths[:, None] + 1).float() * spread
    return logits, gaps


def sample_run(seed: int = 0, batch: int = 3, prompt: Prompt | None = None, steps: int = 24, max_length: int = 48):
    return sample_flexmdm(
        phrase_denoiser, PROCESS, steps=steps,
        max_length=max_length, prompt=prompt, batch_size=None if prompt is not None else batch,
        generator=torch.Generator().manual_seed(seed), record_trace=True,
    )


@pytest.fixture(scope="module")
def run():
    return sample_run(0)


@pytest.fixture(scope="module")
def prompted_run():
    prompt = Prompt.prefix([[19, 7, 4], [0], [1, 2]], VOCAB.pad_id)  # "the", "a", "bc"
    return sample_run(1, prompt=prompt)


def test_jsonl_round_trip(tmp_path, run):
    path = write_trace_jsonl(run.trace, tmp_path / "sub" / "trace.jsonl", vocab=VOCAB,
                             final_sequences=run.sequences(), metadata={"seed": 0, "steps": 24})
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["type"] == "header" and len(lines) == 1 + len(run.trace.events())
    header, events = read_trace_jsonl(path)
    assert header["start"] == [[], [], []] and header["num_sequences"] == 3
    assert (header["mask_id"], header["pad_id"], header["vocab_size"]) == (VOCAB.mask_id, VOCAB.pad_id, VOCAB.size)
    assert header["final"] == run.sequences() and header["metadata"] == {"seed": 0, "steps": 24}
    assert events == run.trace.to_records()
    assert {e["kind"] for e in events} == {"unmask", "insert"}


def test_vocab_as_token_list_is_kept(tmp_path, run):
    header, _ = read_trace_jsonl(write_trace_jsonl(run.trace, tmp_path / "t.jsonl", vocab=list(LETTERS)))
    assert header["tokens"]["0"] == "a" and header["tokens"]["26"] == " "
    data = page_data(*read_trace_jsonl(tmp_path / "t.jsonl"))
    assert set(data["strings"].values()) <= set(LETTERS)


@pytest.mark.parametrize("fixture", ["run", "prompted_run"])
def test_replay_states_ends_at_the_final_samples(tmp_path, fixture, request):
    out = request.getfixturevalue(fixture)
    header, events = read_trace_jsonl(write_trace_jsonl(out.trace, tmp_path / "trace.jsonl"))
    steps = sorted({e["step"] for e in events})
    for b, final in enumerate(out.sequences()):
        states = replay_states(header, events, b)
        assert states[0]["step"] == -1 and states[0]["tokens"] == header["start"][b]
        assert [s["step"] for s in states[1:]] == steps
        assert states[-1]["tokens"] == final
        assert VOCAB.mask_id not in final
        sizes = [len(s["tokens"]) for s in states]
        assert sizes == sorted(sizes)  # never deletes
        # once revealed, a token keeps its value (tracked by counting real tokens)
        real = [sum(v != VOCAB.mask_id for v in s["tokens"]) for s in states]
        assert real == sorted(real)
    assert out.trace.replay() == out.sequences()
    with pytest.raises(IndexError):
        replay_states(header, events, len(out.sequences()))


def test_reveal_steps_agree_with_the_replayed_states(tmp_path, prompted_run):
    header, events = read_trace_jsonl(write_trace_jsonl(prompted_run.trace, tmp_path / "trace.jsonl"))
    for b, final in enumerate(prompted_run.sequences()):
        steps = reveal_steps(header, events, b)
        assert len(steps) == len(final)
        assert steps[: len(header["start"][b])] == [-1] * len(header["start"][b])  # the prompt
        states = replay_states(header, events, b)
        # a token revealed at step k is a mask in the state before step k and absent after it
        for position, step in enumerate(steps[len(header["start"][b]):], start=len(header["start"][b])):
            after = next(i for i, s in enumerate(states) if s["step"] == step)
            real_before = sum(v != VOCAB.mask_id for v in states[after - 1]["tokens"])
            real_after = sum(v != VOCAB.mask_id for v in states[after]["tokens"])
            assert step >= 0 and real_after > real_before
        assert sum(1 for e in events if e["sequence"] == b and e["kind"] == "unmask") == len(final) - len(header["start"][b])
        counts = {k: steps.count(k) for k in set(steps) if k >= 0}
        unmasked = {}
        for e in events:
            if e["sequence"] == b and e["kind"] == "unmask":
                unmasked[e["step"]] = unmasked.get(e["step"], 0) + 1
        assert counts == unmasked


def test_length_over_time(tmp_path, prompted_run):
    header, events = read_trace_jsonl(write_trace_jsonl(prompted_run.trace, tmp_path / "trace.jsonl"))
    times, lengths = length_over_time(header, events)
    assert lengths.shape == (len(times), 3) and times[0] == 0.0
    assert np.all(np.diff(times) >= 0) and times[-1] == 1.0
    assert np.all(np.diff(lengths, axis=0) >= 0)
    assert lengths[0].tolist() == [3, 1, 2]
    assert lengths[-1].tolist() == prompted_run.lengths.tolist()
    for b in range(3):
        assert lengths[:, b].tolist() == [len(s["tokens"]) for s in replay_states(header, events, b)]


def test_batches_are_numbered_on(tmp_path):
    first, second = sample_run(2, batch=2), sample_run(3, batch=2)
    path = write_trace_jsonl([first.trace, second.trace], tmp_path / "both.jsonl")
    header, events = read_trace_jsonl(path)
    finals = first.sequences() + second.sequences()
    assert header["num_sequences"] == 4
    assert [replay_states(header, events, b)[-1]["tokens"] for b in range(4)] == finals


def test_bad_files_are_reported(tmp_path):
    path = tmp_path / "bad.jsonl"
    header_line = json.dumps({"type": "header", "format": "flexmdm-trace", "start": [[]]}) + "\n"
    path.write_text(header_line + '{"kind": "insert", "step": 0}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: event field 'sequence' missing"):
        read_trace_jsonl(path)
    path.write_text('{"kind": "insert", "step": 0, "time": 0.0, "sequence": 0, "position": 0, "value": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: the first line must be the flexmdm-trace header"):
        read_trace_jsonl(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="not JSON"):
        read_trace_jsonl(path)
    header = {"start": [[]], "mask_id": 9, "num_sequences": 1}
    with pytest.raises(ValueError, match="reveal at slot 0"):
        replay_states(header, [{"kind": "unmask", "step": 0, "time": 0.0, "sequence": 0, "position": 0, "value": 1}], 0)


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_plots_write_pngs(tmp_path, run):
    times, lengths = length_over_time(*read_trace_jsonl(write_trace_jsonl(run.trace, tmp_path / "t.jsonl")))
    assert _is_png(plot_lengths_over_time(times, lengths, tmp_path / "plots" / "lengths.png"))
    assert _is_png(plot_lengths_over_time(times, lengths[:, 0], tmp_path / "one.png"))
    grid = np.ones((7, 7), dtype=bool)
    grid[1::2, 1:6] = False
    grid[1::2, 3] = True
    cells = [(0, c) for c in range(7)] + [(r, 6) for r in range(1, 7)]
    steps = list(range(len(cells)))[::-1]
    assert _is_png(plot_maze_reveal(grid, cells, steps, tmp_path / "maze.png", subgoals=[(0, 0), (6, 6)]))
    assert _is_png(plot_maze_reveal(grid, cells, [s % 3 for s in steps], tmp_path / "few.png"))
    with pytest.raises(ValueError, match="reveal steps"):
        plot_maze_reveal(grid, cells, steps[:-1], tmp_path / "x.png")


def embedded_page_data(page: str) -> dict:
    """The JSON object a replay page embeds."""
    match = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', page, re.DOTALL)
    assert match, "no embedded data"
    return json.loads(match.group(1))


def test_page_is_self_contained_and_embeds_the_events(tmp_path, prompted_run):
    path = write_trace_jsonl(prompted_run.trace, tmp_path / "trace.jsonl", metadata={"denoiser": "phrase"})
    out = render_page(path, tmp_path / "page" / "index.html", decode=letters_decode, sequence=2)
    page = out.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"https?://", page), "the page must not reference external resources"
    assert not re.search(r"""(src|href)\s*=\s*["']?(//|[a-z]+:)""", page, re.IGNORECASE)
    assert "<link" not in page and "@import" not in page
    for marker in ('id="sequence"', 'id="step"', 'id="play"'):
        assert marker in page
    data = embedded_page_data(page)
    _, events = read_trace_jsonl(path)
    mine = [e for e in events if e["sequence"] == 2]
    assert len(data["events"]) == len(mine) and len(data["steps"]) == len({e["step"] for e in mine})
    assert data["start"] == [1, 2] and data["final_length"] == len(prompted_run.sequences()[2])
    assert data["details"]["denoiser"] == "phrase"
    assert {data["strings"][str(i)] for i in prompted_run.sequences()[2]} <= set(LETTERS)
    with pytest.raises(IndexError):
        render_page(path, tmp_path / "x.html", sequence=3)


def test_page_escapes_token_strings_and_title(tmp_path, run):
    path = write_trace_jsonl(run.trace, tmp_path / "trace.jsonl")
    evil = "</script><b>x"
    out = render_page(path, tmp_path / "page.html", decode=lambda ids: [evil + "&" for _ in ids],
                      title="<i>title</i> </script>")
    page = out.read_text(encoding="utf-8")
    assert evil not in page and "<b>x" not in page and "<i>title" not in page
    assert page.count("</script>") == 2  # the data block's and the code's own closing tags
    assert "&lt;i&gt;title&lt;/i&gt;" in page
    data = embedded_page_data(page)
    assert set(data["strings"].values()) == {evil + "&"}
    assert data["title"] == "<i>title</i> </script>"


def test_page_warns_when_replay_misses_the_recorded_final(tmp_path, run):
    finals = [seq + [0] for seq in run.sequences()]
    path = write_trace_jsonl(run.trace, tmp_path / "trace.jsonl", final_sequences=finals)
    with pytest.warns(UserWarning, match="do not reach"):
        data = page_data(*read_trace_jsonl(path))
    assert data["warning"]


def _letter_tokenizer(folder):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    vocab = {c: i for i, c in enumerate(LETTERS)}
    vocab["[UNK]"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    Tokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(folder / "tokenizer.json"))
    return folder


def test_tokenizer_decoder(tmp_path):
    decode = tokenizer_decoder(_letter_tokenizer(tmp_path / "tok"))
    assert decode([0, 25, 26, 27, 500]) == ["a", "z", " ", "[UNK]", "<500>"]
    assert tokenizer_decoder(tmp_path) is None


def test_view_command(tmp_path, run, capsys):
    path = write_trace_jsonl(run.trace, tmp_path / "trace.jsonl")
    tok = _letter_tokenizer(tmp_path / "model")
    assert main(["view", str(path), "--out", str(tmp_path / "v.html"), "--tokenizer", str(tok), "--sequence", "1"]) == 0
    assert "wrote" in capsys.readouterr().err
    data = embedded_page_data((tmp_path / "v.html").read_text(encoding="utf-8"))
    assert data["sequence"] == 1 and set(data["strings"].values()) <= set(LETTERS)
    assert main(["view", str(path), "--lengths-png", str(tmp_path / "lengths.png")]) == 0  # ids shown
    assert _is_png(tmp_path / "lengths.png")
    data = embedded_page_data((tmp_path / "trace.html").read_text(encoding="utf-8"))
    assert all(key == value for key, value in data["strings"].items())
    assert main(["view", str(path), "--sequence", "7"]) == 2
    assert "outside [0, 3)" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing.jsonl")]) == 2
    assert "no trace file" in capsys.readouterr().err
