"""Side-by-side training: interrupting the parent stops its training processes too; a process's error
is raised in the parent."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from flexmdm.bench.side_by_side import train_side_by_side
from tests.training.test_training import TINY, subprocess_env

pytestmark = pytest.mark.e2e

LAUNCH = "import json, sys; from flexmdm.bench.side_by_side import train_side_by_side; " \
         "train_side_by_side(json.loads(sys.argv[1]))"


def _send_to_parent(parent: subprocess.Popen) -> None:
    parent.send_signal(signal.SIGTERM)


def _send_as_timeout_does(parent: subprocess.Popen) -> None:
    """coreutils ``timeout`` signals its child, then the whole process group: the parent twice."""
    parent.send_signal(signal.SIGTERM)
    os.killpg(parent.pid, signal.SIGTERM)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side by side needs a core per model")
@pytest.mark.parametrize("send", [_send_to_parent, _send_as_timeout_does], ids=["parent", "process-group"])
def test_sigterm_stops_the_parent_and_its_training_processes(tmp_path, send):
    runs = {name: tmp_path / name for name in ("first", "second")}
    configs = {name: {**TINY, "train": {**TINY["train"], "steps": 100_000, "save_every": 1, "eval_every": 0},
                      "output_dir": str(run)} for name, run in runs.items()}
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as err:
        parent = subprocess.Popen([sys.executable, "-c", LAUNCH, json.dumps(configs)], env=subprocess_env(),
                                  stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    checkpoints = [run / "checkpoints" / "latest" for run in runs.values()]
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in checkpoints) and parent.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(path.exists() for path in checkpoints), "the training processes never checkpointed"

    send(parent)
    assert parent.wait(timeout=60) == 128 + signal.SIGTERM
    metrics = [run / "metrics.jsonl" for run in runs.values()]
    sizes = [path.stat().st_size for path in metrics]
    time.sleep(1.5)
    assert [path.stat().st_size for path in metrics] == sizes, "a training process outlived its parent"
    said = stderr.read_text()
    assert "Traceback" not in said  # each process says where it stopped, in one line
    assert all(f"{run}: stopped by SIGTERM at step" in said for run in runs.values())


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side by side needs a core per model")
def test_an_error_in_one_process_is_raised_once_the_other_has_stopped(tmp_path):
    running = {**TINY, "train": {**TINY["train"], "steps": 100_000, "eval_every": 0}, "output_dir": str(tmp_path / "ok")}
    failing = {**TINY, "data": {"task": "no-such-task"}, "output_dir": str(tmp_path / "bad")}
    started = time.monotonic()
    with pytest.raises(ValueError, match="no-such-task"):
        train_side_by_side({"running": running, "failing": failing})
    assert time.monotonic() - started < 120, "the parent waited for the other run to finish"
    assert not [child for child in multiprocessing.active_children() if child.name.startswith("train-")]
