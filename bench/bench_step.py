"""Step-throughput benchmarks: every implementation x task, a batch-size sweep, a sweep of
the steps per call N of the multi-step implementations (``implementations.MULTI_STEP``), and
mixed precision (``test_precision``; every other benchmark runs in float32), and a sweep of
the micro-batches M of ``implementations.MICRO_BATCH`` (``test_micro_batches``).

Run: ``pytest --benchmark-only`` (add ``-k "xla and cnn"`` to select, ``--profile full`` for
the whole sweeps, ``--benchmark-json out.json --benchmark-save-data`` to keep results).
Timing method: ``bench/harness.py``; results schema: ``RESULTS_SCHEMA.md``. Every figure is
per training step, also for implementations that run N steps per call.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import implementations
from bench.harness import (
    PRECISION_IMPLEMENTATIONS,
    benchmark_step,
    device_name,
    fixed_batch,
    for_sweep,
    measure_steps,
    steal_fields,
    sync,
)
from bench.tasks import TASKS, get_task, initial_weights
from bench.user_tasks import selected_tasks, skip_unsupported

IMPLEMENTATIONS = list(implementations.REGISTRY)
# The built-in tasks, or those of --tasks FILE (bench/user_tasks.py), or both.
SELECTED = selected_tasks()
USER = [name for name in SELECTED if name not in TASKS]


def run_step(benchmark, group, impl, task_name, task_data, calibration, profile, **options):
    """Time ``impl`` on the task (``harness.benchmark_step``; ``options``: ``batch_size``,
    ``steps_per_call_override``, ``precision``) in pytest-benchmark group ``group``; an
    implementation that cannot run a user's model is skipped with the reason."""
    task = get_task(task_name)
    benchmark.group = group
    batch_size = options.pop("batch_size", task.batch_size)
    with skip_unsupported(impl, task):
        benchmark_step(
            benchmark,
            impl,
            task,
            task_data(task),
            batch_size,
            profile,
            calibration["calibration_gflops"],
            **options,
        )


@pytest.mark.parametrize("task_name", SELECTED)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_step(benchmark, impl, task_name, profile, task_data, matmul_calibration):
    # A user's task gets every variant in every profile: it is what they came to measure.
    if (
        impl in implementations.MULTI_STEP
        and task_name in TASKS
        and task_name not in profile.multi_step_tasks
    ):
        pytest.skip(
            f"{impl} runs on {', '.join(profile.multi_step_tasks)} in the "
            f"{profile.name} profile (use --profile full)"
        )
    if impl in implementations.MULTI_STEP and task_name in USER and profile.name == "quick":
        # A call is 16 steps (seconds, for a conv net under XLA's loop on a CPU): the sweep's
        # round count keeps a user's quick run within its budget (README).
        profile = for_sweep(profile)
    run_step(benchmark, task_name, impl, task_name, task_data, matmul_calibration, profile)


SWEEP = [
    pytest.param(impl, task, batch, id=f"{impl}-{task}-b{batch}")
    for task in [t for t in ("mlp", "cnn") if t in SELECTED] + USER
    for batch in (32, 64, 128, 256, 512, 1024, 2048)
    for impl in IMPLEMENTATIONS
]


@pytest.mark.parametrize("impl, task_name, batch", SWEEP)
def test_sweep(benchmark, impl, task_name, batch, profile, task_data, matmul_calibration):
    if batch not in profile.sweep_batches or impl not in profile.sweep_implementations:
        pytest.skip(f"not in the {profile.name} profile's sweep (use --profile full)")
    run_step(
        benchmark,
        f"sweep-{task_name}",
        impl,
        task_name,
        task_data,
        matmul_calibration,
        for_sweep(profile),
        batch_size=batch,
    )


PRECISION = [
    pytest.param(impl, task, precision, id=f"{impl}-{task}-{precision}")
    for precision in ("mixed_bfloat16", "mixed_float16")
    for task in [t for t in ("mlp", "cnn") if t in SELECTED] + USER
    for impl in PRECISION_IMPLEMENTATIONS
]


@pytest.mark.parametrize("impl, task_name, precision", PRECISION)
def test_precision(benchmark, impl, task_name, precision, profile, task_data, matmul_calibration):
    """Seconds per training step under a mixed-precision policy; the float32 twin is the same
    implementation in ``test_step``. Training reaches the same accuracy (within 1 point:
    bench_accuracy.py's test_convergence_precision)."""
    cpu = device_name() == "/CPU:0"
    if task_name in USER:  # a user's task: every precision benchmark, in the full profile
        if profile.name != "full":
            pytest.skip("a user task's precision benchmarks are in --profile full")
        if precision == "mixed_float16" and cpu:
            pytest.skip("mixed_float16 is meant for GPUs: a CPU may lack its kernels (run bf16)")
    elif (impl, task_name, precision) not in profile.precision_benchmarks:
        pytest.skip(f"not in the {profile.name} profile's precision benchmarks (--profile full)")
    if precision == "mixed_float16" and task_name == "cnn" and cpu:
        pytest.skip(
            "mixed_float16 is meant for GPUs: this CPU has no float16 convolution kernels "
            "(the CNN measured 280-400 ms/step in float16, 10-20x float32, on a 2-core EPYC)"
        )
    run_step(
        benchmark,
        f"precision-{task_name}",
        impl,
        task_name,
        task_data,
        matmul_calibration,
        profile,
        precision=precision,
    )


STEPS_PER_CALL_SWEEP = [
    pytest.param(impl, task, n, id=f"{impl}-{task}-n{n}")
    for task in [t for t in ("linreg", "mlp") if t in SELECTED] + USER
    for n in (1, 4, 16, 64)
    for impl in implementations.MULTI_STEP
    if impl not in implementations.MICRO_BATCH  # its N is custom_xla_loop's: swept there
]


@pytest.mark.parametrize("impl, task_name, n", STEPS_PER_CALL_SWEEP)
def test_steps_per_call(benchmark, impl, task_name, n, profile, task_data, matmul_calibration):
    """Seconds per training step at N steps per call. The CNN is left out: its steps (40-140
    ms on a 2-core CPU) dwarf a call's overhead, and at N = 64 one call would last seconds."""
    if n not in profile.steps_per_call_sweep:
        pytest.skip(f"not in the {profile.name} profile's steps-per-call sweep (--profile full)")
    run_step(
        benchmark,
        f"steps-per-call-{task_name}",
        impl,
        task_name,
        task_data,
        matmul_calibration,
        for_sweep(profile),
        steps_per_call_override=n,
    )


MICRO_BATCH_SWEEP = [
    pytest.param(impl, task, m, id=f"{impl}-{task}-m{m}")
    for task in [t for t in ("mlp",) if t in SELECTED] + USER
    for m in (1, 2, 4, 8)
    for impl in implementations.MICRO_BATCH
]


@pytest.mark.parametrize("impl, task_name, m", MICRO_BATCH_SWEEP)
def test_micro_batches(benchmark, impl, task_name, m, profile, task_data, matmul_calibration):
    """Seconds per training step with each batch cut into M parts, at the default N; the twin
    (whole batches) is ``implementations.MICRO_BATCH[impl]`` in ``test_step``. The MLP only
    among the built-in tasks: linreg's 32-sample batches have nothing to share between cores
    (0.91x at M = 2) and XLA's loop of convolutions takes seconds per call on a CPU."""
    if m not in profile.micro_batch_sweep:
        pytest.skip(f"not in the {profile.name} profile's micro-batch sweep (--profile full)")
    run_step(
        benchmark,
        f"micro-batches-{task_name}",
        impl,
        task_name,
        task_data,
        matmul_calibration,
        for_sweep(profile),
        micro_batches_override=m,
    )


@pytest.mark.parametrize(
    "impl, task_name", [("custom_graph", t) for t in ("linreg", "mlp") if t in SELECTED]
)
def test_harness_overhead(benchmark, impl, task_name, profile, task_data):
    """The harness's per-step figure against K steps timed by a bare loop, same process,
    same trainer, rounds interleaved: what pytest-benchmark and the round structure add
    (linreg's tiny step shows it most)."""
    task = TASKS[task_name]
    benchmark.group = "harness-overhead"
    trainer = implementations.get(impl)(task, initial_weights(task))
    x, y = fixed_batch(task, task.batch_size, task_data(task))
    bare = []

    def bare_round(k):
        t0 = time.perf_counter()
        for _ in range(k):
            loss = trainer.step(x, y)
        sync(loss)
        bare.append((time.perf_counter() - t0) / k)

    # Bare rounds interleave with the harness's rounds, so drift in machine speed hits both;
    # bare round i shares round i's steal window, so both keep the same rounds.
    harness = measure_steps(benchmark, trainer, x, y, profile, between_rounds=bare_round)
    k = harness["steps_per_round"]
    bare_median = float(np.median([bare[i] for i in harness["kept_rounds"]]))
    benchmark.extra_info.update(
        kind="overhead",
        implementation=impl,
        task=task_name,
        dataset=task_data(task).name,
        seed=task.seed,
        batch_size=task.batch_size,
        steps_per_round=k,
        rounds=len(harness["kept_rounds"]),
        **steal_fields(harness),
        harness_s_per_step=harness["median_s"],
        bare_loop_s_per_step=bare_median,
        harness_overhead_pct=100 * (harness["median_s"] / bare_median - 1),
    )
