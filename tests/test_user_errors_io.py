"""Damaged files, unreachable data and unwritable outputs: one line each, as the user ran them.

Every row is a :class:`~tests.user_errors.Case` run as a subprocess (``flexmdm ...``) and judged by
:func:`~tests.user_errors.check_user_error`: exit code 2, no traceback, at most three lines, the
file or source named. The rows share one tiny trained model (and a trace of it); a row that
damages a file damages its own copy under ``tmp``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from flexmdm.cli import main
from tests.training.test_training import TINY, write_config
from tests.user_errors import Case, check_user_error

pytestmark = pytest.mark.e2e

TEXT = {
    "model": {"kind": "flexmdm", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_length": 16},
    "data": {"task": "text", "max_length": 16, "vocab_size": 259, "validation_fraction": 0.0},
    "train": {"steps": 2, "batch_size": 4, "eval_batches": 0},
}
"""A tiny text-task run; ``data.source`` (and more) filled in by each row."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The exported model of a tiny FlexMDM run, with a trace of it at ``../trace.jsonl``."""
    directory = tmp_path_factory.mktemp("io")
    config = write_config(directory, {"train": {"steps": 2, "eval_batches": 0}})
    assert main(["train", str(config)]) == 0
    run = directory / "run"
    assert main(["sample", str(run / "model"), "--num", "2", "--steps", "4", "--trace", str(run / "trace.jsonl"),
                 "--out", str(run / "samples.jsonl")]) == 0
    return run / "model"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No network for Hugging Face datasets, and a private corpus cache (the subprocesses inherit both)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("FLEXMDM_CACHE_DIR", str(tmp_path / "cache"))


# -- setups -------------------------------------------------------------------------------------


def damaged(name: str, damage: Callable[[bytes], bytes]) -> Callable[[Path, Path], None]:
    """A setup copying the model to ``tmp/m`` and replacing the bytes of its file ``name``."""
    def setup(tmp: Path, model: Path) -> None:
        path = shutil.copytree(model, tmp / "m") / name
        path.write_bytes(damage(path.read_bytes()))

    return setup


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip_last_bit(data: bytes) -> bytes:
    """One bit of the last tensor's data flipped: the file still parses."""
    return data[:-1] + bytes([data[-1] ^ 1])


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.mkdir()
    except OSError:
        return False
    probe.rmdir()
    return True


def read_only_folder(tmp: Path) -> Path:
    """``tmp/ro``, a folder nobody may write in: mode 0o555, or, for root (whom modes do not stop),
    a link to ``/sys``, where nobody may create files; skips when neither stops writes."""
    folder = tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if not _writable(folder):
        return folder
    folder.chmod(0o755)
    folder.rmdir()
    if _writable(Path("/sys")):
        pytest.skip("no read-only folder here: modes do not stop this user and /sys is writable")
    folder.symlink_to("/sys", target_is_directory=True)
    return folder


def with_trace(tmp: Path, model: Path) -> None:
    shutil.copy(model.parent / "trace.jsonl", tmp / "trace.jsonl")


def read_only_with_trace(tmp: Path, model: Path) -> None:
    read_only_folder(tmp)
    with_trace(tmp, model)


def dev_full_with_trace(tmp: Path, model: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with_trace(tmp, model)


def text_config(data: dict, *, read_only: bool = False) -> Callable[[Path, Path], None]:
    """A setup writing ``tmp/text.yaml`` (output ``tmp/text-run``) whose data section adds ``data``,
    where ``{tmp}`` is filled in; a tiny corpus is at ``tmp/corpus.txt`` and a malformed one at
    ``tmp/corpus.jsonl``."""
    def setup(tmp: Path, model: Path) -> None:
        if read_only:
            read_only_folder(tmp)
        (tmp / "corpus.txt").write_text("the cat sat on the mat.\n\nthe dog sat on the cat.\n")
        (tmp / "corpus.jsonl").write_text('{"text": "the cat sat."}\n{"text": "the dog\n')
        raw = {**TEXT, "data": {**TEXT["data"], **{k: str(v).format(tmp=tmp) for k, v in data.items()}},
               "output_dir": str(tmp / "text-run")}
        (tmp / "text.yaml").write_text(yaml.safe_dump(raw))

    return setup


def toy_config_in_read_only_folder(tmp: Path, model: Path) -> None:
    read_only_folder(tmp)
    (tmp / "toy.yaml").write_text(yaml.safe_dump({**TINY, "output_dir": str(tmp / "toy-run")}))


# -- the table ----------------------------------------------------------------------------------

SAMPLE = ["sample", "{tmp}/m", "--num", "2", "--steps", "4"]

CASES = [
    Case("truncated model.safetensors", SAMPLE, "{tmp}/m/model.safetensors",
         setup=damaged("model.safetensors", half)),
    Case("empty model.safetensors", SAMPLE, "{tmp}/m/model.safetensors",
         setup=damaged("model.safetensors", lambda data: b"")),
    Case("bit-flipped model.safetensors", SAMPLE, "{tmp}/m/model.safetensors does not match the checksum",
         setup=damaged("model.safetensors", flip_last_bit)),
    Case("broken config.json", SAMPLE, "{tmp}/m/config.json", setup=damaged("config.json", half)),
    Case("corrupt tokenizer.json", SAMPLE, "{tmp}/m/tokenizer.json", setup=damaged("tokenizer.json", half)),
    Case("malformed corpus JSONL", ["train", "{tmp}/text.yaml"], "{tmp}/corpus.jsonl:2",
         setup=text_config({"source": "{tmp}/corpus.jsonl"}), absent=["text-run"]),
    Case("hf:openwebtext offline", ["train", "{tmp}/text.yaml"], "hf:openwebtext",
         setup=text_config({"source": "hf:openwebtext"}), absent=["text-run"]),
    Case("train into a read-only folder", ["train", "{tmp}/toy.yaml", "--set", "output_dir={tmp}/ro/run"],
         "{tmp}/ro/run", setup=toy_config_in_read_only_folder),
    Case("corpus cache in a read-only folder", ["train", "{tmp}/text.yaml"], "{tmp}/ro/cache",
         setup=text_config({"source": "{tmp}/corpus.txt", "cache_dir": "{tmp}/ro/cache"}, read_only=True),
         absent=["text-run"]),
    Case("sample --out in a read-only folder", [*SAMPLE[:1], "{model}", *SAMPLE[2:], "--out", "{tmp}/ro/s.jsonl"],
         "{tmp}/ro/s.jsonl", setup=lambda tmp, model: read_only_folder(tmp)),
    Case("view --out in a read-only folder", ["view", "{tmp}/trace.jsonl", "--out", "{tmp}/ro/page.html"],
         "{tmp}/ro/page.html", setup=read_only_with_trace),
    Case("sample --out /dev/full", ["sample", "{model}", "--num", "2", "--steps", "4", "--out", "/dev/full"],
         "/dev/full", setup=dev_full_with_trace),
    Case("view --out /dev/full", ["view", "{tmp}/trace.jsonl", "--out", "/dev/full"], "/dev/full",
         setup=dev_full_with_trace),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_user_error(case, trained, tmp_path):
    check_user_error(case, tmp_path, trained)
