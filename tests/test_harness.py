"""The timing harness: it waits for the device, catches retraces, and a tiny real
benchmark run writes every documented field with consistent values."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import implementations
from bench.harness import PROFILES, RetraceError, measure_steps
from bench.tasks import TASKS, initial_weights

ROOT = Path(__file__).resolve().parents[1]


class FakeBenchmark:
    """The slice of pytest-benchmark's fixture the harness uses, timing with perf_counter."""

    def __init__(self):
        self.extra_info = {}
        self.stats = None

    def pedantic(self, target, rounds, iterations, warmup_rounds, setup=None):
        for _ in range(warmup_rounds):
            target()
        data = []
        for _ in range(rounds):
            if setup:
                setup()
            t0 = time.perf_counter()
            target()
            data.append(time.perf_counter() - t0)

        class Meta:
            pass

        self.stats = Meta()
        self.stats.stats = Meta()
        self.stats.stats.data = data
        self.stats.iterations = iterations


class Deferred:
    """A result that is only available after `delay` seconds of 'device work' -- like a GPU
    tensor whose kernel is still running when the step call returns."""

    def __init__(self, delay):
        self.delay = delay

    def __array__(self, dtype=None, copy=None):
        time.sleep(self.delay)
        return np.zeros(1, dtype=dtype or np.float32)


class AsyncTrainer:
    name, task = "async", TASKS["linreg"]

    def __init__(self, delay):
        self.delay = delay

    def step(self, x, y):
        return Deferred(self.delay)  # returns at once, like an asynchronous launch

    def traces(self):
        return 0


def test_timed_rounds_wait_for_the_device():
    delay = 0.03
    bench = FakeBenchmark()
    profile = PROFILES["smoke"]
    timing = measure_steps(bench, AsyncTrainer(delay), None, None, profile)
    k = timing["steps_per_round"]
    # Without the sync each round would take microseconds; with it, at least one delay.
    assert min(bench.stats.stats.data) >= delay / k * 0.95
    assert bench.stats.iterations == k


class ShapeChangingTrainer:
    """A real tf.function step that is fed a ragged batch once timing has begun (the
    harness reads the trace count just before its timed rounds)."""

    def __init__(self):
        task = TASKS["mlp"]
        self.inner = implementations.get("custom_graph")(task, initial_weights(task))
        self.name, self.task = "shape_changer", task
        self.timing = False

    def step(self, x, y):
        if self.timing:
            x, y = x[:-1], y[:-1]  # a ragged batch: retraces
        return self.inner.step(x, y)

    def traces(self):
        self.timing = True
        return self.inner.traces()


def test_retrace_during_timing_is_an_error():
    x = tf.zeros((8, 28, 28))
    y = tf.zeros((8,), tf.int32)
    profile = PROFILES["smoke"]
    with pytest.raises(RetraceError, match="traced"):
        measure_steps(FakeBenchmark(), ShapeChangingTrainer(), x, y, profile)


STEP_FIELDS = {
    "kind",
    "implementation",
    "task",
    "dataset",
    "seed",
    "device",
    "batch_size",
    "steps_per_round",
    "rounds",
    "samples_per_s",
    "compile_s",
    "fit_overhead_s",
    "fit_s_per_step",
    "flops_per_step",
    "gflops_per_s",
    "pct_of_matmul_peak",
    "peak_memory_mb",
    "peak_memory_kind",
    "jit_compile",
    "jit_compile_requested",
    "run_eagerly",
    "loop",
    "graph_ops",
    "traces",
}
MACHINE_FIELDS = {
    "tensorflow",
    "keras",
    "python",
    "numpy",
    "device",
    "gpus",
    "cpu_model",
    "cpu_count",
    "onednn",
    "threads",
    "tf32",
    "xla_flags",
    "profile",
    "calibration_gflops",
    "calibration_matmul_s",
    "calibration_n",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--benchmark-only",
        "--profile",
        "smoke",
        "-p",
        "no:cacheprovider",
        "-q",
        "-k",
        "test_step and (linreg or mlp) and (keras_fit-linreg or custom_eager or custom_xla)",
        f"--benchmark-json={out}",
        "--benchmark-save-data",
        str(ROOT / "bench" / "bench_step.py"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_tiny_run_records_every_field(tiny_run):
    names = sorted(b["name"] for b in tiny_run["benchmarks"])
    assert names == [
        "test_step[custom_eager-linreg]",
        "test_step[custom_eager-mlp]",
        "test_step[custom_xla-linreg]",
        "test_step[custom_xla-mlp]",
        "test_step[keras_fit-linreg]",
    ]
    machine = tiny_run["machine_info"]["loopbench"]
    assert set(machine) >= MACHINE_FIELDS
    assert machine["calibration_gflops"] > 0 and machine["device"] in ("CPU", "GPU")
    for bench in tiny_run["benchmarks"]:
        info, stats = bench["extra_info"], bench["stats"]
        assert set(info) >= STEP_FIELDS, STEP_FIELDS - set(info)
        assert bench["group"] == info["task"]
        for key in (
            "samples_per_s",
            "compile_s",
            "gflops_per_s",
            "peak_memory_mb",
            "flops_per_step",
        ):
            assert math.isfinite(info[key]) and info[key] > 0, key
        assert stats["iterations"] == info["steps_per_round"]
        assert len(stats["data"]) == info["rounds"]
        # samples/s is batch / per-step median; GFLOP/s is FLOPs / per-step median.
        assert info["samples_per_s"] == pytest.approx(
            info["batch_size"] / stats["median"], rel=1e-9
        )
        assert info["gflops_per_s"] == pytest.approx(info["flops_per_step"] / stats["median"] / 1e9)
        assert info["jit_compile"] is info["implementation"].endswith("xla")
        is_keras = info["implementation"].startswith("keras")
        assert (info["fit_overhead_s"] is not None) == is_keras
        assert (info["fit_s_per_step"] is not None) == is_keras
        assert (info["graph_ops"] is not None) == info["implementation"].startswith("custom")
