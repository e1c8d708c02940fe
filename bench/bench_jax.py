"""Keras 3's JAX backend next to TensorFlow: step time and convergence of ``jax_fit``,
``jax_custom`` and their multi-step variants (``implementations/jax_backend.py``), measured in a
JAX worker process (``bench/jax_worker.py``) and recorded in the same pytest-benchmark JSON,
groups and fields as the TensorFlow benchmarks (``bench/bench_step.py``,
``bench/bench_accuracy.py``), plus ``backend``, the jax/jaxlib/keras versions and the device.

Run: ``pytest --benchmark-only -k jax`` (the quick and smoke profiles run JAX only when ``-k``
names it: it would take the default run past its 5 minutes), or ``--profile full`` (JAX
included).
Without jax installed every test here is skipped with one line saying how to install it.

Timing follows ``bench/harness.py``'s method, inside the worker: the first call alone is
``compile_s`` (jit tracing and XLA compilation; ``cold_start_s`` adds the worker's import of jax
and Keras, ``import_s``), warm-up, K calls per round chosen for ``round_seconds``, one untimed
round, then rounds of K calls ending in a host sync, each with the steal read around it, until
enough quiet rounds are in. pytest-benchmark times a request for one round (pipe included);
its data are then replaced by the worker's own round times, per training step
(``harness.to_per_step``), so ``stats`` mean what they mean for TensorFlow.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np
import pytest

from bench import jax_client
from bench.convergence import CONVERGENCE, PARITY_PP, anchor, failures, summarize
from bench.harness import (
    RetraceError,
    enough_rounds,
    least_stolen,
    round_steal,
    steal_fields,
    to_per_step,
)
from bench.tasks import TASKS, train_flops_per_sample
from implementations import jax_backend

if not jax_client.jax_available():
    pytest.skip(jax_client.SKIP_REASON, allow_module_level=True)  # one line for the module

IMPLS = list(jax_backend.REGISTRY)


def in_profile(request: pytest.FixtureRequest, profile) -> None:
    """The JAX benchmarks run in the full profile, or in any when ``-k`` names them: they add
    about a minute to the quick profile (README, "Keras on JAX") and minutes to smoke's."""
    keyword = request.config.getoption("keyword") or ""
    if profile.name != "full" and "jax" not in keyword.lower():
        pytest.skip(f"JAX backend: --profile full or -k jax (keeps the {profile.name} run short)")


@pytest.fixture(scope="module")
def jax_worker():
    with contextlib.ExitStack() as stack:
        yield jax_client.start(stack)


def measure(benchmark, worker, bench_id: str, setup: dict, profile) -> dict:
    """``harness.measure_steps`` for a trainer living in the worker (set up as ``bench_id``)."""
    k, n = setup["calls_per_round"], setup["steps_per_call"]
    timeout = jax_client.round_timeout(setup["per_step_s"], k)
    seconds: list[float] = []
    steal: list[float | None] = []
    retraced = 0
    skipping = False

    def before():
        nonlocal skipping
        skipping = enough_rounds(steal, profile.rounds)

    def one_round():
        nonlocal retraced
        if skipping:  # the remaining rounds of pedantic's fixed count are empty, and dropped
            return
        answer = worker.request({"op": "round", "id": bench_id, "k": k}, timeout)
        seconds.append(answer["round_seconds"])
        steal.append(answer["steal"])
        retraced += answer["retraced"]

    benchmark.pedantic(
        one_round, setup=before, rounds=profile.max_rounds, iterations=1, warmup_rounds=0
    )
    if retraced:
        raise RetraceError(f"{bench_id}: traced {retraced} more time(s) during the timed rounds")
    kept = least_stolen(steal, profile.rounds)
    if benchmark.stats is not None:
        # The worker's own round times (no pipe in them) replace pytest-benchmark's.
        benchmark.stats.stats.data[: len(seconds)] = seconds
    per_step = to_per_step(benchmark, k * n, kept)
    return {
        "median_s": float(np.median(per_step)),
        "steps_per_round": k * n,
        "kept_rounds": kept,
        **round_steal(steal, kept),
    }


def backend_fields(hello: dict) -> dict:
    v = hello["versions"]
    return {
        "backend": "jax",
        "jax": v["jax"],
        "jaxlib": v["jaxlib"],
        "keras": v["keras"],
        "device": f"/{v['device']}:0",
        "device_kind": v["device_kind"],
        "import_s": hello["import_s"],
    }


def skip_scan_of_convolutions_on_cpu(impl: str, task_name: str, hello: dict) -> None:
    """XLA:CPU runs the CNN's convolutions inside ``jax_custom_loop``'s compiled scan about 10x
    slower (implementations/jax_backend.py): 27 s per 16-step call, over 10 minutes for the full
    profile's rounds, hours of convergence. Measured by hand: README, "Keras on JAX"."""
    if (impl, task_name, hello["versions"]["device"]) == ("jax_custom_loop", "cnn", "CPU"):
        pytest.skip("jax_custom_loop on the CNN on a CPU: 1.7 s per step (a lax.scan of convs)")


@pytest.mark.parametrize("task_name", list(TASKS))
@pytest.mark.parametrize("impl", IMPLS)
def test_jax_step(benchmark, impl, task_name, profile, task_data, tmp_path, request):
    in_profile(request, profile)
    if impl in jax_backend.MULTI_STEP and task_name not in profile.multi_step_tasks:
        pytest.skip(
            f"{impl} runs on {', '.join(profile.multi_step_tasks)} in the "
            f"{profile.name} profile (use --profile full)"
        )
    worker, hello = request.getfixturevalue("jax_worker")
    skip_scan_of_convolutions_on_cpu(impl, task_name, hello)
    calibration = request.getfixturevalue("matmul_calibration")["calibration_gflops"]
    task, dataset = TASKS[task_name], task_data(TASKS[task_name])
    benchmark.group = task_name
    b = task.batch_size
    n = jax_backend.STEPS_PER_CALL if impl in jax_backend.MULTI_STEP else 1
    idx = np.arange(n * b) % len(dataset.x_train)  # harness.fixed_batch's batches
    batch = jax_client.write_npz(
        tmp_path / "batch.npz", x=dataset.x_train[idx], y=dataset.y_train[idx]
    )
    bench_id = f"{impl}-{task_name}"
    setup = worker.request(
        {
            "op": "setup",
            "id": bench_id,
            "impl": impl,
            "task": task_name,
            "batch": batch,
            "batch_size": b,
            "warmup": profile.warmup_steps,
            "round_seconds": profile.round_seconds,
        },
        jax_client.SETUP_TIMEOUT_S,
    )
    try:
        timing = measure(benchmark, worker, bench_id, setup, profile)
        fit = worker.request(
            {"op": "fit", "id": bench_id, "k": setup["calls_per_round"]},
            jax_client.SETUP_TIMEOUT_S,
        )
        described = worker.request({"op": "info", "id": bench_id}, 60)
    finally:
        worker.request({"op": "drop", "id": bench_id}, 60)
    median = timing["median_s"]
    flops = train_flops_per_sample(task) * b
    gflops = flops / median / 1e9
    fields = backend_fields(hello)
    info = {
        "kind": "step",
        "implementation": impl,
        "task": task_name,
        "dataset": dataset.name,
        "seed": task.seed,
        **fields,
        "batch_size": b,
        "steps_per_round": timing["steps_per_round"],
        "calls_per_round": setup["calls_per_round"],
        "steps_per_call": setup["steps_per_call"],
        "rounds": len(timing["kept_rounds"]),
        **steal_fields(timing),
        "samples_per_s": b / median,
        "compile_s": setup["compile_s"],
        "cold_start_s": fields["import_s"] + setup["compile_s"],
        "fit_overhead_s": fit["fit_overhead_s"],
        "fit_s_per_step": fit["fit_s_per_step"],
        "flops_per_step": flops,
        "gflops_per_s": gflops,
        "pct_of_matmul_peak": 100 * gflops / calibration if calibration else None,
        "peak_memory_mb": described["peak_memory_mb"],
        "peak_memory_kind": described["peak_memory_kind"],
        **described["resolved"],
        "precision": "float32",
        "compute_dtype": "float32",
        "variable_dtype": "float32",
        "loss_scale": False,
        "one_step_twin": jax_backend.MULTI_STEP.get(impl),
        "graph_ops": None,
        "traces": described["traces"],
        "tf_twins": list(jax_backend.TF_TWINS[impl]),
    }
    benchmark.extra_info.update(info)


# --- convergence ------------------------------------------------------------------------------


def baseline_accuracy(task, data, seeds, epochs) -> float:
    """``keras_fit``'s mean accuracy: from ``bench_accuracy`` if it ran in this session, else
    trained here (TensorFlow, this process) on the same data, seeds and epochs."""
    from bench import bench_accuracy, convergence

    if task.name in bench_accuracy._baseline_accuracy:
        return bench_accuracy._baseline_accuracy[task.name]
    runs = [convergence.train("keras_fit", task, data, seed, epochs) for seed in seeds]
    accuracy = float(np.mean([r["curves"]["test_accuracy"][-1] for r in runs]))
    bench_accuracy._baseline_accuracy[task.name] = accuracy
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
