"""Fixtures of the tests: TensorFloat-32 off in every module (``float32_matmuls``), and the
report tests' (``test_report*.py``, which use ``tables_only`` module-wide)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def tables_only(request, monkeypatch):
    """Drawing takes about a second per report: only tests asking for ``plots`` draw."""
    if "plots" not in request.fixturenames:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail


@pytest.fixture
def plots():
    pytest.importorskip("matplotlib")


@pytest.fixture(scope="module", autouse=True)
def float32_matmuls():
    """TensorFloat-32 off in every test module: on an Ampere or later GPU TensorFlow runs
    float32 matmuls and convolutions in TF32 (10-bit mantissa), about 1e-3 relative, a hundred
    times the tolerances that tests/test_equivalence.py and tests/test_jax.py hold
    implementations to. No effect on a CPU. Module scope: set before the modules' own fixtures
    train anything (autouse comes first in its scope), and back to what it was after each, so
    the benchmarks (``bench/``) of the same run keep TensorFlow's default, recorded as ``tf32``.
    Subprocesses that compare numbers turn it off themselves (test_distributed's parity
    worker: ``NVIDIA_TF32_OVERRIDE=0``; the JAX worker: ``matmul_precision``)."""
    import tensorflow as tf  # imported already, by conftest.py's pytest_configure

    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)
