"""``scripts/gpu_smoke.sh``: says so and succeeds without a GPU; its checks pass with the CPU standing in."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_smoke.sh"


def run(**env):
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, **env})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script runs its checks")
def test_without_a_gpu_there_is_nothing_to_check():
    done = run()
    assert done.returncode == 0 and done.stdout.startswith("no GPU: nothing to check")


@pytest.mark.e2e
def test_every_check_passes_with_the_cpu_standing_in_for_the_gpu():
    done = run(GPU_SMOKE_DEVICE="cpu")
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [line for line in lines if line.startswith("FAIL")]
    passed = [line for line in lines if line.startswith("PASS")]
    assert len(passed) == 6 and not [line for line in lines if line.startswith("PENDING")]
    assert any("2 processes" in line for line in passed) and any("bf16 with FSDP: 2 rank(s)" in line for line in passed)
