"""Hand-written layers and one GradientTape training step, run three ways
(``custom_eager``, ``custom_graph``, ``custom_xla``).

Seed: "custom Dense layer and training process" (``DenseLayer`` with ``add_weight``, a
``train_per_step`` built on ``tf.GradientTape``) and "Keras custom models" (a subclassed
``keras.Model``; the CNN, here on a hand-written conv layer over ``tf.nn.conv2d``).

``make_step`` builds the step once; the three implementations differ only in the wrapper:
nothing, ``tf.function``, or ``tf.function(jit_compile=True)``. The same loop, by
construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from bench.tasks import Conv2D, Dense, Flatten, Task
from implementations.common import loss_value, make_optimizer, set_weights

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


class CustomModel(keras.Model):
    """A subclassed model: the task's layers applied in order."""

    def __init__(self, task: Task, **kwargs):
        super().__init__(name=f"{task.name}_custom", **kwargs)
        self.blocks = []
        for spec in task.layers:
            if isinstance(spec, Flatten):
                self.blocks.append(FlattenLayer())
            elif isinstance(spec, Dense):
                self.blocks.append(DenseLayer(spec.units, spec.activation))
            elif isinstance(spec, Conv2D):
                self.blocks.append(
                    Conv2DLayer(
                        spec.filters, spec.kernel, spec.stride, spec.activation, spec.padding
                    )
                )

    def call(self, x, training=False):
        for block in self.blocks:
            x = block(x)
        return x


def make_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, task: Task):
    """The one training step all three custom implementations run."""

    def train_step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = loss_value(task, y, out)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


MODES = {
    "eager": lambda f: f,
    "graph": lambda f: tf.function(f),
    "xla": lambda f: tf.function(f, jit_compile=True),
}


class CustomLoopTrainer:
    def __init__(self, task: Task, weights: list[np.ndarray], *, mode: str, name: str):
        self.name, self.task, self.mode = name, task, mode
        self.model = CustomModel(task)
        self.model(tf.zeros((1, *task.input_shape)))  # build the variables
        set_weights(self.model, weights)
        self.optimizer = make_optimizer(task)
        # Create the optimizer's slots now: variables cannot be created inside an XLA cluster.
        self.optimizer.build(self.model.trainable_variables)
        self._step = MODES[mode](make_step(self.model, self.optimizer, task))

    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self._step(x, y)

    def step_losses(self, batches: Iterable[tuple[tf.Tensor, tf.Tensor]]) -> np.ndarray:
        return np.array([float(self._step(x, y)) for x, y in batches], dtype=np.float64)

    def fit_epoch(self, dataset: tf.data.Dataset) -> float:
        losses = [self._step(x, y) for x, y in dataset]
        return float(tf.reduce_mean(tf.stack(losses)))

    def traces(self) -> int:
        if self.mode == "eager":
            return 0
        return int(self._step.experimental_get_tracing_count())

    def resolved(self) -> dict:
        return {
            "jit_compile": self.mode == "xla",
            "jit_compile_requested": self.mode == "xla",
            "run_eagerly": self.mode == "eager",
            "steps_per_execution": 1,
            "loop": {
                "eager": "eager GradientTape",
                "graph": "tf.function",
                "xla": "tf.function(jit_compile=True)",
            }[self.mode],
        }


def custom_eager(task: Task, weights: list[np.ndarray]) -> CustomLoopTrainer:
    return CustomLoopTrainer(task, weights, mode="eager", name="custom_eager")


def custom_graph(task: Task, weights: list[np.ndarray]) -> CustomLoopTrainer:
    return CustomLoopTrainer(task, weights, mode="graph", name="custom_graph")


def custom_xla(task: Task, weights: list[np.ndarray]) -> CustomLoopTrainer:
    return CustomLoopTrainer(task, weights, mode="xla", name="custom_xla")
