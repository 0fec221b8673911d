"""Wrong input that the command already answered in one line, run as a user runs it (a subprocess).

Each row goes through :func:`tests.user_errors.check_user_error`: exit code 2, no traceback, at
most three lines on stderr, the file or argument named, nothing left behind. The rows for loading,
writing and sampling live beside this file in ``test_user_errors_*.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flexmdm.cli import main
from tests.training.test_training import write_config
from tests.user_errors import Case, check_user_error

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny trained FlexMDM toy model (its run folder, holding ``model/``)."""
    directory = tmp_path_factory.mktemp("errors")
    config = write_config(directory, {"train": {"steps": 2, "eval_batches": 0}})
    assert main(["train", str(config)]) == 0
    return directory / "run"


def _config(tmp: Path, _model: Path) -> None:
    write_config(tmp, {"output_dir": str(tmp / "run")})


def _file(name: str, text: str):
    def setup(tmp: Path, _model: Path) -> None:
        (tmp / name).write_text(text)
    return setup


def _trace(tmp: Path, _model: Path) -> None:
    header = {"format": "flexmdm-trace", "version": 1, "num_sequences": 1, "vocab": {"size": 4, "mask_id": 2,
              "pad_id": 3}, "final": [[0]], "metadata": {}}
    (tmp / "trace.jsonl").write_text(json.dumps(header) + "\n" + json.dumps({"kind": "unmask"}) + "\n")


TRAIN = ["train", "{tmp}/config.yaml", "--set"]
CASES = [
    Case("no config file", ["train", "absent.yaml"], "no configuration file"),
    Case("unknown command", ["bogus"], "invalid choice"),
    Case("override without value", [*TRAIN, "train.lr"], "bad override", _config, ["run"]),
    Case("unknown config key", [*TRAIN, "train.nope=1"], "'train.nope'", _config, ["run"]),
    Case("negative steps", [*TRAIN, "train.steps=-1"], "train.steps", _config, ["run"]),
    Case("learning rate not a number", [*TRAIN, "train.lr=fast"], "train.lr", _config, ["run"]),
    Case("one beta", [*TRAIN, "train.betas=[0.9]"], "train.betas", _config, ["run"]),
    Case("EMA decay 1", [*TRAIN, "train.ema_decay=1.0"], "train.ema_decay", _config, ["run"]),
    Case("unknown model kind", [*TRAIN, "model.kind=gpt"], "model.kind", _config, ["run"]),
    Case("unknown schedule", [*TRAIN, "schedules.insertion.name=zigzag"], "schedules.insertion", _config, ["run"]),
    Case("negative task option", [*TRAIN, "data.max_a=-1"], "data.max_a", _config, ["run"]),
    Case("malformed override", [*TRAIN, "train.lr=[1"], "train.lr=[1", _config, ["run"]),
    Case("YAML typo in the file", ["train", "{tmp}/typo.yaml"], "typo.yaml",
         _file("typo.yaml", "model: {kind: flexmdm\n"), ["run"]),
    Case("no exported model", ["sample", "absent_dir"], "no exported model"),
    Case("no model argument", ["sample"], "checkpoint"),
    Case("--num not a number", ["sample", "{model}", "--num", "x"], "--num"),
    Case("--num 0", ["sample", "{model}", "--num", "0"], "--num"),
    Case("--block 0", ["sample", "{model}", "--block", "0"], "--block"),
    Case("--max-length too long", ["sample", "{model}", "--max-length", "999"], "max_length"),
    Case("--param for tau", ["sample", "{model}", "--param", "0.3"], "--param"),
    Case("exact insertion with a rate policy", ["sample", "{model}", "--insertion", "exact"], "rate-free --policy"),
    Case("--certainty without a count head", ["sample", "{model}", "--certainty", "0.9"], "count head"),
    Case("--temperature negative", ["sample", "{model}", "--temperature", "-1"], "--temperature"),
    Case("no trace file", ["view", "{tmp}/missing.jsonl"], "missing.jsonl"),
    Case("trace event without its fields", ["view", "{tmp}/trace.jsonl"], "trace.jsonl", _trace, ["trace.html"]),
    Case("trace not JSON", ["view", "{tmp}/junk.jsonl"], "junk.jsonl", _file("junk.jsonl", "{not json\n"),
         ["junk.html"]),
    Case("unknown bench", ["bench", "nothing", "--out", "{tmp}/b.json"], "invalid choice", None, ["b.json"]),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_wrong_input_gets_one_line(case, tmp_path, model):
    check_user_error(case, tmp_path, model)
