"""What the suite builds from any task (``bench/tasks/task.py``): the reference build and its
initial weights, each implementation's own instance of the model, the loss, the FLOPs.

Weights: ``init_weights(seed)`` where the task gives it (the built-ins: NumPy-drawn Glorot
kernels, so the JAX backend starts from the very same arrays); else the model is built once
per (task, seed) under ``keras.utils.set_random_seed`` and *all* its weights, trainable and not
(BatchNormalization's moving statistics), are taken from that build. Either way they are
copied into every implementation's own instance (``new_model``), which is checked to have the
same number of variables with the same shapes (and, for another build() of the same function,
the same names). Its random-number generators (Dropout's, GaussianNoise's) start from states
set by the task's seed (``set_seed_states``), the same in every instance.

Importing this module imports no TensorFlow and no Keras; building a model does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.tasks.data import map_inputs
from bench.tasks.task import Task, TaskError, cached, input_specs

# --- the reference build: initial weights, and each implementation's own instance ----------


def call_built(task: Task, model) -> Any:
    """Build the model's variables by calling it once on zeros of the task's input(s)."""
    x = map_inputs(lambda s: np.zeros((1, *s.shape), dtype=s.dtype), input_specs(task))
    return model(x, training=False)


def _normalised_path(variable) -> str:
    """A variable's path without Keras's uniquifying suffixes (``dense_3`` -> ``dense``), so
    two builds of the same function name their variables alike."""
    return "/".join(re.sub(r"_\d+$", "", part) for part in variable.path.split("/"))


def reference_model(task: Task, seed: int | None = None):
    """(model, all its weights) from one build under the seed; cached per (task, seed)."""
    import keras  # lazy: heavy; importing bench.tasks imports no Keras

    seed = task.seed if seed is None else seed

    def make():
        keras.utils.set_random_seed(seed)
        model = task.build()
        if not isinstance(model, keras.Model):
            raise TaskError(f"build() returned {type(model).__name__}, not a keras.Model")
        call_built(task, model)
        weights = [np.array(v.numpy()) for v in model.weights]
        return model, WeightList(weights, [_normalised_path(v) for v in model.weights])

    return cached(task, ("reference", seed), make)


class WeightList(list):
    """Every weight array of a model, in ``model.weights`` order, with their variables' paths."""

    def __init__(self, arrays: list[np.ndarray], paths: list[str]):
        super().__init__(arrays)
        self.paths = paths


def initial_weights(task: Task, seed: int | None = None) -> list[np.ndarray]:
    """The weights every implementation starts from (module docstring): ``init_weights(seed)``
    where the task gives it, else every weight of one build under the seed."""
    seed = task.seed if seed is None else seed
    if task.init_weights is None:
        return reference_model(task, seed)[1]
    arrays = cached(task, ("init", seed), lambda: [np.asarray(w) for w in task.init_weights(seed)])
    return list(arrays)


def new_model(task: Task, weights: list[np.ndarray], custom: bool = False):
    """A new instance of the task's model holding ``weights`` in every variable (trainable and
    not): from ``build_custom`` for ``custom`` (the custom loops) where the task has one, else
    from ``build``. The instance must have as many variables as ``weights``, with their shapes
    (and, being another build of the reference's function, its variables' names), else a
    TaskError. Its random-number generators start from the states the task's seed gives
    (``set_seed_states``), the same in every instance."""
    builder, what = task.build, "build()"
    if custom and task.build_custom is not None:
        builder, what = task.build_custom, "build_custom()"
    model = builder()
    call_built(task, model)
    variables = model.weights
    # Names are compared only between two builds of the same function: build_custom's
    # hand-written layers name their variables their own way.
    paths = getattr(weights, "paths", None) if builder is task.build else None
    if len(variables) != len(weights):
        raise TaskError(
            f"task {task.name!r}: {what} made {len(variables)} weights, the initial weights "
            f"are {len(weights)}: every build must make the same variables, in the same order"
        )
    for i, (v, w) in enumerate(zip(variables, weights)):
        path = paths[i] if paths else None
        if tuple(v.shape) != tuple(w.shape) or (path and _normalised_path(v) != path):
            raise TaskError(
                f"task {task.name!r}: {what}'s weight {v.path} {tuple(v.shape)} does not match "
                f"initial weight {i} {path or ''} {tuple(w.shape)}: every build must make the "
                "same variables, in the same order".replace("  ", " ")
            )
        v.assign(w)
    set_seed_states(model, task.seed)
    return model


def seed_states(model) -> list:
    """The state variables of the model's random-number generators, in layer order: one per
    Keras ``SeedGenerator`` a layer holds (Dropout, GaussianNoise, a GRU cell with dropout,
    the random augmentation layers). They are in ``model.variables`` but not in
    ``model.weights``; a random op a layer calls without its own generator (the global one)
    has none."""
    states, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator.state) not in seen:
                seen.add(id(generator.state))
                states.append(generator.state)
    return states


def set_seed_states(model, seed: int) -> None:
    """Every random-number generator of the model starts from a state that depends only on
    ``seed`` and its place in the model, so every instance of it -- each implementation's --
    draws the same dropout masks and noise, where the backend draws the same numbers from the
    same state (tests/test_equivalence.py measures which do)."""
    for i, state in enumerate(seed_states(model)):
        key = int(np.random.SeedSequence((seed, i)).generate_state(1)[0]) % (2**31 - 2) + 1
        state.assign(np.array([key, 0], dtype=state.dtype))


# --- the loss -------------------------------------------------------------------------------


def keras_loss(task: Task):
    """The task's loss as one ``keras.losses.Loss`` object (mean over the batch): what
    ``compile`` is given."""
    return cached(task, "loss", lambda: _resolve_loss(task))


def batch_loss(task: Task) -> Callable[[Any, Any], Any]:
    """``(y_true, y_pred) -> the mean loss over the batch``, as a custom loop calls it: the
    same function as ``keras_loss``. A Keras loss object is called as it is; a loss function
    (the built-ins' ``bench.tasks.builtin.logits_crossentropy``, as the seed's ``loss_func``)
    is called directly and its per-example values averaged -- with ``tf.reduce_mean`` on
    TensorFlow -- without ``Loss.__call__``'s bookkeeping, which costs an eager step of the
    linear regression a third of its time (``bench ab``, 2026-12-01: custom_eager-linreg +37%)."""
    return cached(task, "batch_loss", lambda: _resolve_batch_loss(task))


def _resolve_batch_loss(task: Task):
    import keras  # lazy: heavy; importing bench.tasks imports no Keras

    loss = keras_loss(task)
    fn = getattr(loss, "fn", None) if type(loss).__name__ == "LossFunction" else None
    if fn is None:
        return loss
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # lazy: heavy, and only on the TensorFlow backend

        mean = tf.reduce_mean
    else:
        mean = keras.ops.mean

    def mean_loss(y_true, y_pred):
        return mean(fn(y_true, y_pred))

    return mean_loss


def _loss_function_class():
    import keras  # lazy: heavy; importing bench.tasks imports no Keras

    class LossFunction(keras.losses.Loss):
        """A callable ``(y_true, y_pred) -> loss per example (or a scalar)`` as a Keras loss:
        averaged over the batch, as ``compile`` averages a loss function."""

        def __init__(self, fn):
            # a valid scope name: a lambda's "<lambda>" is not one
            name = re.sub(r"[^A-Za-z0-9_.]", "_", getattr(fn, "__name__", "")).strip("_")
            super().__init__(name=name or "user_loss")
            self.fn = fn

        def call(self, y_true, y_pred):
            return self.fn(y_true, y_pred)

    return LossFunction


def _LossFunction(fn):  # noqa: N802 (a class, made when Keras is imported)
    return _loss_function_class()(fn)


def _resolve_loss(task: Task):
    import keras  # lazy: heavy; importing bench.tasks imports no Keras

    loss = task.loss
    if isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
        if isinstance(loss, keras.losses.Loss):
            return loss
    if not callable(loss):
        raise TaskError(f"loss {task.loss!r} is neither a Keras loss nor callable")
    return _LossFunction(loss)


# --- the FLOPs ------------------------------------------------------------------------------


def train_flops_per_sample(task: Task) -> int:
    """Training FLOPs per example: the task's own ``flops_per_sample`` where it gives one (the
    built-ins: analytic), else counted by TensorFlow's profiler on the forward graph (x3, the
    suite's convention); 0 where it cannot count (ops inside loops, e.g. RNN cells, are
    counted once per loop, not per step)."""
    if task.flops_per_sample is not None:
        return int(task.flops_per_sample)
    import tensorflow as tf  # lazy: heavy; only its profiler counts the FLOPs

    model = reference_model(task)[0]
    spec = map_inputs(lambda s: tf.TensorSpec((1, *s.shape), s.dtype), input_specs(task))
    try:
        graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        flops = tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops
    except Exception:
        return 0
    return 3 * int(flops)
