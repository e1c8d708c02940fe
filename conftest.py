"""pytest configuration shared by the tests (``tests/``) and the benchmarks (``bench/``).

- ``--profile quick|full`` picks the benchmark profile (README: "Profiles").
- Benchmarks are skipped by a plain ``pytest`` (``--benchmark-skip`` in pyproject's addopts);
  ``pytest --benchmark-only`` runs them.
- Every results file gets ``machine_info["loopbench"]``: versions, device, oneDNN, threads and
  a matmul calibration measured in the same run (``pytest_benchmark_update_machine_info``).

TensorFlow is imported lazily, so test runs that never touch it (reports) stay fast.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ INFO lines out of logs


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--profile",
        choices=("smoke", "quick", "full"),
        default=os.environ.get("LOOPBENCH_PROFILE", "quick"),
        help="benchmark profile: quick (default, a few minutes on 2 cores), full, or smoke "
        "(seconds; checks the harness, numbers not meaningful)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_only", default=False):
        # GPU memory growth must be set before TensorFlow initialises its devices.
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)


_calibration: dict = {}
_session_steal: list = []  # /proc/stat steal counters when the first benchmark began


def calibration(again: bool = False) -> dict:
    """The machine's matmul rate, measured when first needed and, with ``again``, once more
    at the end of the session: the better of the two is kept, so a slow spell of a shared
    machine at one moment does not become the yardstick for the whole run."""
    from bench.harness import calibrate_matmul, cpu_steal_counters

    if not _session_steal:
        _session_steal.append(cpu_steal_counters())
    if not _calibration or again:
        new = calibrate_matmul(seconds=2.0)
        if not _calibration or new["calibration_gflops"] > _calibration["calibration_gflops"]:
            _calibration.update(new)
    return _calibration


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest):
    from bench.harness import PROFILES

    return PROFILES[request.config.getoption("--profile")]


@pytest.fixture(scope="session")
def matmul_calibration() -> dict:
    return calibration()


@pytest.fixture(scope="session")
def task_data():
    """Each task's training data, loaded once per session: ``task_data(task)``. The image
    files are read and decompressed once, whatever tasks and subsets are asked for."""
    from bench.data import load_classification, load_for_task

    cache = {}

    def get(task, n_train=None):
        key = (task.name, n_train)
        if key not in cache:
            raw = None
            if task.kind != "regression":
                if "raw" not in cache:
                    cache["raw"] = load_classification()
                raw = cache["raw"]
            cache[key] = load_for_task(task, n_train=n_train, raw=raw)
        return cache[key]

    return get


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    from bench.harness import cpu_steal_counters, steal_fraction
    from bench.harness import machine_info as loopbench_info

    info = loopbench_info(config.getoption("--profile"), calibration(again=True))
    stolen = steal_fraction(_session_steal[0], cpu_steal_counters())
    info["steal_pct_session"] = None if stolen is None else 100 * stolen
    machine_info["loopbench"] = info
