"""How a training step is timed, and what is recorded with it. Imports TensorFlow.

The method (docs/timing.md):
1. build the implementation from the task and the seeded initial weights;
2. put one fixed batch on the device (the input pipeline is not what is timed) -- for an
   implementation that runs N steps per call (``trainer.steps_per_call``), N distinct
   batches stacked into one tensor ``x[N, B, ...]``;
3. time the first call alone -- tracing and XLA compilation -- as ``compile_s``;
4. run warm-up steps, then estimate a call's time and pick ``K`` calls per round so a round
   lasts about ``round_seconds``;
5. each timed round runs K calls (K x N steps) and then fetches the last loss to the host, so
   the device has finished every step before the clock stops; one data point = round time /
   (K x N): results are always seconds per training step;
6. if the step was traced again while being timed, fail: the numbers would include it.

The step benchmarks do steps 1-4 for every member of a comparison group first and then time
the group's rounds interleaved, in blocks (``bench/timing/panel.py``, ``bench/timing/blocks.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from bench.tasks import Task
from bench.tasks.data import map_inputs, n_examples, take
from bench.timing.machine import device_name, sync
from implementations.custom_loop import CustomLoopTrainer, make_step
from implementations.keras_fit import KerasFitTrainer


class RetraceError(RuntimeError):
    """The step was traced (and maybe compiled) again inside the timed region."""


# --- the fixed batch and the step measurement --------------------------------------------


def fixed_batch(
    task: Task, batch_size: int, dataset, steps_per_call: int = 1
) -> tuple[tf.Tensor, tf.Tensor]:
    """The first ``batch_size`` training examples (tiled if the set is smaller), on device.
    ``steps_per_call`` N > 1: the first N x ``batch_size`` examples as N distinct batches,
    stacked: ``x[N, batch_size, ...]``, ``y[N, batch_size]``. Several inputs: ``x`` is a dict
    or tuple of such tensors, one per input."""
    idx = np.arange(steps_per_call * batch_size) % n_examples(dataset.x_train)
    x, y = take(dataset.x_train, idx), dataset.y_train[idx]
    if steps_per_call > 1:
        x = map_inputs(lambda a: a.reshape(steps_per_call, batch_size, *a.shape[1:]), x)
        y = y.reshape(steps_per_call, batch_size, *y.shape[1:])
    with tf.device(device_name()):
        return map_inputs(tf.constant, x), tf.constant(y)


def steps_per_call(trainer) -> int:
    """Training steps one ``trainer.step`` call runs (1 for a trainer without the attribute)."""
    return int(getattr(trainer, "steps_per_call", 1))


def choose_steps_per_round(step: Callable[[], tf.Tensor], round_seconds: float) -> int:
    """How many calls of ``step`` (each one or several training steps) make a round of about
    ``round_seconds``: at least 3 calls are timed, to a quarter of a round."""
    t0 = time.perf_counter()
    n = 0
    while True:
        loss = step()
        n += 1
        if n >= 3:
            sync(loss)
            if time.perf_counter() - t0 > round_seconds / 4 or n >= 200:
                break
    per_step = (time.perf_counter() - t0) / n
    return max(1, min(1000, math.ceil(round_seconds / per_step)))


def count_graph_ops(trainer, x: tf.Tensor, y: tf.Tensor) -> int | None:
    """Ops in the traced graph of one training step (custom loops only; for those that loop
    N steps per call, of the step the loop runs): roughly what eager mode dispatches one by
    one, so (eager - graph) / ops estimates the per-op dispatch cost."""
    if not isinstance(trainer, CustomLoopTrainer):
        return None
    if steps_per_call(trainer) > 1:
        x, y = map_inputs(lambda a: a[0], x), y[0]
    fn = tf.function(make_step(trainer.model, trainer.optimizer, trainer.task))
    graph = fn.get_concrete_function(x, y).graph
    return sum(1 for op in graph.get_operations() if op.type not in ("Placeholder", "NoOp"))


def measure_fit(
    trainer, x, y, steps: int, *, clock: Callable[[], float] = time.perf_counter
) -> dict:
    """Keras implementations only: what ``fit()`` costs, as ``fit(n) = setup + n * per_step``.

    ``fit()`` calls on K and 2K copies of the fixed batch (each the best of three, as one
    call is at the mercy of one slow moment of a shared machine) give
    ``fit_s_per_step = (fit(2K) - fit(K)) / K``, the cost of a step inside ``fit`` (the train
    function plus the iterator and callbacks around it), and
    ``fit_overhead_s = fit(K) - K * fit_s_per_step``, the per-call setup (data adapter, epoch
    iterator, callbacks), floored at 0 where noise makes it negative.

    For ``steps_per_call`` N > 1, ``steps`` counts calls and ``x``, ``y`` stack N batches:
    ``fit`` gets K (2K) copies of the N batches, K x N (2K x N) steps, N per call of its
    train function, and the per-step figure divides by K x N.

    ``clock`` reads the time (injected by the tests: a fake ``fit`` advances a fake clock)."""
    if not isinstance(trainer, KerasFitTrainer):
        return {"fit_overhead_s": None, "fit_s_per_step": None}
    n_per_call = steps_per_call(trainer)

    def fit(n: int) -> float:
        if n_per_call > 1:
            ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat(n)
        else:
            ds = tf.data.Dataset.from_tensors((x, y)).repeat(n)
        t0 = clock()
        trainer.model.fit(ds, epochs=1, shuffle=False, verbose=0)
        return clock() - t0

    fit(2)  # the first fit() traces its iterator function: not what is measured
    once = min(fit(steps) for _ in range(3))
    twice = min(fit(2 * steps) for _ in range(3))
    total_steps = steps * n_per_call
    per_step = max(twice - once, 0.0) / total_steps
    return {
        "fit_overhead_s": max(0.0, once - total_steps * per_step),
        "fit_s_per_step": per_step,
    }


def first_call_and_warm_up(one_step: Callable[[], tf.Tensor], warmup_steps: int) -> float:
    """Time the first call alone (tracing, XLA compilation), then run ``warmup_steps`` steps
    and wait for them. Returns the first call's seconds (``compile_s``)."""
    t0 = time.perf_counter()
    sync(one_step())
    compile_s = time.perf_counter() - t0
    loss = None
    for _ in range(warmup_steps):
        loss = one_step()
    if loss is not None:
        sync(loss)
    return compile_s


def check_retrace(trainer, traces_before: int, label: str) -> None:
    """Fail if the step was traced again since ``traces_before`` was read."""
    if trainer.traces() != traces_before:
        raise RetraceError(
            f"{label}: step traced {trainer.traces() - traces_before} more time(s) during the "
            "timed rounds; the timings would include tracing/compilation"
        )


def to_per_step(benchmark, steps_per_round: int, keep: list[int] | None = None) -> list[float]:
    """Turn pytest-benchmark's per-round data into per-step data in place, keeping only the
    rounds listed in ``keep`` (all if None).

    pytest-benchmark's own ``iterations=K`` would divide each round by K too, but it cannot
    sync the device at the end of a round; we time K steps + sync as one call and apply the
    same division here, before any statistic is computed, so ``stats`` (and the JSON and the
    terminal table) are seconds per step with ``iterations == K``. (For a trainer that runs
    N steps per call, pass K calls x N.)
    """
    meta = benchmark.stats
    if meta is None:  # --benchmark-disable: nothing was timed
        return [float("nan")]
    data = meta.stats.data
    rounds = data if keep is None else [data[i] for i in keep]
    data[:] = [d / steps_per_round for d in rounds]
    meta.iterations = steps_per_round
    return list(data)
