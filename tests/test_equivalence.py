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
The CNN is chaotic: a 1e-7 difference (another convolution kernel, or XLA's summation order)
can grow 30x in one step, because Adam turns tiny differences in near-zero gradients into
lr-sized updates; how far it grows depends on the batch order. So the CNN is held tightly
over the first steps, where a real bug already shows, and loosely after.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import implementations
from bench.tasks import TASKS, initial_weights
from implementations.common import epoch_dataset, get_weights

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


@pytest.fixture(scope="module")
def runs(task_data):
    out = {}
    for name, task in TASKS.items():
        data = task_data(task, n_train=BATCH * STEPS[name])
        out[name] = {
            impl: run(task, factory(task, initial_weights(task)), data)
            for impl, factory in implementations.REGISTRY.items()
        }
        out[name]["data"] = data
    return out


PAIRS = [
    ("custom_eager", "custom_graph", lambda task: EXACT),
    ("keras_fit", "custom_graph", lambda task: KERAS[task]),
    ("keras_fit_xla", "keras_fit", lambda task: XLA[task]),
    ("custom_xla", "custom_graph", lambda task: XLA[task]),
    ("keras_fit_xla", "custom_xla", lambda task: KERAS[task]),
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
