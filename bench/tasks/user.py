"""Task files: a user's own tasks, how they are loaded, checked and selected (``pytest --tasks
FILE``, ``LOOPBENCH_TASKS``, ``bench ab --tasks FILE``). docs/tasks.md.

A task file is a Python file that defines ``Task`` objects (``bench/tasks/task.py``; the
suite's own tasks are the same class) at module level::

    import keras
    from bench.tasks import Task

    def build():
        return keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, "relu"),
                                 keras.layers.Dense(3)])

    TINY = Task("tiny", build, input_shape=(20,), num_classes=3,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

What a task's ``data=`` may be, and the synthetic data a task without it gets:
``bench/tasks/task_data.py``.

Everything is checked when the file is loaded, before any benchmark runs; the first problem
raises one ``TaskError`` naming the file, the task and the problem.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.tasks.builtin import TASKS
from bench.tasks.data import input_list, n_examples, take
from bench.tasks.model import initial_weights, keras_loss, new_model, reference_model
from bench.tasks.task import (
    HEADS,
    Task,
    TaskError,
    binary_threshold,
    describe_inputs,
    first_line,
    input_specs,
    multi_input,
)
from bench.tasks.task_data import load_data

ENV_TASKS = "LOOPBENCH_TASKS"
BUILTIN = "builtin"  # the --tasks value that names the built-in tasks
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# --- checking a task ------------------------------------------------------------------------


def check(task: Task) -> None:
    """Everything a benchmark will need, tried once: the fields, the build, the data, one
    forward pass and the loss on a batch. Raises TaskError (without the file and task name:
    ``load`` adds them)."""
    _check_fields(task)
    _check_first_batch(task, _checked_model(task))


def _check_fields(task: Task) -> None:
    """The fields, each alone and against the others, before anything is built."""
    shape = task.input_shape
    if isinstance(shape, dict) and not all(isinstance(k, str) for k in shape):
        raise TaskError(f"input_shape's keys must be the model's input names, got {list(shape)}")
    shapes = input_list(shape) if multi_input(task) else [shape]
    well_formed = (multi_input(task) or isinstance(shape, tuple)) and all(
        isinstance(s, tuple | list) and all(isinstance(d, int) and d > 0 for d in s) for s in shapes
    )
    if not shapes or not well_formed:
        raise TaskError(
            "input_shape must be a tuple of positive ints, or a dict or list of them (several "
            f"inputs), got {task.input_shape!r}"
        )
    specs = input_list(input_specs(task))  # input_dtype and input_range fit input_shape
    if task.optimizer not in ("adam", "sgd"):
        raise TaskError(f"optimizer must be 'adam' or 'sgd', got {task.optimizer!r}")
    if not task.learning_rate > 0 or task.batch_size < 1 or task.epochs < 1:
        raise TaskError("learning_rate must be > 0, batch_size and epochs >= 1")
    if task.num_classes is not None and task.num_classes < 2:
        raise TaskError(f"num_classes must be at least 2 (or None), got {task.num_classes}")
    if task.head not in HEADS:
        raise TaskError(f"head must be one of {', '.join(HEADS)}, got {task.head!r}")
    if task.head == "classes" and not task.num_classes:
        raise TaskError("head='classes' needs num_classes")
    if task.accuracy_target is not None and task.kind != "classification":
        raise TaskError("accuracy_target needs labels to be right about (num_classes, or head)")
    if task.head == "binary":
        binary_threshold(task)  # logits or probabilities: known, or one line saying so
    for spec in specs:
        integer = np.issubdtype(np.dtype(spec.dtype), np.integer)
        if integer and task.data is None and spec.range is None:
            raise TaskError("integer inputs need input_range=(low, high) for synthetic data")


def _checked_model(task: Task):
    """build()'s model (the reference build); where the task gives its own initial weights or
    build_custom(), both builds are tried holding those weights."""
    try:
        model = reference_model(task)[0]
    except TaskError:
        raise
    except Exception as e:
        raise TaskError(
            f"build() or its first call on {describe_inputs(task)} failed: {first_line(e)}"
        ) from None
    if task.build_custom is not None or task.init_weights is not None:
        try:
            weights = initial_weights(task)
            new_model(task, weights)  # build()'s model holds them
            new_model(task, weights, custom=True)  # and build_custom()'s, where given
        except TaskError:
            raise
        except Exception as e:
            what = "init_weights()" if task.init_weights is not None else "build_custom()"
            raise TaskError(f"{what} failed: {first_line(e)}") from None
    return model


def _check_first_batch(task: Task, model) -> None:
    """The data loads and is checked, and the model's output and the loss on its first batch
    fit the labels."""
    ds = load_data(task)
    n = min(n_examples(ds.x_train), task.batch_size)
    x, y = take(ds.x_train, slice(None, n)), ds.y_train[:n]
    out = model(x, training=False)
    out_shape = tuple(out.shape)
    if task.head == "classes":
        if out_shape[-1] != task.num_classes or out_shape[:-1] != y.shape:
            raise TaskError(
                f"model output {out_shape} does not fit class labels {y.shape} with "
                f"num_classes={task.num_classes}: expected {(*y.shape, task.num_classes)}"
            )
    elif out_shape != y.shape:
        raise TaskError(
            f"model output {out_shape} does not fit labels {y.shape} ({task.head}: the same "
            "shape, one output per label, or the loss would broadcast them)"
        )
    try:
        value = np.asarray(keras_loss(task)(y, out))
    except TaskError:
        raise
    except Exception as e:
        raise TaskError(
            f"the loss does not fit model output {out_shape} and labels {y.shape}: {first_line(e)}"
        ) from None
    if value.shape != () or not np.isfinite(value):
        raise TaskError(f"the loss gave {value!r}, not a finite scalar, on the first batch")


# --- task files and the selection -----------------------------------------------------------

LOADED: dict[str, Task] = {}  # user tasks loaded this session, by name
_selected: list[str] = list(TASKS)  # the task names benchmarks run on (built-ins by default)


def load(path: str | os.PathLike, check_tasks: bool = True) -> list[Task]:
    """The ``Task`` objects a file defines at module level, checked (``check_tasks=False``:
    names only, nothing built or loaded). One TaskError (``path: task 'name': problem``) for
    the first problem found."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{path}: task file not found")
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"loopbench_tasks_{stem}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[module_name]
        raise TaskError(f"{path}: cannot import the task file: {first_line(e)}") from None
    found: list[Task] = []
    for value in vars(module).values():
        shipped = any(value is t for t in TASKS.values())  # e.g. ``from bench.tasks import MLP``
        if isinstance(value, Task) and not shipped and all(value is not t for t in found):
            found.append(value)
    if not found:
        raise TaskError(f"{path}: defines no tasks (no bench.tasks.Task at module level)")
    names: set[str] = set()
    tasks = []
    for task in found:
        if not isinstance(task.name, str) or not NAME.match(task.name):
            raise TaskError(
                f"{path}: task {task.name!r}: a name is a letter, then letters, digits or _ "
                "(it becomes part of test ids such as keras_fit-NAME)"
            )
        if task.name in TASKS or task.name in names:
            raise TaskError(f"{path}: task {task.name!r}: the name is already taken")
        names.add(task.name)
        task = replace(task, source=str(path.resolve())) if not task.source else task
        try:
            if check_tasks:
                check(task)
        except TaskError as e:
            raise TaskError(f"{path}: task {task.name!r}: {e}") from None
        tasks.append(task)
    return tasks


def select(specs: list[str]) -> list[str]:
    """Load every task file in ``specs`` (``builtin`` names the built-in tasks) and make them
    the tasks benchmarks run on. No specs: the built-in tasks. Returns the selected names."""
    names: list[str] = []
    for spec in specs:
        if spec == BUILTIN:
            names += [n for n in TASKS if n not in names]
            continue
        for task in load(spec):
            if task.name in LOADED and LOADED[task.name].source != task.source:
                raise TaskError(f"{spec}: task {task.name!r}: the name is already taken")
            LOADED[task.name] = task
            names.append(task.name)
    _selected[:] = names or list(TASKS)
    return list(_selected)


def specs_from(values: list[str] | None) -> list[str]:
    """--tasks values, else ``$LOOPBENCH_TASKS`` (os.pathsep-separated), else nothing."""
    if values:
        return list(values)
    env = os.environ.get(ENV_TASKS, "")
    return [s for s in env.split(os.pathsep) if s]


def selected_tasks() -> list[str]:
    """The names of the tasks this session's benchmarks run on."""
    return list(_selected)
