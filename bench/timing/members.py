"""A panel's members (``bench/timing/panel.py``): a TensorFlow trainer in this process, and
a JAX trainer in the JAX worker. Each is built, compiled and warmed up when made;
``run_round()`` times one round, ``finish()`` checks for retraces and returns the member's
fields. Imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import implementations
from bench.jax import client as jax_client
from bench.jax.client import backend_fields
from bench.tasks import TASKS, get_task, initial_weights, train_flops_per_sample
from bench.timing.harness import (
    RetraceError,
    check_retrace,
    choose_steps_per_round,
    count_graph_ops,
    first_call_and_warm_up,
    fixed_batch,
    measure_fit,
    steps_per_call,
)
from bench.timing.machine import device_name, peak_memory_mb, reset_peak_memory, sync
from bench.timing.spec import Spec
from implementations import jax_backend


def resident_mb() -> float:
    """Memory in use now: the GPU allocator's current bytes, or the process's resident set."""
    if tf.config.list_logical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


MIN_CAPPED_ROUNDS = 3  # a capped member still has a median and a spread


def capped_rounds(spec: Spec, call_s: float, warmup_calls: int, n: int) -> tuple:
    """(at most this many rounds, why) for a member whose calls would take its timing past
    the profile's ``member_budget_s`` (``Profile``); (None, None) for every other. The
    uncapped path costs about ``warmup_calls + 3`` calls before the blocks (warm-up, the
    choice of round length) and at least one call a round for ``rounds`` blocks plus one."""
    profile = spec.profile
    blocks = profile.sweep_rounds if spec.kind == "sweep" else profile.rounds
    if call_s * (warmup_calls + 3 + blocks + 1) <= profile.member_budget_s:
        return None, None
    rounds = max(MIN_CAPPED_ROUNDS, int(profile.member_budget_s // call_s))
    per_step_ms = 1000 * call_s / n
    reason = (
        f"{spec.implementation}: {per_step_ms:.0f} ms/step ({n} per call); capped at {rounds} "
        f"rounds of one call, to keep its timing within {profile.member_budget_s:g} s"
    )
    return rounds, {"max_rounds": rounds, "call_s": call_s, "reason": reason}


class TFMember:
    """A TensorFlow trainer built from the registry and the task's seeded initial weights, on
    a fixed batch on the device, compiled and warmed up (``bench/timing/harness.py``,
    steps 1-4)."""

    def __init__(self, spec: Spec, dataset, panel_start_mb: float):
        self.spec, self.name = spec, spec.name
        self.task = get_task(spec.task_name)
        self.dataset = dataset
        options: dict = {"precision": spec.precision}
        if spec.steps_per_call is not None:
            options["steps_per_call"] = spec.steps_per_call
        if spec.micro_batches is not None:
            options["micro_batches"] = spec.micro_batches
        # Earlier members' tensors waiting for the cycle collector would count in the GPU
        # allocator's peak. Not on a CPU: 0.6 s a member, and the memory freed stays resident.
        if device_name() != "/CPU:0":
            gc.collect()
        before_mb = resident_mb()
        reset_peak_memory()
        factory = implementations.get(spec.implementation)
        self.trainer = factory(self.task, initial_weights(self.task), **options)
        self.n = steps_per_call(self.trainer)
        self.x, self.y = fixed_batch(self.task, spec.batch_size, dataset, self.n)
        warmup_calls = math.ceil(spec.profile.warmup_steps / self.n)
        self.compile_s = first_call_and_warm_up(self._call, 0)
        call_s = self.run_call()  # the first warm-up call, timed: is this member's call slow?
        self.max_rounds, self.round_cap = capped_rounds(spec, call_s, warmup_calls, self.n)
        if self.max_rounds is None:
            first_call_and_warm_up(self._call, warmup_calls - 1)
            self.k = choose_steps_per_round(self._call, spec.profile.round_seconds)
            self.run_round()  # one untimed round at the round's own length
        else:
            self.k = 1
            self.round_cap["compile_s"] = self.compile_s
        peak, self.peak_kind = peak_memory_mb()
        # As if built alone: the members built before it are resident, not its own.
        self.peak_mb = peak - max(0.0, before_mb - panel_start_mb)
        self.traces_before = self.trainer.traces()

    def _call(self):
        return self.trainer.step(self.x, self.y)

    def run_call(self) -> float:
        t0 = time.perf_counter()
        sync(self._call())
        return time.perf_counter() - t0

    def run_round(self) -> float:
        t0 = time.perf_counter()
        for _ in range(self.k):
            loss = self._call()
        sync(loss)  # the device has finished every step before the clock stops
        return (time.perf_counter() - t0) / (self.k * self.n)

    def finish(self) -> dict:
        """After the blocks: the retrace check, what ``fit()`` adds, and the recorded fields."""
        spec = self.spec
        check_retrace(self.trainer, self.traces_before, f"{spec.implementation}/{self.task.name}")
        info = {
            "kind": "step",
            "implementation": spec.implementation,
            "task": self.task.name,
            "dataset": self.dataset.name,
            "seed": self.task.seed,
            "device": device_name(),
            "batch_size": spec.batch_size,
            "steps_per_round": self.k * self.n,
            "calls_per_round": self.k,
            "steps_per_call": self.n,
            "compile_s": self.compile_s,
            **measure_fit(self.trainer, self.x, self.y, self.k),
            "flops_per_step": train_flops_per_sample(self.task) * spec.batch_size,
            "peak_memory_mb": self.peak_mb,
            "peak_memory_kind": self.peak_kind,
            "micro_batches": 1,
            **self.trainer.resolved(),
            "one_step_twin": implementations.MULTI_STEP.get(spec.implementation),
            "micro_batch_twin": implementations.MICRO_BATCH.get(spec.implementation),
            "graph_ops": count_graph_ops(self.trainer, self.x, self.y),
            "traces": self.trainer.traces(),
            "round_cap": self.round_cap,
        }
        return info

    def close(self) -> None:
        self.trainer = self.x = self.y = None


class JaxMember:
    """A trainer in the JAX worker (``bench/jax/worker.py``), set up there as ``harness``
    does it; a round is one request, timed inside the worker (no pipe in the figure)."""

    def __init__(self, spec: Spec, dataset, worker, hello: dict, tmp: Path):
        self.spec, self.name = spec, spec.name
        self.worker, self.hello, self.dataset = worker, hello, dataset
        self.bench_id = spec.name
        multi = spec.implementation in jax_backend.MULTI_STEP
        n = spec.steps_per_call or (jax_backend.STEPS_PER_CALL if multi else 1)
        b = spec.batch_size
        idx = np.arange(n * b) % len(dataset.x_train)  # harness.fixed_batch's batches
        path = tmp / f"{abs(hash(spec.name))}.npz"
        batch = jax_client.write_npz(path, x=dataset.x_train[idx], y=dataset.y_train[idx])
        self.setup = worker.request(
            {
                "op": "setup",
                "id": self.bench_id,
                "impl": spec.implementation,
                "task": spec.task_name,
                "batch": batch,
                "batch_size": b,
                "warmup": spec.profile.warmup_steps,
                "round_seconds": spec.profile.round_seconds,
            },
            jax_client.SETUP_TIMEOUT_S,
        )
        self.k, self.n = self.setup["calls_per_round"], self.setup["steps_per_call"]
        self.timeout = jax_client.round_timeout(self.setup["per_step_s"], self.k)
        self.retraced = 0

    def run_round(self) -> float:
        answer = self.worker.request(
            {"op": "round", "id": self.bench_id, "k": self.k}, self.timeout
        )
        self.retraced += answer["retraced"]
        return answer["round_seconds"] / (self.k * self.n)

    def finish(self) -> dict:
        if self.retraced:
            raise RetraceError(
                f"{self.bench_id}: traced {self.retraced} more time(s) during the timed rounds"
            )
        fit = self.worker.request(
            {"op": "fit", "id": self.bench_id, "k": self.k}, jax_client.SETUP_TIMEOUT_S
        )
        described = self.worker.request({"op": "info", "id": self.bench_id}, 60)
        return jax_step_info(self.spec, self.dataset, self.hello, self.setup, fit, described)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.worker.request({"op": "drop", "id": self.bench_id}, 60)


def jax_step_info(
    spec: Spec, dataset, hello: dict, setup: dict, fit: dict, described: dict
) -> dict:
    """A JAX panel member's extra_info (``bench.timing.panel.Spec`` ``spec``), in the
    TensorFlow step benchmarks' fields (docs/results-schema.md)."""
    task = TASKS[spec.task_name]
    fields = backend_fields(hello)
    return {
        "kind": "step",
        "implementation": spec.implementation,
        "task": spec.task_name,
        "dataset": dataset.name,
        "seed": task.seed,
        **fields,
        "batch_size": spec.batch_size,
        "steps_per_round": setup["calls_per_round"] * setup["steps_per_call"],
        "calls_per_round": setup["calls_per_round"],
        "steps_per_call": setup["steps_per_call"],
        "compile_s": setup["compile_s"],
        "cold_start_s": fields["import_s"] + setup["compile_s"],
        "fit_overhead_s": fit["fit_overhead_s"],
        "fit_s_per_step": fit["fit_s_per_step"],
        "flops_per_step": train_flops_per_sample(task) * spec.batch_size,
        "peak_memory_mb": described["peak_memory_mb"],
        "peak_memory_kind": described["peak_memory_kind"],
        **described["resolved"],
        "precision": "float32",
        "compute_dtype": "float32",
        "variable_dtype": "float32",
        "loss_scale": False,
        "one_step_twin": jax_backend.MULTI_STEP.get(spec.implementation),
        "graph_ops": None,
        "traces": described["traces"],
        "tf_twins": list(jax_backend.TF_TWINS[spec.implementation]),
    }
