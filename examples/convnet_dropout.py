"""A small convnet with Dropout, after the Keras "simple MNIST convnet" example, on the first
2,048 Fashion-MNIST images.

Its op mix differs from the built-ins': two 3x3 convolutions with max pooling, and a Dropout
layer, which draws a new random mask every training step. Every implementation's model starts
from the same random-number state (``bench.tasks.model.new_model``), so those that draw the
same masks from the same state are compared with dropout on, and the others with it off
(tests/test_equivalence.py; docs/tasks.md).

    pytest --benchmark-only --tasks examples/convnet_dropout.py
"""

import keras

from bench.tasks import Task
from bench.tasks.data import load_classification, standardize


def build():
    # The Keras example's layers at half its widths (16 and 32 filters, not 32 and 64), so the
    # equivalence checks stay quick; logits out, as the other tasks.
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10),
        ],
        name="convnet_dropout",
    )


def fashion_mnist_subset():
    """The first 2,048 training and 2,048 test images, standardised as the built-in tasks'."""
    ds = standardize(load_classification(quiet=True).subset(2048, 2048), (28, 28, 1))
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


CONVNET_DROPOUT = Task(
    name="convnet_dropout",
    build=build,
    input_shape=(28, 28, 1),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    num_classes=10,
    optimizer="adam",
    learning_rate=2e-3,
    batch_size=64,
    data=fashion_mnist_subset,
    epochs=3,
    accuracy_target=0.72,
)
