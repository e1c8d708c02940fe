"""A task's data, from its ``data=`` field, checked against the task; the data of a task without
its own is synthetic. ``bench.tasks.load_for_task`` is how the rest of the suite asks for it.

``data=``: ``None`` for synthetic data of the right shapes and label range (float inputs:
standard normal; integer inputs: token ids in ``input_range``; labels: a fixed random linear
function of each input -- of the token counts for integer inputs -- so they can be learned: the
argmax over the classes, or a tanh for regression); a tuple of arrays ``(x_train, y_train,
x_test, y_test)`` or ``(x, y)`` (the last 20% become the test split); a ``.npz`` file with those
keys; a callable returning any of these; a ``tf.data.Dataset`` or a ``keras.utils.PyDataset`` of
``(x, y)`` (its first ``n_train + n_test`` examples are taken); or a
``bench.tasks.data.DataSource`` (``ImageData``: Fashion-MNIST as the built-ins read it).

Several inputs (``input_shape`` a dict or list of shapes): synthetic data per input, the labels
a fixed random linear function of all of them; arrays and streams give ``x`` as a dict (keyed
as ``input_shape``) or a list/tuple of arrays, one per input (not a ``.npz`` file).

A problem raises one ``TaskError`` (``bench/tasks/user.py`` adds the file and task names).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from bench.tasks.data import (
    Dataset,
    DataSource,
    input_list,
    map_inputs,
    n_examples,
    several,
    take,
)
from bench.tasks.model import call_built, reference_model
from bench.tasks.task import (
    InputSpec,
    Task,
    TaskError,
    cached,
    first_line,
    input_specs,
    multi_input,
)

TEST_FRACTION = 0.2


def _output_shape(task: Task) -> tuple[int, ...]:
    model = reference_model(task)[0]
    return tuple(int(d) for d in call_built(task, model).shape[1:])


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
        return cached(
            task, key, lambda: _checked(task, load(task, n_train, data_dir, quiet), n_train is None)
        )
    return cached(task, "data", lambda: _checked(task, _load_data(task))).subset(n_train)


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
                raise TaskError(f"data callable {name} failed: {first_line(e)}") from None
        if isinstance(data, str | os.PathLike):
            path = Path(data)
            if not path.is_absolute() and task.source:
                path = Path(task.source).parent / path
            name, source = path.name, str(path)
            try:
                with np.load(path) as npz:
                    data = {k: npz[k] for k in npz.files}
            except Exception as e:
                raise TaskError(f"data file {path}: cannot read it ({first_line(e)})") from None
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
    import keras  # lazy: heavy; here only once something else has imported it

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
