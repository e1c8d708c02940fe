"""The suite's implementations under a ``tf.distribute`` strategy, and how they are timed: what
runs inside a worker process (``bench/distributed/worker.py``). Which combinations can run, and
starting the workers, is ``bench/distributed/launch.py`` (no TensorFlow).

Seed: TensorFlow's "Custom training with tf.distribute.Strategy" and "Multi-worker training
with Keras" tutorials, applied to the suite's own models:

- ``keras_fit`` / ``keras_fit_xla``: ``implementations.keras_fit``'s trainer (the task's model,
  ``compile`` with ``jit_compile`` pinned) constructed inside ``strategy.scope()``; Keras
  itself wraps its step in ``strategy.run``.
- ``custom_graph`` / ``custom_xla``: the task's hand-written model (``build_custom``) built in
  scope, and one distributed step (``make_distributed_step``): ``strategy.run`` of the custom
  loops' own step (``implementations.custom_loop.make_step``) with the loss
  ``tf.nn.compute_average_loss(per_example_loss, global_batch_size=...)``, inside
  ``tf.function`` (with ``jit_compile`` for ``custom_xla``).

Strategies: ``mirrored`` (``MirroredStrategy``: the GPUs of one host, or -- without GPUs --
the CPU split into logical devices, which must happen before TensorFlow initialises its
devices, hence the worker process) and ``multiworker`` (``MultiWorkerMirroredStrategy``,
configured through ``TF_CONFIG``). Importing this module imports TensorFlow but initialises
no device.

Timing (``time_steps``) follows ``bench/timing/harness.py``: first call timed alone as
``compile_s``, warm-up steps, K steps per round chosen by ``choose_steps_per_round``, every
round ends with a host sync, and a retrace during the timed rounds is an error.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from bench.distributed.launch import ENV_WORKER_GPU, IMPLEMENTATIONS, STRATEGIES
from bench.tasks import Task
from bench.timing.harness import check_retrace, choose_steps_per_round, first_call_and_warm_up
from bench.timing.machine import sync
from implementations.custom_loop import make_step
from implementations.keras_fit import keras_fit, keras_fit_xla
from implementations.keras_parts import keras_loss, make_optimizer, task_model


class UnsupportedError(RuntimeError):
    """A (strategy, implementation, replicas) combination that cannot run here; the
    benchmarks turn it into a skip that carries the message."""


def collective(kind: str) -> str | None:
    """The all-reduce a ``multiworker`` strategy is given: ``"NCCL"`` where this worker sees a
    GPU, ``"RING"`` (gRPC) otherwise; None for ``mirrored`` (TensorFlow's own choice: NCCL
    between GPUs, a copy to one device between logical CPUs). Reads the visible devices
    without initialising TensorFlow (``prepare_gpus`` may have narrowed them)."""
    if kind != "multiworker":
        return None
    return "NCCL" if tf.config.get_visible_devices("GPU") else "RING"


def prepare_gpus() -> None:
    """GPU memory growth, as ``conftest.py`` sets it for the pytest process; and in a loopback
    cluster (``run_workers`` sets ``LOOPBENCH_WORKER_GPU``) each worker sees one GPU of its
    own, so the workers of one host do not all claim every GPU. A worker started by hand on
    a real host uses all of that host's GPUs. Call before TensorFlow initialises."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    if os.environ.get(ENV_WORKER_GPU):
        gpus = [gpus[int(os.environ[ENV_WORKER_GPU]) % len(gpus)]]
        tf.config.set_visible_devices(gpus, "GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)


def split_cpu(devices: int) -> None:
    """Without GPUs, split the CPU into ``devices`` logical devices (a MirroredStrategy
    needs one device per replica); with GPUs, do nothing: their replicas are the physical
    GPUs. Call before anything initialises TensorFlow's devices."""
    if tf.config.list_physical_devices("GPU") or devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def make_strategy(kind: str, replicas: int = 1):
    """``mirrored``: MirroredStrategy over the first ``replicas`` GPUs, else the first
    ``replicas`` logical CPU devices (see ``split_cpu``). ``multiworker``:
    MultiWorkerMirroredStrategy from ``TF_CONFIG`` (each worker's GPUs, else its CPU), its
    all-reduce NCCL or RING (``collective``); the cluster decides the replicas and ``replicas``
    is not used."""
    if kind == "multiworker":
        implementation = tf.distribute.experimental.CommunicationImplementation[collective(kind)]
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if kind != "mirrored":
        raise ValueError(f"unknown strategy {kind!r}; valid: {', '.join(STRATEGIES)}")
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if replicas > len(devices):
        raise UnsupportedError(
            f"{replicas} replicas need {replicas} devices; found {len(devices)} "
            f"({', '.join(d.name for d in devices)})"
        )
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices[:replicas]])


def per_example_loss(task: Task, y, out):
    """One loss per example: the task's Keras loss before its reduction (``Loss.call``); its
    mean over the batch is ``implementations.common.loss_value``."""
    return keras_loss(task).call(y, tf.cast(out, tf.float32))


def make_distributed_step(strategy, model, optimizer, task: Task, global_batch_size: int):
    """The distributed custom step: each replica runs the single-device step
    (``implementations.custom_loop.make_step``, the one step every custom implementation
    runs) with its loss replaced by its share of the global-batch mean
    (``compute_average_loss``), so the optimizer's all-reduce *sum* of the replicas'
    gradients is the gradient of the global-batch mean loss. Returns that loss."""

    def average_loss(task: Task, y, out):
        return tf.nn.compute_average_loss(
            per_example_loss(task, y, out), global_batch_size=global_batch_size
        )

    # Keras's optimizer all-reduces (sums) the gradients across replicas in replica context.
    replica_step = make_step(model, optimizer, task, loss_fn=average_loss)

    def train_step(x, y):
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


class DistributedCustomTrainer:
    """The task's custom-loop model and its optimizer created in ``strategy.scope()``; the step is
    ``make_distributed_step`` in ``tf.function`` (``jit_compile`` for ``custom_xla``).
    ``step`` takes distributed (per-replica) batches, as a distributed dataset yields them."""

    def __init__(
        self, strategy, task: Task, weights: list[np.ndarray], *, global_batch_size: int, name: str
    ):

        self.name, self.task, self.strategy = name, task, strategy
        self.steps_per_call = 1
        self.jit_compile = name == "custom_xla"
        with strategy.scope():
            # build_custom()'s hand-written layers, their (mirrored) variables holding weights
            self.model = task_model(task, weights, custom=True)
            self.optimizer = make_optimizer(task)
            self.optimizer.build(self.model.trainable_variables)
        self._step = tf.function(
            make_distributed_step(strategy, self.model, self.optimizer, task, global_batch_size),
            jit_compile=self.jit_compile,
        )

    def step(self, x, y):
        return self._step(x, y)

    def step_losses(self, batches: Iterable) -> np.ndarray:
        return np.array([float(self._step(x, y)) for x, y in batches], dtype=np.float64)

    def traces(self) -> int:
        return int(self._step.experimental_get_tracing_count())

    def resolved(self) -> dict:
        loop = "tf.function(strategy.run)"
        return {
            "jit_compile": self.jit_compile,
            "jit_compile_requested": self.jit_compile,
            "run_eagerly": False,
            "steps_per_call": 1,
            "loop": loop.replace("tf.function(", "tf.function(jit_compile=True, ")
            if self.jit_compile
            else loop,
        }


def make_trainer(
    strategy, impl: str, task: Task, weights: list[np.ndarray], global_batch_size: int
):
    """A trainer whose ``step(x, y)`` takes per-replica batches and returns the loss."""
    if impl in ("keras_fit", "keras_fit_xla"):
        # Built and compiled in scope: the model records the strategy, and its variables and
        # the optimizer's are mirrored. Keras runs its own step through strategy.run.
        with strategy.scope():
            trainer = (keras_fit if impl == "keras_fit" else keras_fit_xla)(task, weights)
            # Create the optimizer's (mirrored) slots now, as fit() does before its first step
            # under a strategy: created inside the first distributed step, they fail to lift.
            trainer.model.optimizer.build(trainer.model.trainable_variables)
        return trainer
    if impl in ("custom_graph", "custom_xla"):
        return DistributedCustomTrainer(
            strategy, task, weights, global_batch_size=global_batch_size, name=impl
        )
    raise ValueError(f"unknown implementation {impl!r}; valid: {', '.join(IMPLEMENTATIONS)}")


def resolved(trainer) -> dict:
    info = trainer.resolved()
    info.pop("steps_per_execution", None)
    if info.get("loop") == "model.fit":
        info["loop"] = "model.fit (strategy.run inside Keras's train function)"
    return info


def distribute(strategy, batches):
    """``strategy.experimental_distribute_dataset`` over a dataset of *global* batches (such
    as ``implementations.common.epoch_dataset``): each replica, on whichever worker, gets its
    slice of every global batch."""
    options = tf.data.Options()
    # DATA: every worker reads the same (in-memory) data and keeps its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(batches.with_options(options))


def fixed_distributed_batch(strategy, dataset, global_batch_size: int):
    """One global batch (the first training examples, tiled if too few), already split into
    per-replica tensors on their devices: the input pipeline is not what gets timed."""
    idx = np.arange(global_batch_size) % len(dataset.x_train)
    batches = tf.data.Dataset.from_tensor_slices((dataset.x_train[idx], dataset.y_train[idx]))
    return next(iter(distribute(strategy, batches.batch(global_batch_size))))


def agree(strategy, value: float) -> float:
    """The mean of ``value`` over all replicas (and workers), so every worker runs the same
    number of steps: collectives hang if one worker runs more steps than another."""
    per_replica = strategy.run(lambda: tf.constant(float(value)))
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def time_steps(
    trainer, x, y, strategy, rounds: int, warmup_steps: int, round_seconds: float
) -> dict:
    """Steady-state step times, by ``bench/timing/harness.py``'s method; every round runs K steps
    and fetches the last loss (reduced over all replicas) to the host before the clock stops.

    Returns ``compile_s``, ``steps_per_round`` (K), ``round_s`` (each timed round's seconds,
    not yet divided by K) and ``traces``."""

    def one_step():
        return trainer.step(x, y)

    compile_s = first_call_and_warm_up(one_step, warmup_steps)
    k = math.ceil(agree(strategy, choose_steps_per_round(one_step, round_seconds)))
    traces_before = trainer.traces()

    def timed_round():
        for _ in range(k):
            loss = one_step()
        sync(loss)

    timed_round()  # one untimed round, as benchmark.pedantic(warmup_rounds=1) in the harness
    round_s = []
    for _ in range(rounds):
        t0 = time.perf_counter()  # pytest-benchmark's default timer
        timed_round()
        round_s.append(time.perf_counter() - t0)
    check_retrace(trainer, traces_before, trainer.name)
    return {
        "compile_s": compile_s,
        "steps_per_round": k,
        "round_s": round_s,
        "traces": trainer.traces(),
    }
