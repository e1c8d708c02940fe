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
from bench.host import STEAL_LIMIT
from bench.tasks import TASKS, initial_weights
from bench.timing.harness import RetraceError, check_retrace, fixed_batch, measure_fit
from bench.timing.members import TFMember
from bench.timing.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]


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


class SteadyTrainer:
    """A step that takes `delay` seconds on the host; counts its calls."""

    name, task = "steady", TASKS["linreg"]

    def __init__(self, delay=0.001):
        self.delay, self.calls = delay, 0

    def step(self, x, y):
        self.calls += 1
        time.sleep(self.delay)
        return np.zeros(1)

    def traces(self):
        return 0


def test_report_uses_the_harness_steal_limit():
    from bench.report.rows import STEAL_LIMIT_PCT

    assert pytest.approx(100 * STEAL_LIMIT) == STEAL_LIMIT_PCT


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


class StackedShapeChangingTrainer:
    """A multi-step trainer (N = 2) fed ragged stacked batches once timing has begun."""

    def __init__(self, impl):
        task = TASKS["mlp"]
        self.inner = implementations.get(impl)(task, initial_weights(task), steps_per_call=2)
        self.name, self.task, self.steps_per_call = impl, task, 2
        self.timing = False

    def step(self, x, y):
        if self.timing:
            x, y = x[:, :-1], y[:, :-1]  # every batch one example short: retraces
        return self.inner.step(x, y)

    def traces(self):
        self.timing = True
        return self.inner.traces()


class MultiStepTrainer(SteadyTrainer):
    """SteadyTrainer, N steps per call."""

    steps_per_call = 4


def bare_member(trainer, k: int = 3) -> TFMember:
    """A ``TFMember`` around ``trainer`` without building one from the registry: the rounds
    and the retrace check as a panel runs them."""
    member = TFMember.__new__(TFMember)
    member.trainer, member.x, member.y = trainer, None, None
    member.k, member.n = k, int(getattr(trainer, "steps_per_call", 1))
    return member


def test_timed_rounds_wait_for_the_device():
    delay = 0.03
    member = bare_member(AsyncTrainer(delay), k=3)
    # Without the sync each round would take microseconds; with it, at least one delay.
    assert member.run_round() >= delay / 3 * 0.95


def test_a_call_of_n_steps_counts_n_steps():
    trainer = MultiStepTrainer(delay=0.0)
    member = bare_member(trainer, k=5)
    member.run_round()
    assert trainer.calls == 5 and member.k * member.n == 20  # 5 calls of 4 steps a round


def test_retrace_during_timing_is_an_error():
    x = tf.zeros((8, 28, 28))
    y = tf.zeros((8,), tf.int32)
    trainer = ShapeChangingTrainer()
    trainer.step(x, y)
    before = trainer.traces()  # the timed rounds begin: the next batch is ragged
    trainer.step(x, y)
    with pytest.raises(RetraceError, match="traced"):
        check_retrace(trainer, before, "mlp")


@pytest.mark.integration
@pytest.mark.parametrize("impl", ["custom_graph_loop", "custom_xla_loop", "keras_fit_spe"])
def test_retrace_of_a_multi_step_call_is_an_error(impl):
    x = tf.zeros((2, 8, 28, 28))
    y = tf.zeros((2, 8), tf.int32)
    trainer = StackedShapeChangingTrainer(impl)
    trainer.step(x, y)
    before = trainer.traces()
    trainer.step(x, y)
    with pytest.raises(RetraceError, match="traced"):
        check_retrace(trainer, before, impl)


def test_fixed_data_of_a_multi_step_trainer_is_n_distinct_batches(task_data):
    task = TASKS["mlp"]
    data = task_data(task, n_train=100)  # fewer than N x B: tiled
    x, y = fixed_batch(task, 32, data, steps_per_call=4)
    assert x.shape == (4, 32, 28, 28) and y.shape == (4, 32)
    idx = np.arange(4 * 32) % 100
    np.testing.assert_array_equal(x.numpy().reshape(128, 28, 28), data.x_train[idx])
    np.testing.assert_array_equal(y.numpy().ravel(), data.y_train[idx])
    one_x, one_y = fixed_batch(task, 32, data)
    assert one_x.shape == (32, 28, 28)
    np.testing.assert_array_equal(one_x.numpy(), x.numpy()[0])


STEP_FIELDS = {
    "kind",
    "implementation",
    "task",
    "dataset",
    "seed",
    "device",
    "batch_size",
    "steps_per_round",
    "calls_per_round",
    "steps_per_call",
    "rounds",
    "rounds_run",
    "steal_pct",
    "round_steal_pct",
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
    "precision",
    "compute_dtype",
    "variable_dtype",
    "loss_scale",
    "one_step_twin",
    "micro_batches",
    "micro_batch_twin",
    "panel",
    "panel_info",
    "block_of_round",
    "speedup_vs",
    "speedup_vs_name",
    "speedup",
    "speedup_low",
    "speedup_high",
    "paired",
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
    "steal_pct_session",
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
        "(test_step and (linreg or mlp) and (keras_fit-linreg or custom_eager or custom_xla)"
        " and not custom_xla_loop-linreg and not custom_xla_split-linreg)"
        " or test_precision[custom_graph-mlp-mixed_bfloat16]",
        f"--benchmark-json={out}",
        "--benchmark-save-data",
        str(ROOT / "bench" / "benchmarks" / "bench_step.py"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.integration
def test_tiny_run_records_every_field(tiny_run):
    names = sorted(b["name"] for b in tiny_run["benchmarks"] if b["name"].startswith("test_step"))
    assert names == [
        "test_step[custom_eager-linreg]",
        "test_step[custom_eager-mlp]",
        "test_step[custom_xla-linreg]",
        "test_step[custom_xla-mlp]",
        "test_step[custom_xla_loop-mlp]",
        "test_step[custom_xla_split-mlp]",
        "test_step[keras_fit-linreg]",
    ]
    precision = [b for b in tiny_run["benchmarks"] if b["name"].startswith("test_precision")]
    assert [b["name"] for b in precision] == ["test_precision[custom_graph-mlp-mixed_bfloat16]"]
    machine = tiny_run["machine_info"]["loopbench"]
    assert set(machine) >= MACHINE_FIELDS
    assert machine["calibration_gflops"] > 0 and machine["device"] in ("CPU", "GPU")
    # the run's plan: its two panels, linreg's and the MLP's (no budget: nothing skipped)
    assert machine["plan"] == {"run_budget_s": None, "entries": 2, "skipped": []}
    for bench in tiny_run["benchmarks"]:
        info, stats = bench["extra_info"], bench["stats"]
        assert set(info) >= STEP_FIELDS, STEP_FIELDS - set(info)
        if bench in precision:
            assert bench["group"] == f"precision-{info['task']}"
            assert (info["precision"], info["compute_dtype"]) == ("mixed_bfloat16", "bfloat16")
        else:
            assert bench["group"] == info["task"]
            assert (info["precision"], info["compute_dtype"]) == ("float32", "float32")
        assert info["variable_dtype"] == "float32" and info["loss_scale"] is False
        is_loop = info["implementation"] in implementations.MULTI_STEP
        assert (info["one_step_twin"] is not None) == is_loop
        split = info["implementation"] == "custom_xla_split"
        assert info["micro_batches"] == (2 if split else 1)
        assert info["micro_batch_twin"] == ("custom_xla_loop" if split else None)
        for key in (
            "samples_per_s",
            "compile_s",
            "gflops_per_s",
            "peak_memory_mb",
            "flops_per_step",
        ):
            assert math.isfinite(info[key]) and info[key] > 0, key
        assert stats["iterations"] == info["steps_per_round"]
        assert info["steps_per_round"] == info["calls_per_round"] * info["steps_per_call"]
        assert info["steps_per_call"] == info["steps_per_execution"]
        # Every member of a panel ran one round per block; its quiet rounds are its stats.
        panel = info["panel_info"]
        assert info["panel"] == info["task"] and bench["name"] in panel["members"]
        assert info["rounds_run"] == panel["blocks"] <= PROFILES["smoke"].panel_max_blocks
        assert len(stats["data"]) == info["rounds"] == len(info["block_of_round"])
        assert info["rounds"] <= info["rounds_run"]
        assert len(info["round_steal_pct"]) == info["rounds_run"]
        assert panel["stopped_by"] in ("target", "time_cap", "max_blocks")
        # Speedups against the panel's baseline (keras_fit where selected), with intervals,
        # and a ratio against every other member of the panel.
        assert info["speedup_vs"] == ("keras_fit" if info["task"] == "linreg" else "custom_eager")
        if bench["name"] == info["speedup_vs_name"]:
            assert info["speedup"] == info["speedup_low"] == info["speedup_high"] == 1.0
        else:
            assert info["speedup_low"] <= info["speedup"] <= info["speedup_high"]
            assert info["paired"][info["speedup_vs_name"]]["speedup"] == info["speedup"]
        assert set(info["paired"]) == set(panel["members"]) - {bench["name"]}
        # samples/s is batch / per-step median; GFLOP/s is FLOPs / per-step median.
        assert info["samples_per_s"] == pytest.approx(
            info["batch_size"] / stats["median"], rel=1e-9
        )
        assert info["gflops_per_s"] == pytest.approx(info["flops_per_step"] / stats["median"] / 1e9)
        assert info["jit_compile"] is ("xla" in info["implementation"])
        is_keras = info["implementation"].startswith("keras")
        assert (info["fit_overhead_s"] is not None) == is_keras
        assert (info["fit_s_per_step"] is not None) == is_keras
        assert (info["graph_ops"] is not None) == info["implementation"].startswith("custom")


def test_fit_cost_splits_into_setup_and_per_step(monkeypatch):
    """fit(n) = setup + n * per_step: a fit() that takes 0.125 s + 1/512 s per batch on a fake
    clock is read back exactly as such (the old reading, one fit() minus K train-function
    steps, called fit's per-step iterator and callback cost "setup"). Powers of two, so the
    arithmetic is exact."""
    task = TASKS["linreg"]
    trainer = implementations.get("keras_fit")(task, initial_weights(task))
    batches, now = [], [0.0]

    def fake_fit(ds, **kwargs):
        n = int(ds.cardinality())  # known for from_tensors(...).repeat(n); no iteration
        batches.append(n)
        now[0] += 0.125 + n / 512

    monkeypatch.setattr(trainer.model, "fit", fake_fit)
    x, y = tf.zeros((4, 1)), tf.zeros((4, 1))
    cost = measure_fit(trainer, x, y, steps=20, clock=lambda: now[0])
    assert cost == {"fit_overhead_s": 0.125, "fit_s_per_step": 1 / 512}
    assert batches == [2, 20, 20, 20, 40, 40, 40]
    custom = implementations.get("custom_graph")(task, initial_weights(task))
    assert measure_fit(custom, x, y, steps=20) == {"fit_overhead_s": None, "fit_s_per_step": None}


def test_fit_cost_of_a_multi_step_trainer_is_per_step(monkeypatch):
    """keras_fit_spe (N = 4): fit() is fed K (2K) copies of the N stacked batches, K x N
    (2K x N) batches, and the per-step figure divides by K x N (a fake clock, as above)."""
    task = TASKS["linreg"]
    trainer = implementations.get("keras_fit_spe")(task, initial_weights(task), steps_per_call=4)
    batches, now = [], [0.0]

    def fake_fit(ds, **kwargs):
        n = int(ds.cardinality())
        batches.append(n)
        now[0] += 0.125 + n / 1024

    monkeypatch.setattr(trainer.model, "fit", fake_fit)
    x, y = tf.zeros((4, 4, 1)), tf.zeros((4, 4, 1))
    cost = measure_fit(trainer, x, y, steps=20, clock=lambda: now[0])
    assert batches == [8, 80, 80, 80, 160, 160, 160]
    assert cost == {"fit_overhead_s": 0.125, "fit_s_per_step": 1 / 1024}
