"""Step-level equivalence, trained for real: every implementation against its twin on the
built-in tasks, XLA included, and on user tasks (the examples, or ``--tasks FILE``); planted
bugs (a wrong learning rate, biases never updated, a loop that skips or repeats a step, a
micro-batch split that drops or crosses its parts, one dropout mask for every step) are caught.
The tolerances and what they were measured on: tests/test_equivalence.py's docstring."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_equivalence import (
    BATCH,
    EXACT,
    KERAS,
    MULTI_STEP_GRAPH,
    MULTI_STEP_KERAS,
    MULTI_STEP_XLA,
    STEPS,
    TIGHT,
    XLA,
    N,
    build,
    differences,
    loss_differences,
    random_layers_off,
    run,
)

import implementations
from bench.tasks import TASKS, initial_weights
from bench.tasks.data import take
from bench.tasks.model import new_model, seed_states
from implementations.common import epoch_dataset, get_weights, loss_value, stack_batches
from implementations.custom_loop import MICRO_BATCHES, make_loop, make_step

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runs(task_data):
    out = {}
    for name, task in TASKS.items():
        data = task_data(task, n_train=BATCH * STEPS[name])
        out[name] = {impl: run(task, build(impl, task), data) for impl in implementations.REGISTRY}
        out[name]["data"] = data
    return out


MULTI_STEP_TOLERANCE = {
    "custom_graph_loop": lambda task: MULTI_STEP_GRAPH,
    "custom_xla_loop": lambda task: MULTI_STEP_XLA[task],
    "keras_fit_spe": lambda task: MULTI_STEP_KERAS,
    "custom_xla_split": lambda task: MULTI_STEP_XLA[task],
}
# Micro-batches against the same loop on whole batches: each part's mean loss weighted by its
# share of the batch is the batch's mean loss; only the order of the sums changes. Measured
# (N = 4): linreg 0 / 1.3e-6 / 0; mlp 2.0e-7 / 2.3e-7 / 3.1e-5 (Adam turns the reordered sums
# of near-zero gradients into lr-sized steps on a few weights, so the MLP's weights get 16x);
# cnn 1.1e-7 / 2.3e-4 / 6.5e-3. The planted bugs below: >= 4.2e-2 on the first steps' losses.
MICRO_BATCH_XLA = {
    **XLA,
    "mlp": dataclasses.replace(
        TIGHT, weight_rtol=5e-4, why="the batch's sums in another order, through Adam"
    ),
}

PAIRS = [
    ("custom_eager", "custom_graph", lambda task: EXACT),
    ("keras_fit", "custom_graph", lambda task: KERAS[task]),
    ("keras_fit_xla", "keras_fit", lambda task: XLA[task]),
    ("custom_xla", "custom_graph", lambda task: XLA[task]),
    ("keras_fit_xla", "custom_xla", lambda task: KERAS[task]),
] + [(impl, implementations.MULTI_STEP[impl], tol) for impl, tol in MULTI_STEP_TOLERANCE.items()]
PAIRS += [
    (impl, twin, lambda task: MICRO_BATCH_XLA[task])
    for impl, twin in implementations.MICRO_BATCH.items()
]


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("a, b, tolerance", PAIRS, ids=[f"{a}~{b}" for a, b, _ in PAIRS])
def test_implementations_agree(runs, task_name, a, b, tolerance):
    tol = tolerance(task_name)
    assert differences(runs[task_name][a], runs[task_name][b], tol) == [], tol.why


def test_losses_actually_change(runs):
    # Guard against a vacuous pass: every run trained (the losses moved).
    for task_runs in runs.values():
        for impl in implementations.REGISTRY:
            losses = task_runs[impl][0]
            assert losses[-1] < losses[0] * 0.95, impl


class FrozenBias:
    """A deliberately wrong variant: the step never updates the biases."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.model = trainer.model
        self.optimizer = getattr(trainer, "optimizer", None) or trainer.model.optimizer
        self.frozen = [(v, v.numpy()) for v in self.variables(trainer.model)]

    @staticmethod
    def variables(model) -> list:
        return [v for v in model.trainable_variables if len(v.shape) == 1]

    def step_losses(self, batches):
        losses = []
        for x, y in batches:
            losses.append(float(self.trainer.step(x, y)))
            for v, value in self.frozen:
                v.assign(value)
        return np.array(losses)


class FrozenMasks(FrozenBias):
    """A deliberately wrong variant: the random layers draw the same numbers every step (the
    same dropout mask): their generators' state never advances."""

    @staticmethod
    def variables(model) -> list:
        return seed_states(model)


@pytest.mark.parametrize("task_name", list(TASKS))
def test_a_different_learning_rate_is_caught(runs, task_name):
    task = dataclasses.replace(TASKS[task_name], learning_rate=TASKS[task_name].learning_rate * 1.5)
    wrong = run(
        task,
        implementations.get("custom_graph")(task, initial_weights(task)),
        runs[task_name]["data"],
    )
    # Caught even by the loosest tolerance in use for this task.
    assert differences(wrong, runs[task_name]["custom_xla"], XLA[task_name])
    assert differences(wrong, runs[task_name]["keras_fit"], KERAS[task_name])


@pytest.mark.parametrize("task_name", list(TASKS))
def test_a_bias_that_is_never_updated_is_caught(runs, task_name):
    task = TASKS[task_name]
    trainer = FrozenBias(implementations.get("custom_graph")(task, initial_weights(task)))
    wrong = run(task, trainer, runs[task_name]["data"])
    assert differences(wrong, runs[task_name]["custom_xla"], XLA[task_name])
    assert differences(wrong, runs[task_name]["keras_fit"], KERAS[task_name])


# --- several steps per call ----------------------------------------------------------------


def skipping_loop(train_step):
    """A wrong in-graph loop: the last of each call's N steps is never run (its loss is
    reported as the one before)."""

    def loop(xs, ys):
        n = xs.shape[0]
        losses = tf.TensorArray(tf.float32, size=n)
        loss = train_step(xs[0], ys[0])
        losses = losses.write(0, loss)
        for i in tf.range(1, n - 1):
            loss = train_step(xs[i], ys[i])
            losses = losses.write(i, loss)
        if n > 1:
            losses = losses.write(n - 1, loss)
        return losses.stack()

    return loop


def repeating_loop(train_step):
    """A wrong in-graph loop: the last batch of each call is replaced by the one before it
    (which is trained on twice)."""

    def loop(xs, ys):
        n = xs.shape[0]
        losses = tf.TensorArray(tf.float32, size=n)
        for i in tf.range(n):
            j = tf.maximum(tf.minimum(i, n - 2), 0)
            losses = losses.write(i, train_step(xs[j], ys[j]))
        return losses.stack()

    return loop


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("bug", [skipping_loop, repeating_loop], ids=["skips", "repeats"])
def test_a_wrong_multi_step_loop_is_caught(runs, task_name, bug):
    task = TASKS[task_name]
    trainer = build("custom_graph_loop", task)
    trainer._step = tf.function(bug(make_step(trainer.model, trainer.optimizer, task)))
    wrong = run(task, trainer, runs[task_name]["data"])
    assert len(wrong[0]) == STEPS[task_name]
    # Caught by the check each loop variant passes, and by the loosest one (XLA's).
    assert differences(wrong, runs[task_name]["custom_graph"], MULTI_STEP_GRAPH)
    assert differences(wrong, runs[task_name]["custom_xla"], MULTI_STEP_XLA[task_name])


@pytest.mark.parametrize("impl", list(MULTI_STEP_TOLERANCE))
def test_a_timed_call_runs_its_n_batches_in_order(runs, impl):
    """What the harness times: ``step(x[N, B], y[N, B])`` called again and again on the same
    stacked batches (keras_fit_spe's iterator over them is kept between calls) trains on
    those N batches, in order, every call: the same weights as the one-step twin on the
    batches one by one."""
    task, n, calls = TASKS["mlp"], 5, 3
    data = runs["mlp"]["data"]
    batches = list(epoch_dataset(data.x_train, data.y_train, BATCH, seed=0, epoch=0))[:n]
    trainer = build(impl, task, n)
    x, y = next(stack_batches(batches, n))
    for _ in range(calls):
        loss = trainer.step(x, y)
    np.asarray(loss)  # sync
    twin = build(implementations.MULTI_STEP[impl], task)
    twin.step_losses(batches * calls)
    assert optimizer_steps(trainer) == optimizer_steps(twin) == n * calls
    no_losses = np.ones(1)  # weights only: the timed calls' losses are not per step
    ours, theirs = (no_losses, get_weights(trainer.model)), (no_losses, get_weights(twin.model))
    assert differences(ours, theirs, MULTI_STEP_TOLERANCE[impl]("mlp")) == []


def optimizer_steps(trainer) -> int:
    """How many updates the trainer's optimizer has applied."""
    optimizer = getattr(trainer, "optimizer", None) or trainer.model.optimizer
    return int(optimizer.iterations)


def test_keras_fit_with_steps_per_execution_lands_where_keras_fit_does(runs):
    """fit() runs keras_fit_spe's train function (the timed one, not step_losses' recording
    twin) N steps per call: one epoch of the same batches ends at keras_fit's weights."""
    task = TASKS["mlp"]
    data = runs["mlp"]["data"]
    trainer = build("keras_fit_spe", task)
    trainer.fit_epoch(epoch_dataset(data.x_train, data.y_train, BATCH, seed=0, epoch=0))
    assert optimizer_steps(trainer) == STEPS["mlp"]
    expected = runs["mlp"]["keras_fit"]
    assert differences((expected[0], get_weights(trainer.model)), expected, MULTI_STEP_KERAS) == []


# --- micro-batches ---------------------------------------------------------------------------


def split_step_with(bug: str, model, optimizer, task):
    """``make_step(micro_batches=2)`` with a planted bug: ``drops`` trains on the first half
    of each batch only (as if the other part were lost), ``crosses`` pairs each half's outputs
    with the other half's labels."""

    def train_step(x, y):
        half = x.shape[0] // 2
        xs, ys = (x[:half], x[half:]), (y[:half], y[half:])
        if bug == "crosses":
            ys = ys[::-1]
        with tf.GradientTape() as tape:
            parts = [loss_value(task, yp, model(xp, training=True)) for xp, yp in zip(xs, ys)]
            loss = parts[0] if bug == "drops" else (parts[0] + parts[1]) / 2
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return train_step


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("bug", ["drops", "crosses"])
def test_a_wrong_micro_batch_split_is_caught(runs, task_name, bug):
    task = TASKS[task_name]
    trainer = build("custom_xla_split", task)
    step = split_step_with(bug, trainer.model, trainer.optimizer, task)
    trainer._step = tf.function(make_loop(step), jit_compile=True)
    wrong = run(task, trainer, runs[task_name]["data"])
    twin = implementations.MICRO_BATCH["custom_xla_split"]
    assert differences(wrong, runs[task_name][twin], MICRO_BATCH_XLA[task_name])


def test_micro_batches_are_recorded_and_checked(runs):
    task = TASKS["mlp"]
    trainer = build("custom_xla_split", task)
    assert trainer.resolved()["micro_batches"] == MICRO_BATCHES == 2
    assert build("custom_xla_loop", task).resolved()["micro_batches"] == 1
    with pytest.raises(ValueError, match="micro_batches=0"):
        implementations.get("custom_xla_split")(task, initial_weights(task), micro_batches=0)
    one = implementations.get("custom_xla_split")(task, initial_weights(task), steps_per_call=2)
    x = tf.zeros((2, 1, *task.input_shape))  # batches of one example: nothing to split
    with pytest.raises(ValueError, match="static batch of at least"):
        one.step(x, tf.zeros((2, 1), tf.int32))


# --- user tasks (bench/tasks/user.py) --------------------------------------------------------
#
# The same pairs on a model the user brings: by default the examples (examples/*.py), or the
# tasks of ``--tasks FILE``, 12 steps at the task's batch size. Each task's tolerance is its
# own ``tolerance=`` or ``bench.tasks.task.DEFAULT_TOLERANCE`` (measured there), for every
# pair: the user's layers are the same in every implementation, so there is no hand-written
# twin to hold to a tighter standard. What must agree (``training_differences``): the losses
# step by step; the trained models' outputs on held-out examples; and the variables, trainable
# and not (BatchNormalization's moving statistics), all together, relative to how far training
# moved them. Not each variable by its own size: a bias just before BatchNormalization has no
# gradient, Adam moves it by rounding noise in learning-rate-sized steps, and two runs' such
# biases end up apart by more than their own size (conv_bn: up to 2.0x, XLA vs not; 1.0x,
# eager vs tf.function) while the model's function does not change.
#
# Random layers (Dropout, GaussianNoise, an RNN's dropout, the random augmentation layers):
# every instance's generators start from the same state (``bench.tasks.model.set_seed_states``).
# From the same state eager and tf.function draw the same numbers (fit's train function and
# the in-graph loops too), and so do all XLA functions, but XLA draws other numbers than
# TensorFlow's kernels (test_what_draws_the_same_random_numbers); custom_xla_split draws one
# mask per part of the batch. So a pair whose sides draw alike (``draws_alike``: the same
# jit_compile, whole batches) is compared with the random layers on, the same masks on both
# sides: a step that draws wrongly shows. Another pair (XLA vs not; the split vs whole
# batches) is compared with them off on both sides (``random_layers_off``), and
# test_random_layers_draw_anew_every_step confirms that each implementation's random layers
# are on in training and draw new numbers every step. Measured (first 5 steps' losses / all
# losses / held-out outputs / variables; 4 batch orders; 2-core AMD EPYC VM, TF 2.21, Keras
# 3.15.1):
#   convnet_dropout, random layers on:
#     keras_fit~custom_graph, keras_fit_spe, custom_graph_loop, keras_fit_xla~custom_xla  0
#     custom_eager~custom_graph        1.1e-7 / 1.2e-7 / 1.6e-7 / 2.0e-7
#     custom_xla_loop~custom_xla       1.1e-7 / 1.3e-7 / 3.3e-7 / 3.2e-6
#     XLA vs not (other masks)         4.1e-2 / 5.2e-2 / 0.24 / 0.64    -> compared off
#     split vs whole batches           3.8e-2 / 6.8e-2 / 0.23 / 0.58    -> compared off
#   convnet_dropout, random layers off:
#     XLA vs not                       1.8e-7 / 1.8e-7 / 3.5e-7 / 1.9e-6
#     custom_xla_split~custom_xla_loop 5.4e-7 / 6.9e-5 / 4.8e-4 / 3.9e-3
#   conv_bn: eager vs graph, XLA vs    2.3e-6 / 1.8e-5 / 3.1e-4 / 1.0e-3; the rest 0
#     not, custom_xla_loop~custom_xla
#   sequence_gru: every pair within    8.7e-8 / 1.7e-7 / 1.3e-7 / 4.5e-7
#   resnet_bn: XLA vs not              1.6e-3 / 6.3e-3 / 1.2e-2 / 2.7e-2 (chaotic: its own
#                                      tolerance); eager~graph 3.8e-6 / 6.7e-4 / 3.1e-3 /
#                                      5.4e-3; custom_xla_loop~custom_xla 3.8e-5 / 2.3e-3 /
#                                      9.7e-3 / 1.3e-2
#   the planted bugs, against keras_fit (the least over the batch orders, random layers on
#   or off):
#     learning rate x1.5               convnet_dropout 3.1e-2 / 0.13 / 0.68 / 0.44; conv_bn
#                                      0.10 / 0.18 / 0.36 / 0.42; sequence_gru 1.0e-3 /
#                                      3.4e-3 / 0.32 / 0.51; resnet_bn 3.3e-2 / 0.14 / 0.30 /
#                                      0.42
#     biases never updated             convnet_dropout 5.2e-4 / 2.2e-3 / 1.5e-2 / 6.0e-2;
#                                      conv_bn 2.5e-3 / 4.2e-3 / 1.7e-2 / 0.11; sequence_gru
#                                      3.0e-4 / 5.4e-4 / 7.8e-2 / 2.2e-2; resnet_bn 7.4e-4 /
#                                      4.3e-3 / 2.6e-2 / 8.5e-2
#     one dropout mask for every step  convnet_dropout 2.2e-2 / 3.0e-2 / 9.5e-2 / 0.43; and
#                                      losses at rest that never change

USER_STEPS = 12  # at the task's own batch size; the examples' XLA compilations cost the most
HELD_OUT = 256  # test examples the trained models' outputs are compared on
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def user_tasks_under_test():
    from bench.tasks import user as user_tasks

    chosen = [user_tasks.LOADED[n] for n in user_tasks.selected_tasks() if n in user_tasks.LOADED]
    if chosen:
        return chosen
    # Unchecked at collection: nothing is built or read until the fixture runs.
    return [t for f in sorted(EXAMPLES.glob("*.py")) for t in user_tasks.load(f, False)]


@dataclasses.dataclass(frozen=True)
class UserRun:
    """What one implementation's training of a user task produced."""

    losses: np.ndarray  # each step's
    weights: list[np.ndarray]  # every variable in ``model.weights``, trainable or not
    trainable: list[bool]
    outputs: np.ndarray  # the trained model's, in inference mode, on the held-out examples


def user_batches(task, data) -> list:
    batches = list(epoch_dataset(data.x_train, data.y_train, task.batch_size, seed=0, epoch=0))
    batches = batches[:USER_STEPS]
    assert len(batches) == USER_STEPS, "a user task needs USER_STEPS batches of training data"
    return batches


def run_user(trainer, batches, held_out: np.ndarray) -> UserRun:
    losses = trainer.step_losses(batches)
    model = trainer.model
    trainable = {id(v) for v in model.trainable_weights}
    return UserRun(
        np.asarray(losses, np.float64),
        [np.array(v.numpy()) for v in model.weights],
        [id(v) in trainable for v in model.weights],
        np.asarray(model(held_out, training=False), np.float64),
    )


def training_differences(a: UserRun, b: UserRun, start: list, tol) -> list[str]:
    """What disagrees between two trainings from the weights ``start`` beyond the tolerance
    (``bench.tasks.Tolerance``; empty: the same training)."""
    problems = loss_differences(a.losses, b.losses, tol)
    apart = np.linalg.norm(a.outputs - b.outputs) / max(np.linalg.norm(b.outputs), 1e-12)
    if apart > tol.output_rtol:
        problems.append(
            f"held-out outputs differ by {apart:.2e} of their norm (> {tol.output_rtol:.0e})"
        )
    for trainable, kind in ((True, "trainable"), (False, "non-trainable")):
        index = [i for i, t in enumerate(b.trainable) if t == trainable]
        if not index:
            continue
        a_b = [a.weights[i] - b.weights[i] for i in index]
        moved = [b.weights[i] - np.asarray(start[i]) for i in index]
        rel = global_norm(a_b) / max(global_norm(moved), 1e-12)
        if rel > tol.weight_rtol:
            problems.append(
                f"{kind} variables differ by {rel:.2e} of how far training moved them "
                f"(> {tol.weight_rtol:.0e})"
            )
    return problems


def global_norm(arrays: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in arrays)))


# --- random layers ---------------------------------------------------------------------------


def draws_alike(trainer) -> tuple:
    """What decides which random numbers a trainer's step draws from a given generator state:
    XLA or TensorFlow's kernels, and whether each batch is drawn for whole or in parts."""
    resolved = trainer.resolved()
    return bool(resolved["jit_compile"]), int(resolved.get("micro_batches", 1))


def draws_random_numbers(task, x) -> bool:
    """Whether the task's model draws random numbers in training: a generator's state moves
    when it is called in training mode. (A GRU holds a generator whether or not it has
    dropout.)"""
    model = new_model(task, initial_weights(task))
    before = [s.numpy() for s in seed_states(model)]
    model(x, training=True)
    return any((s.numpy() != b).any() for s, b in zip(seed_states(model), before))


def losses_at_rest(trainer, batch) -> np.ndarray:
    """The losses of N steps on the same batch at learning rate 0: the weights stay put, so
    the losses differ only by what the random layers draw."""
    optimizer = getattr(trainer, "optimizer", None) or trainer.model.optimizer
    optimizer.learning_rate = 0.0
    return np.asarray(trainer.step_losses([batch] * N), np.float64)


def drawn_anew(losses: np.ndarray) -> bool:
    return bool(np.ptp(losses) > 1e-6 * np.abs(losses).mean())


def test_what_draws_the_same_random_numbers():
    """The measurement behind ``draws_alike``: from the same generator state, Dropout and
    GaussianNoise draw the same numbers eagerly and under tf.function, and the same in two
    XLA functions, but XLA's are not TensorFlow's kernels' (its own stateless generator)."""
    x = tf.ones((16, 64))

    def draw(make_layer, wrap):
        layer = make_layer()
        layer.build(x.shape)
        for state in seed_states(layer):
            state.assign(np.array([1234, 0], dtype=state.dtype))
        return wrap(lambda t: layer(t, training=True))(x).numpy()

    xla = lambda f: tf.function(f, jit_compile=True)  # noqa: E731
    for make_layer in (lambda: keras.layers.Dropout(0.5), lambda: keras.layers.GaussianNoise(1)):
        eager = draw(make_layer, lambda f: f)
        np.testing.assert_array_equal(draw(make_layer, tf.function), eager)
        np.testing.assert_array_equal(draw(make_layer, xla), draw(make_layer, xla))
        assert not np.array_equal(draw(make_layer, xla), eager), (
            "XLA now draws TensorFlow's numbers: compare XLA pairs with random layers on"
        )


# --- the checks on user tasks ----------------------------------------------------------------


USER_TASKS = {task.name: task for task in user_tasks_under_test()}
IMPLS = list(implementations.REGISTRY)
USER_PAIRS = [(a, b) for a, b, _ in PAIRS]


@pytest.fixture(scope="module")
def user_runs(task_data):
    """Per task: every implementation's run; for a model with random layers, also each
    implementation's losses at rest, and the runs with the random layers off of the
    implementations in a pair that does not draw alike (and keras_fit's, for the bugs)."""
    out = {}
    from bench.tasks.user import check

    for name, task in USER_TASKS.items():
        check(task)  # what loading a task file with --tasks checks (collection did not)
        data = task_data(task)
        batches = user_batches(task, data)
        held_out = take(data.x_test, slice(None, HELD_OUT))  # of each input, for several
        r = {"task": task, "data": data, "batches": batches, "held_out": held_out}
        r["random"] = draws_random_numbers(task, batches[0][0])
        r["draws"], r["at_rest"], r["off"] = {}, {}, {}
        for impl in IMPLS:
            try:
                trainer = build(impl, task)
            except NotImplementedError as e:  # e.g. micro-batches on a BatchNormalization model
                r[impl] = str(e)
                continue
            r[impl] = run_user(trainer, batches, held_out)
            r["draws"][impl] = draws_alike(trainer)
            if r["random"]:
                r["at_rest"][impl] = losses_at_rest(trainer, batches[0])
        if r["random"]:
            off = {"keras_fit"} | {
                impl
                for a, b in USER_PAIRS
                if a in r["draws"] and b in r["draws"] and r["draws"][a] != r["draws"][b]
                for impl in (a, b)
            }
            for impl in sorted(off):
                trainer = build(impl, task)
                assert random_layers_off(trainer.model) > 0
                r["off"][impl] = run_user(trainer, batches, held_out)
        out[name] = r
    return out


@pytest.mark.parametrize("task_name", list(USER_TASKS))
@pytest.mark.parametrize("a, b", USER_PAIRS, ids=[f"{a}~{b}" for a, b in USER_PAIRS])
def test_implementations_agree_on_user_tasks(user_runs, task_name, a, b):
    r = user_runs[task_name]
    tol = r["task"].equivalence_tolerance
    for impl in (a, b):
        if isinstance(r[impl], str):
            pytest.skip(f"{impl} cannot run {task_name}: {r[impl]}")
    runs, why = r, tol.why
    if r["random"] and r["draws"][a] != r["draws"][b]:
        runs, why = r["off"], f"{why}; random layers off: {a} and {b} draw different numbers"
    start = initial_weights(r["task"])
    assert training_differences(runs[a], runs[b], start, tol) == [], why


@pytest.mark.parametrize("task_name", list(USER_TASKS))
def test_user_tasks_train_and_every_weight_moves(user_runs, task_name):
    """Not vacuous: every run trained, and every variable moved from where it started,
    the non-trainable ones too (BatchNormalization's moving statistics)."""
    r = user_runs[task_name]
    start = initial_weights(r["task"])
    for impl in IMPLS:
        if isinstance(r[impl], str):  # refused, with the reason (test above)
            continue
        run_ = r[impl]
        assert run_.losses[-1] < run_.losses[0], impl
        moved = [not np.array_equal(w, s) for w, s in zip(run_.weights, start)]
        assert len(run_.weights) == len(start) and all(moved), (impl, start.paths)


@pytest.mark.parametrize("task_name", list(USER_TASKS))
def test_random_layers_draw_anew_every_step(user_runs, task_name):
    """Where pairs are compared with the random layers off, this is what shows that they are
    on in training: in every implementation, steps on the same batch at learning rate 0
    (nothing trains) have different losses."""
    r = user_runs[task_name]
    if not r["random"]:
        pytest.skip(f"{task_name}'s model draws no random numbers in training")
    assert r["at_rest"]
    for impl, losses in r["at_rest"].items():
        assert drawn_anew(losses), (impl, losses)


@pytest.mark.parametrize("task_name", list(USER_TASKS))
def test_a_bug_is_caught_on_user_tasks(user_runs, task_name):
    """A learning rate x1.5 and biases never updated, against keras_fit (and, for a model
    with random layers, also with them off); one dropout mask for every step, against
    keras_fit and at rest."""
    r = user_runs[task_name]
    task, tol = r["task"], r["task"].equivalence_tolerance
    start = initial_weights(task)
    faster = dataclasses.replace(task, learning_rate=task.learning_rate * 1.5)
    bugs = {
        "learning rate x1.5": lambda: implementations.get("custom_graph")(faster, start),
        "biases never updated": lambda: FrozenBias(
            implementations.get("custom_graph")(task, start)
        ),
    }
    for random_off in (False, True) if r["random"] else (False,):
        reference = r["off"] if random_off else r
        for bug, make in bugs.items():
            trainer = make()
            if random_off:
                random_layers_off(trainer.model)
            wrong = run_user(trainer, r["batches"], r["held_out"])
            assert training_differences(wrong, reference["keras_fit"], start, tol), bug
    if r["random"]:
        frozen = FrozenMasks(implementations.get("custom_graph")(task, start))
        wrong = run_user(frozen, r["batches"], r["held_out"])
        assert training_differences(wrong, r["keras_fit"], start, tol)
        assert not drawn_anew(losses_at_rest(frozen, r["batches"][0]))
