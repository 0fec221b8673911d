"""The shape every benchmark shares: settings → configs → train side by side → evaluate → JSON and plots.

A benchmark module declares only what is its own:

1. a settings dataclass: its defaults are the committed run, ``quick()`` a small one, and its
   ``run_*`` function takes an instance (``settings=``) so tests pass tiny settings directly;
2. the training configurations, one ``config_from_dict`` mapping per model
   (:func:`flexmdm.bench.train_config.benchmark_train_config` gives FlexMDM its own options);
3. an evaluation of the trained runs, through :class:`flexmdm.Pipeline` (``Pipeline.from_pretrained(
   run.model_dir)``), into result rows (:func:`train_fields` adds how each model was trained);
4. its figures (:mod:`flexmdm.bench.figures`).

Its ``run_*`` function then reads::

    run = BenchRun.start(out, seed=seed, work_dir=work_dir, argv=argv)
    settings = choose(MySettings, quick, settings)
    trained, threads = train_side_by_side(my_configs(settings, run.work, seed))
    rows = [{**evaluate(trained[name], ...), **train_fields(trained[name], threads)} for name in trained]
    my_figure(rows, run.png())
    return run.write({"config": asdict(settings), "results": rows, "plot": run.png().name})

and ``main = bench_main(run_mine)`` is its ``flexmdm bench NAME`` entry point
(:mod:`flexmdm.bench.commands`).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flexmdm.bench.record import Stopwatch, command_line, machine_info, write_json
from flexmdm.training.trainer import TrainResult

__all__ = ["BenchRun", "Column", "bench_main", "choose", "format_rows", "train_fields"]

Settings = TypeVar("Settings")
Result = TypeVar("Result")


def choose(settings_class: type[Settings], quick: bool, settings: Settings | None = None) -> Settings:
    """``settings`` when given, else the class's ``quick()`` or its defaults."""
    if settings is not None:
        return settings
    return settings_class.quick() if quick else settings_class()


@dataclass
class BenchRun:
    """One run of a benchmark: where its record, plots and training runs go.

    Attributes:
        out: the JSON record; plots go beside it.
        seed: the run's seed.
        work: where the training runs go (default: ``out`` without its suffix); a rerun resumes them.
        argv: the command line, as recorded (None: this process's).
        phases: wall seconds of the steps run through :meth:`timed`, by name.
    """

    out: Path
    seed: int
    work: Path
    argv: list[str] | None
    watch: Stopwatch = field(default_factory=Stopwatch)
    phases: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, out: str | Path, *, seed: int = 0, work_dir: str | Path | None = None,
              argv: list[str] | None = None) -> BenchRun:
        out = Path(out)
        return cls(out, seed, Path(work_dir) if work_dir is not None else out.with_suffix(""), argv)

    def png(self, tag: str = "") -> Path:
        """A plot beside the record: ``<out stem><tag>.png`` (its folder created)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        return self.out.with_name(f"{self.out.stem}{tag}.png")

    def timed(self, name: str, function: Callable[..., Result], *args: Any) -> Result:
        """``function(*args)``, its wall time kept as ``phases[name]``."""
        watch = Stopwatch()
        result = function(*args)
        self.phases[name] = watch.seconds
        return result

    def write(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Write and return the record: the command, the seed, the wall time, ``fields`` and the machine."""
        record = {"command": command_line(self.argv), "seed": self.seed, "wall_seconds": self.watch.seconds,
                  **fields, "machine": machine_info()}
        write_json(record, self.out)
        return record


def train_fields(run: TrainResult, threads: int) -> dict[str, Any]:
    """How a model of a result row was trained: its wall time, steps and CPU threads."""
    return {"train_seconds": run.train_seconds, "train_steps": run.steps, "train_threads": threads}


Column = tuple[str, str | Callable[[dict[str, Any]], Any], str]
"""A table column: its header, the row's key (or a function of the row) and a format spec with its width."""


def format_rows(rows: list[dict[str, Any]], columns: list[Column]) -> str:
    """``rows`` as a text table (headers aligned as the values; None shown as nan)."""
    def cell(row: dict[str, Any], key: str | Callable[[dict[str, Any]], Any], spec: str) -> str:
        value = key(row) if callable(key) else row[key]
        return format(math.nan if value is None else value, spec)

    widths = [re.match(r"[<>^]?\d*", spec).group() for _, _, spec in columns]
    lines = [" ".join(format(header, width) for (header, _, _), width in zip(columns, widths))]
    lines += [" ".join(cell(row, key, spec) for _, key, spec in columns) for row in rows]
    return "\n".join(lines)


def bench_main(runner: Callable[..., dict[str, Any]],
               options: Callable[[argparse.Namespace], dict[str, Any]] = lambda args: {}
               ) -> Callable[[argparse.Namespace], int]:
    """The ``main(args) -> exit code`` of ``flexmdm bench NAME`` for ``runner(out, quick=, seed=, work_dir=,
    argv=, **options(args))``."""

    def main(args: argparse.Namespace) -> int:
        runner(args.out, quick=args.quick, seed=args.seed, work_dir=args.work_dir, argv=args.argv, **options(args))
        print(f"wrote {args.out} and the plots beside it")
        return 0

    return main
