"""Keras 3's JAX backend next to TensorFlow: step time and convergence of ``jax_fit``,
``jax_custom`` and their multi-step variants (``implementations/jax_backend.py``), measured in a
JAX worker process (``bench/jax/worker.py``) and recorded in the same pytest-benchmark JSON,
groups and fields as the TensorFlow benchmarks (``bench/benchmarks/bench_step.py``,
``bench/benchmarks/bench_accuracy.py``), plus ``backend``, the jax/jaxlib/keras versions and the
device.

Run: ``pytest --benchmark-only -k jax`` (the quick and smoke profiles run JAX only when ``-k``
names it: it would take the default run past its 5 minutes), or ``--profile full`` (JAX
included).
Without jax installed every test here is skipped with one line saying how to install it.

Timing: a JAX step benchmark is a member of its task's step panel (``bench/timing/panel.py``), timed
in the same blocks as the TensorFlow implementations, so the "TensorFlow vs JAX" table's ratios
are paired. Inside the worker it follows ``bench/timing/harness.py``'s method: the first call
alone is
``compile_s`` (jit tracing and XLA compilation; ``cold_start_s`` adds the worker's import of jax
and Keras, ``import_s``), warm-up, K calls per round chosen for ``round_seconds``, one untimed
round; each timed round of K calls ends in a host sync and is timed in the worker (no pipe in
the figure).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from bench import convergence
from bench.benchmarks import bench_accuracy
from bench.convergence import CONVERGENCE, PARITY_PP, anchor, failures, summarize
from bench.jax import client as jax_client
from bench.jax.client import backend_fields
from bench.tasks import TASKS
from bench.timing.panel import PANELS, register, run_in_panel
from bench.timing.spec import Spec, in_step_panel, twin_key
from implementations import jax_backend

if not jax_client.jax_available():
    pytest.skip(jax_client.SKIP_REASON, allow_module_level=True)  # one line for the module

IMPLS = list(jax_backend.REGISTRY)


def in_profile(request: pytest.FixtureRequest, profile) -> None:
    """The JAX benchmarks run in the full profile, or in any when ``-k`` names them: they add
    about a minute to the quick profile (docs/jax.md) and minutes to smoke's."""
    keyword = request.config.getoption("keyword") or ""
    if profile.name != "full" and "jax" not in keyword.lower():
        pytest.skip(f"JAX backend: --profile full or -k jax (keeps the {profile.name} run short)")


@pytest.fixture(scope="module")
def jax_worker():
    """The session's JAX worker (``bench.timing.panel.PANELS``, which the step panels share; closed
    at the session's end)."""
    return PANELS.jax_worker()


def skip_scan_of_convolutions_on_cpu(impl: str, task_name: str, hello: dict) -> None:
    """XLA:CPU runs the CNN's convolutions inside ``jax_custom_loop``'s compiled scan about 10x
    slower (implementations/jax_backend.py): 27 s per 16-step call, over 10 minutes for the full
    profile's rounds, hours of convergence. Measured by hand: docs/jax.md."""
    if (impl, task_name, hello["versions"]["device"]) == ("jax_custom_loop", "cnn", "CPU"):
        pytest.skip("jax_custom_loop on the CNN on a CPU: 1.7 s per step (a lax.scan of convs)")


def jax_step_spec(name: str, params: dict, profile, config) -> Spec:
    """A JAX step benchmark joins its task's step panel, beside its TensorFlow twins."""
    impl, task_name = params["impl"], params["task_name"]
    keyword = config.getoption("keyword") or ""
    if profile.name != "full" and "jax" not in keyword.lower():
        pytest.skip(f"JAX backend: --profile full or -k jax (keeps the {profile.name} run short)")
    if impl in jax_backend.MULTI_STEP and task_name not in profile.multi_step_tasks:
        pytest.skip(
            f"{impl} runs on {', '.join(profile.multi_step_tasks)} in the "
            f"{profile.name} profile (use --profile full)"
        )
    if (impl, task_name) == ("jax_custom_loop", "cnn"):
        skip_scan_of_convolutions_on_cpu(impl, task_name, PANELS.jax_worker()[1])
    twins = tuple(twin_key(t) for t in jax_backend.TF_TWINS[impl] if t)
    return in_step_panel(name, impl, task_name, profile, backend="jax", twins=twins)


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("impl", IMPLS)
def test_jax_step(benchmark, impl, task_name, profile, task_data, request, matmul_calibration):
    """Seconds per training step on Keras's JAX backend, measured in the JAX worker, in the
    same blocks as the task's TensorFlow step benchmarks (``bench/timing/panel.py``)."""
    spec = jax_step_spec(
        request.node.name, {"impl": impl, "task_name": task_name}, profile, request.config
    )
    run_in_panel(benchmark, request, spec, task_name, task_data, matmul_calibration)


register("test_jax_step", jax_step_spec)


# --- convergence ------------------------------------------------------------------------------


def baseline_accuracy(task, data, seeds, epochs) -> float:
    """``keras_fit``'s mean accuracy: from ``bench_accuracy`` if it ran in this session, else
    trained here (TensorFlow, this process) on the same data, seeds and epochs."""
    if task.name in bench_accuracy.BASELINE_ACCURACY:
        return bench_accuracy.BASELINE_ACCURACY[task.name]
    runs = [convergence.train("keras_fit", task, data, seed, epochs) for seed in seeds]
    accuracy = float(np.mean([r["curves"]["test_accuracy"][-1] for r in runs]))
    bench_accuracy.BASELINE_ACCURACY[task.name] = accuracy
    return accuracy


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("impl", IMPLS)
def test_jax_convergence(benchmark, impl, task_name, profile, task_data, request):
    in_profile(request, profile)
    conv = CONVERGENCE[profile.name]
    if impl in jax_backend.MULTI_STEP and not conv.multi_step:
        pytest.skip(f"{impl}: trained in --profile full (the quick profile trains one-step loops)")
    worker, hello = request.getfixturevalue("jax_worker")
    skip_scan_of_convolutions_on_cpu(impl, task_name, hello)
    task = TASKS[task_name]
    n_train = conv.n_train if task.kind == "classification" else None
    data = task_data(task, n_train=n_train)
    epochs = conv.epochs[task_name] if conv.epochs else task.epochs
    benchmark.group = f"convergence-{task_name}"

    def train_all_seeds():
        request_ = {"op": "train", "impl": impl, "task": task_name, "epochs": epochs}
        request_["n_train"] = n_train
        return [
            worker.request({**request_, "seed": seed}, jax_client.TRAIN_TIMEOUT_S)
            for seed in conv.seeds
        ]

    runs = benchmark.pedantic(train_all_seeds, rounds=1, iterations=1)
    assert all(r["dataset"] == data.name and r["n_train"] == len(data.x_train) for r in runs)
    info = {"implementation": impl, **summarize(task, data, runs, conv.seeds, epochs)}
    info.update(backend_fields(hello))
    info.update(anchor(task, info, full_training=conv.full_training))
    info.update(parity_baseline="keras_fit", parity_delta_pp=None, parity_ok=None)
    if task.kind == "classification":
        base = baseline_accuracy(task, data, conv.seeds, epochs)
        delta = 100 * (info["final_accuracy"] - base)
        info.update(parity_delta_pp=delta, parity_ok=abs(delta) <= PARITY_PP)
        print(
            f"loopbench: {impl}/{task_name} accuracy {info['final_accuracy']:.4f} "
            f"({delta:+.2f} pp vs keras_fit)",
            file=sys.stderr,
        )
    benchmark.extra_info.update(info)
    problems = failures(f"{impl}/{task_name}", task, info, "keras_fit's")
    if problems:
        pytest.fail("; ".join(problems))
