"""``flexmdm bench NAME`` reaches ``flexmdm.bench.<name>``'s runner with the command line's options."""

import importlib
import importlib.util
from types import SimpleNamespace

import pytest

from flexmdm.bench import skeleton
from flexmdm.bench.commands import BENCHMARKS
from flexmdm.cli import main


class Started(Exception):
    """Stops a benchmark once its runner has chosen its settings (nothing trained or measured)."""


@pytest.mark.parametrize("quick", [True, False])
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_bench_command_calls_its_runner(name, quick, tmp_path, monkeypatch):
    module = importlib.import_module(f"flexmdm.bench.{name}")
    seen = {}
    start = skeleton.BenchRun.start.__func__

    def record_start(cls, out, **options):
        seen["start"] = (out, options)
        return start(cls, out, **options)

    def record_choice(settings_class, quick, settings=None):
        seen["choice"] = (settings_class, quick, settings)
        raise Started

    monkeypatch.setattr(skeleton.BenchRun, "start", classmethod(record_start))
    monkeypatch.setattr(module, "choose", record_choice)
    argv = ["bench", name, *(["--quick"] if quick else []), "--out", str(tmp_path / "b.json"), "--seed", "3",
            "--work-dir", str(tmp_path / "work")]
    with pytest.raises(Started):
        main(argv)
    out, options = seen["start"]
    assert out == tmp_path / "b.json" and options["seed"] == 3 and options["argv"] == argv
    if name not in ("sampler", "speed"):  # those two train nothing: no work directory
        assert options["work_dir"] == tmp_path / "work"
    settings_class, chosen_quick, settings = seen["choice"]
    assert settings_class.__module__.startswith(module.__name__)  # the bench's own (reasoning: reasoning_settings)
    assert chosen_quick is quick and settings is None
    assert not (tmp_path / "b.json").exists()


def test_bench_retrofit_passes_its_overrides(tmp_path, monkeypatch):
    retrofit = importlib.import_module("flexmdm.bench.retrofit")
    seen = []

    class CheckedSection:
        @staticmethod
        def from_dict(section):
            seen.append(section)
            raise Started

    monkeypatch.setattr(retrofit, "RetrofitConfig", CheckedSection)
    with pytest.raises(Started):
        main(["bench", "retrofit", "--quick", "--out", str(tmp_path / "r.json"), "--retrofit", "time_rank=8",
              "--retrofit", "lora_rank=4"])
    assert seen == [{**retrofit.RetrofitBenchSettings.quick().retrofit, "time_rank": 8, "lora_rank": 4}]


@pytest.mark.parametrize("bench", ["maze", "length", "infill", "reasoning"])
def test_seeds_must_be_positive(bench, tmp_path, capsys):
    assert main(["bench", bench, "--seeds", "0", "--out", str(tmp_path / "m.json")]) == 2
    assert "argument --seeds: must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "seeds"), [([], [0, 1, 2]), (["--seeds", "2"], [0, 1])])
def test_infill_trains_both_models_once_per_seed(options, seeds, tmp_path, monkeypatch):
    from flexmdm.bench import infill

    seen = []

    def train_seeds(numbers, configs):
        seen.append((list(numbers), {kind: config["train"]["seed"] for kind, config in configs(7).items()}))
        raise Started

    monkeypatch.setattr(infill, "InfillTask", lambda **options: SimpleNamespace(corpus=None))
    monkeypatch.setattr(infill, "train_seeds", train_seeds)
    with pytest.raises(Started):
        main(["bench", "infill", "--out", str(tmp_path / "i.json"), *options])
    assert seen == [(seeds, {"flexmdm": 7, "mdm": 7})]


@pytest.mark.parametrize("extra, seeds", [([], [0, 1]), (["--seeds", "3"], [0, 1, 2])])
def test_reasoning_trains_the_seeds_asked_for(tmp_path, monkeypatch, extra, seeds):
    from flexmdm.bench import reasoning

    seen = []

    def train_seeds(numbers, configs):
        seen.append(list(numbers))
        raise Started

    monkeypatch.setattr(reasoning, "train_seeds", train_seeds)
    with pytest.raises(Started):
        main(["bench", "reasoning", "--quick", "--out", str(tmp_path / "r.json"), *extra])
    assert seen == [seeds]  # --quick trains two seeds unless --seeds says otherwise


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_bench_module_is_a_thin_declaration(name):
    """A bench module declares settings, an evaluation and a plot on the shared skeleton: at most 150
    lines; what grows past that belongs in a helper module or in the library."""
    source = importlib.util.find_spec(f"flexmdm.bench.{name}").origin
    with open(source) as handle:
        lines = sum(1 for _ in handle)
    assert lines <= 150, f"flexmdm/bench/{name}.py has {lines} lines"
