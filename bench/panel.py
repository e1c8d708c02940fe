"""Panels: every step benchmark that is compared with others is measured interleaved with
them, in one process (the scheduler and the statistics: ``bench/blocks.py``). Imports
TensorFlow.

A panel is a comparison group: a task's step benchmarks at its batch size (``test_step``,
``test_precision``, ``test_steps_per_call``, ``test_micro_batches`` and the JAX twins'
``test_jax_step``: the step table, the knob table and the backend table), or one point of the
batch-size sweep (``test_sweep``, ``sweep-<task>-b<batch>``). When the first benchmark of a
panel runs, every selected benchmark of that panel (after ``-k`` and the profile's skips) is
built and warmed up, then timed in blocks; each benchmark's test then records its own rounds
as its pytest-benchmark stats and its ratios, with intervals, in ``extra_info``. A member that
fails to build or retraces fails (or skips) its own test, not the panel.

Timing within a member follows ``bench/harness.py``: the first call alone is ``compile_s``,
warm-up, K calls per round for the profile's round length, one untimed round, and each timed
round ends with a host sync. A JAX member is a trainer in the JAX worker process
(``bench/jax_worker.py``): its round is a request, timed inside the worker.
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bench.blocks import PanelResult, baseline_of, ratio_fields, run_blocks
from bench.harness import (
    Profile,
    RetraceError,
    check_retrace,
    choose_steps_per_round,
    count_graph_ops,
    device_name,
    first_call_and_warm_up,
    fixed_batch,
    measure_fit,
    peak_memory_mb,
    reset_peak_memory,
    steps_per_call,
    sync,
)
from bench.steal import STEAL_LIMIT

PANEL_WORKER = Path(__file__).resolve().parent / "panel_worker.py"


@dataclass(frozen=True)
class Spec:
    """One benchmark of a panel, as its test would run it."""

    name: str  # the pytest item's name: test_step[keras_fit-mlp]
    panel: str  # the panel id: the task's name, or sweep-<task>-b<batch>
    kind: str  # the panel's kind: "step" or "sweep" (round counts and time cap)
    implementation: str
    task_name: str
    batch_size: int
    profile: Profile  # warm-up and round length
    precision: str = "float32"
    steps_per_call: int | None = None  # an override of a multi-step implementation's N
    micro_batches: int | None = None  # an override of a micro-batch implementation's M
    backend: str = "tensorflow"
    # The members this one is compared with in the knob and backend tables (Spec.key form).
    twins: tuple[tuple, ...] = ()

    @property
    def key(self) -> tuple:
        return (
            self.backend,
            self.implementation,
            self.precision,
            self.steps_per_call,
            self.micro_batches,
        )


def spec_to_json(spec: Spec) -> dict:
    """``spec`` as JSON for the panel worker: the profile by name."""
    out = dict(spec.__dict__)
    out["profile"] = spec.profile.name
    out["twins"] = [list(t) for t in spec.twins]
    return out


def spec_from_json(data: dict) -> Spec:
    from bench.harness import PROFILES

    return Spec(
        **{
            **data,
            "profile": PROFILES[data["profile"]],
            "twins": tuple(tuple(t) for t in data["twins"]),
        }
    )


def twin_key(implementation: str | None, backend: str = "tensorflow") -> tuple | None:
    """The key of ``implementation``'s plain float32 benchmark at the task's batch size."""
    return None if implementation is None else (backend, implementation, "float32", None, None)


# Test function name -> (item name, callspec params, profile, config) -> Spec; registered by
# the benchmark modules. A builder skips (pytest.skip) what the profile or the task excludes.
BUILDERS: dict[str, Callable[..., Spec]] = {}


def register(test_name: str, builder: Callable[..., Spec]) -> None:
    BUILDERS[test_name] = builder


def spec_of(item: pytest.Item, profile: Profile) -> Spec | None:
    """The panel member a collected item would measure; None if it is no panel member or
    its builder skips it."""
    builder = BUILDERS.get(getattr(item, "originalname", None) or "")
    callspec = getattr(item, "callspec", None)
    if builder is None or callspec is None:
        return None
    try:
        return builder(item.name, dict(callspec.params), profile, item.config)
    except pytest.skip.Exception:
        return None


# --- members -----------------------------------------------------------------------------------


def resident_mb() -> float:
    """Memory in use now: the GPU allocator's current bytes, or the process's resident set."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class TFMember:
    """A TensorFlow trainer built from the registry and the task's seeded initial weights, on
    a fixed batch on the device, compiled and warmed up (the steps of
    ``harness.measure_steps`` before its timed rounds)."""

    def __init__(self, spec: Spec, dataset, panel_start_mb: float):
        import implementations
        from bench.tasks import get_task, initial_weights

        self.spec, self.name = spec, spec.name
        self.task = get_task(spec.task_name)
        self.dataset = dataset
        options: dict = {"precision": spec.precision}
        if spec.steps_per_call is not None:
            options["steps_per_call"] = spec.steps_per_call
        if spec.micro_batches is not None:
            options["micro_batches"] = spec.micro_batches
        before_mb = resident_mb()
        reset_peak_memory()
        factory = implementations.get(spec.implementation)
        self.trainer = factory(self.task, initial_weights(self.task), **options)
        self.n = steps_per_call(self.trainer)
        self.x, self.y = fixed_batch(self.task, spec.batch_size, dataset, self.n)
        warmup_calls = math.ceil(spec.profile.warmup_steps / self.n)
        self.compile_s = first_call_and_warm_up(self._call, warmup_calls)
        self.k = choose_steps_per_round(self._call, spec.profile.round_seconds)
        self.run_round()  # one untimed round at the round's own length
        peak, self.peak_kind = peak_memory_mb()
        # As if built alone: the members built before it are resident, not its own.
        self.peak_mb = peak - max(0.0, before_mb - panel_start_mb)
        self.traces_before = self.trainer.traces()

    def _call(self):
        return self.trainer.step(self.x, self.y)

    def run_round(self) -> float:
        t0 = time.perf_counter()
        for _ in range(self.k):
            loss = self._call()
        sync(loss)  # the device has finished every step before the clock stops
        return (time.perf_counter() - t0) / (self.k * self.n)

    def finish(self) -> dict:
        """After the blocks: the retrace check, what ``fit()`` adds, and the recorded fields."""
        import implementations
        from bench.tasks import train_flops_per_sample

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
        }
        return info

    def close(self) -> None:
        self.trainer = self.x = self.y = None


class JaxMember:
    """A trainer in the JAX worker (``bench/jax_worker.py``), set up there as ``harness``
    does it; a round is one request, timed inside the worker (no pipe in the figure)."""

    def __init__(self, spec: Spec, dataset, worker, hello: dict, tmp: Path):
        from bench import jax_client

        self.spec, self.name = spec, spec.name
        self.worker, self.hello, self.dataset = worker, hello, dataset
        self.bench_id = spec.name
        n = spec.steps_per_call or (
            _jax_steps_per_call() if spec.implementation in _jax_multi_step() else 1
        )
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
        from bench import jax_client
        from bench.bench_jax import jax_step_info

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


class RemoteMember:
    """A ``TFMember`` built in a panel worker process (``bench/panel_worker.py``)."""

    def __init__(self, spec: Spec, worker, index: int):
        self.spec, self.name, self.worker = spec, spec.name, worker
        self.id = f"{index}:{spec.name}"
        self.worker.request(
            {"op": "build", "id": self.id, "spec": spec_to_json(spec)}, BUILD_TIMEOUT_S
        )

    def run_round(self) -> float:
        return self.worker.request({"op": "round", "id": self.id}, ROUND_TIMEOUT_S)["seconds"]

    def finish(self) -> dict:
        return self.worker.request({"op": "finish", "id": self.id}, BUILD_TIMEOUT_S)["info"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.worker.request({"op": "drop", "id": self.id}, 60)


BUILD_TIMEOUT_S = 900.0  # a user's conv net compiled by XLA's loop on 2 busy cores
ROUND_TIMEOUT_S = 600.0


class Spread:
    """One member measured in several processes: its round in block b runs in process
    b mod P (every member gets exactly one round per block, so its calls count the blocks).
    Its fields come from the first (this) process; every copy is checked for retraces."""

    def __init__(self, instances: list):
        self.instances = instances
        self.name, self.spec = instances[0].name, instances[0].spec
        self.calls = 0

    def run_round(self) -> float:
        instance = self.instances[self.calls % len(self.instances)]
        self.calls += 1
        return instance.run_round()

    def finish(self) -> dict:
        infos = [instance.finish() for instance in self.instances]
        return infos[0]

    def close(self) -> None:
        for instance in self.instances:
            instance.close()


def _jax_multi_step() -> dict:
    from implementations import jax_backend

    return jax_backend.MULTI_STEP


def _jax_steps_per_call() -> int:
    from implementations import jax_backend

    return jax_backend.STEPS_PER_CALL


# --- one panel, measured ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one member's test records: its kept rounds (seconds per step) and extra_info, or
    the error (or skip) its build or check raised."""

    seconds: list[float] = field(default_factory=list)
    steps_per_round: int = 1
    info: dict = field(default_factory=dict)
    error: BaseException | None = None


def panel_limits(spec: Spec) -> dict:
    p = spec.profile
    if spec.kind == "sweep":
        return {
            "min_blocks": p.sweep_rounds,
            "max_blocks": p.sweep_panel_max_blocks,
            "time_cap_s": p.sweep_panel_cap_s,
        }
    return {
        "min_blocks": p.rounds,
        "max_blocks": p.panel_max_blocks,
        "time_cap_s": p.panel_cap_s,
    }


def targets_of(specs: list[Spec], baseline: Spec | None) -> list[tuple[str, str]]:
    """The ratios a panel samples until they are known to its target: every member against
    the baseline, and against each twin it has in the panel."""
    by_key = {s.key: s.name for s in specs}
    pairs = []
    for s in specs:
        if baseline is not None and s.name != baseline.name:
            pairs.append((baseline.name, s.name))
        for key in s.twins:
            if key in by_key and by_key[key] != s.name:
                pairs.append((by_key[key], s.name))
    return pairs


def ratio_info(result: PanelResult, specs: list[Spec], baseline: Spec | None) -> dict[str, dict]:
    """Per member: the speedup over the baseline with its interval, and the ratio against
    every other member (``paired``), all from the same blocks."""
    out = {}
    for s in specs:
        paired = {}
        for other in specs:
            if other.name != s.name:
                fields = ratio_fields(result.ratio(other.name, s.name))
                paired[other.name] = {"implementation": other.implementation, **fields}
        info: dict = {"paired": paired}
        if baseline is None:
            info.update(speedup_vs=None, speedup_vs_name=None)
            info.update(speedup=None, speedup_low=None, speedup_high=None)
        elif baseline.name == s.name:
            info.update(speedup_vs=s.implementation, speedup_vs_name=s.name)
            info.update(speedup=1.0, speedup_low=1.0, speedup_high=1.0)
        else:
            r = paired[baseline.name]
            info.update(speedup_vs=baseline.implementation, speedup_vs_name=baseline.name)
            info.update(speedup=r["speedup"], speedup_low=r["low"], speedup_high=r["high"])
        out[s.name] = info
    return out


def choose_baseline(specs: list[Spec]) -> Spec | None:
    """keras_fit's plain float32 benchmark if the panel has it, else its first member."""
    import implementations

    order = list(implementations.REGISTRY)
    plain = [s for s in specs if s.key == twin_key(s.implementation)] or list(specs)
    plain.sort(key=lambda s: order.index(s.implementation) if s.implementation in order else 99)
    i = baseline_of([s.implementation for s in plain])
    return None if i is None else plain[i]


class Panels:
    """The session's panels: each measured once, when its first benchmark runs."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Outcome]] = {}
        self.stack = contextlib.ExitStack()
        self._jax: tuple | None = None
        self._tmp: Path | None = None
        self._workers: list = []
        self.tasks: list[str] | None = None  # the session's --tasks values, for the workers

    def close(self) -> None:
        self.stack.close()
        self._jax = None
        self._workers = []

    def jax_worker(self) -> tuple:
        """The session's JAX worker and its hello (started on first use)."""
        if self._jax is None:
            from bench import jax_client

            self._jax = jax_client.start(self.stack)
        return self._jax

    def panel_workers(self, count: int, tasks: list[str] | None) -> list:
        """``count`` panel worker processes for this tree (started on first use, kept for the
        session, killed when it ends)."""
        from bench import jax_client
        from bench.ab_sides import Side, Worker, worker_env

        while len(self._workers) < count:
            side = Side("panel", "working tree", "working tree", jax_client.ROOT, sys.executable)
            worker = Worker(side, len(self._workers) + 1, worker_env(), script=PANEL_WORKER)
            self.stack.callback(worker.close)
            worker.request({"op": "hello", "tasks": tasks or []}, jax_client.HELLO_TIMEOUT_S)
            self._workers.append(worker)
        return self._workers[:count]

    def tmp(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        return self._tmp

    def outcome(self, request: pytest.FixtureRequest, spec: Spec, task_data) -> Outcome:
        if self.tasks is None:
            from bench.user_tasks import specs_from

            self.tasks = specs_from(request.config.getoption("--tasks", default=None)) or []
        if spec.panel not in self.outcomes:
            profile = spec.profile
            members = [s for s in (spec_of(i, profile) for i in request.session.items) if s]
            members = [s for s in members if s.panel == spec.panel]
            if spec.name not in {s.name for s in members}:
                members.append(spec)
            self.outcomes[spec.panel] = self.measure(members, task_data)
        found = self.outcomes[spec.panel].pop(spec.name, None)
        if found is None:  # not gathered (run twice?): measure it alone
            found = self.measure([spec], task_data)[spec.name]
        return found

    def measure(self, specs: list[Spec], task_data) -> dict[str, Outcome]:
        """Build, warm up and time ``specs`` interleaved; each member's outcome."""
        from bench.tasks import get_task

        outcomes = {s.name: Outcome() for s in specs}
        built, live = [], []
        start_mb = resident_mb()
        try:
            for s in specs:
                try:
                    dataset = task_data(get_task(s.task_name))
                    if s.backend == "jax":
                        worker, hello = self.jax_worker()
                        member = JaxMember(s, dataset, worker, hello, self.tmp())
                    else:
                        member = TFMember(s, dataset, start_mb)
                        processes = s.profile.panel_processes
                        if processes > 1:
                            workers = self.panel_workers(processes - 1, self.tasks)
                            remote = [RemoteMember(s, w, i) for i, w in enumerate(workers)]
                            member = Spread([member, *remote])
                except (Exception, pytest.skip.Exception) as e:
                    outcomes[s.name].error = e
                    continue
                built.append(member)
                live.append(s)
            baseline = choose_baseline(live)
            limits = panel_limits(specs[0])
            result = run_blocks(
                built,
                targets_of(live, baseline),
                target_pct=specs[0].profile.panel_target_pct,
                **limits,
            )
            ratios = ratio_info(result, live, baseline)
            for member, s in zip(built, live):
                out = outcomes[s.name]
                try:
                    info = member.finish()
                except Exception as e:
                    out.error = e
                    continue
                out.info = {**info, **panel_fields(result, s.name), **ratios[s.name]}
                out.info["panel_info"]["processes"] = len(getattr(member, "instances", [0]))
                out.seconds = self_kept(result, s.name)
                out.steps_per_round = int(info["steps_per_round"])
        finally:
            for member in built:
                member.close()
            built.clear()
            gc.collect()
        return outcomes


def self_kept(result: PanelResult, name: str) -> list[float]:
    rounds = result.rounds[name]
    return [rounds.seconds[i] for i in rounds.quiet(STEAL_LIMIT)]


def panel_fields(result: PanelResult, name: str) -> dict:
    """The extra_info fields that say how a member's rounds were taken (RESULTS_SCHEMA.md)."""
    rounds = result.rounds[name]
    kept = rounds.quiet(STEAL_LIMIT)
    measured = all(s is not None for s in rounds.steal)
    return {
        "panel_info": result.info(),
        "rounds": len(kept),
        "rounds_run": len(rounds.seconds),
        "round_steal_pct": [None if s is None else 100 * s for s in rounds.steal],
        "steal_pct": 100 * float(np.mean([rounds.steal[i] for i in kept])) if measured else None,
        "block_of_round": [rounds.block[i] for i in kept],
    }


def record(benchmark, spec: Spec, outcome: Outcome, calibration_gflops: float | None) -> dict:
    """Make ``outcome`` this test's result: its rounds become the pytest-benchmark stats
    (seconds per step, ``iterations`` = steps per round), its fields ``extra_info``."""
    if outcome.error is not None:
        raise outcome.error
    seconds = outcome.seconds
    benchmark.pedantic(lambda: None, rounds=len(seconds), iterations=1, warmup_rounds=0)
    if benchmark.stats is not None:
        benchmark.stats.stats.data[:] = seconds
        benchmark.stats.iterations = outcome.steps_per_round
    median = float(np.median(seconds))
    info = dict(outcome.info)
    flops = info.get("flops_per_step") or 0
    gflops = flops / median / 1e9
    info.update(
        panel=spec.panel,
        samples_per_s=spec.batch_size / median,
        gflops_per_s=gflops,
        pct_of_matmul_peak=100 * gflops / calibration_gflops if calibration_gflops else None,
    )
    benchmark.extra_info.update(info)
    return info


PANELS = Panels()
