"""Every implementation on every task: registered, trains, and computes what the built-in
layers compute. Small batches, a few steps: seconds each. The few training steps of every
implementation, XLA included: tests/test_implementations_integration.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import implementations
from bench.tasks import TASKS, initial_weights, layers_tf
from implementations.common import get_weights, loss_value
from implementations.keras_parts import set_weights

IMPLS = list(implementations.REGISTRY)


def test_every_implementation_module_is_registered():
    package = Path(implementations.__file__).parent
    # jax_backend has its own registry (jax_backend.REGISTRY), run in the JAX worker only;
    # common and keras_parts are what the implementations share.
    shared = {"__init__", "common", "keras_parts", "jax_backend"}
    modules = {p.stem for p in package.glob("*.py")} - shared
    registered = {
        factory.__module__.rsplit(".", 1)[-1] for factory in implementations.REGISTRY.values()
    }
    assert modules == registered


def test_unknown_implementation_lists_the_valid_ones():
    with pytest.raises(KeyError) as err:
        implementations.get("keras_fitt")
    for name in IMPLS:
        assert name in str(err.value)


def small_batch(task, task_data, n=32):
    ds = task_data(task, n_train=256)
    return tf.constant(ds.x_train[:n]), tf.constant(ds.y_train[:n])


def test_multi_step_implementations_have_one_step_twins():
    assert set(implementations.MULTI_STEP) < set(IMPLS)
    assert set(implementations.MULTI_STEP.values()) < set(IMPLS) - set(implementations.MULTI_STEP)


@pytest.mark.parametrize("task_name", list(TASKS))
def test_gradients_are_finite_and_nonzero(task_name, task_data):
    task = TASKS[task_name]
    x, y = small_batch(task, task_data)
    model = task.build_custom()
    model(x[:1])
    set_weights(model, initial_weights(task))
    with tf.GradientTape() as tape:
        loss = loss_value(task, y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    assert all(np.abs(g.numpy()).max() > 0 for g in grads)


@pytest.mark.parametrize("task_name", list(TASKS))
def test_custom_layers_compute_what_builtin_layers_compute(task_name, task_data):
    task = TASKS[task_name]
    x, _ = small_batch(task, task_data)
    weights = initial_weights(task, seed=7)
    builtin, custom = task.build(), task.build_custom()
    assert all(isinstance(b, (layers_tf.DenseLayer, layers_tf.Conv2DLayer, layers_tf.FlattenLayer))
               for b in custom.blocks)  # fmt: skip
    assert not any(isinstance(b, layers_tf.DenseLayer) for b in builtin.layers)
    custom(x[:1])
    set_weights(builtin, weights)
    set_weights(custom, weights)
    # Same weights, same ops up to kernel choice: float32 rounding only.
    np.testing.assert_allclose(custom(x).numpy(), builtin(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task_name", list(TASKS))
def test_initial_weights_match_the_model_shapes(task_name):
    task = TASKS[task_name]
    for built in (task.build(), task.build_custom()):
        built(np.zeros((1, *task.input_shape), np.float32))
        assert [tuple(v.shape) for v in built.trainable_variables] == [
            w.shape for w in initial_weights(task)
        ]
    a, b = initial_weights(task), initial_weights(task)
    assert all((wa == wb).all() for wa, wb in zip(a, b))
    assert not (initial_weights(task, seed=1)[0] == a[0]).all()


@pytest.mark.parametrize("task_name", ["mlp", "cnn"])
def test_eager_and_graph_agree_to_float_rounding(task_name, task_data):
    task = TASKS[task_name]
    ds = task_data(task, n_train=512)
    batches = [
        (tf.constant(ds.x_train[i : i + 64]), tf.constant(ds.y_train[i : i + 64]))
        for i in range(0, 512, 64)
    ]
    runs = {}
    for impl in ("custom_eager", "custom_graph"):
        trainer = implementations.get(impl)(task, initial_weights(task))
        runs[impl] = (trainer.step_losses(batches), get_weights(trainer.model))
    # The same kernels in the same order: agreement to a few float32 ulps.
    np.testing.assert_allclose(runs["custom_eager"][0], runs["custom_graph"][0], rtol=1e-6)
    for we, wg in zip(runs["custom_eager"][1], runs["custom_graph"][1]):
        np.testing.assert_allclose(we, wg, rtol=1e-5, atol=1e-6)
