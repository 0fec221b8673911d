"""A small folder of Python modules for the infilling tests (several modules, varied functions)."""

from __future__ import annotations

from pathlib import Path

OPERATORS = ("+", "-", "*", "//", "%")


def module_source(index: int) -> str:
    """Five functions of 2-6 lines whose bodies vary with ``index``."""
    op = OPERATORS[index % len(OPERATORS)]
    return f'''"""Module {index}."""


def add_{index}(a, b):
    """Combine two numbers."""
    return a {op} b + {index}


def clamp_{index}(value, low={index}, high={index + 10}):
    if value < low:
        return low
    if value > high:
        return high
    return value


class Box{index}:

    def __init__(self, items):
        self.items = list(items)
        self.count = len(self.items)

    @property
    def total(self):
        result = 0
        for item in self.items:
            result = result {op} item
        return result


async def fetch_{index}(client, key):
    value = await client.get(key)
    return value or {index}
'''


def write_modules(root: Path, count: int = 12) -> Path:
    """``count`` modules ``pkg/mod<i>.py`` (plus a skipped ``test`` package and a broken file)."""
    package = root / "pkg"
    package.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (package / f"mod{index}.py").write_text(module_source(index))
    (root / "test").mkdir(exist_ok=True)
    (root / "test" / "test_skipped.py").write_text("def skipped_function():\n    return 1\n")
    (root / "broken.py").write_text("def broken(:\n    pass\n")
    return root
