"""Step-throughput benchmarks: every implementation x task, and a batch-size sweep.

Run: ``pytest --benchmark-only`` (add ``-k "xla and cnn"`` to select, ``--profile full`` for
the whole sweep, ``--benchmark-json out.json --benchmark-save-data`` to keep results).
Timing method: ``bench/harness.py``; results schema: ``RESULTS_SCHEMA.md``.
"""

from __future__ import annotations

import pytest

import implementations
from bench.harness import benchmark_step
from bench.tasks import TASKS

IMPLEMENTATIONS = list(implementations.REGISTRY)


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_step(benchmark, impl, task_name, profile, task_data, matmul_calibration):
    task = TASKS[task_name]
    benchmark.group = task_name
    benchmark_step(
        benchmark,
        impl,
        task,
        task_data(task),
        task.batch_size,
        profile,
        matmul_calibration["calibration_gflops"],
    )


SWEEP = [
    pytest.param(impl, task, batch, id=f"{impl}-{task}-b{batch}")
    for task in ("mlp", "cnn")
    for batch in (32, 64, 128, 256, 512, 1024, 2048)
    for impl in IMPLEMENTATIONS
]


@pytest.mark.parametrize("impl, task_name, batch", SWEEP)
def test_sweep(benchmark, impl, task_name, batch, profile, task_data, matmul_calibration):
    if batch not in profile.sweep_batches or impl not in profile.sweep_implementations:
        pytest.skip(f"not in the {profile.name} profile's sweep (use --profile full)")
    task = TASKS[task_name]
    benchmark.group = f"sweep-{task_name}"
    benchmark_step(
        benchmark,
        impl,
        task,
        task_data(task),
        batch,
        profile,
        matmul_calibration["calibration_gflops"],
    )
