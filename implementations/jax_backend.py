"""Keras 3 on its JAX backend: the suite's models trained by ``fit`` (``jax_fit``, ``jax_fit_spe``)
and by the loop Keras documents for JAX (``jax_custom``, ``jax_custom_loop``).

Seed: the same tutorials as ``keras_fit.py`` and ``custom_loop.py``; the JAX loop is Keras's
"Writing a training loop from scratch in JAX" guide: ``model.stateless_call``, then
``jax.value_and_grad``, then ``optimizer.stateless_apply``, the whole step under ``jax.jit``.

Keras fixes its backend when it is first imported, so this module runs in its own process
(``bench/jax/worker.py``, with ``KERAS_BACKEND=jax``); it has its own registry (``REGISTRY``
below), which the TensorFlow registry in ``implementations/__init__.py`` does not import. It
imports nothing of TensorFlow and imports ``jax`` only where a trainer is built.

The models are the task's, as on TensorFlow: ``build()`` for ``fit`` and ``build_custom()``
for the custom loop. For the built-in tasks the latter is the hand-written layers written with
``keras.ops`` (``bench/tasks/layers_ops.py``), which tests/test_keras_ops_layers.py holds to
the TensorFlow ones, so the JAX-vs-TF comparison is of the backend and loop, not of two hand
translations. The loss is the task's Keras loss on both backends.

- ``jax_fit``: the task's ``build()`` (for the built-ins, ``keras.Sequential`` of built-in
  layers), ``compile(jit_compile=True)`` (the only
  sensible setting on JAX: without it every op dispatches eagerly). A step is one call of
  ``model.train_function`` -- what ``fit`` calls per batch -- on the state ``fit`` threads
  through it (trainable, non-trainable, optimizer and metrics variables; donated, as ``fit``
  donates them).
- ``jax_fit_spe``: the same with ``compile(steps_per_execution=N)``. On JAX, Keras 3.15 runs
  N steps per call as a *Python* loop of N calls of the same jitted one-step function
  (``JAXTrainer._make_function``), not as one compiled loop as TensorFlow's
  ``tf.while_loop``: what it saves is ``fit``'s callbacks and state handling per step.
- ``jax_custom``: the hand-written loop above, ``jax.jit(donate_argnums=0)`` over the state.
- ``jax_custom_loop``: that step N times per call inside one ``jax.jit``, as
  ``jax.lax.scan`` over N stacked batches (``x[N, B, ...]``): TensorFlow's
  ``custom_xla_loop``'s twin, one compiled loop (``unroll=1``). On XLA:CPU (jax 0.10.2) the
  CNN's convolutions run about 10x slower inside that loop than in the one-step function
  (measured 2026-11-24, 2-core EPYC, contended: 1.7 s against 0.16 s per step at N = 16;
  ``unroll=True`` gives 0.17 s per step but compiles N copies of the step: 8 s at N = 16);
  the MLP ran 3.2-3.9 ms per step against 1.7-2.0 ms in two contended runs. It is kept
  rolled: what a user writes, and a finding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from bench.tasks import Task
from bench.tasks.model import batch_loss
from implementations.keras_parts import (
    STEPS_PER_CALL,
    group_batches,
    keras_loss,
    make_optimizer,
    task_model,
)

# --- fit on JAX ----------------------------------------------------------------------------


class JaxFitTrainer:
    """``step(x, y)``: one call of ``model.train_function`` on the state ``fit`` keeps between
    calls; N > 1 (``steps_per_execution``): ``x[N, B, ...]``, fed as an iterator over the N
    batches, as ``fit`` feeds its epoch iterator. The state lives outside the model's variables
    (which Keras empties, as ``fit`` does) until ``sync_weights``."""

    def __init__(
        self, task: Task, weights: list[np.ndarray], *, name: str, steps_per_execution: int = 1
    ):
        import jax.numpy as jnp  # lazy: optional dependency; the TensorFlow process imports this

        self._jnp = jnp
        self.name, self.task, self.steps_per_call = name, task, steps_per_execution
        self.model = task_model(task, weights)
        self.model.compile(
            optimizer=make_optimizer(task),
            loss=keras_loss(task),
            jit_compile=True,
            steps_per_execution=steps_per_execution,
        )
        self._traces = 0
        train_step = self.model.train_step

        def counted_train_step(state, data):
            self._traces += 1  # runs once per trace of the jitted step
            return train_step(state, data)

        self.model.train_step = counted_train_step
        zeros = np.zeros((1, *task.input_shape), np.float32)
        y0 = np.zeros((1, 1) if task.kind == "regression" else (1,), np.float32)
        self.model._symbolic_build(data_batch=(zeros, y0))  # optimizer and metric variables
        self.model.make_train_function()
        self._state = None
        self._fed: tuple | None = None  # (x, y, the N batches as a list) of the last step()

    def _get_state(self):
        if self._state is None:
            self._state = self.model._get_jax_state(
                trainable_variables=True,
                non_trainable_variables=True,
                optimizer_variables=True,
                metrics_variables=True,
                purge_model_variables=True,
            )
        return self._state

    def sync_weights(self) -> None:
        """Put the state back into the model's variables (as ``fit`` does after an epoch)."""
        if self._state is None:
            return
        keys = ("trainable", "non_trainable", "optimizer", "metrics")
        self.model._jax_state = {f"{k}_variables": v for k, v in zip(keys, self._state)}
        self.model._jax_state_synced = False
        self.model.jax_state_sync()
        self.model._jax_state = None
        self._state = None

    def _batches(self, x, y) -> list:
        if self._fed is None or self._fed[0] is not x or self._fed[1] is not y:
            batches = [(x, y)] if self.steps_per_call == 1 else list(zip(x, y))
            self._fed = (x, y, batches)
        return self._fed[2]

    def step(self, x, y):
        logs, self._state = self.model.train_function(self._get_state(), iter(self._batches(x, y)))
        return logs["loss"]

    def _reset_metrics(self) -> None:
        tv, ntv, ov, mv = self._get_state()
        self._state = (tv, ntv, ov, [self._jnp.zeros_like(v) for v in mv])

    def step_losses(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """The loss of each batch (N = 1). With N > 1 a call logs only the mean of its N
        losses (Keras's loss tracker, reset before each call): one value per call."""
        losses = []
        for x, y in group_batches(batches, self.steps_per_call, np.stack):
            self._reset_metrics()
            losses.append(float(self.step(self._jnp.asarray(x), self._jnp.asarray(y))))
        return np.array(losses, np.float64)

    def fit_epoch(self, x: np.ndarray, y: np.ndarray) -> float:
        """One epoch of ``fit`` over (x, y), already in the epoch's order."""
        self.sync_weights()
        history = self.model.fit(
            x, y, batch_size=self.task.batch_size, epochs=1, shuffle=False, verbose=0
        )
        return float(history.history["loss"][-1])

    def fit_seconds(self, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
        """Wall time of one ``fit`` call over (x, y) (for the harness's fit overhead)."""
        self.sync_weights()
        t0 = time.perf_counter()
        self.model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - t0

    def get_weights(self) -> list[np.ndarray]:
        self.sync_weights()
        return [np.array(v.numpy()) for v in self.model.trainable_variables]

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.sync_weights()
        return np.asarray(self.model.predict(x, batch_size=1000, verbose=0))

    def traces(self) -> int:
        return self._traces

    def resolved(self) -> dict:
        spe = int(self.model.steps_per_execution)
        loop = "model.fit (jax.jit train step"
        loop += f"; a Python loop of {spe} jitted steps per call)" if spe > 1 else ")"
        return {
            "jit_compile": bool(self.model.jit_compile),
            "jit_compile_requested": True,
            "run_eagerly": bool(self.model.run_eagerly),
            "steps_per_execution": spe,
            "steps_per_call": self.steps_per_call,
            "loop": loop,
        }


# --- the custom loop on JAX ----------------------------------------------------------------


def train_function(model, optimizer, loss, loop: bool, steps_per_call: int, unroll: int | bool):
    """The pure step ``(state, x, y) -> (loss, state)`` over the state ``(trainable,
    non_trainable, optimizer)``: ``stateless_call`` -> ``jax.value_and_grad`` ->
    ``optimizer.stateless_apply``. ``loop``: ``steps_per_call`` such steps as a
    ``jax.lax.scan`` over ``x[N, B, ...]``, returning the N losses."""
    import jax  # lazy: optional dependency; the TensorFlow process imports this module

    def compute_loss(trainable, non_trainable, x, y):
        out, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, out), non_trainable

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, optimizer_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_vars)

    def train_loop(state, xs, ys):
        if not steps_per_call > 1:
            xs, ys = xs[None], ys[None]

        def body(state, batch):
            loss, state = train_step(state, *batch)
            return state, loss

        state, losses = jax.lax.scan(body, state, (xs, ys), unroll=unroll)
        return losses, state

    return train_loop if loop else train_step


class JaxCustomTrainer:
    """``stateless_call`` -> ``jax.value_and_grad`` -> ``optimizer.stateless_apply`` under
    ``jax.jit`` over the state ``(trainable, non_trainable, optimizer)``. ``loop=True``: N such
    steps per call, ``jax.lax.scan`` over ``x[N, B, ...]``, returning the N losses."""

    def __init__(
        self,
        task: Task,
        weights: list[np.ndarray],
        *,
        name: str,
        loop: bool = False,
        steps_per_call: int = 1,
        unroll: int | bool = 1,
    ):
        import jax  # lazy: optional dependency; the TensorFlow process imports this module
        import jax.numpy as jnp  # lazy: as above

        if steps_per_call < 1 or (steps_per_call > 1 and not loop):
            raise ValueError(f"{name}: steps_per_call={steps_per_call} needs loop=True and >= 1")
        self._jnp = jnp
        self.name, self.task, self.loop, self.steps_per_call = name, task, loop, steps_per_call
        self.unroll = unroll
        # build_custom(): for the built-in tasks, the hand-written layers in keras.ops
        # (bench/tasks/layers_ops.py), which the JAX backend can run
        self.model = task_model(task, weights, custom=True)
        self.optimizer = make_optimizer(task)
        self.optimizer.build(self.model.trainable_variables)
        model, optimizer = self.model, self.optimizer
        self._traces = 0
        fn = train_function(model, optimizer, batch_loss(task), loop, steps_per_call, unroll)

        def counted(state, x, y):
            self._traces += 1  # runs once per trace
            return fn(state, x, y)

        self._step = jax.jit(counted, donate_argnums=0)
        self._forward = jax.jit(
            lambda trainable, non_trainable, x: model.stateless_call(
                trainable, non_trainable, x, training=False
            )[0]
        )
        # Copies: the jitted step donates (frees) the arrays it is given.
        self._state = tuple(
            [jnp.array(v.value) for v in variables]
            for variables in (
                model.trainable_variables,
                model.non_trainable_variables,
                optimizer.variables,
            )
        )

    def step(self, x, y):
        loss, self._state = self._step(self._state, x, y)
        return loss

    def step_losses(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        n = self.steps_per_call if self.loop else 1
        out = [
            np.asarray(self.step(self._jnp.asarray(x), self._jnp.asarray(y)), np.float64).ravel()
            for x, y in group_batches(batches, n, np.stack)
        ]
        return np.concatenate(out) if out else np.zeros(0)

    def fit_epoch(self, x: np.ndarray, y: np.ndarray) -> float:
        """One epoch over (x, y), already in the epoch's order; the ragged tail is dropped."""
        b = self.task.batch_size
        batches = [(x[i : i + b], y[i : i + b]) for i in range(0, len(x) - b + 1, b)]
        n = self.steps_per_call if self.loop else 1
        jnp = self._jnp
        losses = [
            self.step(jnp.asarray(bx), jnp.asarray(by))
            for bx, by in group_batches(batches, n, np.stack)
        ]
        return float(np.mean(np.concatenate([np.asarray(v).ravel() for v in losses])))

    def get_weights(self) -> list[np.ndarray]:
        return [np.array(v) for v in self._state[0]]

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = [
            np.asarray(self._forward(self._state[0], self._state[1], x[i : i + 1000]))
            for i in range(0, len(x), 1000)
        ]
        return np.concatenate(out)

    def traces(self) -> int:
        return self._traces

    def resolved(self) -> dict:
        loop = "jax.jit(stateless_call -> value_and_grad -> stateless_apply)"
        if self.loop:
            loop = f"jax.jit over a jax.lax.scan of the step (unroll={self.unroll})"
        return {
            "jit_compile": True,
            "jit_compile_requested": True,
            "run_eagerly": False,
            "steps_per_execution": self.steps_per_call,
            "steps_per_call": self.steps_per_call,
            "loop": loop,
        }


def jax_fit(task: Task, weights: list[np.ndarray]) -> JaxFitTrainer:
    return JaxFitTrainer(task, weights, name="jax_fit")


def jax_fit_spe(
    task: Task, weights: list[np.ndarray], steps_per_call: int = STEPS_PER_CALL
) -> JaxFitTrainer:
    return JaxFitTrainer(task, weights, name="jax_fit_spe", steps_per_execution=steps_per_call)


def jax_custom(task: Task, weights: list[np.ndarray]) -> JaxCustomTrainer:
    return JaxCustomTrainer(task, weights, name="jax_custom")


def jax_custom_loop(
    task: Task, weights: list[np.ndarray], steps_per_call: int = STEPS_PER_CALL
) -> JaxCustomTrainer:
    return JaxCustomTrainer(
        task, weights, name="jax_custom_loop", loop=True, steps_per_call=steps_per_call
    )


# The JAX registry (run only in bench/jax/worker.py): name -> factory.
REGISTRY: dict[str, Callable] = {
    "jax_fit": jax_fit,
    "jax_custom": jax_custom,
    "jax_fit_spe": jax_fit_spe,
    "jax_custom_loop": jax_custom_loop,
}

# N steps per call, each with its one-step twin.
MULTI_STEP: dict[str, str] = {"jax_fit_spe": "jax_fit", "jax_custom_loop": "jax_custom"}

# The TensorFlow implementations running the same model and loop (the backend table): without
# XLA and with it (None: TensorFlow has no such variant).
TF_TWINS: dict[str, tuple[str, str | None]] = {
    "jax_fit": ("keras_fit", "keras_fit_xla"),
    "jax_custom": ("custom_graph", "custom_xla"),
    "jax_fit_spe": ("keras_fit_spe", None),
    "jax_custom_loop": ("custom_graph_loop", "custom_xla_loop"),
}
