"""A small residual CNN with batch normalisation, on the first 4,096 Fashion-MNIST images.

Its op mix differs from the built-in CNN's: 3x3 convolutions, BatchNormalization (whose
moving mean and variance are non-trainable state that every implementation must start from
and update alike), an identity shortcut (an add), global average pooling.

    pytest --benchmark-only --tasks examples/resnet_bn.py
"""

import keras

from bench.user_tasks import UserTask


def conv_bn(x, filters, stride=1):
    x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    return keras.layers.BatchNormalization()(x)


def build():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.ReLU()(conv_bn(inputs, 16, stride=2))  # 14x14
    shortcut = x
    x = keras.layers.ReLU()(conv_bn(x, 16))
    x = conv_bn(x, 16)
    x = keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))  # the residual block
    x = keras.layers.ReLU()(conv_bn(x, 32, stride=2))  # 7x7
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="resnet_bn")


def fashion_mnist_subset():
    """The first 4,096 training and 1,024 test images, standardised as the built-in tasks'."""
    from bench.data import load_classification, standardize

    ds = standardize(load_classification(quiet=True).subset(4096, 1024), (28, 28, 1))
    return ds.x_train, ds.y_train, ds.x_test, ds.y_test


RESNET_BN = UserTask(
    name="resnet_bn",
    build=build,
    input_shape=(28, 28, 1),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    num_classes=10,
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=64,
    data=fashion_mnist_subset,
    epochs=8,
    accuracy_target=0.75,
)
