"""The one kind of task: its fields, its inputs and labels, and when an implementation cannot
run it. What the suite builds from a task (the reference build and its initial weights, each
implementation's own instance of the model, the loss, the FLOPs) is ``bench/tasks/model.py``.

The suite's tasks are ``Task`` objects (``bench/tasks/builtin.py``); a user's task file defines
its own (``bench/tasks/user.py`` loads and checks them). ``eq=False``: a task holds functions
and maybe arrays; identity is equality.

Several inputs: ``input_shape`` a dict of shapes (keyed by the model's input names) or a list
of shapes, ``input_dtype`` and ``input_range`` one for all or one per input (``input_specs``);
the model is then called on a dict or a tuple of arrays (``bench/tasks/data.py``).

Equivalence tolerance: ``DEFAULT_TOLERANCE`` unless the task sets ``tolerance=``
(tests/test_equivalence.py; docs/tasks.md).

Importing this module imports no TensorFlow and no Keras.
"""

from __future__ import annotations

import contextlib
import numbers
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.tasks.data import map_inputs


class TaskError(ValueError):
    """A task file or a task in it is unusable: one line naming the file, task and problem."""


@dataclass(frozen=True)
class Tolerance:
    """How closely two implementations must agree after the same training from the same
    weights on the same batches (tests/test_equivalence.py): step by step, and in what the
    training produced. Each is relative."""

    early_rtol: float  # each of the first 5 steps' losses
    loss_rtol: float  # each step's loss
    # The variables, all together (trainable ones, and apart from them the non-trainable ones:
    # BatchNormalization's moving statistics): the norm of the two runs' difference over the
    # norm of how far training moved them. One variable's own size is no scale: a bias just
    # before BatchNormalization has no gradient, and Adam moves it by noise-driven steps of
    # the learning rate's size, more than its own size, while the model's function stays put.
    weight_rtol: float
    why: str = ""
    # The trained models' outputs (inference mode) on held-out examples: the norm of the
    # difference over the norm of the outputs.
    output_rtol: float = field(default=2e-3, kw_only=True)


# A user model gets this unless its task sets ``tolerance=``. Measured (tests/test_equivalence.py:
# 12 Adam steps at the task's batch size, 4 batch orders; 2-core AMD EPYC VM, TF 2.21, Keras
# 3.15.1; first 5 losses / all losses / held-out outputs / variables, as above) on the examples
# whose training is not chaotic -- Conv1D with bias -> BatchNormalization (conv_bn), a convnet
# with Dropout (convnet_dropout), a GRU (sequence_gru) -- any two implementations compared
# differ by at most 2.3e-6 / 6.9e-5 / 4.8e-4 / 3.9e-3, while a planted bug moves them by at
# least 1.0e-3 / 3.4e-3 / 0.32 / 0.42 (learning rate x1.5), 3.0e-4 / 5.4e-4 / 1.5e-2 / 2.2e-2
# (biases never updated), 2.2e-2 / 3.0e-2 / 9.5e-2 / 0.43 (one dropout mask for every step).
# Every bug is caught on at least two of the four. A chaotic model (the residual CNN with batch
# normalisation: XLA and not differ by 1.6e-3 / 6.3e-3 / 1.2e-2 / 2.7e-2) states its own, as
# that example does.
DEFAULT_TOLERANCE = Tolerance(
    1e-4,
    2e-3,
    1e-2,
    "user model, default tolerance: float32 rounding, reordered by fusion/XLA",
    output_rtol=2e-3,
)


@dataclass(frozen=True, eq=False)
class Task:
    """A task: what is trained, on what data, and how it is checked. The suite's own tasks
    (``bench/tasks/builtin.py``) and a user's task file build the same dataclass, and every
    implementation, benchmark and check reads only these fields.

    The fields after ``source`` are optional knowledge a task may add; the built-in tasks set
    them, and a user's task may too."""

    name: str
    build: Callable[[], Any]  # () -> keras.Model: functional, Sequential or subclassed
    # One example's shape, without the batch dimension; several inputs: a dict of shapes (keyed
    # by the model's input names) or a list of shapes (input_specs).
    input_shape: Any
    loss: Any  # a Keras loss (name or object) or a callable (y_true, y_pred) -> loss
    num_classes: int | None = None  # class-index labels in [0, num_classes); None: regression
    # What the labels are: "classes" (class indices, the default with num_classes), "binary"
    # (a 0/1 label per output unit: one unit, binary classification; several, multi-label;
    # accuracy: each label at probability 0.5) or "regression" (the default without).
    head: str | None = None
    # "binary": whether the model outputs logits (right at 0) or probabilities (at 0.5); None:
    # read from the loss (its from_logits; "binary_crossentropy": probabilities).
    from_logits: bool | None = None
    input_dtype: Any = "float32"  # several inputs: one for all, or a dict / list of them
    # synthetic integer inputs: [low, high); several inputs: one for all, or a dict / list
    input_range: Any = None
    optimizer: str = "adam"  # "adam" or "sgd"
    learning_rate: float = 1e-3
    batch_size: int = 32
    # None (synthetic), arrays, a .npz path, a callable, a tf.data.Dataset or PyDataset, or a
    # ``bench.tasks.data.DataSource`` (``ImageData``: Fashion-MNIST): bench/tasks/task_data.py
    data: Any = None
    n_train: int = 2048  # synthetic data, and how much of a tf.data / PyDataset stream is taken
    n_test: int = 512
    epochs: int = 2  # convergence check (quick and full profiles; smoke runs 1)
    accuracy_target: float | None = None  # convergence: final test accuracy must reach it
    tolerance: Tolerance | None = None  # equivalence; None: DEFAULT_TOLERANCE
    seed: int = 0
    source: str = ""  # the task file, filled in when loaded
    # The custom loops' model: () -> keras.Model of hand-written layers with the same weights,
    # in the same order and shapes, as build()'s. None: the custom loops train build()'s model.
    build_custom: Callable[[], Any] | None = None
    # seed -> every weight array, in build()'s ``model.weights`` order (NumPy-drawn, so every
    # backend starts from the same arrays). None: the weights of one build() under the seed.
    init_weights: Callable[[int], list] | None = None
    flops_per_sample: int | None = None  # training FLOPs per example; None: profiled
    tta_target: float | None = None  # time-to-accuracy target; None: accuracy_target
    # The accuracy target is an external anchor that holds on this dataset only, trained in
    # full (``Dataset.name``, e.g. "fashion-mnist"). None: on the task's own data.
    anchor_dataset: str | None = None
    # Regression with a known truth: training must recover these values (the trainable
    # weights, flattened and concatenated, in order) within ``param_tolerance``.
    true_params: tuple[float, ...] | None = None
    param_tolerance: float = 0.0

    def __post_init__(self):
        if self.tta_target is None:
            object.__setattr__(self, "tta_target", self.accuracy_target)
        if self.head is None:
            object.__setattr__(self, "head", "classes" if self.num_classes else "regression")

    @property
    def kind(self) -> str:
        """ "classification" (accuracy is reported) or "regression"."""
        return "regression" if self.head == "regression" else "classification"

    @property
    def equivalence_tolerance(self) -> Tolerance:
        return self.tolerance or DEFAULT_TOLERANCE


# Per task (weakly: a task made by dataclasses.replace in a test gets its own entries): the
# reference builds by seed, the resolved loss, the loaded data.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached(task: Task, key, make: Callable[[], Any]):
    """``make()``, once per (task, key): what is built or loaded for a task is kept with it."""
    entries = _cache.setdefault(task, {})
    if key not in entries:
        entries[key] = make()
    return entries[key]


def first_line(e: BaseException) -> str:
    """An error as a one-line message: its type and the first line of its text."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip().rstrip(":")


# --- the inputs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InputSpec:
    """One input of a task: one example's shape, its dtype, its synthetic range (or None)."""

    shape: tuple[int, ...]
    dtype: str
    range: tuple[float, float] | None = None

    def describe(self) -> str:
        return f"{(None, *self.shape)} {self.dtype}"


def multi_input(task: Task) -> bool:
    """Whether the task's model takes several inputs: ``input_shape`` is a dict of shapes or a
    list (tuple) of shapes, not one shape."""
    shape = task.input_shape
    if isinstance(shape, dict):
        return True
    return (
        isinstance(shape, tuple | list)
        and len(shape) > 0
        and all(isinstance(d, tuple | list) for d in shape)
    )


def _is_range(value) -> bool:
    return value is None or (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, numbers.Real) for v in value)
    )


def _per_input(task: Task, field: str, value, one, default):
    """``value`` (``input_dtype`` or ``input_range``) for each input, in ``input_shape``'s
    structure: one value for all (``one(value)``), or a dict (keys: some of input_shape's;
    a missing one gets ``default``) or a list of the same length."""
    shape = task.input_shape
    if one(value):
        return map_inputs(lambda _: value, shape)
    if isinstance(shape, dict) and isinstance(value, dict):
        unknown = [k for k in value if k not in shape]
        if unknown:
            raise TaskError(f"{field} names inputs {unknown} that input_shape does not have")
        return {k: value.get(k, default) for k in shape}
    if not isinstance(shape, dict) and isinstance(value, tuple | list):
        if len(value) != len(shape):
            raise TaskError(f"{field} has {len(value)} entries for {len(shape)} inputs")
        return tuple(value)
    kind = "a dict" if isinstance(shape, dict) else "a list"
    raise TaskError(f"{field} must be one for all inputs or {kind} like input_shape, got {value!r}")


def input_specs(task: Task):
    """The task's input(s): one ``InputSpec``, or a dict / tuple of them (``multi_input``)."""
    if not multi_input(task):
        return InputSpec(tuple(task.input_shape), str(task.input_dtype), task.input_range)
    dtypes = _per_input(
        task, "input_dtype", task.input_dtype, lambda v: isinstance(v, str), "float32"
    )
    ranges = _per_input(task, "input_range", task.input_range, _is_range, None)
    return map_inputs(
        lambda shape, dtype, low_high: InputSpec(tuple(shape), str(dtype), low_high),
        task.input_shape,
        dtypes,
        ranges,
    )


def describe_inputs(task: Task) -> str:
    """The input(s) a model is called on, for messages: ``(None, 8) float32``, or per input."""
    specs = input_specs(task)
    if isinstance(specs, InputSpec):
        return f"input {specs.describe()}"
    if isinstance(specs, dict):
        return "inputs {" + ", ".join(f"{k!r}: {v.describe()}" for k, v in specs.items()) + "}"
    return "inputs [" + ", ".join(v.describe() for v in specs) + "]"


# --- the labels -----------------------------------------------------------------------------


HEADS = ("classes", "binary", "regression")


def binary_threshold(task: Task) -> float:
    """Where a "binary" head's output says 1: 0 for logits, 0.5 for probabilities
    (``from_logits``, else the loss's own ``from_logits``)."""
    logits = task.from_logits
    if logits is None:
        loss = task.loss
        if isinstance(loss, str):
            logits = False if loss in ("binary_crossentropy", "bce") else None
        elif hasattr(loss, "get_config"):
            logits = loss.get_config().get("from_logits")
    if logits is None:
        raise TaskError(
            f"head='binary': say whether the model outputs logits or probabilities "
            f"(from_logits=True or False); the loss {task.loss!r} does not say"
        )
    return 0.0 if logits else 0.5


def correct_labels(task: Task, out: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """(labels predicted right, labels) for one batch of a classification task's outputs:
    the argmax against class indices; or, for a "binary" head, each output against its 0/1
    label at ``binary_threshold``. One label per example, per position (a sequence output)
    or per output unit (multi-label)."""
    out, y = np.asarray(out), np.asarray(y)
    if task.head == "binary":
        return int(np.sum((out > binary_threshold(task)) == (y > 0.5))), int(y.size)
    return int(np.sum(np.argmax(out, axis=-1) == y)), int(y.size)


# --- what an implementation cannot run ------------------------------------------------------


@contextlib.contextmanager
def skip_unsupported(impl: str, task):
    """Around a benchmark: where the implementation cannot run the task's model -- XLA has no
    kernel for one of its ops (``tf.py_function``, some string or resource ops), or the
    implementation refuses it (``NotImplementedError``) -- the benchmark is skipped with the
    reason, not failed. Any other error propagates."""
    import pytest  # lazy: only a benchmark calls this; the workers import this module

    try:
        yield
    except Exception as e:
        reason = unsupported_reason(impl, task, e)
        if reason is None:
            raise
        pytest.skip(reason)


def unsupported_reason(impl: str, task, error: BaseException) -> str | None:
    text = str(error)
    found = re.search(
        r"Detected unsupported operations when trying to compile graph \S+ on (\S+): (\w+)", text
    )
    if isinstance(error, NotImplementedError):
        return f"{impl} cannot run {task.name}: {first_line(error)}"
    if "xla" in impl and found:
        device, op = found.groups()
        return f"{impl} cannot run {task.name}: XLA ({device}) has no kernel for {op}"
    return None
