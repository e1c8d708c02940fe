"""Your own model as a task: ``UserTask``, the task files that define them, and how they are
loaded, checked and selected (``pytest --tasks FILE``, ``LOOPBENCH_TASKS``, ``bench ab
--tasks FILE``). docs/tasks.md.

A task file is a Python file that defines ``UserTask`` objects at module level::

    import keras
    from bench.tasks.user import UserTask

    def build():
        return keras.Sequential([keras.Input((20,)), keras.layers.Dense(64, "relu"),
                                 keras.layers.Dense(3)])

    TINY = UserTask("tiny", build, input_shape=(20,), num_classes=3,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

Why a dataclass of its own rather than more optional fields on ``bench.tasks.builtin.Task``: a
built-in task *is* its layer list (``layers``), from which both the Keras model and the
hand-written one are built, weights drawn with NumPy and FLOPs counted; a user task is a
build function, a loss object and a data source, none of which a built-in task has or
needs. Fifteen optional fields, half meaningless for each kind, would make every reader of a
``Task`` ask which kind it is. So ``UserTask`` is a second frozen dataclass that offers the
fields the shared code reads (``name``, ``kind``, ``input_shape``, ``optimizer``,
``learning_rate``, ``batch_size``, ``epochs``, ``seed``, ``num_classes``, ``tta_target``), and
the few places that differ ask ``bench.tasks.is_user_task(task)``: whether the task has a build
function. ``eq=False``: it holds a function and maybe arrays; identity is equality.

Weights: the model is built once per (task, seed) under ``keras.utils.set_random_seed``;
*all* its weights, trainable and not (BatchNormalization's moving statistics), are taken from
that build and copied into every implementation's own instance (``new_model``), which is
checked to have the same variables, in the same order, with the same names and shapes.

Data (``data=``): ``None`` for synthetic data of the right shapes and label range (float
inputs: standard normal; integer inputs: token ids in ``input_range``; labels: a fixed random
linear function of each input -- of the token counts for integer inputs -- so they can be
learned: the argmax over the classes, or a tanh for regression); a tuple of arrays
``(x_train, y_train, x_test, y_test)`` or ``(x, y)`` (the last 20% become the test split); a
``.npz`` file with those keys; or a callable returning any of these.

Everything is checked when the file is loaded, before any benchmark runs; the first problem
raises one ``TaskError`` naming the file, the task and the problem.

Equivalence tolerance: ``DEFAULT_TOLERANCE`` unless the task sets ``tolerance=``
(tests/test_equivalence.py; docs/tasks.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.tasks.builtin import TASKS
from bench.tasks.data import Dataset

ENV_TASKS = "LOOPBENCH_TASKS"
BUILTIN = "builtin"  # the --tasks value that names the built-in tasks
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TEST_FRACTION = 0.2


class TaskError(ValueError):
    """A task file or a task in it is unusable: one line naming the file, task and problem."""


@dataclass(frozen=True)
class Tolerance:
    """How closely two implementations must agree, step by step (tests/test_equivalence.py)."""

    early_rtol: float  # relative, on the losses of the first few steps
    loss_rtol: float  # relative, on every step's loss
    weight_rtol: float  # final weights (every variable), relative to the array's max |w|
    why: str = ""


# A user model gets this unless its task sets ``tolerance=``. Measured (tests/test_equivalence.py:
# 12 Adam steps at the task's batch size; first 5 steps' losses / all losses / weights, relative):
# the GRU example's implementations, with and without XLA, agreed within 8.7e-8 / 8.7e-8 /
# 3.6e-7, while a bug moved them by at least 5.5e-4 / 1.3e-3 / 0.50 (learning rate x1.5;
# biases never updated). So the default is ~1000x the rounding drift of a model whose training
# is not chaotic, and below what a bug does. A chaotic model (the residual CNN with batch
# normalisation: XLA and not differ by 3.8e-4 / 2.4e-3 / 0.12) states its own, as that
# example does.
DEFAULT_TOLERANCE = Tolerance(
    1e-4, 2e-3, 5e-2, "user model, default tolerance: float32 rounding, reordered by fusion/XLA"
)


@dataclass(frozen=True, eq=False)
class UserTask:
    name: str
    build: Callable[[], Any]  # () -> keras.Model: functional, Sequential or subclassed
    input_shape: tuple[int, ...]  # one example's shape, without the batch dimension
    loss: Any  # a Keras loss (name or object) or a callable (y_true, y_pred) -> loss
    num_classes: int | None = None  # class-index labels in [0, num_classes); None: regression
    input_dtype: str = "float32"
    input_range: tuple[float, float] | None = None  # synthetic integer inputs: [low, high)
    optimizer: str = "adam"  # "adam" or "sgd"
    learning_rate: float = 1e-3
    batch_size: int = 32
    data: Any = None  # None (synthetic), arrays, a .npz path or a callable: module docstring
    n_train: int = 2048  # synthetic data only
    n_test: int = 512
    epochs: int = 2  # convergence check (quick and full profiles; smoke runs 1)
    accuracy_target: float | None = None  # convergence: final test accuracy must reach it
    tolerance: Tolerance | None = None  # equivalence; None: DEFAULT_TOLERANCE
    seed: int = 0
    source: str = ""  # the task file, filled in when loaded

    layers = ()  # no built-in layer spec: the model comes from ``build``

    @property
    def kind(self) -> str:
        return "classification" if self.num_classes else "regression"

    @property
    def tta_target(self) -> float | None:
        return self.accuracy_target

    @property
    def equivalence_tolerance(self) -> Tolerance:
        return self.tolerance or DEFAULT_TOLERANCE


# --- the reference build: initial weights, and each implementation's own instance ----------

# Per task (weakly: a task made by dataclasses.replace in a test gets its own entries): the
# reference builds by seed, the resolved loss, the loaded data.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(task: UserTask, key, make: Callable[[], Any]):
    entries = _cache.setdefault(task, {})
    if key not in entries:
        entries[key] = make()
    return entries[key]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


def _call_built(task: UserTask, model) -> Any:
    """Build the model's variables by calling it once on zeros of the task's input."""
    x = np.zeros((1, *task.input_shape), dtype=task.input_dtype)
    return model(x, training=False)


def _normalised_path(variable) -> str:
    """A variable's path without Keras's uniquifying suffixes (``dense_3`` -> ``dense``), so
    two builds of the same function name their variables alike."""
    return "/".join(re.sub(r"_\d+$", "", part) for part in variable.path.split("/"))


def reference_model(task: UserTask, seed: int | None = None):
    """(model, all its weights) from one build under the seed; cached per (task, seed)."""
    import keras

    seed = task.seed if seed is None else seed

    def make():
        keras.utils.set_random_seed(seed)
        model = task.build()
        if not isinstance(model, keras.Model):
            raise TaskError(f"build() returned {type(model).__name__}, not a keras.Model")
        _call_built(task, model)
        weights = [np.array(v.numpy()) for v in model.weights]
        return model, WeightList(weights, [_normalised_path(v) for v in model.weights])

    return _cached(task, ("reference", seed), make)


class WeightList(list):
    """Every weight array of a model, in ``model.weights`` order, with their variables' paths."""

    def __init__(self, arrays: list[np.ndarray], paths: list[str]):
        super().__init__(arrays)
        self.paths = paths


def initial_weights(task: UserTask, seed: int | None = None) -> WeightList:
    return reference_model(task, seed)[1]


def new_model(task: UserTask, weights: WeightList):
    """A new instance from the task's build function, holding ``weights`` in every variable
    (trainable and not); the two builds must have the same variables, else a TaskError."""
    model = task.build()
    _call_built(task, model)
    variables = model.weights
    paths = getattr(weights, "paths", None) or [_normalised_path(v) for v in variables]
    if len(variables) != len(weights):
        raise TaskError(
            f"task {task.name!r}: build() made {len(variables)} weights this time and "
            f"{len(weights)} the first time: it must build the same model every call"
        )
    for v, w, path in zip(variables, weights, paths):
        if _normalised_path(v) != path or tuple(v.shape) != tuple(w.shape):
            raise TaskError(
                f"task {task.name!r}: weight {v.path} {tuple(v.shape)} does not match the "
                f"reference build's {path} {tuple(w.shape)}: build() must build the same "
                "model every call"
            )
        v.assign(w)
    return model


def keras_loss(task: UserTask):
    """The task's loss as one ``keras.losses.Loss`` object (mean over the batch), used both by
    ``compile`` and by the custom loop, so both minimise the very same function."""
    return _cached(task, "loss", lambda: _resolve_loss(task))


def _loss_function_class():
    import keras

    class LossFunction(keras.losses.Loss):
        """A callable ``(y_true, y_pred) -> loss per example (or a scalar)`` as a Keras loss:
        averaged over the batch, as ``compile`` averages a loss function."""

        def __init__(self, fn):
            super().__init__(name=getattr(fn, "__name__", "user_loss"))
            self.fn = fn

        def call(self, y_true, y_pred):
            return self.fn(y_true, y_pred)

    return LossFunction


def _LossFunction(fn):  # noqa: N802 (a class, made when Keras is imported)
    return _loss_function_class()(fn)


def _resolve_loss(task: UserTask):
    import keras

    loss = task.loss
    if isinstance(loss, keras.losses.Loss):
        return loss
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
        if isinstance(loss, keras.losses.Loss):
            return loss
    if not callable(loss):
        raise TaskError(f"loss {task.loss!r} is neither a Keras loss nor callable")
    return _LossFunction(loss)


def train_flops_per_sample(task: UserTask) -> int:
    """Training FLOPs per example, counted by TensorFlow's profiler on the forward graph (x3,
    the suite's convention); 0 where it cannot count (ops inside loops, e.g. RNN cells, are
    counted once per loop, not per step)."""
    import tensorflow as tf

    model = reference_model(task)[0]
    spec = tf.TensorSpec((1, *task.input_shape), task.input_dtype)
    try:
        graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        flops = tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops
    except Exception:
        return 0
    return 3 * int(flops)


@contextlib.contextmanager
def skip_unsupported(impl: str, task):
    """Around a benchmark of a user task: where the implementation cannot run the user's
    model -- XLA has no kernel for one of its ops (``tf.py_function``, some string or
    resource ops) -- the benchmark is skipped with the reason, not failed. Any other error,
    and any error on a built-in task, propagates."""
    import pytest

    try:
        yield
    except Exception as e:
        reason = unsupported_reason(impl, task, e)
        if reason is None:
            raise
        pytest.skip(reason)


def unsupported_reason(impl: str, task, error: BaseException) -> str | None:
    if getattr(task, "build", None) is None:
        return None
    text = str(error)
    found = re.search(
        r"Detected unsupported operations when trying to compile graph \S+ on (\S+): (\w+)", text
    )
    if isinstance(error, NotImplementedError):
        return f"{impl} cannot run {task.name}: {_first_line(error)}"
    if "xla" in impl and found:
        device, op = found.groups()
        return f"{impl} cannot run {task.name}: XLA ({device}) has no kernel for {op}"
    return None


# --- data -----------------------------------------------------------------------------------


def _output_shape(task: UserTask) -> tuple[int, ...]:
    model = reference_model(task)[0]
    return tuple(int(d) for d in _call_built(task, model).shape[1:])


def synthetic(task: UserTask) -> Dataset:
    """Inputs of the task's shape and dtype, and labels a fixed random linear function of
    them (of the token counts, for integer inputs), so that a model can learn them."""
    rng = np.random.default_rng(task.seed)
    n = task.n_train + task.n_test
    dtype = np.dtype(task.input_dtype)
    if np.issubdtype(dtype, np.integer):
        low, high = (int(v) for v in task.input_range)
        x = rng.integers(low, high, size=(n, *task.input_shape)).astype(dtype)
        flat = x.reshape(n, -1) - low
        features = np.stack([np.bincount(row, minlength=high - low) for row in flat])
    else:
        x = rng.standard_normal((n, *task.input_shape)).astype(dtype)
        if task.input_range is not None:
            low, high = task.input_range
            x = (low + (high - low) * rng.random(x.shape)).astype(dtype)
        features = x.reshape(n, -1)
    features = features.astype(np.float64)
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    out = _output_shape(task)
    if task.num_classes:
        label_shape = out[:-1]  # one label per example, or per position of a sequence output
        k = task.num_classes
        scores = features @ rng.standard_normal((features.shape[1], math.prod(label_shape) * k))
        y = scores.reshape(n, *label_shape, k).argmax(-1).astype(np.int32)
    else:
        w = rng.standard_normal((features.shape[1], math.prod(out))) / math.sqrt(features.shape[1])
        y = np.tanh(features @ w).reshape(n, *out).astype(np.float32)
    m = task.n_train
    return _split(task, "synthetic", f"seed {task.seed}", (x[:m], y[:m], x[m:], y[m:]))


def _split(task: UserTask, name: str, source: str, arrays) -> Dataset:
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
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) == 2:
        x, y = arrays
        if len(x) != len(y):
            raise TaskError(f"data {name}: {len(x)} inputs but {len(y)} labels")
        cut = len(x) - max(1, int(len(x) * TEST_FRACTION))
        arrays = [x[:cut], y[:cut], x[cut:], y[cut:]]
    x_train, y_train, x_test, y_test = arrays
    y_dtype = np.int32 if task.num_classes else np.float32
    return Dataset(
        name,
        source,
        x_train.astype(task.input_dtype, copy=False),
        y_train.astype(y_dtype, copy=False),
        x_test.astype(task.input_dtype, copy=False),
        y_test.astype(y_dtype, copy=False),
    )


def load_data(task: UserTask) -> Dataset:
    """The task's data (cached per task), checked against its shapes and label range."""
    return _cached(task, "data", lambda: _load_data(task))


def _load_data(task: UserTask) -> Dataset:
    data = task.data
    if data is None:
        ds = synthetic(task)
    else:
        name, source = "arrays", "arrays"
        if callable(data):
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
        ds = _split(task, name, source, data)
    check_data(task, ds)
    return ds


def check_data(task: UserTask, ds: Dataset) -> None:
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if x.shape[1:] != tuple(task.input_shape):
            raise TaskError(
                f"data: x_{split} has shape {x.shape}, expected "
                f"(n, {', '.join(map(str, task.input_shape))}) (input_shape)"
            )
        if len(x) != len(y):
            raise TaskError(f"data: {len(x)} x_{split} inputs but {len(y)} labels")
        if not np.isfinite(np.asarray(x, np.float64)).all():
            raise TaskError(f"data: x_{split} holds NaN or infinite values")
        if task.num_classes and len(y):
            low, high = int(y.min()), int(y.max())
            if low < 0 or high >= task.num_classes:
                bad = low if low < 0 else high
                raise TaskError(
                    f"data: y_{split} has label {bad}, outside 0..{task.num_classes - 1} "
                    f"(num_classes={task.num_classes})"
                )
    if len(ds.x_train) < task.batch_size:
        raise TaskError(
            f"data: {len(ds.x_train)} training examples, fewer than one batch ({task.batch_size})"
        )


# --- checking a task ------------------------------------------------------------------------


def check(task: UserTask) -> None:
    """Everything a benchmark will need, tried once: build, data, one forward pass and the
    loss on a batch. Raises TaskError (without the file and task name: ``load`` adds them)."""
    if not isinstance(task.input_shape, tuple) or not all(
        isinstance(d, int) and d > 0 for d in task.input_shape
    ):
        raise TaskError(f"input_shape must be a tuple of positive ints, got {task.input_shape!r}")
    if task.optimizer not in ("adam", "sgd"):
        raise TaskError(f"optimizer must be 'adam' or 'sgd', got {task.optimizer!r}")
    if not task.learning_rate > 0 or task.batch_size < 1 or task.epochs < 1:
        raise TaskError("learning_rate must be > 0, batch_size and epochs >= 1")
    if task.num_classes is not None and task.num_classes < 2:
        raise TaskError(f"num_classes must be at least 2 (or None), got {task.num_classes}")
    if task.accuracy_target is not None and not task.num_classes:
        raise TaskError("accuracy_target needs class labels (num_classes)")
    integer = np.issubdtype(np.dtype(task.input_dtype), np.integer)
    if integer and task.data is None and task.input_range is None:
        raise TaskError("integer inputs need input_range=(low, high) for synthetic data")
    try:
        model = reference_model(task)[0]
    except TaskError:
        raise
    except Exception as e:
        raise TaskError(
            f"build() or its first call on input {(None, *task.input_shape)} "
            f"{task.input_dtype} failed: {_first_line(e)}"
        ) from None
    ds = load_data(task)
    n = min(len(ds.x_train), task.batch_size)
    x, y = ds.x_train[:n], ds.y_train[:n]
    out = model(x, training=False)
    out_shape = tuple(out.shape)
    if task.num_classes:
        if out_shape[-1] != task.num_classes or out_shape[:-1] != y.shape:
            raise TaskError(
                f"model output {out_shape} does not fit class labels {y.shape} with "
                f"num_classes={task.num_classes}: expected {(*y.shape, task.num_classes)}"
            )
    elif out_shape != y.shape:
        raise TaskError(
            f"model output {out_shape} does not fit labels {y.shape} (regression: the same "
            "shape, or the loss would broadcast them)"
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
        if isinstance(value, UserTask) and all(value is not t for t in found):
            found.append(value)
    if not found:
        raise TaskError(f"{path}: defines no tasks (no bench.tasks.user.UserTask at module level)")
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
