"""Built-in Keras layers trained with ``compile`` + ``fit`` (``keras_fit``, ``keras_fit_xla``,
``keras_fit_spe``).

Seed: both tutorials train Keras models; the model is the task's ``build()`` (for the
built-in tasks ``keras.layers.Dense`` / ``Conv2D`` / ``Flatten``, ``bench/tasks/builtin.py``).
``jit_compile`` is pinned (never "auto", which means XLA on with a GPU and off without) and
what Keras resolved it to is recorded.

``keras_fit`` / ``keras_fit_xla``: a "step" is one call of ``model.train_function`` -- the
compiled function ``fit`` itself calls once per batch -- on a batch of tensors (a list: the
path ``train_on_batch`` takes). ``fit``'s own per-call setup (data adapter, callbacks, epoch
iterator) is measured separately by the harness.

``keras_fit_spe``: ``compile(steps_per_execution=N)``, XLA off, the default N shared with the
custom loops (``implementations.keras_parts.STEPS_PER_CALL``; ``keras_fit_spe(...,
steps_per_call=N)`` for another). Keras 3's TensorFlow backend runs N steps per call only
when ``train_function`` is handed a ``tf.data`` iterator, as ``fit`` hands it one:
``multi_step_on_iterator`` is then one ``tf.function`` holding a ``tf.while_loop`` that pulls
up to N batches from the iterator in the graph and runs the one-step function on each. Fed a
list (or any other Python iterable), it loops in Python, one call of the one-step function
per batch. So ``step(x[N, B, ...], y[N, B])`` feeds ``train_function`` an iterator over the N
stacked batches, repeated, kept while the same tensors are fed: each call runs those N
batches in order, as ``fit`` runs an epoch's batches N at a time. On this path Keras reads
on the host whether the call produced a result (``Optional.has_value``), so each call also
waits for its N steps to finish, as every call inside ``fit`` does. On a GPU the iterator
is the device's own (``tf.data.experimental.prefetch_to_device``): a dataset lives on the host,
and without it each call's N batches would be copied from the host again, timing the input
pipeline rather than the steps; on a CPU nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from bench.tasks import Task
from bench.tasks.data import input_list
from implementations.common import precision_fields, stack_batches
from implementations.keras_parts import (
    STEPS_PER_CALL,
    check_precision,
    keras_loss,
    make_optimizer,
    task_model,
)


class KerasFitTrainer:
    """``iterator=False``: ``step(x, y)`` is one call of the one-step train function on one
    batch. ``iterator=True``: ``step`` feeds ``train_function`` a ``tf.data`` iterator, as
    ``fit`` does, and runs ``steps_per_execution`` steps per call on that many stacked
    batches (one batch, not stacked, when it is 1)."""

    def __init__(
        self,
        task: Task,
        weights: list[np.ndarray],
        *,
        jit_compile: bool,
        name: str,
        steps_per_execution: int = 1,
        iterator: bool = False,
        precision: str = "float32",
    ):
        if steps_per_execution < 1 or (steps_per_execution > 1 and not iterator):
            raise ValueError(
                f"{name}: steps_per_execution={steps_per_execution} needs iterator=True and >= 1"
            )
        self.name, self.task, self._jit = name, task, jit_compile
        self.steps_per_call, self._iterator = steps_per_execution, iterator
        self.model = task_model(task, weights, check_precision(precision))
        self.model.compile(
            optimizer=make_optimizer(task, precision),
            loss=keras_loss(task),
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
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
        self._fed: tuple | None = None  # (x, y, iterator) of the last step() call
        # Where the iterator's batches are delivered: the GPU where there is one (None: where
        # tf.data puts them, the host).
        gpus = tf.config.list_logical_devices("GPU") if iterator else []
        self.input_device: str | None = gpus[0].name if gpus else None
        self._recorder: tuple | None = None  # step_losses' train function, built when needed
        self._recording = False  # read while that function is traced

    def _dataset(self, x: tf.Tensor, y: tf.Tensor) -> tf.data.Dataset:
        """One call's batches: the N stacked batches as N elements (one batch when N = 1)."""
        if self.steps_per_call > 1:
            return tf.data.Dataset.from_tensor_slices((x, y))
        return tf.data.Dataset.from_tensors((x, y))

    def _iter(self, dataset: tf.data.Dataset):
        """An iterator over ``dataset`` whose elements are on ``input_device`` (if set)."""
        if self.input_device is None:
            return iter(dataset)
        # The last transformation, and the iterator made under the device (tf.data's rule).
        dataset = dataset.apply(tf.data.experimental.prefetch_to_device(self.input_device, 1))
        with tf.device(self.input_device):
            return iter(dataset)

    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if not self._iterator:
            # A list is the path train_on_batch takes: the compiled one-step function that fit
            # runs per batch, fed tensors directly rather than through a tf.data iterator.
            return self.model.train_function([(x, y)])["loss"]
        # fit's path. The iterator repeats the N batches, so each call (N pulls) trains on
        # them in order; one iterator per (x, y), as fit makes one per epoch, not per call.
        if self._fed is None or self._fed[0] is not x or self._fed[1] is not y:
            self._fed = (x, y, self._iter(self._dataset(x, y).repeat()))
        return self.model.train_function(self._fed[2])["loss"]

    def step_losses(self, batches: Iterable[tuple[tf.Tensor, tf.Tensor]]) -> np.ndarray:
        # Keras logs the running mean of the epoch's losses; resetting the loss tracker
        # before each step makes the logged value that one batch's loss.
        if not self._iterator:
            losses = []
            for x, y in batches:
                self.model.reset_metrics()
                losses.append(float(self.step(x, y)))
            return np.array(losses, dtype=np.float64)
        # A multi-step call returns only the last step's logs (a running mean), so each
        # step's own loss is recorded as it is computed (_recording_train_function).
        function, record, count = self._recording_train_function()
        losses = []
        for x, y in stack_batches(batches, self.steps_per_call):
            expected = int(input_list(x)[0].shape[0]) if self.steps_per_call > 1 else 1
            count.assign(0)
            self._recording = True
            try:
                function(self._iter(self._dataset(x, y)))
            finally:
                self._recording = False
            if int(count.numpy()) != expected:
                raise RuntimeError(
                    f"{self.name}: one call ran {int(count.numpy())} steps on {expected} batches"
                )
            losses.extend(record.numpy()[:expected].tolist())
        return np.array(losses, dtype=np.float64)

    def _recording_train_function(self):
        """A train function built exactly like the timed one (``make_train_function``: the
        same while loop over the iterator, the same one-step function), except that each step
        also writes its batch loss -- what ``compute_loss`` returned -- into ``record``. Built
        aside; ``model.train_function`` stays the one that is timed and that ``fit`` runs."""
        if self._recorder is None:
            record = tf.Variable(tf.zeros(self.steps_per_call), trainable=False)
            count = tf.Variable(0, trainable=False)
            compute_loss = self.model.compute_loss

            def recording_compute_loss(*args, **kwargs):
                loss = compute_loss(*args, **kwargs)
                if self._recording:  # at trace time: only the recording function records
                    record.scatter_nd_update(tf.reshape(count, (1, 1)), tf.reshape(loss, (1,)))
                    count.assign_add(1)
                return loss

            self.model.compute_loss = recording_compute_loss
            timed = self.model.train_function
            self.model.make_train_function(force=True)
            self._recorder = (self.model.train_function, record, count)
            self.model.train_function = timed
        return self._recorder

    def fit_epoch(self, dataset: tf.data.Dataset) -> float:
        history = self.model.fit(dataset, epochs=1, shuffle=False, verbose=0)
        return float(history.history["loss"][-1])

    def traces(self) -> int:
        return self._trace_count

    def resolved(self) -> dict:
        spe = int(self.model.steps_per_execution)
        return {
            "jit_compile": bool(self.model.jit_compile),
            "jit_compile_requested": self._jit,
            "run_eagerly": bool(self.model.run_eagerly),
            "steps_per_execution": spe,
            "steps_per_call": self.steps_per_call,
            "loop": (
                f"model.fit (train function on a tf.data iterator: a tf.while_loop of {spe} "
                "steps per call)"
                if self._iterator
                else "model.fit"
            ),
            **precision_fields(self.model, self.model.optimizer),
        }


def keras_fit(task: Task, weights: list[np.ndarray], precision: str = "float32") -> KerasFitTrainer:
    return KerasFitTrainer(task, weights, jit_compile=False, name="keras_fit", precision=precision)


def keras_fit_xla(
    task: Task, weights: list[np.ndarray], precision: str = "float32"
) -> KerasFitTrainer:
    return KerasFitTrainer(
        task, weights, jit_compile=True, name="keras_fit_xla", precision=precision
    )


def keras_fit_spe(
    task: Task,
    weights: list[np.ndarray],
    steps_per_call: int = STEPS_PER_CALL,
    precision: str = "float32",
) -> KerasFitTrainer:
    return KerasFitTrainer(
        task,
        weights,
        jit_compile=False,
        name="keras_fit_spe",
        steps_per_execution=steps_per_call,
        iterator=True,
        precision=precision,
    )
