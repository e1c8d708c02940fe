"""Mixed precision trains like float32: each implementation, XLA included, a few dozen steps
on every task against itself in float32; a wrong learning rate is caught in bfloat16; N steps
per call is its one-step twin. The tolerances and what they were measured on:
tests/test_precision.py's docstring."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_precision import BATCH, EARLY_RTOL, STEPS, early_rel, losses

import implementations
from bench.tasks import TASKS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data(task_data):
    return {name: task_data(task, n_train=BATCH * STEPS[name]) for name, task in TASKS.items()}


CASES = [
    (impl, task, precision)
    for precision in ("mixed_bfloat16", "mixed_float16")
    for task in ("linreg", "mlp", "cnn")
    for impl in ("keras_fit", "custom_graph", "custom_xla")
    if not (precision == "mixed_float16" and task == "linreg")  # skipped steps (test_precision.py)
    and not (precision == "mixed_float16" and task == "cnn" and impl != "custom_graph")
]


@pytest.mark.parametrize("impl, task_name, precision", CASES)
def test_mixed_precision_trains_like_float32(data, impl, task_name, precision):
    task = TASKS[task_name]
    mixed = losses(impl, task, data[task_name], precision)
    full = losses(impl, task, data[task_name], "float32")
    assert early_rel(mixed, full) <= EARLY_RTOL
    assert mixed[-1] < mixed[0] * 0.95  # it trained
    assert not np.array_equal(mixed, full)  # and not in float32 after all


@pytest.mark.parametrize("task_name", ["mlp", "cnn"])
def test_a_wrong_learning_rate_is_caught_in_mixed_precision(data, task_name):
    task = TASKS[task_name]
    wrong_task = dataclasses.replace(task, learning_rate=task.learning_rate * 1.5)
    wrong = losses("custom_graph", wrong_task, data[task_name], "mixed_bfloat16")
    assert early_rel(wrong, losses("custom_graph", task, data[task_name], "float32")) > EARLY_RTOL


@pytest.mark.parametrize("impl", ["custom_graph_loop", "keras_fit_spe"])
def test_n_steps_per_call_is_its_twin_in_bfloat16(data, impl):
    task = TASKS["mlp"]
    ours = losses(impl, task, data["mlp"], "mixed_bfloat16", steps_per_call=4)
    twin = losses(implementations.MULTI_STEP[impl], task, data["mlp"], "mixed_bfloat16")
    np.testing.assert_array_equal(ours, twin)
