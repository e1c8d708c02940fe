"""tf.distribute for real, in ``bench.distributed.worker`` subprocesses (the CPU must be
split into logical devices before TensorFlow initialises): a 2-replica MirroredStrategy
trains like one device with the same global batch, two loopback MultiWorkerMirroredStrategy
workers stay identical, XLA still fails where the benchmarks skip it, and a launch is
killed at its timeout. The configuration and the skips' reasons: tests/test_distributed.py.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from test_distributed import gpu_count

from bench.distributed.launch import WorkerError, run_workers

pytestmark = pytest.mark.integration

TIMEOUT = 240  # seconds for a whole launch (TensorFlow import, a few steps); never reached


def needs_two_devices() -> None:
    """Two replicas need two devices: two logical CPUs without a GPU (split in the worker),
    else two GPUs; one GPU has no second device to split (on a GPU host the CPU is not used)."""
    if gpu_count() == 1:
        pytest.skip("two replicas need two devices: this host has one GPU (and no CPU split)")


@pytest.fixture(scope="module")
def parity() -> dict:
    """One subprocess: mlp, global batch 16, 4 steps, on one device and on 2 replicas.
    TensorFloat-32 off (``NVIDIA_TF32_OVERRIDE=0``, read by cuBLAS and cuDNN): on an Ampere
    GPU it would round each replica's half-batch matmuls differently from the whole batch's."""
    needs_two_devices()
    args = ["parity", "--task", "mlp", "--global-batch", "16", "--steps", "4", "--replicas", "2"]
    env = {**os.environ, "NVIDIA_TF32_OVERRIDE": "0"}
    return run_workers(args, None, TIMEOUT, env=env)[0].output


@pytest.mark.parametrize("impl", ["custom_graph", "keras_fit"])
def test_mirrored_two_replicas_match_one_device(parity, impl):
    assert parity["replicas"] == 2 and len(parity["devices"]) == 2
    single, mirrored = np.array(parity[impl]["single"]), np.array(parity[impl]["mirrored"])
    assert len(single) == len(mirrored) == 4
    # Same batches, same initial weights, same global batch: only float32 summation order
    # differs (two half-batch sums of B/2 examples each, each divided by B, plus an all-reduce,
    # instead of one mean over B). That is ~1e-7 relative per step; rtol 1e-5 leaves room for
    # it to compound over 4 Adam steps while catching any real error (a loss scaled by the
    # per-replica instead of the global batch is off by 2x; a replica on the wrong data, by
    # percents).
    np.testing.assert_allclose(mirrored, single, rtol=1e-5, atol=0)
    assert parity[impl]["weights_max_abs_diff"] < 1e-5  # Adam moves each weight <= lr=3e-4/step


def test_xla_over_logical_cpus_still_fails_in_tensorflow(parity):
    """The benchmarks skip XLA on a MirroredStrategy over logical CPU devices; if TensorFlow
    starts accepting it, this fails and the skip should go."""
    if gpu_count():
        pytest.skip("a claim about logical CPU devices: on a GPU host the replicas are GPUs")
    for impl in ("custom_xla", "keras_fit_xla"):
        error = parity["xla_errors"][impl]
        assert error is not None, f"{impl} now runs on 2 logical CPUs: drop the skip"
        assert "Trying to access resource" in error and "CPU:1" in error, error


@pytest.mark.gpu
def test_xla_on_several_gpus_still_fails_in_tensorflow(parity):
    """The benchmarks skip XLA under MirroredStrategy on several GPUs (XLA_MULTI_GPU_REASON),
    unverified; on a host with 2 or more GPUs this says, per implementation, whether TensorFlow
    refuses it: one that runs should lose its skip."""
    if gpu_count() < 2:
        pytest.skip("needs 2 or more GPUs")
    runs = [impl for impl, error in parity["xla_errors"].items() if error is None]
    assert not runs, f"{runs} run on {gpu_count()} GPUs: drop XLA_MULTI_GPU_REASON for them"


def test_multi_worker_loopback_workers_end_identical(tmp_path):
    if gpu_count() == 1:
        pytest.skip("two loopback workers need two GPUs: NCCL refuses two ranks on one GPU")
    args = ["train", "--strategy", "multiworker", "--task", "mlp", "--impl", "custom_graph"]
    args += ["--global-batch", "16", "--steps", "3", "--weights-dir", str(tmp_path)]
    outputs = [r.output for r in run_workers(args, 2, TIMEOUT)]
    assert [o["replicas"] for o in outputs] == [2, 2]
    # Both report the global-batch loss (a cross-replica sum of per-replica shares).
    assert outputs[0]["losses"] == outputs[1]["losses"]
    w0, w1 = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert w0.files == w1.files and len(w0.files) == 8
    for name in w0.files:
        # Exactly equal: each worker applies the same all-reduced gradient (the collective
        # hands every worker the same bytes) to the same starting weights.
        np.testing.assert_array_equal(w0[name], w1[name])
    from bench.tasks import initial_weights
    from bench.tasks.builtin import MLP

    assert not np.array_equal(w0["arr_0"], initial_weights(MLP)[0]), "no training happened"


def test_run_workers_kills_workers_at_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="timed out"):
        run_workers(["parity", "--steps", "2"], 2, timeout=0.5)
    assert time.monotonic() - t0 < 30
