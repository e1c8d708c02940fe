"""Built-in Keras layers trained with ``compile`` + ``fit`` (``keras_fit``, ``keras_fit_xla``).

Seed: both tutorials train Keras models; the layers here are ``keras.layers.Dense`` /
``Conv2D`` / ``Flatten`` built from the task spec. ``jit_compile`` is pinned (never "auto",
which means XLA on with a GPU and off without) and what Keras resolved it to is recorded.

A "step" is one call of ``model.train_function`` -- the compiled function ``fit`` itself
calls once per batch -- on a batch of tensors. ``fit``'s own per-call setup (data adapter,
callbacks, epoch iterator) is measured separately by the harness.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from bench.tasks import Conv2D, Dense, Flatten, Task
from implementations.common import keras_loss, make_optimizer, set_weights


def build_model(task: Task) -> keras.Model:
    layers: list[keras.layers.Layer] = [keras.Input(shape=task.input_shape)]
    for spec in task.layers:
        if isinstance(spec, Flatten):
            layers.append(keras.layers.Flatten())
        elif isinstance(spec, Dense):
            layers.append(keras.layers.Dense(spec.units, activation=spec.activation))
        elif isinstance(spec, Conv2D):
            layers.append(
                keras.layers.Conv2D(
                    spec.filters,
                    spec.kernel,
                    strides=spec.stride,
                    padding=spec.padding,
                    activation=spec.activation,
                )
            )
    return keras.Sequential(layers, name=f"{task.name}_builtin")


class KerasFitTrainer:
    def __init__(self, task: Task, weights: list[np.ndarray], *, jit_compile: bool, name: str):
        self.name, self.task, self._jit = name, task, jit_compile
        self.model = build_model(task)
        set_weights(self.model, weights)
        self.model.compile(
            optimizer=make_optimizer(task),
            loss=keras_loss(task),
            jit_compile=jit_compile,
        )
        self._trace_count = 0
        train_step = self.model.train_step

        def counted_train_step(data):
            # Runs once per trace when compiled, so it counts traces (retrace detection).
            self._trace_count += 1
            return train_step(data)

        # Instance attribute: the compiled train function wraps whatever train_step is at
        # make_train_function() time. Keras's own train_step still does all the work.
        self.model.train_step = counted_train_step
        self.model.make_train_function()  # wraps counted_train_step; fit() reuses it

    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        # A list is the path train_on_batch takes: the same compiled one-step function that
        # fit runs per batch, fed tensors directly rather than through a tf.data iterator.
        return self.model.train_function([(x, y)])["loss"]

    def step_losses(self, batches: Iterable[tuple[tf.Tensor, tf.Tensor]]) -> np.ndarray:
        # Keras logs the running mean of the epoch's losses; resetting the loss tracker
        # before each step makes the logged value that one batch's loss.
        losses = []
        for x, y in batches:
            self.model.reset_metrics()
            losses.append(float(self.step(x, y)))
        return np.array(losses, dtype=np.float64)

    def fit_epoch(self, dataset: tf.data.Dataset) -> float:
        history = self.model.fit(dataset, epochs=1, shuffle=False, verbose=0)
        return float(history.history["loss"][-1])

    def traces(self) -> int:
        return self._trace_count

    def resolved(self) -> dict:
        return {
            "jit_compile": bool(self.model.jit_compile),
            "jit_compile_requested": self._jit,
            "run_eagerly": bool(self.model.run_eagerly),
            "steps_per_execution": int(self.model.steps_per_execution),
            "loop": "model.fit",
        }


def keras_fit(task: Task, weights: list[np.ndarray]) -> KerasFitTrainer:
    return KerasFitTrainer(task, weights, jit_compile=False, name="keras_fit")


def keras_fit_xla(task: Task, weights: list[np.ndarray]) -> KerasFitTrainer:
    return KerasFitTrainer(task, weights, jit_compile=True, name="keras_fit_xla")
