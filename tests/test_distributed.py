"""tf.distribute: a 2-replica MirroredStrategy trains like one device with the same global
batch, two loopback MultiWorkerMirroredStrategy workers stay identical, and the skips the
benchmarks make are still justified. The TensorFlow work runs in ``bench.distributed.worker``
subprocesses (the CPU must be split into logical devices before TensorFlow initialises).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bench.distributed.loop import (
    KERAS_MULTI_WORKER_REASON,
    LOOPBACK,
    XLA_CPU_COLLECTIVES_REASON,
    XLA_LOGICAL_CPU_REASON,
    WorkerError,
    free_port,
    run_workers,
    tf_config,
    unsupported_reason,
)

TIMEOUT = 240  # seconds for a whole launch (TensorFlow import, a few steps); never reached


@pytest.fixture(scope="module")
def parity() -> dict:
    """One subprocess: mlp, global batch 16, 4 steps, on one device and on 2 replicas."""
    args = ["parity", "--task", "mlp", "--global-batch", "16", "--steps", "4", "--replicas", "2"]
    return run_workers(args, None, TIMEOUT)[0].output


@pytest.mark.subprocess
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


@pytest.mark.subprocess
def test_xla_over_logical_cpus_still_fails_in_tensorflow(parity):
    """The benchmarks skip XLA on a MirroredStrategy over logical CPU devices; if TensorFlow
    starts accepting it, this fails and the skip should go."""
    for impl in ("custom_xla", "keras_fit_xla"):
        error = parity["xla_errors"][impl]
        assert error is not None, f"{impl} now runs on 2 logical CPUs: drop the skip"
        assert "Trying to access resource" in error and "CPU:1" in error, error


@pytest.mark.subprocess
def test_multi_worker_loopback_workers_end_identical(tmp_path):
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


@pytest.mark.subprocess
def test_run_workers_kills_workers_at_the_timeout():
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="timed out"):
        run_workers(["parity", "--steps", "2"], 2, timeout=0.5)
    assert time.monotonic() - t0 < 30


def test_cluster_config_is_loopback_only():
    ports = [free_port(), free_port()]
    for i in range(2):
        config = json.loads(tf_config(ports, i))
        assert config["task"] == {"type": "worker", "index": i}
        assert config["cluster"]["worker"] == [f"{LOOPBACK}:{p}" for p in ports]
    assert LOOPBACK == "127.0.0.1"


@pytest.mark.parametrize(
    "strategy, impl, replicas, gpus, expected",
    [
        ("mirrored", "custom_graph", 2, 0, None),
        ("mirrored", "keras_fit", 4, 0, None),
        ("mirrored", "custom_xla", 1, 0, None),
        ("mirrored", "custom_xla", 2, 0, XLA_LOGICAL_CPU_REASON),
        ("mirrored", "keras_fit_xla", 2, 0, XLA_LOGICAL_CPU_REASON),
        ("mirrored", "custom_xla", 2, 2, None),
        ("mirrored", "custom_graph", 4, 2, "4 replicas need 4 GPUs; this host has 2"),
        ("multiworker", "custom_graph", 2, 0, None),
        ("multiworker", "keras_fit", 1, 0, None),
        ("multiworker", "keras_fit", 2, 0, KERAS_MULTI_WORKER_REASON),
        ("multiworker", "custom_xla", 2, 0, XLA_CPU_COLLECTIVES_REASON),
        ("multiworker", "custom_xla", 1, 0, None),
    ],
)
def test_unsupported_reason(strategy, impl, replicas, gpus, expected):
    assert unsupported_reason(strategy, impl, replicas, gpus) == expected
