"""What every benchmark result carries: the command, the seed, the machine and the wall time."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flexmdm.atomic import write_text_atomic

__all__ = ["machine_info", "command_line", "write_json", "Stopwatch", "spread"]


def machine_info() -> dict[str, Any]:
    """CPU, core count and library versions of the machine running the benchmark."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def command_line(argv: list[str] | None = None) -> str:
    """The command as a user would type it (``flexmdm …``)."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["flexmdm", *args])


def write_json(record: dict[str, Any], path: str | Path) -> Path:
    """Write ``record`` atomically (temporary file, then rename)."""
    return write_text_atomic(path, json.dumps(record, indent=2) + "\n")


class Stopwatch:
    """Wall time since creation, in seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
