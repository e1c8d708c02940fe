"""The timing harness: it waits for the device, catches retraces, and splits fit's cost into
setup and per step. A retrace of a multi-step call, and a tiny real benchmark run writing
every documented field: tests/test_harness_integration.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

import implementations
from bench.host import STEAL_LIMIT
from bench.tasks import TASKS, initial_weights
from bench.timing.harness import RetraceError, check_retrace, fixed_batch, measure_fit
from bench.timing.members import TFMember


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
