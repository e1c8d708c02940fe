"""What a GPU host needs that a CPU run cannot show, checked without a GPU (issue "Ready for a
GPU host"): memory growth is set before TensorFlow can initialise, whatever the command, and
every JAX worker starts without preallocating the GPU."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Records TF_FORCE_GPU_ALLOW_GROWTH at the moment TensorFlow is first imported, then runs
# pytest: a user's task file (built and called in pytest_configure) initialises TensorFlow
# there, which is where set_memory_growth used to raise on a GPU host.
PROBE = """
import importlib.abc, os, sys
seen = []

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "tensorflow" and not seen:
            seen.append(os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH"))
        return None

sys.meta_path.insert(0, Watch())
import pytest
code = pytest.main(["--co", "-q", "-p", "no:cacheprovider", *sys.argv[1:]])
print("GROWTH_AT_TF_IMPORT", seen)
sys.exit(int(code))
"""


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "args",
    [
        ["--tasks", "examples/sequence_gru.py", "bench/benchmarks/bench_step.py"],
        ["tests/test_precision.py"],  # a plain pytest (the README's and CI's test command)
    ],
    ids=["tasks-file", "plain"],
)
def test_memory_growth_is_set_before_tensorflow_starts(args):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in __import__("os").environ.items() if k != "TF_FORCE_GPU_ALLOW_GROWTH"},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "GROWTH_AT_TF_IMPORT ['true']" in proc.stdout


def test_conftest_leaves_no_set_memory_growth_call_behind():
    """set_memory_growth after TensorFlow initialised raises on a GPU host: the environment
    variable, set at conftest import, is the one mechanism."""
    assert "set_memory_growth(" not in (ROOT / "conftest.py").read_text()


def test_every_jax_worker_starts_without_preallocating(monkeypatch):
    from bench.ab import jax_sides
    from bench.jax import client
    from bench.workers.process import jax_env

    assert jax_env()["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert jax_env()["KERAS_BACKEND"] == "jax"
    seen = []

    class FakeWorker:
        def __init__(self, side, index, env, script):
            seen.append(env)
            self.proc = None

        def request(self, request, timeout):
            return {"versions": {}, "implementations": []}

        def close(self):
            pass

    monkeypatch.setattr(client, "Worker", FakeWorker)
    with contextlib.ExitStack() as stack:
        client.start(stack)
    assert seen and seen[-1]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "jax_env()" in Path(jax_sides.__file__).read_text()  # bench ab's JAX workers too


def test_nvidia_smi_is_asked_about_the_gpu_tensorflow_used():
    from bench.timing.harness import nvidia_smi_id

    assert nvidia_smi_id(0, "") == "0" and nvidia_smi_id(1, "") == "1"
    assert nvidia_smi_id(0, "3,1") == "3" and nvidia_smi_id(1, "3, 1") == "1"
    assert nvidia_smi_id(0, "GPU-8f2c") == "GPU-8f2c"  # a UUID, which nvidia-smi takes too


def test_micro_batches_are_skipped_on_a_gpu_as_a_cpu_knob(monkeypatch):
    from bench.benchmarks import bench_step
    from bench.timing.harness import PROFILES

    quick, full = PROFILES["quick"], PROFILES["full"]
    split = {"impl": "custom_xla_split", "task_name": "mlp"}
    assert bench_step.step_spec("x", split, quick, None).implementation == "custom_xla_split"
    monkeypatch.setattr(bench_step, "device_name", lambda: "/GPU:0")
    with pytest.raises(pytest.skip.Exception, match="CPU knob"):
        bench_step.step_spec("x", split, quick, None)
    with pytest.raises(pytest.skip.Exception, match="CPU knob"):
        bench_step.micro_batch_spec("x", {**split, "m": 2}, full, None)
    loop = {"impl": "custom_xla_loop", "task_name": "mlp"}
    assert bench_step.step_spec("x", loop, quick, None).implementation == "custom_xla_loop"
