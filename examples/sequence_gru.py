"""A sequence model: token embedding, a GRU, and a classifier, on synthetic tokens.

Its op mix differs from the built-ins': an embedding lookup (a gather, and a sparse gradient),
a recurrent loop over 24 time steps (a while loop in the graph), sigmoid/tanh gates. The data
is the suite's default synthetic data for integer inputs: token ids drawn uniformly from the
vocabulary, labels a fixed random linear function of each sequence's token counts.

    pytest --benchmark-only --tasks examples/sequence_gru.py
"""

import keras

from bench.tasks import Task

VOCAB, LENGTH, CLASSES = 50, 24, 4


def build():
    return keras.Sequential(
        [
            keras.Input((LENGTH,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 16),
            keras.layers.GRU(32),
            keras.layers.Dense(CLASSES),
        ],
        name="sequence_gru",
    )


SEQUENCE_GRU = Task(
    name="sequence_gru",
    build=build,
    input_shape=(LENGTH,),
    input_dtype="int32",
    input_range=(0, VOCAB),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    num_classes=CLASSES,
    optimizer="adam",
    learning_rate=3e-3,
    batch_size=64,
    epochs=6,
    accuracy_target=0.75,
)
