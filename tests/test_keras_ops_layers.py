"""The hand-written layers the JAX custom loops run (``bench/tasks/layers_ops.py``, written in
``keras.ops``) checked here on the TensorFlow backend, without jax: they compute what the
TensorFlow ones (``bench/tasks/layers_tf.py``) compute, from the same weights. (In the JAX
worker: tests/test_jax.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bench.tasks import TASKS, initial_weights, layers_ops, layers_tf
from bench.tasks.builtin import ARCHITECTURES
from implementations import jax_backend
from implementations.keras_parts import set_weights


@pytest.mark.parametrize("task_name", list(TASKS))
def test_keras_ops_layers_compute_what_the_tensorflow_layers_compute(task_name, task_data):
    task = TASKS[task_name]
    x = tf.constant(task_data(task).x_train[:32])
    arch = ARCHITECTURES[task_name]
    models = [arch.build_custom(layers_ops), arch.build_custom(layers_tf)]
    assert isinstance(models[1].blocks[-1], layers_tf.DenseLayer)
    assert isinstance(models[0].blocks[-1], layers_ops.DenseLayer)
    for model in models:
        model(x[:1])
        set_weights(model, initial_weights(task))
    assert [v.shape for v in models[0].trainable_variables] == [
        v.shape for v in models[1].trainable_variables
    ]
    np.testing.assert_allclose(models[0](x), models[1](x), rtol=1e-5, atol=1e-6)


def test_the_jax_registry_names_its_twins():
    assert set(jax_backend.MULTI_STEP) <= set(jax_backend.REGISTRY)
    assert set(jax_backend.TF_TWINS) == set(jax_backend.REGISTRY)
