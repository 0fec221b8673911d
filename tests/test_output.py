"""Partial output files: complete under their final name only, interrupted ones cut to whole lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexmdm.output import OutputError, PartialFile


def test_a_file_gets_its_name_only_when_finished(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    file = PartialFile(path, "--out")
    assert file.partial == tmp_path / "sub" / "rows.jsonl.partial" and file.partial.exists()
    file.write_lines(["1\n", "2\n"])
    assert file.partial.read_text() == "1\n2\n" and not path.exists()
    assert file.finish() == path
    assert path.read_text() == "1\n2\n" and not file.partial.exists()


def test_an_interrupted_write_leaves_only_whole_batches(tmp_path):
    file = PartialFile(tmp_path / "rows.jsonl", "--out")
    file.write_lines(["first\n"])

    def interrupted():
        yield "second\n"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        file.write_lines(interrupted())
    assert file.keep() == tmp_path / "rows.jsonl.partial"
    assert file.partial.read_text() == "first\n" and not (tmp_path / "rows.jsonl").exists()


def test_discard_and_write_errors(tmp_path):
    file = PartialFile(tmp_path / "rows.jsonl", "--out")
    file.discard()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError, match="is a directory"):
        PartialFile(tmp_path, "--out")
    (tmp_path / "plain").write_text("")
    with pytest.raises(OutputError, match=f"cannot write there \\({tmp_path / 'plain'} is not a directory\\)"):
        PartialFile(tmp_path / "plain" / "rows.jsonl", "--trace")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_device_is_written_in_place():
    file = PartialFile(Path("/dev/full"), "--out")
    assert file.in_place
    with pytest.raises(OutputError, match="--out /dev/full: No space left on device"):
        file.write_lines(["row\n"])
    assert Path("/dev/full").exists()


def test_a_link_is_written_through_and_stays_a_link(tmp_path):
    target, link = tmp_path / "target.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    link.symlink_to(target)
    file = PartialFile(link, "--out")
    assert file.in_place
    file.write_lines(["new\n"])
    assert file.finish() == link
    assert link.is_symlink() and target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "target.jsonl"]
