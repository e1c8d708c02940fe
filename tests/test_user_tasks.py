"""User tasks (``bench/tasks/user.py``): task files, their checks and one-line errors, the
data sources (``bench/tasks/task_data.py``), the seeded weights copied into every
implementation's own model (non-trainable state included), the selection, and the built-in
dataset's one-line error.

Small models and data: seconds. What trains for real, compiles XLA or starts a fresh
pytest: tests/test_user_tasks_integration.py."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

import implementations
from bench.tasks import TASKS, Task, initial_weights
from bench.tasks import user as user_tasks
from bench.tasks.model import keras_loss, new_model, reference_model, seed_states
from bench.tasks.task import DEFAULT_TOLERANCE, TaskError
from bench.tasks.task_data import load_data
from implementations.common import epoch_dataset, evaluate

ROOT = Path(__file__).resolve().parent.parent

HEADER = """
import keras
import numpy as np
from bench.tasks import Task

def dense(n_out, n_in=8):
    return lambda: keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(n_out)])

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
"""


def task_file(tmp_path, body: str, name: str = "my_tasks.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


GOOD = "T = Task('tiny', dense(3), input_shape=(8,), loss=CE, num_classes=3, n_train=256)\n"

BAD = {
    "no_tasks": ("X = 1\n", "defines no tasks"),
    "import_error": ("import no_such_module_here\n", "cannot import the task file"),
    "output_does_not_fit_the_loss": (
        "T = Task('bad', dense(5), input_shape=(8,), loss=CE, num_classes=3)\n",
        "task 'bad': model output (32, 5) does not fit class labels (32,) with num_classes=3",
    ),
    "regression_shapes_would_broadcast": (
        "T = Task('bad', dense(1), input_shape=(8,), loss='mse',\n"
        "             data=(np.zeros((64, 8)), np.zeros(64)))\n",
        "task 'bad': model output (32, 1) does not fit labels (32,)",
    ),
    "data_of_the_wrong_shape": (
        "T = Task('bad', dense(3), input_shape=(8,), loss=CE, num_classes=3,\n"
        "             data=(np.zeros((64, 7)), np.zeros(64, int)))\n",
        "task 'bad': data: x_train has shape (52, 7), expected (n, 8) (input_shape)",
    ),
    "labels_out_of_range": (
        "T = Task('bad', dense(3), input_shape=(8,), loss=CE, num_classes=3,\n"
        "             data=(np.zeros((64, 8)), np.arange(64) % 4))\n",
        "task 'bad': data: y_train has label 3, outside 0..2 (num_classes=3)",
    ),
    "loss_that_fails": (
        "def loss(y, out):\n    raise ValueError('shapes do not line up')\n"
        "T = Task('bad', dense(3), input_shape=(8,), loss=loss, num_classes=3)\n",
        "task 'bad': the loss does not fit model output (32, 3) and labels (32,): "
        "ValueError: shapes do not line up",
    ),
    "build_not_a_model": (
        "T = Task('bad', lambda: 42, input_shape=(8,), loss=CE, num_classes=3)\n",
        "task 'bad': build() returned int, not a keras.Model",
    ),
    "input_the_model_refuses": (
        "T = Task('bad', dense(3, n_in=9), input_shape=(8,), loss=CE, num_classes=3)\n",
        "task 'bad': build() or its first call on input (None, 8) float32 failed",
    ),
    "integer_inputs_without_a_range": (
        "T = Task('bad', dense(3), input_shape=(8,), input_dtype='int32', loss=CE,\n"
        "             num_classes=3)\n",
        "task 'bad': integer inputs need input_range",
    ),
    "a_built_in_name": (
        "T = Task('mlp', dense(3), input_shape=(8,), loss=CE, num_classes=3)\n",
        "task 'mlp': the name is already taken",
    ),
    "binary_head_that_does_not_say_logits_or_probabilities": (
        "T = Task('bad', dense(1), input_shape=(8,), head='binary',\n"
        "             loss=lambda y, p: keras.ops.square(y - p))\n",
        "task 'bad': head='binary': say whether the model outputs logits or probabilities",
    ),
    "binary_labels_that_are_not_0_or_1": (
        "T = Task('bad', dense(1), input_shape=(8,), head='binary',\n"
        "             loss='binary_crossentropy',\n"
        "             data=(np.zeros((64, 8)), np.full((64, 1), 2.0)))\n",
        "task 'bad': data: y_train has label 2; a binary head's labels are 0 or 1",
    ),
    "a_name_unfit_for_test_ids": (
        "T = Task('my-task', dense(3), input_shape=(8,), loss=CE, num_classes=3)\n",
        "task 'my-task': a name is a letter, then letters, digits or _",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_task_file_is_one_error_naming_the_file_the_task_and_the_problem(tmp_path, case):
    body, expected = BAD[case]
    path = task_file(tmp_path, body)
    with pytest.raises(TaskError) as err:
        user_tasks.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message  # one line


def test_a_missing_file_is_named():
    with pytest.raises(TaskError, match="nowhere.py: task file not found"):
        user_tasks.load("nowhere.py")


def test_a_good_file_loads_and_is_the_same_kind_of_task_as_the_builtins(tmp_path):
    (task,) = user_tasks.load(task_file(tmp_path, GOOD))
    assert task.name == "tiny" and task.source == str((tmp_path / "my_tasks.py").resolve())
    assert type(task) is Task and all(type(t) is Task for t in TASKS.values())
    assert task.equivalence_tolerance == DEFAULT_TOLERANCE


def test_the_examples_load():
    names = [t.name for f in sorted((ROOT / "examples").glob("*.py")) for t in user_tasks.load(f)]
    assert names == ["conv_bn", "convnet_dropout", "resnet_bn", "sequence_gru"]


# --- data -----------------------------------------------------------------------------------


def test_synthetic_data_has_the_task_shapes_and_learnable_labels(tmp_path):
    (task,) = user_tasks.load(task_file(tmp_path, GOOD))
    ds = load_data(task)
    assert ds.name == "synthetic"
    assert ds.x_train.shape == (256, 8) and ds.x_test.shape == (512, 8)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_train)) == {0, 1, 2}  # every class, nothing outside the range
    # the labels are a linear function of the inputs: a least-squares linear classifier on
    # the training split predicts the test split far above chance (1/3)
    onehot = np.eye(3)[ds.y_train]
    w, *_ = np.linalg.lstsq(np.c_[ds.x_train, np.ones(256)], onehot, rcond=None)
    accuracy = np.mean((np.c_[ds.x_test, np.ones(512)] @ w).argmax(1) == ds.y_test)
    assert accuracy > 0.7


def test_synthetic_tokens_stay_in_their_range(tmp_path):
    path = task_file(
        tmp_path,
        "def build():\n"
        "    return keras.Sequential([keras.Input((6,), dtype='int32'),\n"
        "        keras.layers.Embedding(11, 4), keras.layers.GlobalAveragePooling1D(),\n"
        "        keras.layers.Dense(2)])\n"
        "T = Task('tok', build, input_shape=(6,), input_dtype='int32', input_range=(1, 11),\n"
        "             loss=CE, num_classes=2, n_train=128, n_test=32)\n",
    )
    ds = load_data(user_tasks.load(path)[0])
    assert ds.x_train.dtype == np.int32 and ds.x_train.min() >= 1 and ds.x_train.max() <= 10


def test_data_from_arrays_a_npz_file_and_a_callable(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 8)).astype(np.float32), np.arange(100) % 3
    np.savez(tmp_path / "d.npz", x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    path = task_file(
        tmp_path,
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.standard_normal((100, 8)).astype(np.float32), np.arange(100) % 3\n"
        "A = Task('a', dense(3), input_shape=(8,), loss=CE, num_classes=3, data=(x, y))\n"
        "B = Task('b', dense(3), input_shape=(8,), loss=CE, num_classes=3, data='d.npz')\n"
        "def mine():\n    return {'x': x, 'y': y}\n"
        "C = Task('c', dense(3), input_shape=(8,), loss=CE, num_classes=3, data=mine)\n",
    )
    a, b, c = (load_data(t) for t in user_tasks.load(path))
    assert (len(a.x_train), len(a.x_test)) == (80, 20)  # the last 20% become the test split
    np.testing.assert_array_equal(b.x_test, x[80:])
    assert b.name == "d.npz" and c.name == "mine()"
    np.testing.assert_array_equal(c.y_train, a.y_train)


STREAMS = (
    "import tensorflow as tf\n"
    "rng = np.random.default_rng(1)\n"
    "X, Y = rng.standard_normal((300, 8)).astype('float32'), rng.integers(0, 3, 300)\n"
    "class Batches(keras.utils.PyDataset):\n"
    "    def __len__(self):\n"
    "        return 10\n"
    "    def __getitem__(self, i):\n"
    "        return X[30 * i : 30 * (i + 1)], Y[30 * i : 30 * (i + 1)]\n"
    "BATCHED = Task('batched', dense(3), input_shape=(8,), loss=CE, num_classes=3,\n"
    "                   n_train=200, n_test=50,\n"
    "                   data=tf.data.Dataset.from_tensor_slices((X, Y)).batch(64))\n"
    "SINGLE = Task('single', dense(3), input_shape=(8,), loss=CE, num_classes=3,\n"
    "                  n_train=100, n_test=20, data=tf.data.Dataset.from_tensor_slices((X, Y)))\n"
    "SHORT = Task('short', dense(3), input_shape=(8,), loss=CE, num_classes=3,\n"
    "                 n_train=1000, data=Batches())\n"
)


def test_data_from_a_tf_data_dataset_or_a_py_dataset(tmp_path):
    """Taken up to n_train + n_test examples, batched or not; a shorter stream is split 80/20."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((300, 8)).astype("float32"), rng.integers(0, 3, 300)
    got = {t.name: load_data(t) for t in user_tasks.load(task_file(tmp_path, STREAMS))}
    for name, n_train, n_test in (("batched", 200, 50), ("single", 100, 20), ("short", 240, 60)):
        ds = got[name]
        assert (len(ds.x_train), len(ds.x_test)) == (n_train, n_test), name
        np.testing.assert_array_equal(ds.x_train, x[:n_train])
        np.testing.assert_array_equal(ds.y_test, y[n_train : n_train + n_test])
        assert ds.y_train.dtype == np.int32


def test_a_npz_without_the_expected_keys_is_refused(tmp_path):
    np.savez(tmp_path / "odd.npz", inputs=np.zeros((10, 8)))
    path = task_file(tmp_path, "T = Task('t', dense(3), (8,), CE, num_classes=3, data='odd.npz')\n")
    with pytest.raises(TaskError, match=r"task 't': data odd.npz: has keys \['inputs'\]"):
        user_tasks.load(path)


# --- weights --------------------------------------------------------------------------------

BN_TASK = """
def build():
    # Random moving statistics: a copy that skipped the non-trainable weights would show.
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, use_bias=False),
        keras.layers.BatchNormalization(
            moving_mean_initializer='random_normal',
            moving_variance_initializer=keras.initializers.RandomUniform(0.5, 1.5)),
        keras.layers.ReLU(),
        keras.layers.Dense(3),
    ])

T = Task('bn', build, input_shape=(8,), loss=CE, num_classes=3, n_train=256)
"""


@pytest.mark.parametrize("impl", list(implementations.REGISTRY))
def test_every_implementation_starts_from_every_seeded_weight(tmp_path, impl):
    (task,) = user_tasks.load(task_file(tmp_path, BN_TASK, f"bn_{impl}.py"))
    start = initial_weights(task)
    assert len(start) == 7 and "moving_mean" in start.paths[3]  # trainable and not
    assert not np.allclose(start[3], 0)  # seeded random moving mean
    np.testing.assert_array_equal(initial_weights(task)[3], start[3])  # the same every call
    assert not np.array_equal(initial_weights(task, seed=1)[3], start[3])  # another seed
    if impl in implementations.MICRO_BATCH:  # half-batch statistics: not the same model
        with pytest.raises(NotImplementedError, match="BatchNormalization"):
            implementations.get(impl)(task, start)
        return
    trainer = implementations.get(impl)(task, start)
    assert trainer.model is not reference_model(task)[0]  # its own instance
    for v, w in zip(trainer.model.weights, start):
        np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)


def test_a_build_that_changes_between_calls_fails_clearly(tmp_path):
    path = task_file(
        tmp_path,
        "calls = []\n"
        "def build():\n"
        "    calls.append(1)\n"
        "    return dense(3)() if len(calls) == 1 else keras.Sequential(\n"
        "        [keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(3)])\n"
        "T = Task('shifty', build, input_shape=(8,), loss=CE, num_classes=3)\n",
    )
    (task,) = user_tasks.load(path)
    made = "task 'shifty': build\\(\\) made 4 weights, the initial weights are 2"
    with pytest.raises(TaskError, match=made):
        implementations.get("custom_graph")(task, initial_weights(task))


# --- selection ------------------------------------------------------------------------------


def test_selection_instead_of_or_beside_the_built_in_tasks(tmp_path, monkeypatch):
    path = task_file(tmp_path, GOOD.replace("'tiny'", "'tiny_sel'"))
    saved = user_tasks.selected_tasks()
    try:
        assert user_tasks.select([str(path)]) == ["tiny_sel"]
        assert user_tasks.select(["builtin", str(path)]) == [*TASKS, "tiny_sel"]
        assert user_tasks.select([]) == list(TASKS)
    finally:
        user_tasks._selected[:] = saved
    monkeypatch.setenv(user_tasks.ENV_TASKS, f"builtin{os.pathsep}{path}")
    assert user_tasks.specs_from(None) == ["builtin", str(path)]
    assert user_tasks.specs_from(["x.py"]) == ["x.py"]  # the option wins over the variable


# --- one line, before anything runs ---------------------------------------------------------


def test_a_task_path_is_joined_to_its_option():
    from bench.pytest_plugin import joined

    assert joined(["-q", "--tasks", "/a/t.py", "--tasks=b.py", "x"]) == [
        "-q",
        "--tasks=/a/t.py",
        "--tasks=b.py",
        "x",
    ]


# --- random layers --------------------------------------------------------------------------

DROPOUT = """
def build():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dropout(0.5),
                             keras.layers.GaussianNoise(0.3), keras.layers.Dense(3)])

T = Task('drop', build, input_shape=(8,), loss=CE, num_classes=3, n_train=64)
"""


def test_random_layers_start_from_the_task_seeds_state_in_every_instance(tmp_path):
    """Each implementation's own instance of the model draws the same dropout masks from the
    same generator states, set by the task's seed (tests/test_equivalence.py relies on it)."""
    (task,) = user_tasks.load(task_file(tmp_path, DROPOUT))
    start = initial_weights(task)
    a, b = new_model(task, start), new_model(task, start)

    def states(model):
        return [s.numpy() for s in seed_states(model)]

    assert len(states(a)) == 2 and not np.array_equal(*states(a))  # one state per layer
    np.testing.assert_array_equal(states(a), states(b))
    x = np.ones((16, 8), np.float32)
    np.testing.assert_array_equal(a(x, training=True), b(x, training=True))
    other = new_model(dataclasses.replace(task, seed=1), start)
    assert not np.array_equal(states(other), states(a))


# --- several inputs -------------------------------------------------------------------------

TWO_INPUTS = """
def build_dict():
    image = keras.Input((6, 6, 1), name='image')
    meta = keras.Input((4,), name='meta')
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation='relu')(image))
    h = keras.layers.Concatenate()([h, keras.layers.Dense(8, activation='relu')(meta)])
    return keras.Model({'image': image, 'meta': meta}, keras.layers.Dense(3)(h))

def build_list():
    values = keras.Input((5,))
    tokens = keras.Input((7,), dtype='int32')
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(10, 4)(tokens))
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation='relu')(values), pooled])
    return keras.Model([values, tokens], keras.layers.Dense(3)(h))

SHAPES = {'image': (6, 6, 1), 'meta': (4,)}
"""

MULTI = TWO_INPUTS + (
    "DICT = Task('two_dict', build_dict, input_shape=SHAPES, loss=CE, num_classes=3,\n"
    "                n_train=256, n_test=128, learning_rate=1e-2)\n"
    "LIST = Task('two_list', build_list, input_shape=[(5,), (7,)],\n"
    "                input_dtype=['float32', 'int32'], input_range=[None, (0, 10)], loss=CE,\n"
    "                num_classes=3, n_train=256, n_test=128, learning_rate=1e-2)\n"
)

MULTI_STEPS = 6  # batches trained; N = 3 per call for the multi-step trainers: two calls


def multi_tasks(folder: Path) -> dict:
    """The two tasks, their data and batches (and keras_fit's run on each, filled lazily by
    tests/test_user_tasks_integration.py)."""
    path = task_file(folder, MULTI)
    out = {}
    for task in user_tasks.load(path):
        ds = load_data(task)
        batches = list(epoch_dataset(ds.x_train, ds.y_train, task.batch_size, 0, 0))
        out[task.name] = {"task": task, "data": ds, "batches": batches[:MULTI_STEPS]}
    return out


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    return multi_tasks(tmp_path_factory.mktemp("multi"))


def test_a_task_with_several_inputs_loads_and_gets_synthetic_data_per_input(multi):
    d = multi["two_dict"]["data"]
    assert isinstance(d.x_train, dict) and list(d.x_train) == ["image", "meta"]
    assert d.x_train["image"].shape == (256, 6, 6, 1) and d.x_test["meta"].shape == (128, 4)
    assert d.x_train["image"].dtype == np.float32 and d.y_train.shape == (256,)
    lst = multi["two_list"]["data"]
    assert isinstance(lst.x_train, tuple) and lst.x_train[0].shape == (256, 5)
    values, tokens = lst.x_test
    assert values.dtype == np.float32 and tokens.shape == (128, 7) and tokens.dtype == np.int32
    assert tokens.min() >= 0 and tokens.max() <= 9 and set(np.unique(lst.y_train)) == {0, 1, 2}
    # The labels are a linear function of both inputs' features: a least-squares linear
    # classifier on both predicts the test split better than on either input alone.
    big = load_data(dataclasses.replace(multi["two_dict"]["task"], n_train=2048))

    def accuracy(keys):
        def features(x):
            parts = [x[k].reshape(len(x[k]), -1) for k in keys]
            return np.concatenate([*parts, np.ones((len(parts[0]), 1))], axis=1)

        w, *_ = np.linalg.lstsq(features(big.x_train), np.eye(3)[big.y_train], rcond=None)
        return np.mean((features(big.x_test) @ w).argmax(1) == big.y_test)

    both, image, meta = accuracy(["image", "meta"]), accuracy(["image"]), accuracy(["meta"])
    assert both > 0.9 and both > image + 0.05 and both > meta + 0.3, (both, image, meta)


SEVERAL_ARRAYS = TWO_INPUTS + (
    "import tensorflow as tf\n"
    "rng = np.random.default_rng(0)\n"
    "IMAGE, META = rng.standard_normal((100, 6, 6, 1)), rng.standard_normal((100, 4))\n"
    "VALUES, TOKENS = rng.standard_normal((100, 5)), rng.integers(0, 10, (100, 7))\n"
    "Y = np.arange(100) % 3\n"
    "ARRAYS = Task('dict_arrays', build_dict, input_shape=SHAPES, loss=CE, num_classes=3,\n"
    "                  data=({'meta': META, 'image': IMAGE}, Y))\n"
    "STREAM = Task('list_stream', build_list, input_shape=[(5,), (7,)], loss=CE,\n"
    "                  input_dtype=['float32', 'int32'], num_classes=3, n_train=64, n_test=16,\n"
    "                  data=tf.data.Dataset.from_tensor_slices(((VALUES, TOKENS), Y)).batch(16))\n"
)


def test_several_inputs_from_arrays_and_from_a_stream(tmp_path):
    """x as a dict of arrays (any key order: input_shape's is kept), and a tf.data stream of
    ((values, tokens), y) batches; each input cast to its own dtype."""
    rng = np.random.default_rng(0)
    image, meta = rng.standard_normal((100, 6, 6, 1)), rng.standard_normal((100, 4))
    values, tokens = rng.standard_normal((100, 5)), rng.integers(0, 10, (100, 7))
    tasks = user_tasks.load(task_file(tmp_path, SEVERAL_ARRAYS))
    got = {t.name: load_data(t) for t in tasks}
    a = got["dict_arrays"]
    assert list(a.x_train) == ["image", "meta"] and len(a.y_train) == 80  # the last 20%: test
    np.testing.assert_array_equal(a.x_test["meta"], meta[80:].astype(np.float32))
    np.testing.assert_array_equal(a.x_train["image"], image[:80].astype(np.float32))
    assert a.x_train["image"].dtype == np.float32
    s = got["list_stream"]
    assert isinstance(s.x_train, tuple) and s.x_train[1].dtype == np.int32
    np.testing.assert_array_equal(s.x_train[1], tokens[:64])
    np.testing.assert_array_equal(s.x_test[0], values[64:80].astype(np.float32))


BAD_SEVERAL = {
    "x_without_an_input": (
        "T = Task('bad', build_dict, input_shape=SHAPES, loss=CE, num_classes=3,\n"
        "             data=({'image': np.zeros((64, 6, 6, 1))}, np.zeros(64, int)))\n",
        "task 'bad': data arrays: x must be a dict of arrays with input_shape's keys "
        "['image', 'meta'], got ['image']",
    ),
    "an_input_of_the_wrong_shape": (
        "T = Task('bad', build_dict, input_shape=SHAPES, loss=CE, num_classes=3,\n"
        "             data=({'image': np.zeros((64, 6, 6, 1)), 'meta': np.zeros((64, 3))},\n"
        "                   np.zeros(64, int)))\n",
        "task 'bad': data: x_train['meta'] has shape (52, 3), expected (n, 4) "
        "(input_shape['meta'])",
    ),
    "a_list_of_the_wrong_length": (
        "T = Task('bad', build_list, input_shape=[(5,), (7,)], loss=CE, num_classes=3,\n"
        "             input_dtype=['float32', 'int32'],\n"
        "             data=([np.zeros((64, 5))], np.zeros(64)))\n",
        "task 'bad': data arrays: x must be a list of 2 arrays, one per input, got 1",
    ),
    "a_dtype_for_an_input_that_does_not_exist": (
        "T = Task('bad', build_dict, input_shape=SHAPES, loss=CE, num_classes=3,\n"
        "             input_dtype={'other': 'int32'})\n",
        "task 'bad': input_dtype names inputs ['other'] that input_shape does not have",
    ),
    "integer_inputs_without_a_range": (
        "T = Task('bad', build_list, input_shape=[(5,), (7,)], loss=CE, num_classes=3,\n"
        "             input_dtype=['float32', 'int32'])\n",
        "task 'bad': integer inputs need input_range",
    ),
    "inputs_the_model_does_not_have": (
        "T = Task('bad', build_dict, input_shape={'image': (6, 6, 1), 'extra': (4,)},\n"
        "             loss=CE, num_classes=3)\n",
        "task 'bad': build() or its first call on inputs {'image': (None, 6, 6, 1) float32, "
        "'extra': (None, 4) float32} failed",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SEVERAL))
def test_a_bad_task_with_several_inputs_is_one_line(tmp_path, case):
    body, expected = BAD_SEVERAL[case]
    path = task_file(tmp_path, TWO_INPUTS + body)
    with pytest.raises(TaskError) as err:
        user_tasks.load(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("task_name", ["two_dict", "two_list"])
def test_the_fixed_batch_of_a_multi_step_trainer_stacks_each_input(multi, task_name):
    """N distinct batches of every input, stacked as x[N, B, ...] (tiled past the data's
    end), that a multi-step trainer runs in one call."""
    from bench.tasks.data import input_list, take
    from bench.timing.harness import fixed_batch

    r = multi[task_name]
    small = r["data"].subset(40)
    x, y = fixed_batch(r["task"], 16, small, steps_per_call=4)
    assert type(x) is type(small.x_train) and y.shape == (4, 16)
    expected = take(small.x_train, np.arange(64) % 40)
    for got, want in zip(input_list(x), input_list(expected)):
        assert tuple(got.shape) == (4, 16, *want.shape[1:])
        np.testing.assert_array_equal(got.numpy().reshape(want.shape), want)
    trainer = implementations.get("custom_graph_loop")(
        r["task"], initial_weights(r["task"]), steps_per_call=4
    )
    losses = np.asarray(trainer.step(x, y))
    assert losses.shape == (4,) and np.isfinite(losses).all() and trainer.traces() == 1


@pytest.mark.parametrize("task_name", ["two_dict", "two_list"])
def test_evaluation_of_several_inputs(multi, task_name):
    """``evaluate`` in batches (the last one shorter) agrees with one call on every example."""
    r = multi[task_name]
    model = new_model(r["task"], initial_weights(r["task"]))
    ds = r["data"]
    loss, accuracy = evaluate(model, r["task"], ds.x_test, ds.y_test, batch_size=50)
    out = model(ds.x_test, training=False).numpy()
    assert accuracy == pytest.approx(np.mean(out.argmax(-1) == ds.y_test))
    assert loss == pytest.approx(float(keras_loss(r["task"])(ds.y_test, out)), 1e-5)


def test_bench_ab_skips_a_task_with_several_inputs(tmp_path):
    """HEAD's worker cannot write the batch of several inputs as one array ``x``: the
    benchmark is skipped with the reason, not an error that ends the run."""
    from types import SimpleNamespace

    from bench.ab import measure
    from bench.ab import worker as ab_worker
    from bench.workers.process import WorkerAnswerError

    path = task_file(tmp_path, MULTI.replace("'two_", "'ab_two_"))
    saved = user_tasks.selected_tasks()
    fake = SimpleNamespace(name="head worker 0", side=SimpleNamespace(describe=lambda: "tree"))

    def request(message, timeout):  # the worker's op, answered as the protocol answers it
        try:
            return ab_worker.op_write_batch(message, {}, str(ROOT))
        except Exception as e:
            answer = {"error": f"{type(e).__name__}: {e}"}
            raise WorkerAnswerError(fake, message["op"], answer) from None

    fake.request = request
    try:
        ab_worker.op_hello({"op": "hello", "tasks": [str(path)]}, {}, str(ROOT))
        for task in ("ab_two_dict", "ab_two_list"):
            bench = measure.Benchmark("custom_graph", task, 32, True)
            with pytest.raises(measure.Unsupported, match="bench ab times single-input tasks only"):
                measure.write_batch(bench, tmp_path, {}, fake)
    finally:
        user_tasks._selected[:] = saved
