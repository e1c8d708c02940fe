"""The suite's tasks, as data.

Each task is a frozen dataclass: the model spec, input shape, optimizer settings, batch
size, seed and accuracy target. Implementations build their models from it and never
repeat any of it. Seeds (see ../shared/seeds/README.md):

- ``linreg``: "Keras custom models" tutorial, part 1 (``y = w*x + b``, one Dense(1), MSE).
- ``mlp``: "custom Dense layer and training process" tutorial (784-200-300-100-10 MLP on
  Fashion-MNIST, Adam 3e-4, batch 256, StandardScaler inputs).
- ``cnn``: "Keras custom models" tutorial, part 3 (three strided convolutions + Dense(10)).

Initial weights are drawn here, once per (task, seed), with NumPy, so every implementation
starts from the very same arrays whatever framework layer holds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dense:
    units: int
    activation: str | None = None  # "relu" or None (logits / linear output)


@dataclass(frozen=True)
class Conv2D:
    filters: int
    kernel: int
    stride: int
    activation: str | None = "relu"
    padding: str = "same"


@dataclass(frozen=True)
class Flatten:
    pass


Layer = Dense | Conv2D | Flatten


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "regression" or "classification"
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]
    optimizer: str  # "adam" or "sgd"
    learning_rate: float
    batch_size: int
    epochs: int
    seed: int = 0
    dataset: str = "synthetic"
    num_classes: int = 0
    # Classification: minimum test accuracy on full Fashion-MNIST (an external anchor).
    accuracy_target: float | None = None
    # Time-to-accuracy target (test accuracy), lower than the final anchor.
    tta_target: float | None = None
    # Regression: the true parameters and how closely training must recover them.
    true_w: float = 0.0
    true_b: float = 0.0
    param_tolerance: float = 0.0

    @property
    def loss(self) -> str:
        return "mse" if self.kind == "regression" else "sparse_ce_logits"


LINREG = Task(
    name="linreg",
    kind="regression",
    input_shape=(1,),
    layers=(Dense(1),),
    optimizer="sgd",
    learning_rate=0.1,
    batch_size=32,
    epochs=5,
    true_w=3.0,
    true_b=2.0,
    param_tolerance=0.05,
)

MLP = Task(
    name="mlp",
    kind="classification",
    input_shape=(28, 28),
    layers=(Flatten(), Dense(200, "relu"), Dense(300, "relu"), Dense(100, "relu"), Dense(10)),
    optimizer="adam",
    learning_rate=3e-4,
    batch_size=256,
    epochs=10,
    dataset="fashion-mnist",
    num_classes=10,
    accuracy_target=0.87,
    tta_target=0.85,
)

CNN = Task(
    name="cnn",
    kind="classification",
    input_shape=(28, 28, 1),
    layers=(
        Conv2D(12, 6, 1),
        Conv2D(24, 5, 2),
        Conv2D(48, 4, 2),
        Flatten(),
        Dense(10),
    ),
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=256,
    epochs=5,
    dataset="fashion-mnist",
    num_classes=10,
    accuracy_target=0.89,
    tta_target=0.87,
)

TASKS: dict[str, Task] = {t.name: t for t in (LINREG, MLP, CNN)}


def weight_shapes(task: Task) -> list[tuple[int, ...]]:
    """Shapes of every trainable array, in layer order: kernel then bias per layer."""
    shapes: list[tuple[int, ...]] = []
    shape = task.input_shape
    for layer in task.layers:
        if isinstance(layer, Flatten):
            shape = (math.prod(shape),)
        elif isinstance(layer, Dense):
            shapes += [(shape[-1], layer.units), (layer.units,)]
            shape = (layer.units,)
        elif isinstance(layer, Conv2D):
            h, w, c = shape
            shapes += [(layer.kernel, layer.kernel, c, layer.filters), (layer.filters,)]
            shape = (math.ceil(h / layer.stride), math.ceil(w / layer.stride), layer.filters)
    return shapes


def numpy_weights(task: Task, seed: int | None = None) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases, drawn with NumPy from one seed."""
    rng = np.random.default_rng(task.seed if seed is None else seed)
    out = []
    for shape in weight_shapes(task):
        if len(shape) == 1:
            out.append(np.zeros(shape, np.float32))
            continue
        receptive = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        out.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
    return out


def analytic_flops(task: Task) -> int:
    """Analytic FLOPs of one training sample: forward multiply-adds x2, backward ~2x forward.

    Counts the matmul/convolution work only (element-wise ops and the optimizer are
    negligible next to it for these models); the usual 3x-forward convention.
    """
    forward = 0
    shape = task.input_shape
    for layer in task.layers:
        if isinstance(layer, Flatten):
            shape = (math.prod(shape),)
        elif isinstance(layer, Dense):
            forward += 2 * shape[-1] * layer.units
            shape = (layer.units,)
        elif isinstance(layer, Conv2D):
            h, w, c = shape
            oh, ow = math.ceil(h / layer.stride), math.ceil(w / layer.stride)
            forward += 2 * oh * ow * layer.filters * layer.kernel * layer.kernel * c
            shape = (oh, ow, layer.filters)
    return 3 * forward
