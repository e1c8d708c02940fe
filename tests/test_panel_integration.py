"""Panels for real: a retrace inside the blocks of a panel of TensorFlow trainers (XLA
among them) fails that member only; a JAX member is timed in the same blocks as its
TensorFlow twin, and a run past its budget skips the distributed launches, each in a fresh
pytest; a bad panel option is one usage error. The block scheduler and its paired ratios:
tests/test_panel.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_panel import specs

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


# --- a real panel of TensorFlow trainers ---------------------------------------------------------


def test_a_retrace_inside_the_blocks_fails_that_member_only(monkeypatch, task_data):
    from bench.timing import panel
    from bench.timing.harness import RetraceError

    original = panel.TFMember.run_round
    state = {"rounds": 0}

    def run_round(self):
        if self.spec.implementation == "custom_graph":
            state["rounds"] += 1
            if state["rounds"] == 3:  # mid-blocks, a batch of another shape: a retrace
                self.trainer.step(self.x[:5], self.y[:5])
        return original(self)

    monkeypatch.setattr(panel.TFMember, "run_round", run_round)
    out = panel.Panels().measure(specs("keras_fit", "custom_graph", "custom_xla"), task_data)
    assert isinstance(out["test_step[custom_graph-linreg]"].error, RetraceError)
    for name in ("test_step[keras_fit-linreg]", "test_step[custom_xla-linreg]"):
        assert out[name].error is None and len(out[name].seconds) >= 3
        assert out[name].info["traces"] >= 1
    xla = out["test_step[custom_xla-linreg]"].info
    assert xla["speedup_vs"] == "keras_fit" and xla["speedup_low"] <= xla["speedup"]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_a_jax_benchmark_is_timed_in_its_tensorflow_twins_blocks(tmp_path):
    out = tmp_path / "jax.json"
    cmd = [
        sys.executable, "-m", "pytest", "--benchmark-only", "--profile", "smoke",
        "-p", "no:cacheprovider", "-q",
        "-k", "test_jax_step[jax_custom-linreg] or test_step[custom_graph-linreg]",
        f"--benchmark-json={out}", "bench/benchmarks/bench_step.py",
        "bench/benchmarks/bench_jax.py",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    benches = {b["name"]: b["extra_info"] for b in json.loads(out.read_text())["benchmarks"]}
    jax, tf = benches["test_jax_step[jax_custom-linreg]"], benches["test_step[custom_graph-linreg]"]
    assert jax["panel"] == tf["panel"] == "linreg"
    assert jax["panel_info"]["members"] == tf["panel_info"]["members"]
    assert jax["block_of_round"] and set(jax["block_of_round"]) <= set(range(10))
    pair = jax["paired"]["test_step[custom_graph-linreg]"]
    assert pair["low"] <= pair["speedup"] <= pair["high"] and pair["pairs"] >= 3
    assert jax["backend"] == "jax" and tf["speedup_vs"] == "custom_graph"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--run-budget", "-1", "--run-budget must be 0 (none) or more seconds, not -1"),
    ],
)
def test_a_bad_panel_option_is_one_usage_error(option, value, message):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", option, value, "--co", "-q", __file__],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 4
    assert message in proc.stderr


def test_a_run_past_its_budget_skips_the_distributed_launches_and_says_why():
    """With a run budget already spent (1 s: pytest's start-up alone takes longer), the quick
    profile's distributed benchmarks are skipped with the reason, before any worker starts."""
    cmd = [
        sys.executable, "-m", "pytest", "--benchmark-only", "--profile", "quick",
        "--run-budget", "1", "-p", "no:cacheprovider", "-q", "-rs",
        "-k", "mirrored-r1-keras_fit-mlp or mirrored-r2-keras_fit-mlp",
        "bench/benchmarks/bench_distributed.py",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 skipped" in proc.stdout, proc.stdout[-3000:]
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and skipped[0].startswith("SKIPPED [2]"), proc.stdout[-3000:]
    assert "the run budget (1 s, --run-budget) is spent" in skipped[0]
    assert "this distributed launch is optional" in skipped[0]
