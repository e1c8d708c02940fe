"""User tasks (``bench/tasks/user.py``) for real: binary and multi-label heads trained by fit
and the custom loop alike; every implementation trained on a model of several inputs as
keras_fit trains it; XLA refused a model it has no kernel for, with the reason; and the
one-line errors of a fresh pytest (a bad task file, a truncated dataset file) and a task
file outside the checkout. The task files, their checks and the data: tests/test_user_tasks.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_user_tasks import BAD, GOOD, MULTI_STEPS, multi_tasks, task_file

import implementations
from bench.tasks import initial_weights
from bench.tasks import user as user_tasks
from bench.tasks.task import binary_threshold, skip_unsupported
from bench.tasks.task_data import load_data
from implementations.common import epoch_dataset, evaluate

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


# --- data -----------------------------------------------------------------------------------


BINARY = (
    "def head(units, activation):\n"
    "    return lambda: keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, 'relu'),\n"
    "                                     keras.layers.Dense(units, activation)])\n"
    "SIGMOID = Task('sigmoid', head(1, 'sigmoid'), input_shape=(8,), head='binary',\n"
    "                   loss='binary_crossentropy', learning_rate=1e-2, n_train=512)\n"
    "LOGIT = Task('logit', head(1, None), input_shape=(8,), head='binary',\n"
    "                 loss=keras.losses.BinaryCrossentropy(from_logits=True), learning_rate=1e-2,\n"
    "                 n_train=512)\n"
    "LABELS = Task('labels', head(3, None), input_shape=(8,), head='binary',\n"
    "                  from_logits=True, n_train=512, learning_rate=1e-2,\n"
    "                  loss=lambda y, p: keras.ops.binary_crossentropy(y, p, from_logits=True))\n"
)


def test_binary_and_multi_label_heads(tmp_path):
    """One sigmoid unit, one logit unit, three logit units (multi-label): 0/1 labels of the
    output's shape, about half 1s; accuracy counts each label, right at probability 0.5; and
    the custom loop trains the same as fit."""
    tasks = {t.name: t for t in user_tasks.load(task_file(tmp_path, BINARY))}
    for name, units, threshold in (("sigmoid", 1, 0.5), ("logit", 1, 0.0), ("labels", 3, 0.0)):
        task = tasks[name]
        assert task.kind == "classification" and binary_threshold(task) == threshold
        ds = load_data(task)
        assert ds.y_train.shape == (512, units) and ds.y_train.dtype == np.float32
        assert set(np.unique(ds.y_train)) == {0.0, 1.0} and 0.3 < ds.y_train.mean() < 0.7
        fit, loop = (
            implementations.get(i)(task, initial_weights(task))
            for i in ("keras_fit", "custom_graph")
        )
        batches = list(epoch_dataset(ds.x_train, ds.y_train, task.batch_size, 0, 0))
        losses = [t.step_losses(batches) for t in (fit, loop)]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
        assert losses[1][-4:].mean() < losses[1][:4].mean()
        _, accuracy = evaluate(loop.model, task, ds.x_test, ds.y_test)
        out = loop.model(ds.x_test).numpy()
        assert accuracy == pytest.approx(np.mean((out > threshold) == (ds.y_test > 0.5)))
        assert accuracy > 0.6  # one epoch on labels a linear function of the inputs


# --- one line, before anything runs (fresh pytest processes) --------------------------------


def run_pytest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_pytest_refuses_a_bad_task_file_with_one_usage_error(tmp_path):
    path = task_file(tmp_path, BAD["labels_out_of_range"][0])
    results = tmp_path / "out.json"
    out = run_pytest(
        "--benchmark-only",
        f"--benchmark-json={results}",
        "bench/benchmarks/bench_step.py",
        env={"LOOPBENCH_TASKS": str(path)},
    )
    assert out.returncode == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert errors == [f"ERROR: {path}: {BAD['labels_out_of_range'][1]}"]
    assert "Traceback" not in out.stderr + out.stdout and "passed" not in out.stdout
    assert not results.exists()  # nothing half-written


def test_a_task_file_outside_the_checkout_works_as_a_user_types_it(tmp_path):
    """``--tasks PATH``, space-separated, with the file in another folder: pytest would root
    the run there and miss this project's settings; the plugin runs it as ``--tasks=PATH``."""
    path = task_file(tmp_path, GOOD)
    out = run_pytest("--benchmark-only", "--collect-only", "-q", "--tasks", str(path), "-k", "step")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "bench/benchmarks/bench_step.py::test_step[keras_fit-tiny]" in out.stdout
    assert "test_step[keras_fit-linreg]" not in out.stdout  # the user's, not the built-ins


def test_a_truncated_dataset_file_is_one_line_before_any_benchmark(tmp_path):
    from bench.tasks.data import SPLITS, _find_file, candidate_dirs

    source = next(
        (d for d, _ in candidate_dirs("fashion-mnist") if _find_file(d, "t10k-images-idx3-ubyte")),
        None,
    )
    if source is None:
        pytest.skip("no Fashion-MNIST IDX files to copy")
    for stems in SPLITS.values():
        for stem in stems:
            found = _find_file(source, stem)
            (tmp_path / found.name).write_bytes(found.read_bytes())
    victim = _find_file(tmp_path, SPLITS["train"][0])
    victim.write_bytes(victim.read_bytes()[:5000])  # a download cut short
    out = run_pytest(
        "--benchmark-only",
        "--profile",
        "smoke",
        "bench/benchmarks/bench_step.py",
        "-k",
        "test_step and mlp",
        f"--benchmark-json={tmp_path / 'out.json'}",
        env={"LOOPBENCH_DATA_DIR": str(tmp_path)},
    )
    assert out.returncode == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in out.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and str(victim) in errors[0], out.stderr[-2000:]
    assert "corrupt gzip data" in errors[0] or "truncated" in errors[0]
    assert "Traceback" not in out.stderr + out.stdout and "test_step[" not in out.stdout
    assert not (tmp_path / "out.json").exists()  # nothing half-written


PY_FUNCTION = """
import tensorflow as tf

class Sin(keras.layers.Layer):
    def call(self, x):
        return tf.ensure_shape(tf.py_function(tf.sin, [x], tf.float32), x.shape)

def build():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), Sin(),
                             keras.layers.Dense(3)])

T = Task('pyfunc', build, input_shape=(8,), loss=CE, num_classes=3, n_train=64)
"""


def test_an_implementation_that_cannot_run_the_model_is_skipped_with_the_reason(tmp_path):
    import tensorflow as tf

    (task,) = user_tasks.load(task_file(tmp_path, PY_FUNCTION))
    ds = load_data(task)
    x, y = tf.constant(ds.x_train[:16]), tf.constant(ds.y_train[:16])
    with skip_unsupported("custom_graph", task):  # runs: no skip
        implementations.get("custom_graph")(task, initial_weights(task)).step(x, y)
    xla = implementations.get("custom_xla")(task, initial_weights(task))
    with (
        pytest.raises(pytest.skip.Exception) as skipped,
        skip_unsupported("custom_xla", task),
    ):
        xla.step(x, y)
    # XLA_CPU_JIT here, XLA_GPU_JIT on a GPU host
    assert re.fullmatch(
        r"custom_xla cannot run pyfunc: XLA \(XLA_\w+_JIT\) has no kernel for EagerPyFunc",
        str(skipped.value),
    ), str(skipped.value)
    with pytest.raises(ValueError), skip_unsupported("custom_xla", task):
        raise ValueError("any other error is an error")


# --- several inputs -------------------------------------------------------------------------


# Every implementation on the dict task; on the list task, those that stack (keras_fit_spe's
# tf.data iterator, the in-graph loop) or split (micro-batches) its tuple of inputs.
MULTI_RUNS = [(impl, "two_dict") for impl in implementations.REGISTRY] + [
    (impl, "two_list")
    for impl in ("keras_fit_spe", "custom_graph_loop", "custom_xla_split", "custom_eager")
]


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    """The two tasks, their data and batches, and keras_fit's run on each (filled lazily)."""
    return multi_tasks(tmp_path_factory.mktemp("multi"))


def multi_run(r: dict, impl: str):
    """(trainer, per-step losses) of ``impl`` on the task's batches, from its initial weights."""
    task = r["task"]
    options = {"steps_per_call": 3} if impl in implementations.MULTI_STEP else {}
    trainer = implementations.get(impl)(task, initial_weights(task), **options)
    return trainer, trainer.step_losses(r["batches"])


@pytest.mark.parametrize("impl, task_name", MULTI_RUNS, ids=[f"{i}-{t}" for i, t in MULTI_RUNS])
def test_every_implementation_trains_several_inputs_as_keras_fit_does(multi, impl, task_name):
    """From the same weights on the same batches: the same losses and weights as keras_fit
    (float32 rounding: XLA and the micro-batches measured at most 1.2e-7 apart)."""
    r = multi[task_name]
    if "keras_fit" not in r:
        r["keras_fit"] = multi_run(r, "keras_fit")
    reference, ref_losses = r["keras_fit"]
    assert ref_losses[-1] < ref_losses[0]  # it trains
    trainer, losses = multi_run(r, impl)
    assert len(losses) == MULTI_STEPS
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for v, w in zip(trainer.model.weights, reference.model.weights):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-4, atol=1e-6, err_msg=v.path)
