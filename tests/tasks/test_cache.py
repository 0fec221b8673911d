"""Corpus caches: keyed by options and source, read when whole, rebuilt when damaged."""

from flexmdm.tasks.cache import cache_folder, load_or_build, source_identity


def test_load_or_build_reads_builds_and_rebuilds(tmp_path):
    calls = []

    def build():
        calls.append("build")
        return "corpus"

    def write(corpus, path):
        path.mkdir(parents=True, exist_ok=True)
        (path / "corpus.npz").write_text(corpus)

    def read(path):
        text = (path / "corpus.npz").read_text()
        if text != "corpus":
            raise ValueError("damaged")
        return "from cache"

    path = tmp_path / "text-key"
    assert load_or_build(path, read, build, write) == "corpus" and calls == ["build"]
    assert load_or_build(path, read, build, write) == "from cache" and calls == ["build"]
    (path / "corpus.npz").write_text("garbage")
    assert load_or_build(path, read, build, write) == "corpus" and calls == ["build", "build"]


def test_cache_folder_keys_on_options_and_source(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one")
    first = cache_folder("text", tmp_path, {"options": {"n": 1}, "source": source_identity(str(data))})
    assert first.parent == tmp_path and first.name.startswith("text-")
    assert cache_folder("text", tmp_path, {"options": {"n": 2}, "source": source_identity(str(data))}) != first
    (data / "a.txt").write_text("changed!")  # a new size: a new identity
    assert cache_folder("text", tmp_path, {"options": {"n": 1}, "source": source_identity(str(data))}) != first
    monkeypatch.setenv("FLEXMDM_CACHE_DIR", str(tmp_path / "env"))
    assert cache_folder("infill", None, {}).parent == tmp_path / "env"
    assert source_identity("hf:no-such-dataset") == {"source": "hf:no-such-dataset"}
