"""A 1-D convnet of Conv1D -> BatchNormalization -> ReLU -> max-pooling blocks, the convolutions
with their bias (Keras's default), on the first 2,048 Fashion-MNIST images read as sequences of
28 rows of 28 pixels.

Its op mix differs from the built-ins': 1-D convolutions, batch normalisation and 1-D max
pooling. A bias just before BatchNormalization has no gradient (the normalisation
subtracts it again), so Adam turns rounding noise into learning-rate-sized steps on it and
every implementation's bias wanders its own way while the model computes the same function:
the equivalence check judges the model's outputs and its variables as a whole, not each bias
by its own size (tests/test_equivalence.py; docs/tasks.md).

    pytest --benchmark-only --tasks examples/conv_bn.py
"""

import keras

from bench.tasks import Task
from bench.tasks.data import load_classification, standardize


def conv_bn(x, filters):
    x = keras.layers.Conv1D(filters, 3, padding="same")(x)  # use_bias=True, Keras's default
    # momentum 0.9 (Keras's default is 0.99): the moving statistics catch up within the few
    # hundred steps of a quick run, so test accuracy is read off settled statistics.
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    return keras.layers.MaxPooling1D(2)(x)


def build():
    inputs = keras.Input((28, 28))  # 28 rows (the sequence) of 28 pixels (the channels)
    x = conv_bn(conv_bn(inputs, 32), 64)  # 14, then 7 steps
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="conv_bn")


def fashion_mnist_rows():
    """The first 2,048 training and 2,048 test images, standardised as the built-in tasks',
    each a sequence of its 28 rows."""
    ds = standardize(load_classification(quiet=True).subset(2048, 2048), (28, 28))
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


CONV_BN = Task(
    name="conv_bn",
    build=build,
    input_shape=(28, 28),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    num_classes=10,
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=64,
    data=fashion_mnist_rows,
    epochs=3,
    accuracy_target=0.76,
)
