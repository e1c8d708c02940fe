"""What every implementation shares that needs Keras but not TensorFlow: the N of the
multi-step implementations, the precisions, the optimizer, the Keras loss, the task's model
holding the initial weights, and the grouping of batches. ``implementations/common.py``
(TensorFlow) and ``implementations/jax_backend.py`` (run where TensorFlow must not be
imported) both use these, so the two backends build the same model, optimizer and loss from
one piece of code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
import numpy as np

from bench.tasks import Task
from bench.tasks.model import keras_loss as _task_loss
from bench.tasks.model import new_model

# The default N of the implementations that run several steps per call (``custom_*_loop``,
# ``keras_fit_spe``, ``jax_fit_spe``, ``jax_custom_loop``); the measurement behind it is in
# ``implementations/custom_loop.py``.
STEPS_PER_CALL = 16

# Keras dtype policies every implementation takes as ``precision=``: variables stay float32;
# with a mixed policy each layer computes in the 16-bit type. ``mixed_float16`` adds dynamic
# loss scaling (float16's narrow exponent underflows small gradients); bfloat16 has float32's
# exponent and needs none.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return precision


def make_optimizer(task: Task, precision: str = "float32") -> keras.optimizers.Optimizer:
    """The task's optimizer; for ``mixed_float16`` wrapped in Keras's ``LossScaleOptimizer``
    (the wrapping ``compile`` itself does for a model whose policy is mixed_float16)."""
    if task.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=task.learning_rate)
    elif task.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=task.learning_rate)
    else:
        raise ValueError(f"task {task.name}: unknown optimizer {task.optimizer!r}")
    if check_precision(precision) == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def keras_loss(task: Task) -> keras.losses.Loss:
    """The task's loss as one Keras loss object: what ``compile`` is given and what the custom
    loops call (``common.loss_value``), so every implementation minimises the same function."""
    return _task_loss(task)


def task_model(
    task: Task, weights: list[np.ndarray], precision: str = "float32", custom: bool = False
) -> keras.Model:
    """A new instance of the task's model holding ``weights`` in every variable, trainable or
    not (``bench.tasks.model.new_model``): ``build_custom``'s hand-written layers for a custom
    loop (``custom``) where the task has them, else ``build``'s. ``precision``: the build runs
    under that global dtype policy (every layer takes the default), restored after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(check_precision(precision))
    try:
        return new_model(task, weights, custom=custom)
    finally:
        keras.config.set_dtype_policy(previous)


def set_weights(model: keras.Model, weights: list[np.ndarray]) -> None:
    variables = model.trainable_variables
    if len(variables) != len(weights):
        raise ValueError(f"model has {len(variables)} weight arrays, got {len(weights)}")
    for v, w in zip(variables, weights):
        if tuple(v.shape) != w.shape:
            raise ValueError(f"weight {v.path}: shape {tuple(v.shape)}, got {w.shape}")
        v.assign(w)


def group_batches(
    batches: Iterable[tuple[Any, Any]], n: int, stack: Callable[[list], Any]
) -> Iterator[tuple[Any, Any]]:
    """Consecutive groups of ``n`` batches, each stacked with ``stack`` (``tf.stack``,
    ``np.stack``) into ``(x[n, B, ...], y[n, B])``; the last group holds what is left (fewer
    than ``n``). ``n == 1``: the batches as they are."""
    group: list[tuple[Any, Any]] = []
    for batch in batches:
        if n == 1:
            yield batch
            continue
        group.append(batch)
        if len(group) == n:
            yield stack([x for x, _ in group]), stack([y for _, y in group])
            group = []
    if group:
        yield stack([x for x, _ in group]), stack([y for _, y in group])
