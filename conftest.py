"""pytest configuration shared by the tests (``tests/``) and the benchmarks (``bench/``).

- ``--profile quick|full`` picks the benchmark profile (docs/timing.md, "Profiles").
- ``--tasks FILE`` (repeatable; ``builtin`` names the built-in tasks; or ``$LOOPBENCH_TASKS``,
  paths separated by ``os.pathsep``) runs the benchmarks and tests on the tasks a user's file
  defines (``bench/tasks/user.py``; docs/tasks.md). A bad file is one
  usage error, before anything is collected.
- A corrupt or truncated built-in dataset file is one usage error once collection is done,
  before the first test or benchmark runs (``check_datasets``), not one failure per benchmark.
- Benchmarks are skipped by a plain ``pytest`` (``--benchmark-skip`` in pyproject's addopts);
  ``pytest --benchmark-only`` runs them.
- Every results file gets ``machine_info["loopbench"]``: versions, device, oneDNN, threads and
  a matmul calibration measured in the same run (``pytest_benchmark_update_machine_info``).

TensorFlow is imported lazily, so test runs that never touch it (reports) stay fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ INFO lines out of logs
# GPU memory growth for every command (a plain pytest too), set before anything can import
# TensorFlow: a --tasks file builds its model in pytest_configure, which initialises the GPU
# runtime, after which tf.config.experimental.set_memory_growth raises; and without growth
# this process would reserve nearly all GPU memory at its first TensorFlow call, starving the
# A/B, JAX and tf.distribute workers started later (the workers inherit the setting).
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
# CUDA numbers GPUs fastest first by default, nvidia-smi by PCI bus: the same order for both, so
# the GPU facts recorded with a result are those of the GPU it ran on (harness.nvidia_smi_id).
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


# After the environment settings above; none of these imports TensorFlow.
from bench.host import cpu_steal_counters, steal_fraction  # noqa: E402
from bench.pytest_plugin import add_options  # noqa: E402
from bench.tasks import ImageData, get_task, load_for_task  # noqa: E402
from bench.tasks import user as user_tasks  # noqa: E402
from bench.tasks.data import DatasetError, load_classification  # noqa: E402
from bench.tasks.task import TaskError  # noqa: E402
from bench.tfimport import import_tensorflow  # noqa: E402
from bench.timing.profiles import PROFILES, Profile  # noqa: E402


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """``--profile``, ``--run-budget``, ``--tasks`` (``bench/pytest_plugin.py``): added
    here where the package is not installed, so its pytest plugin was not loaded."""
    if not pluginmanager.has_plugin("loopbench"):
        add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports it: without its CPU-only start-up lines (bench/tfimport.py)
    import_tensorflow()

    budget = config.getoption("--run-budget", default=None)
    if budget is not None and not budget >= 0:
        raise pytest.UsageError(f"--run-budget must be 0 (none) or more seconds, not {budget}")

    specs = user_tasks.specs_from(config.getoption("--tasks", default=None))
    if specs:
        try:
            user_tasks.select(specs)
        except TaskError as e:
            raise pytest.UsageError(str(e)) from None


_calibration: dict = {}
_session_steal: list = []  # /proc/stat steal counters when the first benchmark began


def calibration(again: bool = False) -> dict:
    """The machine's matmul rate, measured when first needed and, with ``again``, once more
    at the end of the session: the better of the two is kept, so a slow spell of a shared
    machine at one moment does not become the yardstick for the whole run."""
    from bench.timing.machine import calibrate_matmul  # lazy: imports TensorFlow

    if not _session_steal:
        _session_steal.append(cpu_steal_counters())
    if not _calibration or again:
        new = calibrate_matmul(seconds=2.0)
        if not _calibration or new["calibration_gflops"] > _calibration["calibration_gflops"]:
            _calibration.update(new)
    return _calibration


def profile_of(config: pytest.Config) -> Profile:
    """The profile ``--profile`` names, with ``--run-budget``'s budget if given."""
    profile = PROFILES[config.getoption("--profile")]
    budget = config.getoption("--run-budget")
    if budget is not None:
        profile = replace(profile, run_budget_s=budget or None)
    return profile


@pytest.fixture(scope="session")
def profile(request: pytest.FixtureRequest) -> Profile:
    return profile_of(request.config)


@pytest.fixture(scope="session")
def matmul_calibration() -> dict:
    return calibration()


@pytest.fixture(scope="session")
def task_data():
    """Each task's training data, loaded once per session: ``task_data(task)``. The image
    files are read and decompressed once, whatever tasks and subsets are asked for
    (``bench.tasks.data.load_classification``)."""
    cache = {}

    def get(task, n_train=None):
        key = (task.name, n_train)
        if key not in cache:
            cache[key] = load_for_task(task, n_train=n_train)
        return cache[key]

    return get


def needs_image_data(item: pytest.Item) -> bool:
    """Whether a collected test reads the image dataset: it takes ``task_data`` and is not
    parametrized on a task whose data is something else (linreg's line, a user's arrays)."""
    if "task_data" not in getattr(item, "fixturenames", ()):
        return False
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("task_name") if callspec else None
    if name is None:
        return True
    try:
        return isinstance(get_task(name).data, ImageData)
    except KeyError:
        return False


def check_datasets(items: list[pytest.Item]) -> None:
    """Read the built-in image dataset once, before anything runs, if a selected test needs
    it: a missing, truncated or corrupt file is one line (a usage error), not a traceback in
    every benchmark."""
    if not any(needs_image_data(item) for item in items):
        return
    try:
        load_classification()
    except DatasetError as e:
        raise pytest.UsageError(
            f"dataset: {e} (fix or remove it, or point $LOOPBENCH_DATA_DIR elsewhere)"
        ) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check the datasets, and plan the run's time: every panel, convergence run and
    distributed launch selected (``bench/timing/plan.py``), where benchmarks run (not in a
    plain ``pytest``: ``--benchmark-skip``) and their modules were collected."""
    if session.config.option.collectonly:
        return
    check_datasets(session.items)
    panel = sys.modules.get("bench.timing.panel")
    config = session.config
    benchmarks_run = config.getoption("benchmark_only") or not config.getoption("benchmark_skip")
    if panel is not None and benchmarks_run:
        panel.PANELS.set_plan(session.items, profile_of(config))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the step panels' JAX worker, if one was started (bench/timing/panel.py)."""
    panel = sys.modules.get("bench.timing.panel")
    if panel is not None:
        panel.PANELS.close()


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    from bench.timing.machine import machine_info as loopbench_info  # lazy: imports TensorFlow

    info = loopbench_info(config.getoption("--profile"), calibration(again=True))
    stolen = steal_fraction(_session_steal[0], cpu_steal_counters()) if _session_steal else None
    info["steal_pct_session"] = None if stolen is None else 100 * stolen
    panel = sys.modules.get("bench.timing.panel")
    plan = panel.PANELS.plan if panel is not None else None
    info["plan"] = plan.info() if plan is not None else None
    machine_info["loopbench"] = info
