"""The suite's own tasks, defined through the public task API (``bench.tasks.Task``) as any
task file defines a user's, plus the layer lists they are built from.

Seeds (see ../shared/seeds/README.md):

- ``linreg``: "Keras custom models" tutorial, part 1 (``y = w*x + b``, one Dense(1), MSE).
- ``mlp``: "custom Dense layer and training process" tutorial (784-200-300-100-10 MLP on
  Fashion-MNIST, Adam 3e-4, batch 256, StandardScaler inputs).
- ``cnn``: "Keras custom models" tutorial, part 3 (three strided convolutions + Dense(10)).

Each is an ``Architecture`` (a layer list, as data) giving the ``Task`` what the tutorials
have and a user's model may lack: two builds -- built-in Keras layers (``build``, for
``compile``/``fit``) and the seed's hand-written layers (``build_custom``, for the custom
loops: ``bench/tasks/layers_tf.py`` on TensorFlow, ``layers_ops.py`` on JAX) -- NumPy-drawn
initial weights (Glorot-uniform kernels, zero biases: the very same arrays whatever framework
holds them), and an analytic FLOP count. A user's task file may use ``Architecture`` too.

Importing this module imports neither Keras nor TensorFlow; building a model does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.tasks.data import ImageData, LinearData
from bench.tasks.task import Task


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
class Architecture:
    """A model as a layer list: its two builds, its initial weights and its FLOPs."""

    name: str
    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    def build(self):
        """Built-in Keras layers (each takes the global dtype policy)."""
        import keras  # lazy: heavy; importing bench.tasks imports no Keras

        layers: list = [keras.Input(shape=self.input_shape)]
        for spec in self.layers:
            if isinstance(spec, Flatten):
                layers.append(keras.layers.Flatten())
            elif isinstance(spec, Dense):
                layers.append(keras.layers.Dense(spec.units, activation=spec.activation))
            elif isinstance(spec, Conv2D):
                layers.append(
                    keras.layers.Conv2D(
                        spec.filters,
                        spec.kernel,
                        strides=spec.stride,
                        padding=spec.padding,
                        activation=spec.activation,
                    )
                )
        return keras.Sequential(layers, name=f"{self.name}_builtin")

    def build_custom(self, hand=None):
        """The hand-written layers, as a subclassed model: the TensorFlow ones on TensorFlow,
        their ``keras.ops`` twins on any other backend (``hand``: that module, to choose)."""
        import keras  # lazy: heavy; importing bench.tasks imports no Keras

        from bench.tasks.layers_ops import SpecModel  # lazy: imports Keras

        if hand is None and keras.backend.backend() == "tensorflow":
            from bench.tasks import layers_tf as hand  # lazy: imports TensorFlow
        elif hand is None:
            from bench.tasks import layers_ops as hand  # lazy: imports Keras
        blocks = []
        for spec in self.layers:
            if isinstance(spec, Flatten):
                blocks.append(hand.FlattenLayer())
            elif isinstance(spec, Dense):
                blocks.append(hand.DenseLayer(spec.units, spec.activation))
            elif isinstance(spec, Conv2D):
                blocks.append(
                    hand.Conv2DLayer(
                        spec.filters, spec.kernel, spec.stride, spec.activation, spec.padding
                    )
                )
        return SpecModel(blocks, name=f"{self.name}_custom")

    def weight_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of every trainable array, in layer order: kernel then bias per layer."""
        shapes: list[tuple[int, ...]] = []
        shape = self.input_shape
        for layer in self.layers:
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

    def glorot_weights(self, seed: int) -> list[np.ndarray]:
        """Glorot-uniform kernels and zero biases, drawn with NumPy from one seed."""
        rng = np.random.default_rng(seed)
        out = []
        for shape in self.weight_shapes():
            if len(shape) == 1:
                out.append(np.zeros(shape, np.float32))
                continue
            receptive = math.prod(shape[:-2])
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            out.append(rng.uniform(-limit, limit, size=shape).astype(np.float32))
        return out

    def train_flops(self) -> int:
        """Analytic FLOPs of one training sample: forward multiply-adds x2, backward ~2x
        forward. Counts the matmul/convolution work only (element-wise ops and the optimizer
        are negligible next to it for these models); the usual 3x-forward convention."""
        forward = 0
        shape = self.input_shape
        for layer in self.layers:
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

    def task(self, **fields) -> Task:
        """A ``Task`` built from this architecture; ``fields``: the rest of the task."""
        return Task(
            name=self.name,
            build=self.build,
            build_custom=self.build_custom,
            init_weights=self.glorot_weights,
            flops_per_sample=self.train_flops(),
            input_shape=self.input_shape,
            **fields,
        )


def logits_crossentropy(y_true, y_pred):
    """Sparse cross-entropy on logits, per example: the seed's ``loss_func`` (its softmax then
    cross-entropy is the same function, less stable); on TensorFlow its very op."""
    import keras  # lazy: heavy; importing bench.tasks imports no Keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # lazy: heavy, and only on the TensorFlow backend

        # Keras's Loss hands compile's labels over as floats; the seed's loop, as int32
        labels = tf.cast(y_true, tf.int32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred)
    return keras.ops.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def squared_error(y_true, y_pred):
    """The squared error, per output: the seed's ``(y_pred - y_train) ** 2`` before its mean;
    on TensorFlow its very ops."""
    import keras  # lazy: heavy; importing bench.tasks imports no Keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # lazy: heavy, and only on the TensorFlow backend

        return tf.square(y_pred - y_true)
    return keras.ops.square(y_pred - y_true)


ARCHITECTURES = {
    "linreg": Architecture("linreg", (1,), (Dense(1),)),
    "mlp": Architecture(
        "mlp",
        (28, 28),
        (Flatten(), Dense(200, "relu"), Dense(300, "relu"), Dense(100, "relu"), Dense(10)),
    ),
    "cnn": Architecture(
        "cnn",
        (28, 28, 1),
        (Conv2D(12, 6, 1), Conv2D(24, 5, 2), Conv2D(48, 4, 2), Flatten(), Dense(10)),
    ),
}

LINREG = ARCHITECTURES["linreg"].task(
    loss=squared_error,
    optimizer="sgd",
    learning_rate=0.1,
    batch_size=32,
    epochs=5,
    data=LinearData(w=3.0, b=2.0),
    true_params=(3.0, 2.0),
    param_tolerance=0.05,
)

MLP = ARCHITECTURES["mlp"].task(
    loss=logits_crossentropy,
    num_classes=10,
    optimizer="adam",
    learning_rate=3e-4,
    batch_size=256,
    epochs=10,
    data=ImageData(),
    accuracy_target=0.87,  # on full Fashion-MNIST: an external anchor
    tta_target=0.85,
    anchor_dataset="fashion-mnist",
)

CNN = ARCHITECTURES["cnn"].task(
    loss=logits_crossentropy,
    num_classes=10,
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=256,
    epochs=5,
    data=ImageData(),
    accuracy_target=0.89,
    tta_target=0.87,
    anchor_dataset="fashion-mnist",
)

TASKS: dict[str, Task] = {t.name: t for t in (LINREG, MLP, CNN)}
