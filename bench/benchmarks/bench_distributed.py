"""Distributed step throughput: strategy x replicas x implementation x task.

Run: ``pytest --benchmark-only bench/benchmarks/bench_distributed.py`` (``-k mirrored``,
``--profile full`` for more replicas, tasks and the XLA variants). Library code and the
method: ``bench/distributed/loop.py``; one worker process: ``bench/distributed/worker.py``.

Why subprocesses: on a CPU-only host a MirroredStrategy needs the CPU split into logical
devices before TensorFlow initialises, and this pytest process initialised TensorFlow long
ago; every MultiWorkerMirroredStrategy worker is a process anyway. So the timing runs in
``bench.distributed.worker``, by ``bench/timing/harness.py``'s method (first call as ``compile_s``,
warm-up, K steps + host sync per round), and reports each round's duration. The test
records those durations as this benchmark's rounds: it creates the result the way
``benchmark.pedantic`` does (pytest-benchmark's ``_make_stats``, its one private call here),
adds one data point per measured round, and divides by K with ``bench.timing.harness.to_per_step``.
No timing is invented or replayed: ``stats`` are exactly the worker's rounds, per step. The
subprocess's start-up, TensorFlow import and compilation are not in them.

One worker launch serves every selected benchmark of a (strategy, task) -- and, for
multi-worker, cluster size -- so the quick profile makes three launches: one MirroredStrategy
process timing 1 and 2 replicas (the CPU split into 2 logical devices, of which the
one-replica strategy uses the first; on a GPU host, the first N GPUs), and loopback clusters
of 1 and 2 workers.
Scaling efficiency = samples/s on N replicas / (N x samples/s on one replica of the same
strategy, implementation and per-replica batch); the one-replica run is made even when its
own benchmark is not selected (null where that run failed). An implementation that fails in
the worker fails its own benchmark with the worker's error; the launch's other results stand.
Multi-worker clusters all-reduce with NCCL on GPUs and RING otherwise (``collective``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pytest
import tensorflow as tf

from bench.distributed.launch import (
    IMPLEMENTATIONS,
    STRATEGIES,
    WorkerError,
    run_bench,
    unsupported_reason,
)
from bench.tasks import TASKS, train_flops_per_sample
from bench.tasks.user import selected_tasks
from bench.timing.harness import to_per_step
from bench.timing.panel import PANELS, register_entry
from bench.timing.plan import RUN_GUESS_S, Entry


@dataclass(frozen=True)
class Shape:
    """What a profile runs, per strategy."""

    tasks: tuple[str, ...]
    impls: dict[str, tuple[str, ...]]
    replicas: dict[str, tuple[int, ...]]  # multiworker: workers started on this host


SHAPES = {
    # keras_fit runs on one worker only (see KERAS_MULTI_WORKER_REASON), so the quick profile
    # leaves it out of multi-worker: its one-worker row would have nothing to scale to.
    "quick": Shape(
        ("mlp",),
        {"mirrored": ("keras_fit", "custom_graph"), "multiworker": ("custom_graph",)},
        {"mirrored": (1, 2), "multiworker": (1, 2)},
    ),
    # smoke: one process, to check the machinery (its numbers mean nothing).
    "smoke": Shape(("mlp",), {"mirrored": ("keras_fit", "custom_graph")}, {"mirrored": (1, 2)}),
    "full": Shape(
        ("mlp", "cnn"),
        {"mirrored": IMPLEMENTATIONS, "multiworker": IMPLEMENTATIONS},
        {"mirrored": (1, 2, 4, 8), "multiworker": (1, 2, 4)},
    ),
}
ALL_REPLICAS = {"mirrored": (1, 2, 4, 8), "multiworker": (1, 2, 4)}

CASES = [
    pytest.param(strategy, replicas, impl, task, id=f"{strategy}-r{replicas}-{impl}-{task}")
    for strategy in STRATEGIES
    for task in ("mlp", "cnn")
    for replicas in ALL_REPLICAS[strategy]
    for impl in IMPLEMENTATIONS
]


def gpu_count() -> int:
    return len(tf.config.list_physical_devices("GPU"))


def skip_reason(profile, strategy: str, replicas: int, impl: str, task: str) -> str | None:
    if task not in selected_tasks():
        return f"{task} is not among the selected tasks (--tasks); user tasks do not run here"
    shape = SHAPES.get(profile.name)
    if shape is None:
        return f"no distributed benchmarks defined for the {profile.name} profile (SHAPES)"
    if (
        task not in shape.tasks
        or impl not in shape.impls.get(strategy, ())
        or replicas not in shape.replicas.get(strategy, ())
    ):
        return f"not in the {profile.name} profile (use --profile full)"
    return unsupported_reason(strategy, impl, replicas, gpu_count())


def launch_key(strategy: str, task: str, replicas: int) -> str:
    """The plan's key of the launch that measures ``replicas`` (one per strategy and task,
    one per cluster size for multiworker)."""
    size = f"-r{replicas}" if strategy == "multiworker" else ""
    return f"distributed-{strategy}-{task}{size}"


def launch_entry(name: str, params: dict, profile) -> Entry | None:
    """A distributed launch as an entry of the run's plan: optional."""
    strategy, replicas = params["strategy"], params["replicas"]
    if skip_reason(profile, strategy, replicas, params["impl"], params["task_name"]):
        return None
    key = launch_key(strategy, params["task_name"], replicas)
    return Entry(key, "distributed", RUN_GUESS_S, optional=True, priority=1)


@pytest.fixture(scope="session")
def dist_runs(request, profile):
    """``get(strategy, task, replicas)``: worker 0's run for that replica count, from one
    launch per (strategy, task[, cluster size]) covering every selected benchmark."""
    cache: dict = {}

    def selected(strategy: str, task: str) -> list[tuple[int, str]]:
        out = []
        for item in request.session.items:
            params = getattr(getattr(item, "callspec", None), "params", {})
            if getattr(item, "originalname", None) != "test_distributed":
                continue
            if (params.get("strategy"), params.get("task_name")) != (strategy, task):
                continue
            if skip_reason(profile, strategy, params["replicas"], params["impl"], task) is None:
                out.append((params["replicas"], params["impl"]))
        return out

    def get(strategy: str, task: str, replicas: int) -> dict:
        key = (strategy, task, replicas if strategy == "multiworker" else None)
        if isinstance(cache.get(key), Exception):  # that launch failed: do not retry it
            raise cache[key]
        if key not in cache:
            plan = PANELS.plan
            late = plan.start(launch_key(strategy, task, replicas)) if plan else None
            if late:
                cache[key] = late
        if isinstance(cache.get(key), str):  # skipped for the run budget: so are its mates
            pytest.skip(cache[key])
        if key not in cache:
            wanted = selected(strategy, task)
            # Every selected implementation, also in the one-replica (baseline) launch; the
            # worker itself skips those a replica count cannot run.
            impls = sorted({i for _, i in wanted}, key=IMPLEMENTATIONS.index)
            if strategy == "multiworker":
                counts = [replicas]
            else:  # one process for every replica count, and the one-replica baseline
                counts = sorted({r for r, _ in wanted} | {replicas, 1})
            try:
                out = run_bench(
                    strategy,
                    task,
                    counts,
                    impls,
                    rounds=profile.sweep_rounds,
                    warmup_steps=profile.warmup_steps,
                    round_seconds=profile.round_seconds,
                )
            except WorkerError as e:
                cache[key] = e
                raise
            for run in out["runs"]:
                run.update(worker_info={k: out[k] for k in ("workers", "tensorflow")})
                run_key = (strategy, task, run["replicas"] if strategy == "multiworker" else None)
                cache.setdefault(run_key, {})[run["replicas"]] = run
        return cache[key][replicas]

    return get


def samples_per_s(result: dict, global_batch: int) -> float:
    per_step = [r / result["steps_per_round"] for r in result["round_s"]]
    return global_batch / statistics.median(per_step)


@pytest.mark.integration
@pytest.mark.parametrize("strategy, replicas, impl, task_name", CASES)
def test_distributed(
    benchmark, strategy, replicas, impl, task_name, profile, dist_runs, matmul_calibration
):
    reason = skip_reason(profile, strategy, replicas, impl, task_name)
    if reason:
        pytest.skip(reason)
    benchmark.group = f"distributed-{task_name}"
    run = dist_runs(strategy, task_name, replicas)
    result = run["results"][impl]
    if "skip" in result:
        pytest.skip(result["skip"])
    if "error" in result:  # this implementation failed in the worker; the launch went on
        pytest.fail(f"{impl} on {replicas} replica(s), {strategy}: {result['error']}")
    k = result["steps_per_round"]

    # The worker's measured rounds become this benchmark's rounds (module docstring).
    if not benchmark.disabled:
        benchmark._make_stats(1)
        benchmark._mode = "bench.distributed.worker rounds"
        for seconds in result["round_s"]:
            benchmark.stats.update(seconds)
    per_step = statistics.median(to_per_step(benchmark, k))

    base = dist_runs(strategy, task_name, 1)
    benchmark.extra_info.update(
        distributed_info(run, base, (strategy, task_name, impl), per_step, matmul_calibration)
    )


def distributed_info(
    run: dict, base: dict, case: tuple[str, str, str], per_step: float, calibration: dict
) -> dict:
    """A distributed benchmark's extra_info (docs/results-schema.md), from its launch's
    ``run`` and the one-replica ``base`` launch; ``case`` is (strategy, task, impl)."""
    strategy, task_name, impl = case
    result = run["results"][impl]
    global_batch = run["global_batch"]
    base_result = base["results"].get(impl, {})
    base_samples = (
        samples_per_s(base_result, base["global_batch"]) if "round_s" in base_result else None
    )
    throughput = global_batch / per_step
    task = TASKS[task_name]
    flops = train_flops_per_sample(task) * global_batch
    gflops = flops / per_step / 1e9
    peak = calibration["calibration_gflops"]
    return {
        "kind": "distributed",
        "implementation": impl,
        "task": task_name,
        "dataset": run["dataset"],
        "seed": task.seed,
        "strategy": strategy,
        "strategy_class": run["strategy_class"],
        "collective": run.get("collective"),
        "replicas": run["replicas"],
        "workers": run["worker_info"]["workers"],
        "devices": run["devices"],
        "device": run["devices"][0],
        "per_replica_batch": run["per_replica_batch"],
        "global_batch": global_batch,
        "batch_size": global_batch,
        "steps_per_round": result["steps_per_round"],
        "rounds": len(result["round_s"]),
        "samples_per_s": throughput,
        "samples_per_s_one_replica": base_samples,
        "scaling_efficiency": (
            throughput / (run["replicas"] * base_samples) if base_samples else None
        ),
        "compile_s": result["compile_s"],
        "fit_overhead_s": None,
        "flops_per_step": flops,
        "gflops_per_s": gflops,
        "pct_of_matmul_peak": 100 * gflops / peak if peak else None,
        "peak_memory_mb": result["peak_memory_mb"],
        "peak_memory_kind": result["peak_memory_kind"],
        "jit_compile": result["jit_compile"],
        "jit_compile_requested": result["jit_compile_requested"],
        "run_eagerly": result["run_eagerly"],
        "loop": result["loop"],
        "graph_ops": None,
        "traces": result["traces"],
    }


register_entry("test_distributed", launch_entry)
