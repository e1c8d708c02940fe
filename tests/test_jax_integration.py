"""The JAX backend, run for real in its worker: its loops compute what their TensorFlow
twins compute, step for step; a wrong learning rate is caught; the worker runs without
TensorFlow, times rounds per training step, and its failures are reported and cleaned up;
``bench ab`` starts JAX workers only where a side has the backend. Skipped without jax.
The tolerances and what they were measured on: tests/test_jax.py's docstring."""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import numpy as np
import pytest
from test_equivalence import (
    BATCH,
    EXACT,
    KERAS,
    MULTI_STEP_XLA,
    STEPS,
    XLA,
    build,
    differences,
    run,
)
from test_jax import tolerance

from bench.jax import client as jax_client
from bench.tasks import TASKS
from bench.workers.process import InputError, Side, WorkerAnswerError
from implementations import jax_backend
from implementations.common import epoch_dataset

if not jax_client.jax_available():
    pytest.skip(jax_client.SKIP_REASON, allow_module_level=True)  # one line for the module

pytestmark = pytest.mark.integration

N = 4  # steps per call of the multi-step variants (test_equivalence's N)


# --- in the worker ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker():
    with contextlib.ExitStack() as stack:
        yield jax_client.start(stack)


def jax_run(worker, task, batches_npz: str, impl: str, tmp_path, **overrides):
    out = tmp_path / f"{impl}-{task}.npz"
    request = {
        "op": "step_losses",
        "impl": impl,
        "task": task,
        "batches": batches_npz,
        "weights_out": str(out),
        "steps_per_call": N,
        "task_overrides": overrides,
    }
    if worker[1]["versions"]["device"] != "CPU":  # JAX's GPU default may be TF32
        request["matmul_precision"] = "float32"
    answer = worker[0].request(request, jax_client.SETUP_TIMEOUT_S)
    with np.load(out) as f:
        weights = [f[f"arr_{i}"] for i in range(len(f.files))]
    return np.array(answer["losses"]), weights


@pytest.fixture(scope="module")
def runs(worker, task_data, tmp_path_factory):
    """Per task: the TensorFlow twins in this process and the JAX loops in the worker, on the
    same weights and batches as tests/test_equivalence.py."""
    tmp = tmp_path_factory.mktemp("jax")
    out = {}
    for name, task in TASKS.items():
        data = task_data(task, n_train=BATCH * STEPS[name])
        batches = list(epoch_dataset(data.x_train, data.y_train, BATCH, seed=0, epoch=0))
        batches = batches[: STEPS[name]]
        npz = jax_client.write_npz(
            tmp / f"{name}.npz",
            x=np.stack([x.numpy() for x, _ in batches]),
            y=np.stack([y.numpy() for _, y in batches]),
        )
        out[name] = {
            impl: run(task, build(impl, task), data) for impl in ("keras_fit", "custom_xla")
        }
        for impl in jax_backend.REGISTRY:
            out[name][impl] = jax_run(worker, name, npz, impl, tmp)
        out[name]["npz"] = npz
    out["tmp"] = tmp
    return out


PAIRS = [("jax_fit", "keras_fit", KERAS), ("jax_custom", "custom_xla", XLA)]


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("a, b, tolerances", PAIRS, ids=[f"{a}~{b}" for a, b, _ in PAIRS])
def test_jax_computes_what_tensorflow_computes(worker, runs, task_name, a, b, tolerances):
    tol = tolerance(worker[1], tolerances[task_name])
    assert differences(runs[task_name][a], runs[task_name][b], tol) == [], tol.why
    losses = runs[task_name][a][0]
    assert len(losses) == STEPS[task_name] and losses[-1] < losses[0] * 0.95  # it trained


@pytest.mark.parametrize("task_name", list(TASKS))
def test_jax_multi_step_variants_match_their_one_step_twins(runs, task_name):
    task_runs = runs[task_name]
    loop, one = task_runs["jax_custom_loop"], task_runs["jax_custom"]
    assert differences(loop, one, MULTI_STEP_XLA[task_name]) == []
    # jax_fit_spe logs one mean loss per call of N steps; its weights are jax_fit's exactly.
    spe, fit = task_runs["jax_fit_spe"], task_runs["jax_fit"]
    calls = -(-STEPS[task_name] // N)
    means = np.array([fit[0][i * N : (i + 1) * N].mean() for i in range(calls)])
    assert len(spe[0]) == calls
    np.testing.assert_allclose(spe[0], means, rtol=1e-5)
    assert differences((means, spe[1]), (means, fit[1]), EXACT) == []


@pytest.mark.parametrize("task_name", list(TASKS))
def test_a_different_learning_rate_on_jax_is_caught(worker, runs, task_name):
    task = TASKS[task_name]
    lr = {"learning_rate": task.learning_rate * 1.5}
    for impl, twin, tolerances in PAIRS:
        wrong = jax_run(worker, task_name, runs[task_name]["npz"], impl, runs["tmp"], **lr)
        tol = tolerance(worker[1], tolerances[task_name])
        assert differences(wrong, runs[task_name][twin], tol), impl


def test_the_worker_runs_keras_on_jax_without_tensorflow(worker):
    _, hello = worker
    assert hello["versions"]["backend"] == "jax"
    assert not hello["tensorflow_imported"]
    assert {"jax", "jaxlib", "keras", "device"} <= set(hello["versions"])
    assert hello["implementations"] == list(jax_backend.REGISTRY)


def test_a_failed_request_is_answered_and_a_crashed_worker_reported():
    with contextlib.ExitStack() as stack:
        worker, _ = jax_client.start(stack)
        with pytest.raises(WorkerAnswerError, match="unknown JAX implementation 'nope'"):
            worker.request({"op": "setup", "id": "x", "impl": "nope", "task": "linreg"}, 60)
        assert worker.request({"op": "hello"}, 60)["ok"]  # still serving
        with pytest.raises(InputError, match="exited with code 3"):
            worker.request({"op": "crash", "code": 3}, 60)
    assert worker.proc.poll() == 3  # closed and reaped on the way out


def test_a_setup_request_times_rounds_per_training_step(worker, tmp_path):
    task = dataclasses.replace(TASKS["linreg"])
    x = np.linspace(-1, 1, N * task.batch_size, dtype=np.float32).reshape(-1, 1)
    batch = jax_client.write_npz(tmp_path / "b.npz", x=x, y=3 * x + 2)
    w = worker[0]
    setup = w.request(
        {
            "op": "setup",
            "id": "loop",
            "impl": "jax_custom_loop",
            "task": "linreg",
            "batch": batch,
            "batch_size": task.batch_size,
            "steps_per_call": N,
            "warmup": 5,
            "round_seconds": 0.02,
        },
        jax_client.SETUP_TIMEOUT_S,
    )
    assert setup["steps_per_call"] == N and setup["traces"] == 1
    answer = w.request({"op": "round", "id": "loop", "k": 3}, 60)
    assert answer["retraced"] == 0
    assert answer["seconds"] == pytest.approx(answer["round_seconds"] / N)
    w.request({"op": "drop", "id": "loop"}, 60)


def test_bench_ab_starts_jax_workers_only_for_sides_that_have_the_backend(tmp_path):
    from bench.ab import jax_sides as ab_jax

    assert ab_jax.wanted("jax_custom and mlp") and not ab_jax.wanted(None)
    assert not ab_jax.wanted("custom_xla")
    older = Side("base", "old", "directory", tmp_path, sys.executable, implementations=["x"])
    head = Side("head", ".", "working tree", jax_client.ROOT, sys.executable, implementations=[])
    with contextlib.ExitStack() as stack:
        grid, names = ab_jax.start_jax_workers([older, head], 1, stack)
        assert names == set(jax_backend.REGISTRY)
        assert older.implementations == ["x"] and "jax_error" in older.versions
        assert head.implementations == list(jax_backend.REGISTRY)
        assert head.versions["jax"]
        assert ab_jax.grid_for("jax_fit", [["tf"]], (grid, names)) is grid
        assert ab_jax.grid_for("custom_xla", [["tf"]], (grid, names)) == [["tf"]]


def test_a_float32_matmul_precision_request_trains_alike(worker, runs):
    """What ``jax_run`` asks for where JAX is on a GPU (TF32 off), on this device: on a CPU,
    float32 already, the very same losses."""
    out = runs["tmp"] / "precision.npz"
    request = {
        "op": "step_losses",
        "impl": "jax_custom",
        "task": "linreg",
        "batches": runs["linreg"]["npz"],
        "weights_out": str(out),
        "matmul_precision": "float32",
    }
    answer = worker[0].request(request, jax_client.SETUP_TIMEOUT_S)
    if worker[1]["versions"]["device"] == "CPU":
        np.testing.assert_array_equal(answer["losses"], runs["linreg"]["jax_custom"][0])
    assert len(answer["losses"]) == STEPS["linreg"]
