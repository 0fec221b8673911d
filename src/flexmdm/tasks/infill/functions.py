"""Python functions extracted with :mod:`ast` from the installed standard library.

Every ``def`` / ``async def`` of every module (methods and nested functions included) is taken
with its docstring removed and printed back by :func:`ast.unparse`: one canonical layout
(four-space indentation, no comments, no blank lines), so a line of code has one spelling and
exact match of a generated line is meaningful. Identical functions are kept once.

:func:`split_by_module` sends whole modules to the held-out set by a hash of their dotted name,
so no held-out function shares a file with a training function.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import sysconfig
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flexmdm.tasks.text.corpus import _stdlib_files

__all__ = ["FunctionSource", "extract_functions", "module_name", "split_by_module", "stdlib_functions"]


@dataclass(frozen=True)
class FunctionSource:
    """One function: its module (dotted name), qualified name and canonical source.

    ``source`` ends with a newline and parses on its own (it starts at column 0).
    """

    module: str
    name: str
    source: str

    @property
    def lines(self) -> list[str]:
        """The source's lines, each with its ``\\n``."""
        return self.source.splitlines(keepends=True)


def _without_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.FunctionDef | ast.AsyncFunctionDef:
    node = copy.deepcopy(node)
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:] or [ast.Pass()]
    node.body = body
    node.decorator_list = []
    return node


def extract_functions(source: str | bytes, module: str = "<string>") -> list[FunctionSource]:
    """Every function defined in ``source``, docstring and decorators removed, via ``ast.unparse``.

    Functions come in source order (a method after its class's earlier methods, a nested
    function after its enclosing one).

    Raises:
        SyntaxError: ``source`` does not parse.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old files
        tree = ast.parse(source)
    found: list[FunctionSource] = []

    def visit(node: ast.AST, qualifier: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{qualifier}{child.name}"
                found.append(FunctionSource(module, name, ast.unparse(_without_docstring(child)) + "\n"))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{qualifier}{child.name}.")
            else:
                visit(child, qualifier)

    visit(tree, "")
    return found


def module_name(path: Path, root: Path) -> str:
    """``root/a/b.py`` → ``a.b``; ``root/a/__init__.py`` → ``a``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stdlib_functions(root: str | Path | None = None) -> list[FunctionSource]:
    """The functions of the standard library's modules, in sorted path order, duplicates dropped.

    Test packages and ``site-packages`` are skipped (as for the docstring corpus), and so are
    files that do not parse.

    Args:
        root: the library folder; default ``sysconfig.get_paths()["stdlib"]``.
    """
    root = Path(root if root is not None else sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"standard library folder {root} does not exist")
    functions: list[FunctionSource] = []
    seen: set[str] = set()
    for path in _stdlib_files(root):
        try:
            extracted = extract_functions(path.read_bytes(), module_name(path, root))
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError):
            continue
        for function in extracted:
            if function.source not in seen:
                seen.add(function.source)
                functions.append(function)
    return functions


def _module_hash(module: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{module}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def split_by_module(functions: Sequence[FunctionSource] | Iterable[FunctionSource], held_out_fraction: float,
                    seed: int = 0) -> tuple[list[FunctionSource], list[FunctionSource]]:
    """``(train, held_out)``: a function is held out iff a hash of ``(seed, its module)`` is
    below ``held_out_fraction``; every module lies wholly on one side (order kept).

    Raises:
        ValueError: ``held_out_fraction`` outside [0, 1).
    """
    if not 0.0 <= held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must lie in [0, 1), got {held_out_fraction}")
    train: list[FunctionSource] = []
    held_out: list[FunctionSource] = []
    for function in functions:
        (held_out if _module_hash(function.module, seed) < held_out_fraction else train).append(function)
    return train, held_out
