"""Task files: a user's own tasks, how they are loaded, checked and selected (``pytest --tasks
FILE``, ``LOOPBENCH_TASKS``, ``bench ab --tasks FILE``), and the data a task without its own
gets. docs/tasks.md.

A task file is a Python file that defines ``Task`` objects (``bench/tasks/task.py``; the
suite's own tasks are the same class) at module level::

    import keras
    from bench.tasks import Task

    def build():
        return keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, "relu"),
                                 keras.layers.Dense(3)])

    TINY = Task("tiny", build, input_shape=(20,), num_classes=3,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

Data (``data=``): ``None`` for synthetic data of the right shapes and label range (float
inputs: standard normal; integer inputs: token ids in ``input_range``; labels: a fixed random
linear function of each input -- of the token counts for integer inputs -- so they can be
learned: the argmax over the classes, or a tanh for regression); a tuple of arrays
``(x_train, y_train, x_test, y_test)`` or ``(x, y)`` (the last 20% become the test split); a
``.npz`` file with those keys; a callable returning any of these; a ``tf.data.Dataset`` or a
``keras.utils.PyDataset`` of ``(x, y)`` (its first ``n_train + n_test`` examples are taken); or
a ``bench.tasks.data.DataSource`` (``ImageData``: Fashion-MNIST as the built-ins read it).

Several inputs (``input_shape`` a dict or list of shapes): synthetic data per input, the labels
a fixed random linear function of all of them; arrays and streams give ``x`` as a dict (keyed
as ``input_shape``) or a list/tuple of arrays, one per input (not a ``.npz`` file).

Everything is checked when the file is loaded, before any benchmark runs; the first problem
raises one ``TaskError`` naming the file, the task and the problem.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from bench.tasks.builtin import TASKS
from bench.tasks.data import (
    Dataset,
    DataSource,
    input_list,
    map_inputs,
    n_examples,
    several,
    take,
)
from bench.tasks.task import (  # noqa: F401 (this module's names before bench/tasks/task.py)
    DEFAULT_TOLERANCE,
    HEADS,
    InputSpec,
    Task,
    TaskError,
    Tolerance,
    UserTask,
    WeightList,
    _cached,
    _call_built,
    _first_line,
    binary_threshold,
    describe_inputs,
    initial_weights,
    input_specs,
    keras_loss,
    multi_input,
    new_model,
    reference_model,
    skip_unsupported,
    train_flops_per_sample,
    unsupported_reason,
)

ENV_TASKS = "LOOPBENCH_TASKS"
BUILTIN = "builtin"  # the --tasks value that names the built-in tasks
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TEST_FRACTION = 0.2


# --- data -----------------------------------------------------------------------------------


def _output_shape(task: Task) -> tuple[int, ...]:
    model = reference_model(task)[0]
    return tuple(int(d) for d in _call_built(task, model).shape[1:])


def _synthetic_input(spec: InputSpec, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of one input, and the features the labels are a linear function of."""
    dtype = np.dtype(spec.dtype)
    if np.issubdtype(dtype, np.integer):
        low, high = (int(v) for v in spec.range)
        x = rng.integers(low, high, size=(n, *spec.shape)).astype(dtype)
        flat = x.reshape(n, -1) - low
        features = np.stack([np.bincount(row, minlength=high - low) for row in flat])
    else:
        x = rng.standard_normal((n, *spec.shape)).astype(dtype)
        if spec.range is not None:
            low, high = spec.range
            x = (low + (high - low) * rng.random(x.shape)).astype(dtype)
        features = x.reshape(n, -1)
    return x, features


def synthetic(task: Task) -> Dataset:
    """Inputs of the task's shape(s) and dtype(s), and labels a fixed random linear function
    of them -- of every input's, for several -- (of the token counts, for integer inputs), so
    that a model can learn them."""
    rng = np.random.default_rng(task.seed)
    n = task.n_train + task.n_test
    specs = input_specs(task)
    if isinstance(specs, InputSpec):
        x, features = _synthetic_input(specs, n, rng)
    else:  # input by input, in input_shape's order; the labels see every input's features
        drawn = map_inputs(lambda spec: _synthetic_input(spec, n, rng), specs)
        x = map_inputs(lambda pair: pair[0], drawn)
        features = np.concatenate([f for _, f in input_list(drawn)], axis=1)
    features = features.astype(np.float64)
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    out = _output_shape(task)
    if task.head == "classes":
        label_shape = out[:-1]  # one label per example, or per position of a sequence output
        k = task.num_classes
        scores = features @ rng.standard_normal((features.shape[1], math.prod(label_shape) * k))
        y = scores.reshape(n, *label_shape, k).argmax(-1).astype(np.int32)
    elif task.head == "binary":  # a 0/1 label per output unit, each about half 1s
        scores = features @ rng.standard_normal((features.shape[1], math.prod(out)))
        y = (scores > 0).reshape(n, *out).astype(np.float32)
    else:
        w = rng.standard_normal((features.shape[1], math.prod(out))) / math.sqrt(features.shape[1])
        y = np.tanh(features @ w).reshape(n, *out).astype(np.float32)
    m = task.n_train
    x_train, x_test = take(x, slice(None, m)), take(x, slice(m, None))
    return _split(task, "synthetic", f"seed {task.seed}", (x_train, y[:m], x_test, y[m:]))


def _inputs(task: Task, name: str, x):
    """``x`` as the task's inputs: one array; or, for several, a dict with input_shape's keys
    (in its order) or a tuple with one array per input."""
    if not multi_input(task):
        return np.asarray(x)
    shape = task.input_shape
    if isinstance(shape, dict):
        if not isinstance(x, dict) or set(x) != set(shape):
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise TaskError(
                f"data {name}: x must be a dict of arrays with input_shape's keys "
                f"{sorted(shape)}, got {got}"
            )
        return {k: np.asarray(x[k]) for k in shape}
    if not isinstance(x, tuple | list) or len(x) != len(shape):
        got = len(x) if isinstance(x, tuple | list) else type(x).__name__
        raise TaskError(
            f"data {name}: x must be a list of {len(shape)} arrays, one per input, got {got}"
        )
    return tuple(np.asarray(a) for a in x)


def _split(task: Task, name: str, source: str, arrays) -> Dataset:
    if isinstance(arrays, dict) or hasattr(arrays, "files"):
        keys = set(arrays.files if hasattr(arrays, "files") else arrays)
        if {"x_train", "y_train", "x_test", "y_test"} <= keys:
            arrays = tuple(arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        elif {"x", "y"} <= keys:
            arrays = (arrays["x"], arrays["y"])
        else:
            raise TaskError(
                f"data {name}: has keys {sorted(keys)}; expected x_train, y_train, x_test, y_test "
                "(or x, y)"
            )
    if not isinstance(arrays, tuple | list) or len(arrays) not in (2, 4):
        raise TaskError(
            f"data {name}: expected (x_train, y_train, x_test, y_test) or (x, y), "
            f"got {type(arrays).__name__}"
        )
    arrays = [_inputs(task, name, a) if i % 2 == 0 else np.asarray(a) for i, a in enumerate(arrays)]
    if len(arrays) == 2:
        x, y = arrays
        if n_examples(x) != len(y):
            raise TaskError(f"data {name}: {n_examples(x)} inputs but {len(y)} labels")
        cut = n_examples(x) - max(1, int(n_examples(x) * TEST_FRACTION))
        arrays = [take(x, slice(None, cut)), y[:cut], take(x, slice(cut, None)), y[cut:]]
    x_train, y_train, x_test, y_test = arrays
    y_dtype = np.int32 if task.head == "classes" else np.float32
    specs = input_specs(task)

    def cast(x):
        return map_inputs(lambda a, spec: a.astype(spec.dtype, copy=False), x, specs)

    return Dataset(
        name,
        source,
        cast(x_train),
        y_train.astype(y_dtype, copy=False),
        cast(x_test),
        y_test.astype(y_dtype, copy=False),
    )


def load_data(
    task: Task, n_train: int | None = None, data_dir=None, quiet: bool = False
) -> Dataset:
    """The task's data, its training split cut to ``n_train`` examples (cached per task and
    cut), checked against its shapes and label range. A ``bench.tasks.data.DataSource`` (such
    as ``ImageData``) loads itself from ``data_dir``;
    ``quiet``: without its notices."""
    if isinstance(task.data, DataSource):
        key = ("data", n_train, str(data_dir))
        load = task.data.load
        return _cached(
            task, key, lambda: _checked(task, load(task, n_train, data_dir, quiet), n_train is None)
        )
    return _cached(task, "data", lambda: _checked(task, _load_data(task))).subset(n_train)


def _checked(task: Task, ds: Dataset, whole: bool = True) -> Dataset:
    check_data(task, ds, whole)
    return ds


def _load_data(task: Task) -> Dataset:
    data = task.data
    if data is None:
        ds = synthetic(task)
    else:
        name, source = "arrays", "arrays"
        if callable(data) and not _is_stream(data):  # a tf.data.Dataset is callable too
            name = source = f"{getattr(data, '__name__', 'data')}()"
            try:
                data = data()
            except Exception as e:
                raise TaskError(f"data callable {name} failed: {_first_line(e)}") from None
        if isinstance(data, str | os.PathLike):
            path = Path(data)
            if not path.is_absolute() and task.source:
                path = Path(task.source).parent / path
            name, source = path.name, str(path)
            try:
                with np.load(path) as npz:
                    data = {k: npz[k] for k in npz.files}
            except Exception as e:
                raise TaskError(f"data file {path}: cannot read it ({_first_line(e)})") from None
        if _is_stream(data):
            name = source = type(data).__name__
            data = _take(task, name, data)
        ds = _split(task, name, source, data)
    return ds


def _is_stream(data) -> bool:
    """A ``tf.data.Dataset`` (it has an ``element_spec``) or a ``keras.utils.PyDataset``."""
    if hasattr(data, "element_spec"):
        return True
    if "keras" not in sys.modules:
        return False
    import keras

    return isinstance(data, keras.utils.PyDataset)


def _take(task: Task, name: str, stream) -> tuple:
    """The first ``n_train + n_test`` examples of a stream of ``(x, y)`` elements -- single
    examples or batches, as NumPy arrays -- as ``(x_train, y_train, x_test, y_test)``; a
    shorter stream as ``(x, y)``, split as arrays are. Every implementation then trains on
    the same arrays, in the suite's own batch order, as it does on any other data."""
    want = task.n_train + task.n_test
    xs, ys, have = [], [], 0
    if hasattr(stream, "element_spec"):
        elements = stream.as_numpy_iterator()
    else:  # a PyDataset: batches by index
        elements = (stream[i] for i in range(len(stream)))
    first = input_list(input_specs(task))[0]
    for element in elements:
        if not isinstance(element, tuple | list) or len(element) < 2:
            raise TaskError(f"data {name}: elements must be (x, y), got {type(element).__name__}")
        x, y = _inputs(task, name, element[0]), np.asarray(element[1])
        if input_list(x)[0].shape == first.shape:  # one example
            x, y = take(x, None), y[None]
        xs.append(x)
        ys.append(y)
        have += n_examples(x)
        if have >= want:
            break
    if not xs:
        raise TaskError(f"data {name}: the stream is empty")
    x = map_inputs(lambda *parts: np.concatenate(parts)[:want], *xs)
    y = np.concatenate(ys)[:want]
    if n_examples(x) < want:
        return x, y
    m = task.n_train
    return take(x, slice(None, m)), y[:m], take(x, slice(m, None)), y[m:]


def check_data(task: Task, ds: Dataset, whole: bool = True) -> None:
    """Shapes, counts, finite inputs, label range; and, for the ``whole`` data (not a subset
    cut for a test), at least one batch of training examples."""
    specs = input_specs(task)
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        for key, a, spec in _each_input(x, specs, f"x_{split}"):
            what = f"x_{split}{key}"
            if a.shape[1:] != spec.shape:
                raise TaskError(
                    f"data: {what} has shape {a.shape}, expected "
                    f"(n, {', '.join(map(str, spec.shape))}) (input_shape{key})"
                )
            if len(a) != len(y):
                raise TaskError(f"data: {len(a)} {what} inputs but {len(y)} labels")
            if not np.isfinite(np.asarray(a, np.float64)).all():
                raise TaskError(f"data: {what} holds NaN or infinite values")
        if task.head == "binary" and len(y) and not np.isin(y, (0, 1)).all():
            bad = y[~np.isin(y, (0, 1))].ravel()[0]
            raise TaskError(f"data: y_{split} has label {bad:g}; a binary head's labels are 0 or 1")
        if task.head == "classes" and len(y):
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= task.num_classes:
                bad = low if low < 0 else high
                raise TaskError(
                    f"data: y_{split} has label {bad}, outside 0..{task.num_classes - 1} "
                    f"(num_classes={task.num_classes})"
                )
    if whole and n_examples(ds.x_train) < task.batch_size:
        raise TaskError(
            f"data: {n_examples(ds.x_train)} training examples, fewer than one batch "
            f"({task.batch_size})"
        )


def _each_input(x, specs, what: str) -> list[tuple[str, np.ndarray, InputSpec]]:
    """(how the input is named in messages -- ``['image']``, ``[1]``, ``''`` for one --, its
    array, its spec) for each input, or a TaskError where ``x`` is not the task's inputs."""
    if isinstance(specs, InputSpec):
        if several(x):
            raise TaskError(f"data: {what} is {type(x).__name__}, not one array (input_shape)")
        return [("", x, specs)]
    if isinstance(specs, dict):
        if not isinstance(x, dict) or set(x) != set(specs):
            raise TaskError(f"data: {what} is not a dict of arrays keyed {list(specs)}")
        return [(f"[{k!r}]", x[k], spec) for k, spec in specs.items()]
    if not isinstance(x, tuple | list) or len(x) != len(specs):
        raise TaskError(f"data: {what} is not {len(specs)} arrays, one per input")
    return [(f"[{i}]", a, spec) for i, (a, spec) in enumerate(zip(x, specs))]


# --- checking a task ------------------------------------------------------------------------


def check(task: Task) -> None:
    """Everything a benchmark will need, tried once: build, data, one forward pass and the
    loss on a batch. Raises TaskError (without the file and task name: ``load`` adds them)."""
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
    try:
        model = reference_model(task)[0]
    except TaskError:
        raise
    except Exception as e:
        raise TaskError(
            f"build() or its first call on {describe_inputs(task)} failed: {_first_line(e)}"
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
            raise TaskError(f"{what} failed: {_first_line(e)}") from None
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
            f"the loss does not fit model output {out_shape} and labels {y.shape}: {_first_line(e)}"
        ) from None
    if value.shape != () or not np.isfinite(value):
        raise TaskError(f"the loss gave {value!r}, not a finite scalar, on the first batch")


# --- task files and the selection -----------------------------------------------------------

LOADED: dict[str, UserTask] = {}  # user tasks loaded this session, by name
_selected: list[str] = list(TASKS)  # the task names benchmarks run on (built-ins by default)


def load(path: str | os.PathLike, check_tasks: bool = True) -> list[UserTask]:
    """The ``UserTask`` objects a file defines at module level, checked (``check_tasks=False``:
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
        raise TaskError(f"{path}: cannot import the task file: {_first_line(e)}") from None
    found: list[UserTask] = []
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
        from dataclasses import replace

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
