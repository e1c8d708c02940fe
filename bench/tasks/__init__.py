"""The tasks: what is trained and on what data. One kind of task, ``Task``
(``bench/tasks/task.py``): the suite's own tasks and a user's are the same class, and the rest
of the suite asks this package, not its modules, for a task's weights, FLOPs and data.

- ``task``: ``Task``, its inputs and labels;
- ``model``: what is built from any task (initial weights, each implementation's own instance
  of the model, the loss, the FLOPs);
- ``builtin``: the suite's tasks (linreg, mlp, cnn), built from layer lists (``Architecture``);
- ``layers_tf``, ``layers_ops``: the seed's hand-written layers, in TensorFlow and in
  ``keras.ops`` (the built-ins' ``build_custom``);
- ``user``: task files (``--tasks``): loading, checking, selecting;
- ``task_data``: a task's data (``data=``), or synthetic data of its shapes, checked;
- ``data``: the datasets (Fashion-MNIST IDX files, synthetic data, scikit-learn's digits).

Importing this package imports no TensorFlow; building a model does.
"""

from __future__ import annotations

from bench.tasks.builtin import TASKS, Architecture, Conv2D, Dense, Flatten
from bench.tasks.data import Dataset, DataSource, ImageData, LinearData
from bench.tasks.model import initial_weights, train_flops_per_sample
from bench.tasks.task import Task, Tolerance
from bench.tasks.task_data import load_data
from bench.tasks.user import LOADED

__all__ = [
    "TASKS",
    "Architecture",
    "Conv2D",
    "DataSource",
    "Dense",
    "Flatten",
    "ImageData",
    "LinearData",
    "Task",
    "Tolerance",
    "get_task",
    "initial_weights",
    "load_for_task",
    "train_flops_per_sample",
]


def get_task(name: str) -> Task:
    """A built-in task, or a task loaded from a task file this session."""
    if name in TASKS:
        return TASKS[name]
    if name in LOADED:
        return LOADED[name]
    valid = ", ".join([*TASKS, *LOADED])
    raise KeyError(f"unknown task {name!r}; valid tasks: {valid}")


def load_for_task(
    task: Task, data_dir=None, n_train: int | None = None, quiet: bool = False
) -> Dataset:
    """The task's data, ready to train on, its training split cut to ``n_train`` examples: a
    data source loads itself (``ImageData``: from ``data_dir`` or the standard places); any
    other ``data=`` is read and checked by ``bench/tasks/task_data.py``."""
    return load_data(task, n_train, data_dir, quiet)
