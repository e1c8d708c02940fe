"""Training to convergence: final accuracy, loss curves, time to accuracy. Imports TensorFlow.

Every implementation is trained by the same driver (``train``): the same initial weights
(per seed), the same batch order (``epoch_dataset``), the same evaluation after every epoch
(``implementations.common.evaluate``). The time-to-accuracy clock runs while training --
tracing and XLA compilation included, since that is what a user waits for -- and stops
while evaluating, so every implementation is measured the same way.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

import implementations
from bench.tasks import Task, initial_weights
from bench.tasks.data import Dataset, n_examples
from implementations.common import epoch_dataset, evaluate, get_weights


@dataclass(frozen=True)
class ConvergenceProfile:
    seeds: tuple[int, ...]
    n_train: int | None  # None: the full training split
    epochs: dict[str, int] | None  # None: each task's own epochs
    # Whether the implementations that run several steps per call (implementations.MULTI_STEP)
    # train too: tests/test_equivalence.py holds them step for step to their one-step twins.
    multi_step: bool = True
    # (implementation, task, precision) trained in mixed precision, each held to the same
    # implementation's float32 accuracy (bench_accuracy.py: test_convergence_precision).
    precision: tuple[tuple[str, str, str], ...] = ()

    @property
    def full_training(self) -> bool:
        """The whole training split for each task's own epochs: where anchors apply."""
        return self.n_train is None and self.epochs is None


CONVERGENCE = {
    "smoke": ConvergenceProfile(
        seeds=(0,),
        n_train=1024,
        epochs={"linreg": 1, "mlp": 1, "cnn": 1},
        precision=(("custom_graph", "mlp", "mixed_bfloat16"),),
    ),
    # The seed tutorial's own subset (first 10,000 images), a few epochs: minutes, not hours.
    "quick": ConvergenceProfile(
        seeds=(0,),
        n_train=10_000,
        epochs={"linreg": 5, "mlp": 3, "cnn": 2},
        multi_step=False,
        precision=(
            ("custom_graph", "mlp", "mixed_bfloat16"),
            ("custom_graph", "cnn", "mixed_bfloat16"),
        ),
    ),
    "full": ConvergenceProfile(
        seeds=(0, 1, 2),
        n_train=None,
        epochs=None,
        precision=tuple(
            (impl, task, precision)
            for impl in ("keras_fit", "custom_graph", "custom_xla")
            for task in ("mlp", "cnn")
            for precision in ("mixed_bfloat16", "mixed_float16")
        ),
    ),
}


def progress(message: str) -> None:
    """One line per epoch (bench_accuracy.py routes it past pytest's output capture)."""
    print(f"loopbench: {message}", file=sys.stderr, flush=True)


def train(
    impl: str, task: Task, data: Dataset, seed: int, epochs: int, precision: str = "float32"
) -> dict:
    """Train one implementation from the seed's initial weights; curves and timings."""
    trainer = implementations.get(impl)(task, initial_weights(task, seed), precision=precision)
    curves: dict[str, list] = {"epoch": [], "train_loss": [], "test_loss": [], "test_accuracy": []}
    clock, tta = 0.0, None
    for epoch in range(epochs):
        batches = epoch_dataset(data.x_train, data.y_train, task.batch_size, seed, epoch)
        t0 = time.perf_counter()
        train_loss = trainer.fit_epoch(batches)  # returns a host float: the device is done
        clock += time.perf_counter() - t0
        test_loss, accuracy = evaluate(trainer.model, task, data.x_test, data.y_test)
        for key, value in zip(curves, (epoch + 1, train_loss, test_loss, accuracy)):
            curves[key].append(value)
        if tta is None and task.tta_target is not None and accuracy >= task.tta_target:
            tta = clock
        acc = "" if accuracy is None else f" test acc {accuracy:.4f}"
        label = impl if precision == "float32" else f"{impl}[{precision}]"
        progress(
            f"{label}/{task.name} seed {seed} epoch {epoch + 1}/{epochs}: "
            f"train loss {train_loss:.4f} test loss {test_loss:.4f}{acc} ({clock:.1f}s)"
        )
    result = {"curves": curves, "train_seconds": clock, "time_to_accuracy_s": tta}
    if task.true_params is not None:
        result["params"] = recovered_params(get_weights(trainer.model))
    return result


def recovered_params(weights: list[np.ndarray]) -> list[float]:
    """The trainable weights, flattened and concatenated in order: what a task's
    ``true_params`` are compared with (linreg: ``[w, b]``)."""
    return [float(v) for v in np.concatenate([np.ravel(w) for w in weights])]


def summarize(task: Task, data: Dataset, runs: list[dict], seeds, epochs: int) -> dict:
    """extra_info for one implementation x task over its seeds (docs/results-schema.md)."""
    finals = [r["curves"]["test_accuracy"][-1] for r in runs]
    ttas = [r["time_to_accuracy_s"] for r in runs]
    info = {
        "kind": "convergence",
        "task": task.name,
        "dataset": data.name,
        "seed": seeds[0],
        "seeds": list(seeds),
        "epochs": epochs,
        "n_train": n_examples(data.x_train),
        "final_loss": float(np.mean([r["curves"]["test_loss"][-1] for r in runs])),
        "curves": runs[0]["curves"],
        "train_seconds": float(np.mean([r["train_seconds"] for r in runs])),
        "tta_target": task.tta_target,
        "time_to_accuracy_s": float(np.mean(ttas)) if ttas and None not in ttas else None,
        "final_accuracy": None,
        "final_accuracy_std": None,
        "final_accuracies": None,
    }
    if task.kind == "classification":
        info.update(
            final_accuracy=float(np.mean(finals)),
            final_accuracy_std=float(np.std(finals)),
            final_accuracies=[float(a) for a in finals],
        )
    if task.true_params is not None:
        params = np.mean([r["params"] for r in runs], axis=0)
        truth = np.asarray(task.true_params, np.float64)
        info.update(
            params=[float(p) for p in params],
            true_params=[float(t) for t in truth],
            param_error=float(np.max(np.abs(params - truth)))
            if params.shape == truth.shape
            else float("inf"),
            param_tolerance=task.param_tolerance,
        )
        if len(params) == 2:  # a line's slope and intercept, as the results have named them
            info.update(w=float(params[0]), b=float(params[1]))
    return info


# Parity: every implementation's mean final accuracy within this many percentage points of
# its reference (keras_fit, or the same implementation in float32).
PARITY_PP = 1.0


def failures(label: str, task: Task, info: dict, versus: str) -> list[str]:
    """Why a convergence result (``info``, as the benchmarks fill it) fails, one message each:
    parameters off the task's known truth, a mean accuracy more than ``PARITY_PP`` from
    ``versus`` (``parity_ok`` False), or an accuracy below the task's target. Empty: it passes.
    ``label`` names the run in the messages."""
    out = []
    if task.true_params is not None and not info["param_error"] <= task.param_tolerance:
        found = ", ".join(f"{p:.4f}" for p in info["params"])
        truth = ", ".join(f"{t:g}" for t in task.true_params)
        out.append(
            f"{label} recovered parameters [{found}]; truth [{truth}] "
            f"(tolerance {task.param_tolerance})"
        )
    if info.get("parity_ok") is False:
        out.append(
            f"{label}: mean accuracy {info['final_accuracy']:.4f} is "
            f"{info['parity_delta_pp']:+.2f} pp from {versus} (allowed +-{PARITY_PP})"
        )
    if info.get("anchor_ok") is False:
        where = f"the external anchor {task.accuracy_target} on full {task.anchor_dataset}"
        if task.anchor_dataset is None:
            where = f"its task's target {task.accuracy_target}"
        out.append(f"{label}: accuracy {info['final_accuracy']:.4f} below {where}")
    return out


def anchor(task: Task, info: dict, full_training: bool) -> dict:
    """A task's accuracy target applies to full training (all its data, its own epochs) and,
    where it is an external anchor (``anchor_dataset``), on that dataset only: not on the
    digits fallback."""
    on_its_data = task.anchor_dataset in (None, info["dataset"])
    applies = task.accuracy_target is not None and on_its_data and full_training
    return {
        "accuracy_target": task.accuracy_target,
        "anchor_ok": (info["final_accuracy"] >= task.accuracy_target) if applies else None,
    }


def sklearn_reference(task: Task, data: Dataset, seeds, epochs: int) -> dict:
    """scikit-learn's MLPClassifier on the same standardised data: an independent,
    non-TensorFlow reference (same layer sizes, Adam, learning rate and batch size)."""
    from sklearn.exceptions import ConvergenceWarning  # lazy: heavy; only this reference
    from sklearn.metrics import log_loss  # lazy: as above
    from sklearn.neural_network import MLPClassifier  # lazy: as above

    kernels = [w for w in initial_weights(task) if w.ndim == 2]  # an MLP's, in layer order
    hidden = tuple(w.shape[1] for w in kernels)[:-1]
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)
    runs = []
    for seed in seeds:
        clf = MLPClassifier(
            hidden_layer_sizes=hidden,
            solver="adam",
            learning_rate_init=task.learning_rate,
            batch_size=task.batch_size,
            max_iter=epochs,
            random_state=seed,
            alpha=0.0,
        )
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the epoch budget
            clf.fit(x_train, data.y_train)
        accuracy = float(clf.score(x_test, data.y_test))
        test_loss = float(log_loss(data.y_test, clf.predict_proba(x_test), labels=clf.classes_))
        progress(f"sklearn_mlp/{task.name} seed {seed}: test acc {accuracy:.4f}")
        runs.append(
            {
                "curves": {
                    "epoch": list(range(1, len(clf.loss_curve_) + 1)),
                    "train_loss": [float(v) for v in clf.loss_curve_],
                    "test_loss": [None] * (len(clf.loss_curve_) - 1) + [test_loss],
                    "test_accuracy": [None] * (len(clf.loss_curve_) - 1) + [accuracy],
                },
                "train_seconds": time.perf_counter() - t0,
                "time_to_accuracy_s": None,
            }
        )
    return summarize(task, data, runs, seeds, epochs)
