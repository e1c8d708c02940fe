"""Memory growth is set before TensorFlow can initialise, whatever the command: checked in a
fresh pytest process per command (the rest of "Ready for a GPU host" is in
tests/test_gpu_ready.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration

# Records TF_FORCE_GPU_ALLOW_GROWTH at the moment TensorFlow is first imported, then runs
# pytest: a user's task file (built and called in pytest_configure) initialises TensorFlow
# there, which is where set_memory_growth used to raise on a GPU host.
PROBE = """
import importlib.abc, os, sys
seen = []

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" and not seen:
            seen.append(os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"))
        return None

sys.meta_path.insert(0, Watch())
import pytest
code = pytest.main(["--co", "-q", "-p", "no:cacheprovider", *sys.argv[1:]])
print("GROWTH_AT_TF_IMPORT", seen)
sys.exit(int(code))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--tasks", "examples/sequence_gru.py", "bench/benchmarks/bench_step.py"],
        ["tests/test_precision.py"],  # a plain pytest (the README's and CI's test command)
    ],
    ids=["tasks-file", "plain"],
)
def test_memory_growth_is_set_before_tensorflow_starts(args):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "TF_FORCE_GPU_ALLOW_GROWTH"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "GROWTH_AT_TF_IMPORT ['true']" in proc.stdout
