"""Atomic writes: a failed write leaves the old version, a good one replaces it, with normal permissions."""

import os
import stat

import pytest

from flexmdm.atomic import atomic_directory, write_text_atomic


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_directory_is_replaced_only_when_complete(tmp_path):
    target = tmp_path / "deep" / "model"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    assert _mode(target) == 0o777 & ~_umask()  # not tempfile's private 0o700

    with pytest.raises(RuntimeError, match="crash"):
        with atomic_directory(target) as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "one"

    with atomic_directory(target) as staging:
        (staging / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no staging or retired folders left


def test_directory_kept_when_not_replacing(tmp_path):
    target = tmp_path / "cache"
    with atomic_directory(target, replace=False) as staging:
        (staging / "x").write_text("first")
    with atomic_directory(target, replace=False) as staging:  # e.g. another process cached it first
        (staging / "x").write_text("second")
    assert (target / "x").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]


def test_text_file(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "r.json", "{}\n")
    assert path.read_text() == "{}\n" and _mode(path) == 0o666 & ~_umask()
    write_text_atomic(path, "[]\n")
    assert path.read_text() == "[]\n" and [p.name for p in path.parent.iterdir()] == ["r.json"]


def test_directory_files_get_the_usual_permissions(tmp_path):
    """Files written through tempfile (0o600), as safetensors does, end up as a plain open() makes them."""
    import tempfile

    with atomic_directory(tmp_path / "model") as staging:
        descriptor, name = tempfile.mkstemp(dir=staging)
        os.close(descriptor)
        os.replace(name, staging / "weights")
        (staging / "run.sh").write_text("#!/bin/sh\n")
        (staging / "run.sh").chmod(0o700)
    assert _mode(tmp_path / "model" / "weights") == 0o666 & ~_umask()
    assert _mode(tmp_path / "model" / "run.sh") == 0o777 & ~_umask()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_text_to_a_device_is_written_in_place_and_named_on_failure():
    """Renaming over /dev/full would replace the device: it is written directly, and its error names it."""
    with pytest.raises(OSError, match="/dev/full") as error:
        write_text_atomic("/dev/full", "x" * 10000)
    assert error.value.filename == "/dev/full"
    assert not os.path.isfile("/dev/full")
