"""The ``flexmdm`` command: train + sample end to end, user errors, and the slow learning test."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flexmdm.cli import build_parser, main
from flexmdm.tasks.toy import ToyLanguage
from flexmdm.viz import read_trace_jsonl, replay_sequence
from tests.training.test_training import subprocess_env, write_config
from tests.viz.test_viz import embedded_page_data

REPO = Path(__file__).resolve().parents[1]
VOCAB = ToyLanguage().vocab


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny FlexMDM run (its output directory)."""
    directory = tmp_path_factory.mktemp("cli")
    config = write_config(directory, {"train": {"steps": 6, "eval_batches": 1, "log_every": 3}})
    assert main(["train", str(config), "--set", "train.save_every=3"]) == 0
    return directory / "run"


def check_rows(rows: list[dict], max_length: int) -> None:
    for row in rows:
        assert row["length"] == len(row["tokens"]) <= max_length and row["nfe"] >= 1
        assert VOCAB.mask_id not in row["tokens"] and VOCAB.pad_id not in row["tokens"]


def test_train_then_sample_flexmdm(trained, tmp_path):
    out, trace = tmp_path / "samples.jsonl", tmp_path / "trace.jsonl"
    code = main(["sample", str(trained / "model"), "--num", "12", "--steps", "8", "--batch-size", "5",
                 "--out", str(out), "--trace", str(trace), "--seed", "1"])
    assert code == 0
    rows = read_jsonl(out)
    assert len(rows) == 12
    check_rows(rows, 12)  # the task's longest string: max_a + max_b
    assert all(row["text"] == " ".join("ab"[i] for i in row["tokens"]) for row in rows)
    header, events = read_trace_jsonl(trace)
    assert header["num_sequences"] == 12 and header["final"] == [row["tokens"] for row in rows]
    # replaying the events of every batch rebuilds every sample; each token was revealed by an event
    assert [replay_sequence(header, events, b) for b in range(12)] == [row["tokens"] for row in rows]
    assert sum(e["kind"] == "unmask" for e in events) == sum(row["length"] for row in rows)
    # the page decodes with the traced model's tokenizer by default
    assert main(["view", str(trace), "--sequence", "11"]) == 0
    strings = embedded_page_data(trace.with_suffix(".html").read_text(encoding="utf-8"))["strings"]
    assert strings and set(strings.values()) <= {"a", "b"}
    # same seed, same samples; a run directory works in place of its model/
    again = tmp_path / "again.jsonl"
    main(["sample", str(trained), "--num", "12", "--steps", "8", "--batch-size", "5", "--out", str(again), "--seed", "1"])
    assert read_jsonl(again) == rows


@pytest.mark.parametrize("policy, param, block", [("med", "0.5", None), ("eb", None, None), ("confidence", None, None),
                                                 ("margin", "2", None), ("random", None, None), ("med", None, "3"),
                                                 ("tau", None, "2")])
def test_sample_policies_and_prompt(trained, tmp_path, policy, param, block):
    out = tmp_path / "s.jsonl"
    args = ["sample", str(trained / "checkpoints" / "step_000006"), "--num", "6", "--steps", "6", "--policy", policy,
            "--prompt", "a a", "--max-length", "10", "--temperature", "0.5", "--out", str(out)]
    assert main(args + (["--param", param] if param else []) + (["--block", block] if block else [])) == 0
    rows = read_jsonl(out)
    check_rows(rows, 10)
    assert all(row["tokens"][:2] == [0, 0] and row["text"].startswith("a a") for row in rows)


@pytest.mark.parametrize("extra", [["--insertion", "binomial", "--refresh"],
                                   ["--insertion", "exact", "--policy", "confidence"]], ids=["binomial", "exact"])
def test_sample_with_count_aware_insertion(trained, tmp_path, extra):
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(trained), "--num", "6", "--steps", "8", "--max-length", "10", "--out", str(out),
                 *extra]) == 0
    check_rows(read_jsonl(out), 10)


def test_train_then_sample_mdm(tmp_path):
    config = write_config(tmp_path, {"model": {"kind": "mdm"}, "train": {"steps": 2, "eval_batches": 0}})
    assert main(["train", str(config)]) == 0
    out = tmp_path / "mdm.jsonl"
    assert main(["sample", str(tmp_path / "run" / "model"), "--num", "5", "--steps", "4", "--max-length", "9",
                 "--prompt", "a", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    check_rows(rows, 9)
    assert all(row["tokens"][:1] == [0] for row in rows)
    assert main(["sample", str(tmp_path / "run" / "model"), "--trace", str(tmp_path / "t.jsonl")]) == 2


@pytest.mark.parametrize("argv, fragment", [
    (["train", "absent.yaml"], "no configuration file"),
    (["sample", "absent_dir"], "no exported model"),
    (["sample"], "checkpoint"),
    (["bogus"], "invalid choice"),
    (["sample", ".", "--num", "x"], "--num"),
])
def test_user_errors_are_one_line(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("flexmdm: error:") and fragment in err


def test_config_and_sampling_errors_are_one_line(trained, tmp_path, capsys):
    config = write_config(tmp_path)
    cases = [
        (["train", str(config), "--set", "train.lr"], "bad override"),
        (["train", str(config), "--set", "train.nope=1"], "'train.nope'"),
        (["train", str(config), "--set", "train.steps=-1"], "train.steps"),
        (["sample", str(trained), "--num", "0"], "--num"),
        (["sample", str(trained), "--block", "0"], "--block"),
        (["sample", str(trained), "--prompt", "a c"], "--prompt"),
        (["sample", str(trained), "--max-length", "999"], "max_length"),
        (["sample", str(trained), "--param", "0.3"], "--param"),
        (["sample", str(trained), "--insertion", "exact"], "rate-free --policy"),
        (["sample", str(trained), "--certainty", "0.9"], "count head"),
        (["sample", str(trained), "--insertion", "exact", "--policy", "med", "--refresh"], "refresh"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and fragment in err, (argv, err)


def test_parser_lists_subcommands():
    help_text = build_parser().format_help()
    assert "train" in help_text and "sample" in help_text


@pytest.mark.e2e
def test_console_script_and_module_entry_points():
    script = Path(sys.executable).parent / "flexmdm"
    assert subprocess.run([str(script), "--help"], capture_output=True).returncode == 0
    done = subprocess.run([sys.executable, "-m", "flexmdm.cli", "sample", "nowhere"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_toy_config_learns_the_length_distribution(tmp_path):
    """configs/toy.yaml trains within 3 CPU-minutes; sampled lengths match the data's (TV <= 0.1).

    Training runs on one thread, so its CPU time is the work done (spinning OpenMP threads
    inflate it on a busy machine). 3000 samples are compared with the task's exact length
    distribution: with 40 lengths the sampling noise alone is TV ≈ 0.075 at 1000 samples and
    ≈ 0.043 at 3000.
    """
    env, flexmdm = subprocess_env(), str(Path(sys.executable).parent / "flexmdm")  # one thread
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([flexmdm, "train", str(REPO / "configs" / "toy.yaml"), "--set", f"output_dir={tmp_path / 'toy'}"],
                   env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    train_wall = time.perf_counter() - start
    samples = tmp_path / "samples.jsonl"
    subprocess.run([flexmdm, "sample", str(tmp_path / "toy" / "model"), "--num", "3000", "--steps", "32",
                    "--batch-size", "500", "--out", str(samples)], env=env, check=True, capture_output=True)
    rows = read_jsonl(samples)
    task = ToyLanguage()
    lengths = torch.tensor([row["length"] for row in rows])
    check_rows(rows, task.max_length)
    histogram = torch.bincount(lengths, minlength=task.max_length + 1).double() / len(rows)
    tv = 0.5 * float((histogram - task.length_distribution()).abs().sum())
    valid = sum(task.is_member(row["tokens"]) for row in rows) / len(rows)
    print(f"\ntrain: {cpu_seconds:.0f} CPU-s, {train_wall:.0f} s wall; length TV {tv:.3f}; valid strings {valid:.3f}")
    assert cpu_seconds <= 180
    assert tv <= 0.1
    assert valid >= 0.8


def test_io_errors_on_user_paths_are_one_line_and_bugs_keep_their_traceback(tmp_path, capsys):
    import errno

    from flexmdm.cli import _path_problem

    assert _path_problem(PermissionError(errno.EACCES, "Permission denied", "/x/out")) == (
        "/x/out: Permission denied; choose a writable location or fix its permissions")
    assert "free some space" in _path_problem(OSError(errno.ENOSPC, "No space left on device", "/dev/full"))
    assert _path_problem(OSError(errno.ENOSPC, "No space left on device")) is None  # no path: not the user's
    assert _path_problem(OSError(errno.EBADF, "Bad file descriptor", "/x")) is None  # a bug
    assert _path_problem(ValueError("x")) is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = write_config(tmp_path, {"train": {"steps": 1}})
    assert main(["train", str(config), "--set", f"output_dir={blocker / 'run'}"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"flexmdm: error: {blocker / 'run'}: Not a directory; a part of the path is a file, not a folder")


def test_ctrl_c_outside_training_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("flexmdm.cli.run_view", interrupted)
    assert main(["view", "trace.jsonl"]) == 130
    assert capsys.readouterr().err == "flexmdm: interrupted\n"
