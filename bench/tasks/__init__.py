"""The tasks: what is trained and on what data. The public task API is here; a user's task
file imports ``UserTask`` (and ``Tolerance``) from this package (docs/tasks.md), and the rest
of the suite asks this package, not its modules, for a task's weights, FLOPs and data.

- ``builtin``: the suite's own tasks (linreg, mlp, cnn): NumPy-drawn weights, analytic FLOPs;
- ``user``: ``UserTask``, loading and checking task files (``--tasks``);
- ``data``: the datasets (Fashion-MNIST IDX files, synthetic data, scikit-learn's digits).

Importing this package imports no TensorFlow; building a user's model does.
"""

from __future__ import annotations

import numpy as np

from bench.tasks import user as _user
from bench.tasks.builtin import TASKS, Conv2D, Dense, Flatten, Task, analytic_flops, numpy_weights
from bench.tasks.data import Dataset, load_builtin
from bench.tasks.user import LOADED, Tolerance, UserTask

__all__ = [
    "TASKS",
    "Conv2D",
    "Dense",
    "Flatten",
    "Task",
    "Tolerance",
    "UserTask",
    "get_task",
    "initial_weights",
    "is_user_task",
    "load_for_task",
    "train_flops_per_sample",
]


def is_user_task(task) -> bool:
    """Whether ``task`` is a user's own (a ``UserTask``: it has a build function) rather than
    one of the built-in tasks."""
    return getattr(task, "build", None) is not None


def get_task(name: str) -> Task | UserTask:
    """A built-in task, or a user task loaded this session (``bench/tasks/user.py``)."""
    if name in TASKS:
        return TASKS[name]
    if name in LOADED:
        return LOADED[name]
    valid = ", ".join([*TASKS, *LOADED])
    raise KeyError(f"unknown task {name!r}; valid tasks: {valid}")


def initial_weights(task, seed: int | None = None) -> list[np.ndarray]:
    """The weights every implementation starts from: a built-in task's Glorot-uniform
    kernels and zero biases drawn with NumPy; a user task's every weight, from one build of
    its model under the seed."""
    if is_user_task(task):
        return _user.initial_weights(task, seed)
    return numpy_weights(task, seed)


def train_flops_per_sample(task) -> int:
    """FLOPs of one training sample: analytic for a built-in task, counted by TensorFlow's
    profiler for a user's (ops inside a loop once)."""
    return _user.train_flops_per_sample(task) if is_user_task(task) else analytic_flops(task)


def load_for_task(task, data_dir=None, n_train: int | None = None, quiet: bool = False,
                  raw: Dataset | None = None) -> Dataset:  # fmt: skip
    """The task's data, ready to train on (``bench.tasks.data.load_builtin``'s arguments): a
    user task's own data, or synthetic data made for it."""
    if is_user_task(task):
        return _user.load_data(task).subset(n_train)
    return load_builtin(task, data_dir, n_train=n_train, quiet=quiet, raw=raw)
