"""Without jax the JAX benchmarks and tests skip with one line saying how to enable them, and
the run passes (CI installs the ``jax`` extra, so this hides jax from a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.jax.client import SKIP_REASON

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
HIDE_JAX = """
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a, **k: None if name == "jax" else real(name, *a, **k)
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_without_jax_the_jax_modules_skip_with_one_line():
    files = ["tests/test_jax.py", "tests/test_jax_integration.py", "bench/benchmarks/bench_jax.py"]
    for extra in ([], ["--benchmark-only"]):
        proc = subprocess.run(
            [sys.executable, "-c", HIDE_JAX, "-q", "-rs", "-p", "no:cacheprovider", *extra, *files],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        out = proc.stdout  # pytest's report (TensorFlow's C++ log lines go to stderr)
        assert proc.returncode in (0, 5), out[-2000:] + proc.stderr[-2000:]  # 5: all skipped
        skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
        # one module skip per file ("SKIPPED [2]" where two files skip at the same line:
        # test_jax_integration.py skips on importing test_jax.py)
        counts = [int(line.split("[", 1)[1].split("]", 1)[0]) for line in skips]
        assert sum(counts) == len(files), out[-2000:]
        assert all(SKIP_REASON in line for line in skips), skips
        assert " passed" not in out and " error" not in out.lower(), out[-2000:]
