"""Step-level equivalence: from identical initial weights and an identical batch sequence,
every implementation computes the same per-step losses and ends with the same weights,
within tolerances measured on this suite's CPU machine (2 cores, TF 2.21, oneDNN on).

Measured (batch 64, 20-40 steps, three batch orders; max relative loss difference over the
first 5 steps / over all steps / max weight difference relative to the array's max |w|):
  custom_eager vs custom_graph   0 / 0 / 0 on every task (same kernels, same order)
  keras_fit vs custom_graph      linreg 0 / 0 / 0; mlp 6e-8 / 1.5e-7 / 1.9e-6;
                                 cnn 2.3e-5 / 3.5e-3 / 4.7e-2
  XLA vs non-XLA twin            linreg 1.3e-6 / 1.3e-6 / 0; mlp 1.9e-7 / 3.7e-7 / 4.4e-6;
                                 cnn 1.2e-7 / 5.3e-4 / 1.6e-2
  learning rate x1.5 (a bug)     mlp >= 8e-2 / 0.18 / 0.68; cnn >= 6.5e-2 / 0.24 / 0.40
  N steps per call vs one step   custom_graph_loop, keras_fit_spe: 0 / 0 / 0 on every task
  per call (N = 4 and 16)        (the same kernels, run in a loop); custom_xla_loop vs
                                 custom_xla: linreg, mlp 0 / 0 / 0; cnn 0 / 1.6e-4 / 8.1e-3
                                 (the loop is another XLA compilation of the same step)
  a loop that skips the last     mlp 0.16 / 0.61 / 0.43; cnn 3.6e-2 / 0.36 / 0.25
  step of each call (a bug)
  ... or trains on the one but   mlp 6.0e-2 / 0.50 / 0.41; cnn 2.6e-2 / 0.24 / 0.20
  last batch twice (a bug)
  2 micro-batches vs the same    linreg 0 / 1.3e-6 / 0; mlp 2.0e-7 / 2.3e-7 / 3.1e-5;
  loop on whole batches          cnn 1.1e-7 / 2.3e-4 / 6.5e-3 (custom_xla_split)
  ... training on one part only  linreg 0.22 / 0.40 / 3.2e-3; mlp 6.1e-2 / 0.26 / 0.77;
  (a bug)                        cnn 4.2e-2 / 0.52 / 1.0
  ... parts given each other's   linreg 0.97; mlp 0.40; cnn 0.12 on the first steps
  labels (a bug)
The CNN is chaotic: a 1e-7 difference (another convolution kernel, or XLA's summation order)
can grow 30x in one step, because Adam turns tiny differences in near-zero gradients into
lr-sized updates; how far it grows depends on the batch order. So the CNN is held tightly
over the first steps, where a real bug already shows, and loosely after.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import implementations
from bench.tasks import TASKS, initial_weights
from implementations.common import epoch_dataset, get_weights, loss_value, stack_batches
from implementations.custom_loop import MICRO_BATCHES, check_micro_batches, make_loop, make_step

STEPS = {"linreg": 40, "mlp": 30, "cnn": 20}
BATCH = 64


EARLY_STEPS = 5


@dataclasses.dataclass(frozen=True)
class Tolerance:
    early_rtol: float  # relative, on the losses of the first EARLY_STEPS steps
    loss_rtol: float  # relative, on every step's loss
    weight_rtol: float  # final weights, relative to the array's max |w|
    why: str


# Each about 10x the measured drift (module docstring) and far below what a bug produces.
EXACT = Tolerance(1e-6, 1e-6, 1e-6, "eager and tf.function run the same kernels in the same order")
TIGHT = Tolerance(1e-5, 5e-6, 5e-5, "the same ops up to fusion: float32 rounding only")
CHAOTIC = Tolerance(
    1e-3, 2e-2, 0.2, "CNN: rounding differences grow chaotically after a few Adam steps"
)
KERAS = {"linreg": TIGHT, "mlp": TIGHT, "cnn": CHAOTIC}
XLA = {
    "linreg": Tolerance(2e-5, 2e-5, 1e-5, "XLA fuses and reorders"),
    "mlp": TIGHT,
    "cnn": CHAOTIC,
}

# N steps per call against the same step one call at a time. N is small here so that call
# boundaries fall inside the first steps, where the CNN is still held tightly (N is only
# the stacked tensor's first dimension: the code is the same for the registry's default);
# the MLP's 30 steps leave a shorter last call, one more trace, checked too.
N = 4
MULTI_STEP_GRAPH = EXACT  # the same kernels, in a loop: measured 0
MULTI_STEP_KERAS = EXACT  # Keras's while loop over its own one-step function: measured 0
MULTI_STEP_XLA = XLA  # the loop is compiled anew, and XLA may fuse and reorder differently


def run(task, trainer, data):
    batches = list(epoch_dataset(data.x_train, data.y_train, BATCH, seed=0, epoch=0))
    batches = batches[: STEPS[task.name]]
    assert len(batches) == STEPS[task.name]
    return trainer.step_losses(batches), get_weights(trainer.model)


def differences(a, b, tol: Tolerance) -> list[str]:
    """What disagrees between two runs beyond the tolerance (empty: they agree)."""
    problems = []
    loss_rel = np.abs(a[0] - b[0]) / np.abs(b[0])
    if loss_rel[:EARLY_STEPS].max() > tol.early_rtol:
        early = loss_rel[:EARLY_STEPS].max()
        problems.append(f"first steps' losses differ by {early:.2e} (> {tol.early_rtol:.0e})")
    if loss_rel.max() > tol.loss_rtol:
        problems.append(f"losses differ by {loss_rel.max():.2e} relative (> {tol.loss_rtol:.0e})")
    for i, (wa, wb) in enumerate(zip(a[1], b[1])):
        rel = np.max(np.abs(wa - wb)) / max(np.max(np.abs(wb)), 1e-12)
        if rel > tol.weight_rtol:
            problems.append(f"weight {i} differs by {rel:.2e} of its max (> {tol.weight_rtol:.0e})")
    return problems


def build(impl: str, task, n: int = N):
    """The implementation, with ``n`` steps per call if it runs several."""
    if impl in implementations.MULTI_STEP:
        return implementations.get(impl)(task, initial_weights(task), steps_per_call=n)
    return implementations.get(impl)(task, initial_weights(task))


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
        self.biases = [
            (v, v.numpy()) for v in trainer.model.trainable_variables if len(v.shape) == 1
        ]

    def step_losses(self, batches):
        losses = []
        for x, y in batches:
            losses.append(float(self.trainer.step(x, y)))
            for v, value in self.biases:
                v.assign(value)
        return np.array(losses)


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


def test_batches_are_identical_for_every_implementation(task_data):
    task = TASKS["mlp"]
    data = task_data(task, n_train=BATCH * 4)
    first = [x.numpy() for x, _ in epoch_dataset(data.x_train, data.y_train, BATCH, 0, 0)]
    again = [x.numpy() for x, _ in epoch_dataset(data.x_train, data.y_train, BATCH, 0, 0)]
    assert all((p == q).all() for p, q in zip(first, again))
    assert tf.reduce_any(first[0] != data.x_train[:BATCH])  # shuffled, not in file order


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


@pytest.mark.parametrize(
    "layer, why",
    [
        (lambda: keras.layers.BatchNormalization(), "each part's statistics"),
        (lambda: keras.layers.Dense(4, activity_regularizer="l2"), "activity regulariser"),
    ],
    ids=["batch_norm", "activity_regularizer"],
)
def test_a_model_whose_parts_train_differently_is_refused(layer, why):
    model = keras.Sequential([keras.Input((3,)), layer(), keras.layers.Dense(2)])
    with pytest.raises(NotImplementedError, match=why):
        check_micro_batches(model, "custom_xla_split")
    check_micro_batches(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), "x")


# --- user tasks (bench/tasks/user.py) --------------------------------------------------------
#
# The same checks on a model the user brings: by default the two examples, or the tasks of
# ``--tasks FILE``. Each task's tolerance is its own ``tolerance=`` or, by default,
# ``bench.tasks.user.DEFAULT_TOLERANCE``, for every pair (the user's layers are the same in
# every implementation, so there is no hand-written twin to hold to a tighter standard).
# Measured on the examples (their batch size, 64; 12 steps; first 5 steps / all steps /
# weights):
#   resnet_bn: eager~graph 9.6e-8 / 1.1e-5 / 1.1e-3; XLA~non-XLA 3.8e-4 / 2.4e-3 / 0.12;
#              custom_xla_loop~custom_xla 3.8e-5 / 2.3e-3 / 5.9e-2; the rest 0
#   sequence_gru: every pair within 8.7e-8 / 8.7e-8 / 3.6e-7
#   learning rate x1.5 (a bug): resnet_bn 6.5e-2 / 0.16 / 0.98; sequence_gru 2.2e-3 / 6e-3 / 0.50
#   biases never updated (a bug): resnet_bn 2.7e-3 / 6.9e-3 / 1.0; sequence_gru 5.5e-4 / 1.3e-3 /
#   1.0
# Weights here are every variable, trainable or not: BatchNormalization's moving mean and
# variance must follow the same path in every implementation too.

USER_STEPS = 12  # at the task's own batch size; the examples' XLA compilations cost the most
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def user_tasks_under_test():
    from bench.tasks import user as user_tasks

    chosen = [user_tasks.LOADED[n] for n in user_tasks.selected_tasks() if n in user_tasks.LOADED]
    if chosen:
        return chosen
    # Unchecked at collection: nothing is built or read until the fixture runs.
    return [t for f in sorted(EXAMPLES.glob("*.py")) for t in user_tasks.load(f, False)]


def run_all_weights(task, trainer, data):
    batches = list(epoch_dataset(data.x_train, data.y_train, task.batch_size, seed=0, epoch=0))
    batches = batches[:USER_STEPS]
    assert len(batches) == USER_STEPS, "a user task needs USER_STEPS batches of training data"
    losses = trainer.step_losses(batches)
    return losses, [np.array(v.numpy()) for v in trainer.model.weights]


USER_TASKS = {task.name: task for task in user_tasks_under_test()}
IMPLS = list(implementations.REGISTRY)
USER_PAIRS = [(a, b) for a, b, _ in PAIRS]


@pytest.fixture(scope="module")
def user_runs(task_data):
    out = {}
    from bench.tasks.user import check

    for name, task in USER_TASKS.items():
        check(task)  # what loading a task file with --tasks checks (collection did not)
        data = task_data(task)
        runs_ = {}
        for impl in IMPLS:
            try:
                runs_[impl] = run_all_weights(task, build(impl, task), data)
            except NotImplementedError as e:  # e.g. micro-batches on a BatchNormalization model
                runs_[impl] = str(e)
        out[name] = {"task": task, "data": data, **runs_}
    return out


@pytest.mark.parametrize("task_name", list(USER_TASKS))
@pytest.mark.parametrize("a, b", USER_PAIRS, ids=[f"{a}~{b}" for a, b in USER_PAIRS])
def test_implementations_agree_on_user_tasks(user_runs, task_name, a, b):
    r = user_runs[task_name]
    tol = r["task"].equivalence_tolerance
    for impl in (a, b):
        if isinstance(r[impl], str):
            pytest.skip(f"{impl} cannot run {task_name}: {r[impl]}")
    assert differences(r[a], r[b], tol) == [], tol.why


@pytest.mark.parametrize("task_name", list(USER_TASKS))
def test_user_tasks_train_and_every_weight_moves(user_runs, task_name):
    """Not vacuous: every run trained, and every variable moved from where it started,
    the non-trainable ones too (BatchNormalization's moving statistics)."""
    r = user_runs[task_name]
    start = initial_weights(r["task"])
    for impl in IMPLS:
        if isinstance(r[impl], str):  # refused, with the reason (test above)
            continue
        losses, weights = r[impl]
        assert losses[-1] < losses[0], impl
        moved = [not np.array_equal(w, s) for w, s in zip(weights, start)]
        assert len(weights) == len(start) and all(moved), (impl, start.paths)


@pytest.mark.parametrize("task_name", list(USER_TASKS))
def test_a_bug_is_caught_on_user_tasks(user_runs, task_name):
    r = user_runs[task_name]
    task, tol = r["task"], r["task"].equivalence_tolerance
    faster = dataclasses.replace(task, learning_rate=task.learning_rate * 1.5)
    trainer = implementations.get("custom_graph")(faster, initial_weights(task))
    assert differences(run_all_weights(faster, trainer, r["data"]), r["keras_fit"], tol)
    frozen = FrozenBias(implementations.get("custom_graph")(task, initial_weights(task)))
    assert differences(run_all_weights(task, frozen, r["data"]), r["keras_fit"], tol)
