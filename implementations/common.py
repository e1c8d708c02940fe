"""What every TensorFlow implementation shares: the interface it meets, the loss, the
evaluation, and the epoch driver (what the JAX backend shares too -- the optimizer, the Keras
loss, weight loading -- is ``keras_parts``). Implementations differ only in how a step is run.

Every trainer holds a ``keras.Model`` whose call returns logits (or the regression output),
so evaluation and weight handling are written once, here.

A task with several inputs has ``x`` as a dict or tuple of arrays (tensors), one per input
(``bench/tasks/data.py``): batches, stacks and evaluation handle each input alike, and one
array goes through the very same calls as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from bench.tasks import Task
from bench.tasks.data import epoch_order, map_inputs, n_examples, several, take
from bench.tasks.model import batch_loss
from bench.tasks.task import correct_labels
from implementations.keras_parts import group_batches


class Trainer(Protocol):
    """The interface every implementation meets (see ``implementations/__init__.py``).

    ``steps_per_call`` is how many training steps one ``step`` call runs. Where it is more
    than 1, ``step`` takes that many batches stacked into one tensor, ``x[N, B, ...]`` and
    ``y[N, B]`` (``stack_batches``), and runs one step on each, in order; the harness counts
    a call as N steps, so results stay seconds per training step. A task with several inputs
    has ``x`` a dict or tuple of tensors, each stacked alike."""

    name: str
    task: Task
    model: keras.Model
    steps_per_call: int

    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """One call: ``steps_per_call`` training steps. Returns the loss as a device tensor
        (or the N per-step losses), without waiting for it (built-in Keras reports the running
        mean of the epoch's losses, as ``fit`` logs do)."""
        ...

    def step_losses(self, batches: Iterable[tuple[tf.Tensor, tf.Tensor]]) -> np.ndarray:
        """Train on each batch in turn (N per call); the loss of each batch, on the host."""
        ...

    def fit_epoch(self, dataset: tf.data.Dataset) -> float:
        """One pass over ``dataset`` (of single batches); the mean training loss."""
        ...

    def traces(self) -> int:
        """How many times the step function has been traced (0 for eager)."""
        ...

    def resolved(self) -> dict:
        """What the implementation actually resolved to (jit_compile, run_eagerly,
        steps_per_call, ...)."""
        ...


def precision_fields(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
    """What a trainer's dtype policy resolved to, from the built model's layers."""
    policies = {layer.dtype_policy.name for layer in model.layers if layer.weights}
    compute = {layer.compute_dtype for layer in model.layers if layer.weights}
    return {
        "precision": policies.pop() if len(policies) == 1 else "/".join(sorted(policies)),
        "compute_dtype": compute.pop() if len(compute) == 1 else "/".join(sorted(compute)),
        "variable_dtype": str(model.trainable_variables[0].dtype),
        "loss_scale": isinstance(optimizer, keras.optimizers.LossScaleOptimizer),
    }


def loss_value(task: Task, y: tf.Tensor, out: tf.Tensor) -> tf.Tensor:
    """Mean loss over the batch: the function ``compile`` is given as a Keras loss
    (``bench.tasks.model.batch_loss``; the built-ins: the seed's ``tf.reduce_mean`` of
    ``tf.nn.sparse_softmax_cross_entropy_with_logits``). A mixed-precision model's output is
    cast to float32 first, as Keras's losses do."""
    return batch_loss(task)(y, tf.cast(out, tf.float32))


def get_weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.trainable_variables]


def stack_inputs(parts: list) -> tf.Tensor | dict | tuple:
    """``tf.stack`` of N batches' inputs: of each input, for several (a dict or tuple each)."""
    if several(parts[0]):
        return map_inputs(lambda *inputs: tf.stack(inputs), *parts)
    return tf.stack(parts)


def stack_batches(
    batches: Iterable[tuple[tf.Tensor, tf.Tensor]], n: int
) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """``keras_parts.group_batches`` with ``tf.stack``: groups of ``n`` batches as
    ``(x[n, B, ...], y[n, B])`` (several inputs: each stacked so), the last group shorter;
    ``n == 1``: the batches as they are."""
    return group_batches(batches, n, stack_inputs)


def epoch_dataset(x, y: np.ndarray, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
    """One epoch's batches in the suite's fixed order; the ragged last batch is dropped so
    every step has the same shape (no retracing). ``x``: one array, or a dict or tuple of
    them (several inputs), batched alike."""
    order = epoch_order(n_examples(x), seed, epoch)
    ds = tf.data.Dataset.from_tensor_slices((take(x, order), y[order]))
    return ds.batch(batch_size, drop_remainder=True).prefetch(2)


_forward_fns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def evaluate(
    model: keras.Model, task: Task, x, y: np.ndarray, batch_size: int = 1000
) -> tuple[float, float | None]:
    """(mean loss, accuracy) of ``model`` on (x, y); accuracy is None for regression.
    The same code for every implementation, so evaluation is not what differs. ``x``: one
    array, or a dict or tuple of them (several inputs)."""
    if model not in _forward_fns:
        _forward_fns[model] = tf.function(lambda inp: model(inp, training=False))
    forward = _forward_fns[model]
    total_loss, correct, labels = 0.0, 0, 0
    n = n_examples(x)
    for start in range(0, n, batch_size):
        xb, yb = take(x, slice(start, start + batch_size)), y[start : start + batch_size]
        out = forward(map_inputs(tf.constant, xb))
        total_loss += float(loss_value(task, tf.constant(yb), out)) * len(yb)
        if task.kind == "classification":
            right, count = correct_labels(task, out.numpy(), yb)
            correct, labels = correct + right, labels + count
    accuracy = correct / labels if task.kind == "classification" else None
    return total_loss / n, accuracy
