"""Hand-written layers and one GradientTape training step, run six ways: one step per call
(``custom_eager``, ``custom_graph``, ``custom_xla``), N steps per call (``custom_graph_loop``,
``custom_xla_loop``), and N steps per call on batches cut into parts (``custom_xla_split``).

Seed: "custom Dense layer and training process" (``DenseLayer`` with ``add_weight``, a
``train_per_step`` built on ``tf.GradientTape``) and "Keras custom models" (a subclassed
``keras.Model``; the CNN, here on a hand-written conv layer over ``tf.nn.conv2d``). The model
is the task's ``build_custom()`` -- for the built-in tasks those hand-written layers
(``bench/tasks/layers_tf.py``) -- or, for a task without one, its ``build()``.

``make_step`` builds the step once; the implementations differ only in the wrapper: nothing,
``tf.function``, or ``tf.function(jit_compile=True)``, around the step itself or around
``make_loop``'s in-graph loop over it. The same loop, by construction.

**Several steps per call** (``custom_graph_loop``, ``custom_xla_loop``), as TF Model Garden's
Orbit runs ``steps_per_loop``: ``make_loop`` runs the same step N times inside one
``tf.function`` -- a ``tf.range`` loop (a ``tf.while_loop`` in the graph) over N batches
stacked into one tensor ``x[N, B, ...]``, ``y[N, B]`` -- and returns the N per-step losses.
One call then pays the Python call, the function dispatch and the host round trip once per N
steps instead of once per step. The default N is ``implementations.keras_parts.STEPS_PER_CALL``
(shared with ``keras_fit_spe``; the factories take ``steps_per_call=``).

Why N = 16: measured on this project's 2-core CPU VM (TF 2.21, oneDNN on, 2026-11-24;
``pytest --benchmark-only --profile full -k test_steps_per_call``, medians per training step,
another benchmark process sharing the machine part of the time):

    N                         1      4     16     64     one step per call (default run)
    mlp, batch 256 (ms)
      custom_graph_loop    2.64   2.66   2.26   2.12     custom_graph 2.49
      custom_xla_loop      2.04   2.07   2.08   1.90     custom_xla   2.04
      keras_fit_spe        2.71   2.35   2.38   2.22     keras_fit    2.59
    linreg, batch 32 (us)
      custom_graph_loop     198    104     23     15     custom_graph  185
      custom_xla_loop       121     34      8      2     custom_xla    124
      keras_fit_spe         431    154     92     74     keras_fit     377

Where the call is all the cost (linreg), N = 16 already removes about 95% of what N = 64
removes; on the MLP the call is 0.1-0.5 ms of a 2-2.7 ms step, and N = 16 and 64 differ by
6-9%, within this VM's run-to-run noise (about 10%). Larger N costs memory (the stacked
batches: 13 MB for the MLP at 16, 51 MB at 64), makes ``fit``'s callbacks and logs see the
model only every N steps, and leaves a shorter last group per epoch (one more trace, and XLA
compilation, for up to N - 1 steps). XLA's compile time does not grow with N (0.8-0.9 s for
the MLP at 16, 32 and 64).

**Micro-batches** (``custom_xla_split``): ``custom_xla_loop`` with each batch cut into
``MICRO_BATCHES`` parts inside the step (``make_step``'s ``micro_batches``): each part's
forward and backward pass is independent of the others' until the losses are summed, so XLA's
CPU runtime, which runs independent operations concurrently, can keep both cores busy; one
part's chain of small matmuls alone does not (XLA splits a 256 x 784 x 200 matmul across the
cores at about 55% of the calibration matmul's rate on this CPU). The update is the batch's,
up to float rounding (tests/test_equivalence.py). A model with BatchNormalization or an
activity regulariser is refused: its training on parts is not its training on the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from bench.tasks import Task
from bench.tasks.data import input_list, map_inputs, several
from implementations.common import loss_value, precision_fields, stack_batches
from implementations.keras_parts import (
    STEPS_PER_CALL,
    check_precision,
    make_optimizer,
    task_model,
)

# ``custom_xla_split``'s parts per batch. Measured on this project's 2-core CPU VM (MLP, batch
# 256, N = 16, TF 2.21, 2026-11-24; ms per step, one process, same weights and batches):
# 1 part 1.14, 2 parts 0.97, 4 parts 1.09. Two parts, one per core here; a machine with more
# cores may want more (the factory takes ``micro_batches=``), a GPU none.
MICRO_BATCHES = 2


def make_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    task: Task,
    loss_fn: Callable[[Task, tf.Tensor, tf.Tensor], tf.Tensor] = loss_value,
    micro_batches: int = 1,
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The one training step every custom implementation runs (and ``bench/distributed/loop.py``'s
    replica step, with its own loss). ``loss_fn(task, y, out)`` is the scalar to minimise.
    The gradient is taken of ``optimizer.scale_loss(loss)``: the loss itself, except under
    ``mixed_float16``, whose ``LossScaleOptimizer`` scales it up here and the gradients back
    down (skipping the update where they overflowed) in ``apply_gradients``.

    ``micro_batches`` M > 1 (``custom_xla_split``): the batch is cut into M parts whose
    forward and backward passes share nothing until their losses meet, so the runtime may run
    them side by side on different cores; the loss is the parts' mean losses weighted by
    their sizes, which is the batch's mean loss (a mean-reduced loss, as every built-in task
    and Keras's default reduction have): the same update, up to float rounding."""

    def forward_loss(x, y):
        if micro_batches == 1:
            return loss_fn(task, y, model(x, training=True))
        b = input_list(x)[0].shape[0]
        if b is None or b < micro_batches:
            raise ValueError(
                f"micro_batches={micro_batches} needs a static batch of at least that size "
                f"(got {b})"
            )
        sizes = [b // micro_batches] * (micro_batches - 1)
        sizes.append(b - sum(sizes))
        parts = zip(split_inputs(x, sizes), tf.split(y, sizes), sizes, strict=True)
        return tf.add_n(
            [loss_fn(task, yp, model(xp, training=True)) * (n / b) for xp, yp, n in parts]
        )

    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y)
            if model.losses:  # the model's own (regularisation) losses, added as compile adds them
                loss += tf.cast(tf.add_n(model.losses), loss.dtype)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        # experiments/ab_budget.py plants a slowdown by matching the last two lines: keep them.
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


def split_inputs(x, sizes: list[int]) -> list:
    """``tf.split(x, sizes)``: the parts of a batch; of several inputs (a dict or tuple), each
    part holds the same rows of every input."""
    if not several(x):
        return tf.split(x, sizes)
    pieces = map_inputs(lambda a: tf.split(a, sizes), x)
    return [map_inputs(lambda p, i=i: p[i], pieces) for i in range(len(sizes))]


def make_loop(
    train_step: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], stacked: bool = True
) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """``train_step`` once per batch of ``xs[N, B, ...]``, ``ys[N, B]``, in order, as an
    in-graph loop (inside ``tf.function``, AutoGraph turns ``for i in tf.range`` into one
    ``tf.while_loop``); returns the N losses. N is the stacked tensor's static first
    dimension, so each N is one trace. ``stacked=False``: the function takes one batch
    ``x[B, ...]`` and runs the loop once (N = 1, the loop's own overhead with nothing to
    amortise it). Several inputs (a dict or tuple): each is stacked, and indexed, alike."""

    def train_loop(xs, ys):
        if not stacked:
            xs, ys = map_inputs(lambda a: a[tf.newaxis], xs), ys[tf.newaxis]
        n = input_list(xs)[0].shape[0]
        losses = tf.TensorArray(tf.float32, size=n)
        for i in tf.range(n):
            x = map_inputs(lambda a, i=i: a[i], xs) if several(xs) else xs[i]
            losses = losses.write(i, train_step(x, ys[i]))
        return losses.stack()

    return train_loop


MODES = {
    "eager": lambda f: f,
    "graph": lambda f: tf.function(f),
    "xla": lambda f: tf.function(f, jit_compile=True),
}


def check_micro_batches(model: keras.Model, name: str) -> None:
    """Refuse a model whose training on parts of a batch is not its training on the batch:
    BatchNormalization normalises each part by the part's own statistics, and an activity
    regulariser's loss would be counted for the last part only."""
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            raise NotImplementedError(
                f"{name} splits each batch into micro-batches; {layer.name} "
                "(BatchNormalization) would see each part's statistics, not the batch's"
            )
        if getattr(layer, "activity_regularizer", None) is not None:
            raise NotImplementedError(
                f"{name} splits each batch into micro-batches; {layer.name}'s activity "
                "regulariser would count one part's activity, not the batch's"
            )


class CustomLoopTrainer:
    """``loop=False``: ``step(x, y)`` is one step on one batch. ``loop=True``: ``step(xs, ys)``
    runs ``make_loop``: ``steps_per_call`` steps on that many stacked batches (one batch, not
    stacked, when it is 1) and returns their losses."""

    def __init__(
        self,
        task: Task,
        weights: list[np.ndarray],
        *,
        mode: str,
        name: str,
        loop: bool = False,
        steps_per_call: int = 1,
        precision: str = "float32",
        micro_batches: int = 1,
    ):
        if micro_batches < 1:
            raise ValueError(f"{name}: micro_batches={micro_batches} must be >= 1")
        if steps_per_call < 1 or (steps_per_call > 1 and not loop):
            raise ValueError(f"{name}: steps_per_call={steps_per_call} needs loop=True and >= 1")
        if loop and mode == "eager":
            raise ValueError(f"{name}: the in-graph loop needs tf.function (graph or xla)")
        self.name, self.task, self.mode = name, task, mode
        self.loop, self.steps_per_call = loop, steps_per_call
        self.micro_batches = micro_batches
        # The task's hand-written layers (build_custom; the built-ins: the seed's DenseLayer
        # and Conv2DLayer, bench/tasks/layers_tf.py), else its own model, driven by the step.
        self.model = task_model(task, weights, check_precision(precision), custom=True)
        if micro_batches > 1:
            check_micro_batches(self.model, name)
        self.optimizer = make_optimizer(task, precision)
        # Create the optimizer's slots now: variables cannot be created inside an XLA cluster.
        self.optimizer.build(self.model.trainable_variables)
        step = make_step(self.model, self.optimizer, task, micro_batches=micro_batches)
        if loop:
            step = make_loop(step, stacked=steps_per_call > 1)
        self._step = MODES[mode](step)

    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return self._step(x, y)

    def step_losses(self, batches: Iterable[tuple[tf.Tensor, tf.Tensor]]) -> np.ndarray:
        # One call per group of steps_per_call batches; a shorter last group is one more trace.
        n = self.steps_per_call if self.loop else 1
        losses = [
            np.asarray(self._step(x, y), np.float64).ravel() for x, y in stack_batches(batches, n)
        ]
        return np.concatenate(losses) if losses else np.zeros(0)

    def fit_epoch(self, dataset: tf.data.Dataset) -> float:
        if self.steps_per_call > 1:
            # tf.data stacks the groups, off the training thread; the last may be shorter.
            dataset = dataset.batch(self.steps_per_call).prefetch(1)
        losses = [tf.reshape(self._step(x, y), (-1,)) for x, y in dataset]
        return float(tf.reduce_mean(tf.concat(losses, axis=0)))

    def traces(self) -> int:
        if self.mode == "eager":
            return 0
        return int(self._step.experimental_get_tracing_count())

    def resolved(self) -> dict:
        wrapper = {
            "eager": "eager GradientTape",
            "graph": "tf.function",
            "xla": "tf.function(jit_compile=True)",
        }[self.mode]
        return {
            "jit_compile": self.mode == "xla",
            "jit_compile_requested": self.mode == "xla",
            "run_eagerly": self.mode == "eager",
            "steps_per_execution": self.steps_per_call,
            "steps_per_call": self.steps_per_call,
            "loop": f"{wrapper} over a tf.range loop of the step" if self.loop else wrapper,
            "micro_batches": self.micro_batches,
            **precision_fields(self.model, self.optimizer),
        }


def custom_eager(
    task: Task, weights: list[np.ndarray], precision: str = "float32"
) -> CustomLoopTrainer:
    return CustomLoopTrainer(task, weights, mode="eager", name="custom_eager", precision=precision)


def custom_graph(
    task: Task, weights: list[np.ndarray], precision: str = "float32"
) -> CustomLoopTrainer:
    return CustomLoopTrainer(task, weights, mode="graph", name="custom_graph", precision=precision)


def custom_xla(
    task: Task, weights: list[np.ndarray], precision: str = "float32"
) -> CustomLoopTrainer:
    return CustomLoopTrainer(task, weights, mode="xla", name="custom_xla", precision=precision)


def custom_graph_loop(
    task: Task,
    weights: list[np.ndarray],
    steps_per_call: int = STEPS_PER_CALL,
    precision: str = "float32",
) -> CustomLoopTrainer:
    return CustomLoopTrainer(
        task,
        weights,
        mode="graph",
        name="custom_graph_loop",
        loop=True,
        steps_per_call=steps_per_call,
        precision=precision,
    )


def custom_xla_loop(
    task: Task,
    weights: list[np.ndarray],
    steps_per_call: int = STEPS_PER_CALL,
    precision: str = "float32",
) -> CustomLoopTrainer:
    return CustomLoopTrainer(
        task,
        weights,
        mode="xla",
        name="custom_xla_loop",
        loop=True,
        steps_per_call=steps_per_call,
        precision=precision,
    )


def custom_xla_split(
    task: Task,
    weights: list[np.ndarray],
    steps_per_call: int = STEPS_PER_CALL,
    precision: str = "float32",
    micro_batches: int = MICRO_BATCHES,
) -> CustomLoopTrainer:
    """``custom_xla_loop`` with each batch cut into ``micro_batches`` independent parts
    (``make_step``): the same updates; what XLA's CPU runtime does with the parallelism."""
    return CustomLoopTrainer(
        task,
        weights,
        mode="xla",
        name="custom_xla_split",
        loop=True,
        steps_per_call=steps_per_call,
        precision=precision,
        micro_batches=micro_batches,
    )
