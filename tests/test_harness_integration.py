"""The timing harness for real: a retrace of a multi-step call (an XLA loop among them) is
an error, and a tiny real benchmark run, in a fresh pytest, writes every documented field
with consistent values. With fake trainers and clocks: tests/test_harness.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import implementations
from bench.tasks import TASKS, initial_weights
from bench.timing.harness import RetraceError, check_retrace
from bench.timing.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


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
