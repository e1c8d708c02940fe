"""The hand-written layers of the seed tutorials, in TensorFlow: the built-in tasks' custom-loop
models (their ``build_custom``, ``bench/tasks/builtin.py``) on the TensorFlow backend.

Seed: "custom Dense layer and training process" (``DenseLayer``: a ``keras.layers.Layer``
with ``add_weight`` and a ``tf.matmul``) and "Keras custom models" (the CNN, here on a
hand-written conv layer over ``tf.nn.conv2d``). Their twins in ``keras.ops``, for the JAX
backend, are ``bench/tasks/layers_ops.py``, whose ``SpecModel`` holds either. Imports
TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

ACTIVATIONS: dict[str | None, Callable[[tf.Tensor], tf.Tensor]] = {
    None: tf.identity,
    "relu": tf.nn.relu,
}


class DenseLayer(keras.layers.Layer):
    """``activation(x @ w + bias)``, as in the seed."""

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
        return self.activation(tf.matmul(x, self.w) + self.bias)


class Conv2DLayer(keras.layers.Layer):
    """``activation(conv2d(x, kernel, stride, padding) + bias)`` on ``tf.nn.conv2d``; the
    kernel is laid out (height, width, in, out), as Keras's Conv2D lays out its own."""

    def __init__(
        self, filters: int, kernel: int, stride: int, activation="relu", padding="same", **kw
    ):
        super().__init__(**kw)
        self.filters, self.kernel, self.stride = filters, kernel, stride
        self.padding = padding.upper()
        self.activation = ACTIVATIONS[activation]

    def build(self, input_shape):
        self.w = self.add_weight(
            shape=(self.kernel, self.kernel, input_shape[-1], self.filters),
            initializer="random_uniform",
            name="kernel",
        )
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, x):
        y = tf.nn.conv2d(x, self.w, strides=self.stride, padding=self.padding)
        return self.activation(y + self.bias)


class FlattenLayer(keras.layers.Layer):
    def call(self, x):
        return tf.reshape(x, (-1, math.prod(x.shape[1:])))
