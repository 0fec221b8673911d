"""``flexmdm sample`` (and the task registry, ``--version``) used as a user would, in subprocesses.

Wrong input: one :class:`~tests.user_errors.Case` per row, judged by
:func:`~tests.user_errors.check_user_error` (exit code 2, one short line naming the argument,
nothing left behind). Legitimate requests: ``--block`` without a prompt, Ctrl-C during sampling,
infilling with ``--suffix``, ``--version``. One tiny FlexMDM and one tiny MDM are trained once.
The tests that start subprocesses are marked ``e2e`` (run them with ``-m e2e``).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

import flexmdm
from flexmdm.cli import main
from flexmdm.tasks.toy import ToyLanguage
from flexmdm.viz import read_trace_jsonl, replay_sequence
from tests.training.test_training import subprocess_env, write_config
from tests.user_errors import Case, check_user_error, run_flexmdm

REPO = Path(__file__).resolve().parents[1]
VOCAB = ToyLanguage().vocab  # a = 0, b = 1, MASK = 2, PAD = 3


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> SimpleNamespace:
    """Tiny trained models: ``flexmdm`` and ``mdm`` (their ``model/`` folders)."""
    folders = {}
    for kind in ("flexmdm", "mdm"):
        directory = tmp_path_factory.mktemp(kind)
        config = write_config(directory, {"model": {"kind": kind}, "train": {"steps": 4, "eval_batches": 0}})
        assert main(["train", str(config)]) == 0
        folders[kind] = directory / "run" / "model"
    return SimpleNamespace(**folders)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_rows(rows: list[dict], max_length: int) -> None:
    """Every row is a finished sample: real tokens only, within the length cap."""
    for row in rows:
        assert row["length"] == len(row["tokens"]) <= max_length and row["nfe"] >= 1
        assert set(row["tokens"]) <= {0, 1}


# -- wrong input -----------------------------------------------------------------------------------


def copy_without_tokenizer(tmp: Path, model: Path) -> None:
    """``tmp/ids``: the model without its tokenizer, so prompts are token ids."""
    shutil.copytree(model, tmp / "ids", ignore=shutil.ignore_patterns("tokenizer.json"))


def make_blocker(tmp: Path, model: Path) -> None:
    """``tmp/blocker``: a file where the output path wants a folder."""
    (tmp / "blocker").write_text("not a folder\n")


def write_typo_config(tmp: Path, model: Path) -> None:
    """``tmp/typo.yaml``: a config naming a task that does not exist."""
    write_config(tmp, {"data": {"task": "toyy"}}, name="typo.yaml")


SAMPLE = ["sample", "{model}", "--num", "4", "--steps", "4"]
# So many samples that a check made after sampling would never be reached within the timeout.
ENDLESS = ["sample", "{model}", "--num", "100000000", "--steps", "64", "--batch-size", "64"]

CASES = [
    Case("prompt-unknown-word", [*SAMPLE, "--prompt", "a c b zz"],
         "--prompt 'a c b zz': 'c', 'zz' not in the model's vocabulary"),
    Case("prompt-unknown-id", ["sample", "{tmp}/ids", "--prompt", "0 7 1"], "token id 7 is not a real token",
         setup=copy_without_tokenizer),
    Case("param-tau", [*SAMPLE, "--param", "0.5"], "--param is not used by --policy tau"),
    Case("param-confidence", [*SAMPLE, "--policy", "confidence", "--param", "5"],
         "--param 5: --policy confidence takes a probability threshold in [0, 1]"),
    Case("param-med", [*SAMPLE, "--policy", "med", "--param", "-1"], "--policy med takes an entropy threshold λ >= 0"),
    Case("param-eb", [*SAMPLE, "--policy", "eb", "--param", "nan"], "--policy eb takes an entropy budget γ >= 0"),
    Case("param-adaptive", [*SAMPLE, "--policy", "margin", "--param", "0"],
         "--policy margin takes a sliding-window factor γ1 > 0"),
    Case("out-under-a-file", [*ENDLESS, "--out", "{tmp}/blocker/samples.jsonl"],
         "--out {tmp}/blocker/samples.jsonl: cannot write there ({tmp}/blocker is not a directory)",
         setup=make_blocker),
    Case("out-is-a-folder", [*ENDLESS, "--out", "{tmp}"], "--out {tmp} is a directory"),
    Case("trace-unwritable", [*ENDLESS, "--out", "{tmp}/s.jsonl", "--trace", "{tmp}/blocker/t.jsonl"],
         "--trace {tmp}/blocker/t.jsonl: cannot write there", setup=make_blocker,
         absent=["s.jsonl", "s.jsonl.partial"]),
    Case("out-full-device", [*SAMPLE, "--out", "/dev/full"], "--out /dev/full: No space left on device"),
    Case("suffix-empty", [*SAMPLE, "--suffix", ""], "--suffix is empty"),
    Case("suffix-unknown-word", [*SAMPLE, "--prompt", "a", "--suffix", "b q", "--out", "{tmp}/s.jsonl"],
         "--suffix 'b q': 'q' not in the model's vocabulary", absent=["s.jsonl", "s.jsonl.partial"]),
    Case("suffix-fills-the-canvas", [*SAMPLE, "--prompt", "a a a a a a", "--suffix", "b b b b b b", "--max-length", "12"],
         "--prompt and --suffix hold 12 tokens, not less than --max-length 12"),
    Case("device-unknown", [*SAMPLE, "--device", "gpu"], "device 'gpu' is not a device name"),
    Case("device-absent", [*SAMPLE, "--device", "cuda:99"], "device 'cuda:99' is not available here"),
    Case("unknown-task", ["train", "{tmp}/typo.yaml"],
         "unknown task 'toyy'; registered tasks: infill, instruct, maze, reasoning, text, toy",
         setup=write_typo_config, absent=["run"]),
]


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=str)
def test_wrong_input_is_one_line(case, models, tmp_path):
    check_user_error(case, tmp_path, models.flexmdm)


# -- legitimate requests ---------------------------------------------------------------------------


@pytest.mark.e2e
def test_block_without_a_prompt_samples(models, tmp_path):
    """FlexMDM starts from the empty string; --block must still sample (any policy)."""
    out = tmp_path / "blocks.jsonl"
    done = run_flexmdm(["sample", str(models.flexmdm), "--block", "4", "--num", "6", "--steps", "8",
                        "--out", str(out)])
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(out)
    assert len(rows) == 6 and not (tmp_path / "blocks.jsonl.partial").exists()
    check_rows(rows, 12)
    for model, policy in ((models.flexmdm, "confidence"), (models.mdm, "margin")):
        assert main(["sample", str(model), "--block", "3", "--policy", policy, "--num", "5", "--steps", "6",
                     "--out", str(out)]) == 0
        check_rows(read_jsonl(out), 12)


def read_available(descriptor: int) -> bytes:
    """What a pseudo-terminal holds now (nothing once its other side is closed)."""
    data = b""
    while select.select([descriptor], [], [], 0)[0]:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # Linux: EIO once the child has closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.e2e
def test_ctrl_c_keeps_every_finished_batch(models, tmp_path):
    """In a terminal a progress bar runs; SIGINT after the first batch is on disk keeps every
    finished batch in OUT.partial (the first rows of an uninterrupted run with the same seed), their
    trace in TRACE.partial, leaves an older OUT untouched, says so in one line and exits with 130."""
    out, trace = tmp_path / "samples.jsonl", tmp_path / "trace.jsonl"
    partial = tmp_path / "samples.jsonl.partial"
    out.write_text("an older, finished run\n")
    terminal, child_side = pty.openpty()
    fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    argv = ["sample", str(models.flexmdm), "--num", "100000000", "--batch-size", "8", "--steps", "16",
            "--seed", "5", "--out", str(out), "--trace", str(trace)]
    child = subprocess.Popen([sys.executable, "-m", "flexmdm.cli", *argv], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=child_side, env=subprocess_env())
    os.close(child_side)
    screen = b""
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and partial.read_bytes().count(b"\n") >= 8):
            assert child.poll() is None and time.monotonic() < deadline, screen.decode(errors="replace")
            screen += read_available(terminal)
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=60) == 130
        screen += read_available(terminal)
    finally:
        child.kill()
        os.close(terminal)
    text = screen.decode(errors="replace")
    assert "sampling:" in text and "sample/s" in text  # tqdm's bar, drawn on the terminal
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    rows = read_jsonl(partial)
    assert rows and len(rows) % 8 == 0
    assert f"interrupted: {len(rows)} of 100000000 samples written to {partial} (partial;" in last
    assert out.read_text() == "an older, finished run\n"
    header, events = read_trace_jsonl(tmp_path / "trace.jsonl.partial")
    assert header["final"] == [row["tokens"] for row in rows]
    assert [replay_sequence(header, events, b) for b in range(len(rows))] == header["final"]
    reference = tmp_path / "reference.jsonl"
    assert main(["sample", str(models.flexmdm), "--num", str(len(rows)), "--batch-size", "8", "--steps", "16",
                 "--seed", "5", "--out", str(reference)]) == 0
    assert read_jsonl(reference) == rows and not (tmp_path / "reference.jsonl.partial").exists()


@pytest.mark.parametrize("kind", ["flexmdm", "mdm"])
def test_suffix_infills_between_prompt_and_suffix(models, tmp_path, kind):
    out = tmp_path / "infill.jsonl"
    assert main(["sample", str(getattr(models, kind)), "--prompt", "a b", "--suffix", "b a a", "--num", "6",
                 "--steps", "6", "--max-length", "10", "--policy", "med", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    check_rows(rows, 10)
    assert len(rows) == 6
    for row in rows:
        assert row["tokens"][:2] == [0, 1] and row["tokens"][-3:] == [1, 0, 0] and row["length"] >= 5
        assert row["text"].startswith("a b") and row["text"].endswith("b a a")
    if kind == "flexmdm":  # something was inserted between them
        assert max(row["length"] for row in rows) > 5
    assert main(["sample", str(getattr(models, kind)), "--suffix", "a", "--num", "2", "--steps", "4",
                 "--out", str(out)]) == 0
    assert all(row["tokens"][-1:] == [0] for row in read_jsonl(out))


def test_mdm_takes_rate_free_policies_but_not_the_rule_final_fill(models, tmp_path, capsys):
    out = tmp_path / "mdm.jsonl"
    assert main(["sample", str(models.mdm), "--policy", "eb", "--num", "3", "--steps", "4", "--out", str(out)]) == 0
    check_rows(read_jsonl(out), 12)
    assert main(["sample", str(models.mdm), "--policy", "eb", "--final-fill", "rule", "--out", str(out)]) == 2
    assert "--final-fill: final_fill 'rule' is for FlexMDM models" in capsys.readouterr().err


@pytest.mark.e2e
def test_version_is_the_pyproject_version():
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    done = run_flexmdm(["--version"])
    assert done.returncode == 0 and done.stdout.strip() == f"flexmdm {expected}"
    assert flexmdm.__version__ == expected
