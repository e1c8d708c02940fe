"""Every implementation trained for real: a few steps on every task lower the loss and stay
finite, and one call runs its steps_per_call optimizer updates. Each test covers every
implementation, the XLA ones (which compile) with the rest."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_implementations import IMPLS, small_batch

import implementations
from bench.tasks import TASKS, initial_weights
from implementations.common import get_weights, stack_batches
from implementations.keras_parts import STEPS_PER_CALL

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("impl", IMPLS)
def test_a_few_steps_lower_the_loss_and_stay_finite(impl, task_name, task_data):
    task = TASKS[task_name]
    x, y = small_batch(task, task_data)
    trainer = implementations.get(impl)(task, initial_weights(task))
    losses = trainer.step_losses([(x, y)] * 8)
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert all(np.isfinite(w).all() for w in get_weights(trainer.model))
    resolved = trainer.resolved()
    assert resolved["jit_compile"] is resolved["jit_compile_requested"] is ("xla" in impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_call_runs_steps_per_call_steps(impl, task_data):
    """One step() call is steps_per_call optimizer updates: N for the multi-step
    implementations (the default, or the factory's steps_per_call=), 1 for the rest."""
    task = TASKS["linreg"]
    ds = task_data(task, n_train=256)
    factory = implementations.get(impl)
    if impl in implementations.MULTI_STEP:
        cases = [(factory(task, initial_weights(task)), STEPS_PER_CALL)]
        cases += [(factory(task, initial_weights(task), steps_per_call=n), n) for n in (1, 3)]
    else:
        cases = [(factory(task, initial_weights(task)), 1)]
    for trainer, n in cases:
        assert trainer.steps_per_call == n
        assert trainer.resolved()["steps_per_call"] == n
        batches = [
            (tf.constant(ds.x_train[i : i + 8]), tf.constant(ds.y_train[i : i + 8]))
            for i in range(0, 8 * n, 8)
        ]
        x, y = next(stack_batches(batches, n))
        assert x.shape == ((n, 8, 1) if n > 1 else (8, 1))
        optimizer = getattr(trainer, "optimizer", None) or trainer.model.optimizer
        before = int(optimizer.iterations)
        np.asarray(trainer.step(x, y))  # sync
        assert int(optimizer.iterations) - before == n
