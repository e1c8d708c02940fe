"""tf.distribute: the loopback cluster configuration, which launches the benchmarks skip and
why, the collectives, and a failing implementation recorded while the others still run.
The TensorFlow work in ``bench.distributed.worker`` subprocesses (two replicas against one
device, loopback workers, XLA's refusals): tests/test_distributed_integration.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from bench.distributed.launch import (
    KERAS_MULTI_WORKER_REASON,
    LOOPBACK,
    XLA_CPU_COLLECTIVES_REASON,
    XLA_LOGICAL_CPU_REASON,
    XLA_MULTI_GPU_REASON,
    free_port,
    tf_config,
    unsupported_reason,
)


def gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


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
        ("mirrored", "custom_xla", 2, 2, XLA_MULTI_GPU_REASON),
        ("mirrored", "keras_fit_xla", 4, 8, XLA_MULTI_GPU_REASON),
        ("mirrored", "custom_xla", 1, 2, None),
        ("mirrored", "custom_graph", 2, 2, None),
        ("mirrored", "custom_graph", 4, 2, "4 replicas need 4 GPUs; this host has 2"),
        ("multiworker", "custom_graph", 2, 0, None),
        ("multiworker", "keras_fit", 1, 0, None),
        ("multiworker", "keras_fit", 2, 0, KERAS_MULTI_WORKER_REASON),
        ("multiworker", "custom_xla", 2, 0, XLA_CPU_COLLECTIVES_REASON),
        ("multiworker", "custom_xla", 1, 0, None),
        ("multiworker", "custom_graph", 2, 1, "2 workers on one host need 2 GPUs; this host has 1"),
        ("multiworker", "custom_xla", 2, 2, None),  # NCCL between GPU workers: not refused
    ],
)
def test_unsupported_reason(strategy, impl, replicas, gpus, expected):
    assert unsupported_reason(strategy, impl, replicas, gpus) == expected


def test_workers_on_several_hosts_are_not_limited_by_this_hosts_gpus():
    assert unsupported_reason("multiworker", "custom_graph", 4, 1, loopback=False) is None


def test_multi_worker_collectives_are_nccl_on_gpus_and_ring_otherwise(monkeypatch):
    import tensorflow as tf

    from bench.distributed.loop import collective

    assert collective("multiworker") == ("NCCL" if gpu_count() else "RING")
    assert collective("mirrored") is None
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: ["GPU:0"])
    assert collective("multiworker") == "NCCL"
    monkeypatch.setattr(tf.config, "get_visible_devices", lambda kind=None: [])
    assert collective("multiworker") == "RING"


def test_a_failing_implementation_is_recorded_and_the_others_still_run(monkeypatch, capsys):
    """One replica in this process (no CPU split needed): keras_fit fails to build, custom_graph
    is timed all the same, and the failure is that implementation's result."""
    from bench.distributed import loop as D
    from bench.distributed import worker

    build = D.make_trainer

    def make_trainer(strategy, impl, *args):
        if impl == "keras_fit":
            raise RuntimeError("no kernel for this\nsecond line")
        return build(strategy, impl, *args)

    monkeypatch.setattr(D, "make_trainer", make_trainer)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = SimpleNamespace(
        strategy="mirrored",
        task="linreg",
        replicas=[1],
        impl=["keras_fit", "custom_graph"],
        rounds=2,
        warmup=1,
        round_seconds=0.01,
        per_replica_batch=0,
    )
    (run,) = worker.cmd_bench(args)["runs"]
    assert run["results"]["keras_fit"] == {"error": "RuntimeError: no kernel for this"}
    assert len(run["results"]["custom_graph"]["round_s"]) == 2
    assert run["collective"] is None  # mirrored: TensorFlow's own choice
    assert "no kernel for this" in capsys.readouterr().err  # the traceback, on stderr
