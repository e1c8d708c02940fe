"""The hand-written layers in ``keras.ops``: the same ``DenseLayer``, ``Conv2DLayer`` and
``FlattenLayer`` as ``bench/tasks/layers_tf.py``, on any Keras backend. The built-in tasks'
``build_custom`` uses these on JAX (``implementations/jax_backend.py``'s custom loops), where
the TensorFlow layers cannot run; on TensorFlow, tests/test_keras_ops_layers.py holds them to
the TensorFlow ones (equal to float rounding), so the JAX-vs-TF comparison is of the backend
and loop, not of two hand translations. Under ``jax.jit`` ``keras.ops`` costs nothing per step
(it dispatches at trace time only). Weight names, layouts and order are the TensorFlow
layers', so one set of initial weights fits both.

Also ``SpecModel``, the subclassed model both layer sets are applied in. Imports Keras, not
TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
from keras import ops

ACTIVATIONS: dict[str | None, Callable] = {None: lambda x: x, "relu": ops.relu}


class SpecModel(keras.Model):
    """A subclassed model: its blocks (hand-written layers) applied in order."""

    def __init__(self, blocks: list[keras.layers.Layer], **kwargs):
        super().__init__(**kwargs)
        self.blocks = blocks

    def call(self, x, training=False):
        for block in self.blocks:
            x = block(x)
        return x


class DenseLayer(keras.layers.Layer):
    """``activation(x @ w + bias)``: ``layers_tf.DenseLayer`` in ``keras.ops``."""

    def __init__(self, units: int, activation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = ACTIVATIONS[activation]

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="random_uniform", name="w"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        return self.activation(ops.matmul(x, self.w) + self.bias)


class Conv2DLayer(keras.layers.Layer):
    """``activation(conv(x, kernel, stride, padding) + bias)``, kernel (h, w, in, out):
    ``layers_tf.Conv2DLayer`` in ``keras.ops``."""

    def __init__(
        self, filters: int, kernel: int, stride: int, activation="relu", padding="same", **kw
    ):
        super().__init__(**kw)
        self.filters, self.kernel, self.stride, self.padding = filters, kernel, stride, padding
        self.activation = ACTIVATIONS[activation]

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(self.kernel, self.kernel, input_shape[-1], self.filters),
            initializer="random_uniform",
            name="kernel",
        )
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, x):
        y = ops.conv(x, self.w, strides=self.stride, padding=self.padding)
        return self.activation(y + self.bias)


class FlattenLayer(keras.layers.Layer):
    def call(self, x):
        return ops.reshape(x, (-1, math.prod(x.shape[1:])))
