"""Step-throughput benchmarks: every implementation x task, a batch-size sweep, a sweep of
the steps per call N of the multi-step implementations (``implementations.MULTI_STEP``), and
mixed precision (``test_precision``; every other benchmark runs in float32), and a sweep of
the micro-batches M of ``implementations.MICRO_BATCH`` (``test_micro_batches``).

Run: ``pytest --benchmark-only`` (add ``-k "xla and cnn"`` to select, ``--profile full`` for
the whole sweeps, ``--benchmark-json out.json --benchmark-save-data`` to keep results).
Timing method: ``bench/timing/harness.py``; results schema: ``docs/results-schema.md``. Every
figure is
per training step, also for implementations that run N steps per call.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import implementations
from bench.host import BF16_EMULATED, cpu_has_bf16
from bench.tasks import TASKS
from bench.tasks.user import selected_tasks
from bench.timing.blocks import run_blocks
from bench.timing.machine import device_name, gpu_compute_capability, sync
from bench.timing.members import TFMember, resident_mb
from bench.timing.panel import (
    PANELS,
    Outcome,
    panel_fields,
    panel_limits,
    record,
    register,
    register_entry,
    run_in_panel,
)
from bench.timing.plan import Entry
from bench.timing.profiles import PRECISION_IMPLEMENTATIONS
from bench.timing.spec import Spec, in_step_panel, twin_key

IMPLEMENTATIONS = list(implementations.REGISTRY)
# The built-in tasks, or those of --tasks FILE (bench/tasks/user.py), or both.
SELECTED = selected_tasks()
USER = [name for name in SELECTED if name not in TASKS]


def skip_cpu_knob_off_cpu(impl: str) -> None:
    """Micro-batches (``implementations.MICRO_BATCH``) are a CPU knob: skipped on a GPU."""
    if impl in implementations.MICRO_BATCH and device_name() != "/CPU:0":
        pytest.skip(
            f"{impl} is a CPU knob: micro-batches let XLA's CPU runtime share a small step's "
            "matmuls between cores; on a GPU one batch already fills the device"
        )


def step_spec(name: str, params: dict, profile, config) -> Spec:
    impl, task_name = params["impl"], params["task_name"]
    # A user's task gets every variant in every profile: it is what they came to measure.
    if (
        impl in implementations.MULTI_STEP
        and task_name in TASKS
        and task_name not in profile.multi_step_tasks
    ):
        pytest.skip(
            f"{impl} runs on {', '.join(profile.multi_step_tasks)} in the "
            f"{profile.name} profile (use --profile full)"
        )
    skip_cpu_knob_off_cpu(impl)
    twins = (
        twin_key(implementations.MULTI_STEP.get(impl)),
        twin_key(implementations.MICRO_BATCH.get(impl)),
    )
    return in_step_panel(name, impl, task_name, profile, twins=tuple(t for t in twins if t))


@pytest.mark.parametrize("task_name", SELECTED)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_step(benchmark, request, impl, task_name, profile, task_data, matmul_calibration):
    spec = step_spec(request.node.name, {"impl": impl, "task_name": task_name}, profile, None)
    run_in_panel(benchmark, request, spec, task_name, task_data, matmul_calibration)


SWEEP = [
    pytest.param(impl, task, batch, id=f"{impl}-{task}-b{batch}")
    for task in [t for t in ("mlp", "cnn") if t in SELECTED] + USER
    for batch in (32, 64, 128, 256, 512, 1024, 2048)
    for impl in IMPLEMENTATIONS
]


def sweep_spec(name: str, params: dict, profile, config) -> Spec:
    impl, task_name, batch = params["impl"], params["task_name"], params["batch"]
    if batch not in profile.sweep_batches or impl not in profile.sweep_implementations:
        pytest.skip(f"not in the {profile.name} profile's sweep (use --profile full)")
    return Spec(
        name=name,
        panel=f"sweep-{task_name}-b{batch}",
        kind="sweep",
        implementation=impl,
        task_name=task_name,
        batch_size=batch,
        profile=profile,
    )


@pytest.mark.parametrize("impl, task_name, batch", SWEEP)
def test_sweep(benchmark, request, impl, task_name, batch, profile, task_data, matmul_calibration):
    params = {"impl": impl, "task_name": task_name, "batch": batch}
    spec = sweep_spec(request.node.name, params, profile, None)
    run_in_panel(benchmark, request, spec, f"sweep-{task_name}", task_data, matmul_calibration)


PRECISION = [
    pytest.param(impl, task, precision, id=f"{impl}-{task}-{precision}")
    for precision in ("mixed_bfloat16", "mixed_float16")
    for task in [t for t in ("mlp", "cnn") if t in SELECTED] + USER
    for impl in PRECISION_IMPLEMENTATIONS
]


def chosen_precision_benchmarks(profile, cpu: bool) -> tuple[tuple[str, str, str], ...]:
    """The (implementation, task, precision) triples ``profile`` runs on this device."""
    if cpu:
        return profile.precision_benchmarks
    return profile.precision_benchmarks + profile.gpu_precision_benchmarks


def skip_bfloat16_without_hardware(precision: str) -> None:
    """bfloat16 on a GPU before Ampere (compute capability < 8.0): no bfloat16 tensor cores,
    so the figure would be of emulation, not of the knob."""
    cc = gpu_compute_capability()
    if precision == "mixed_bfloat16" and cc is not None and cc < (8, 0):
        pytest.skip(
            f"mixed_bfloat16 needs a GPU of compute capability 8.0 (Ampere) or later; this one "
            f"is {cc[0]}.{cc[1]}: TensorFlow would emulate it (mixed_float16 is this GPU's)"
        )


def precision_spec(name: str, params: dict, profile, config) -> Spec:
    impl, task_name, precision = params["impl"], params["task_name"], params["precision"]
    cpu = device_name() == "/CPU:0"
    if task_name in USER:  # a user's task: every precision benchmark, in the full profile
        if profile.name != "full":
            pytest.skip("a user task's precision benchmarks are in --profile full")
        if precision == "mixed_float16" and cpu:
            pytest.skip("mixed_float16 is meant for GPUs: a CPU may lack its kernels (run bf16)")
    elif (impl, task_name, precision) not in chosen_precision_benchmarks(profile, cpu):
        pytest.skip(f"not in the {profile.name} profile's precision benchmarks (--profile full)")
    if not cpu:
        skip_bfloat16_without_hardware(precision)
    if precision == "mixed_float16" and task_name == "cnn" and cpu:
        pytest.skip(
            "mixed_float16 is meant for GPUs: this CPU has no float16 convolution kernels "
            "(the CNN measured 280-400 ms/step in float16, 10-20x float32, on a 2-core EPYC)"
        )
    if precision == "mixed_bfloat16" and cpu and profile.name != "full" and not cpu_has_bf16():
        pytest.skip(BF16_EMULATED)
    return in_step_panel(
        name, impl, task_name, profile, precision=precision, twins=(twin_key(impl),)
    )


@pytest.mark.parametrize("impl, task_name, precision", PRECISION)
def test_precision(
    benchmark, request, impl, task_name, precision, profile, task_data, matmul_calibration
):
    """Seconds per training step under a mixed-precision policy; the float32 twin is the same
    implementation in ``test_step``, in the same panel. Training reaches the same accuracy
    (within 1 point: bench_accuracy.py's test_convergence_precision)."""
    params = {"impl": impl, "task_name": task_name, "precision": precision}
    spec = precision_spec(request.node.name, params, profile, None)
    run_in_panel(benchmark, request, spec, f"precision-{task_name}", task_data, matmul_calibration)


STEPS_PER_CALL_SWEEP = [
    pytest.param(impl, task, n, id=f"{impl}-{task}-n{n}")
    for task in [t for t in ("linreg", "mlp") if t in SELECTED] + USER
    for n in (1, 4, 16, 64)
    for impl in implementations.MULTI_STEP
    if impl not in implementations.MICRO_BATCH  # its N is custom_xla_loop's: swept there
]


def steps_per_call_spec(name: str, params: dict, profile, config) -> Spec:
    impl, task_name, n = params["impl"], params["task_name"], params["n"]
    if n not in profile.steps_per_call_sweep:
        pytest.skip(f"not in the {profile.name} profile's steps-per-call sweep (--profile full)")
    return in_step_panel(
        name,
        impl,
        task_name,
        profile,
        steps_per_call=n,
        twins=(twin_key(implementations.MULTI_STEP[impl]),),
    )


@pytest.mark.parametrize("impl, task_name, n", STEPS_PER_CALL_SWEEP)
def test_steps_per_call(
    benchmark, request, impl, task_name, n, profile, task_data, matmul_calibration
):
    """Seconds per training step at N steps per call. The CNN is left out: its steps (40-140
    ms on a 2-core CPU) dwarf a call's overhead, and at N = 64 one call would last seconds."""
    params = {"impl": impl, "task_name": task_name, "n": n}
    spec = steps_per_call_spec(request.node.name, params, profile, None)
    run_in_panel(
        benchmark, request, spec, f"steps-per-call-{task_name}", task_data, matmul_calibration
    )


MICRO_BATCH_SWEEP = [
    pytest.param(impl, task, m, id=f"{impl}-{task}-m{m}")
    for task in [t for t in ("mlp",) if t in SELECTED] + USER
    for m in (1, 2, 4, 8)
    for impl in implementations.MICRO_BATCH
]


def micro_batch_spec(name: str, params: dict, profile, config) -> Spec:
    impl, task_name, m = params["impl"], params["task_name"], params["m"]
    if m not in profile.micro_batch_sweep:
        pytest.skip(f"not in the {profile.name} profile's micro-batch sweep (--profile full)")
    skip_cpu_knob_off_cpu(impl)
    return in_step_panel(
        name,
        impl,
        task_name,
        profile,
        micro_batches=m,
        twins=(twin_key(implementations.MICRO_BATCH[impl]),),
    )


@pytest.mark.parametrize("impl, task_name, m", MICRO_BATCH_SWEEP)
def test_micro_batches(
    benchmark, request, impl, task_name, m, profile, task_data, matmul_calibration
):
    """Seconds per training step with each batch cut into M parts, at the default N; the twin
    (whole batches) is ``implementations.MICRO_BATCH[impl]`` in ``test_step``. The MLP only
    among the built-in tasks: linreg's 32-sample batches have nothing to share between cores
    (0.91x at M = 2) and XLA's loop of convolutions takes seconds per call on a CPU."""
    params = {"impl": impl, "task_name": task_name, "m": m}
    spec = micro_batch_spec(request.node.name, params, profile, None)
    run_in_panel(
        benchmark, request, spec, f"micro-batches-{task_name}", task_data, matmul_calibration
    )


register("test_step", step_spec)
register("test_sweep", sweep_spec)
register("test_precision", precision_spec)
register("test_steps_per_call", steps_per_call_spec)
register("test_micro_batches", micro_batch_spec)


OVERHEAD = [("custom_graph", t) for t in ("linreg", "mlp") if t in SELECTED]


class BareLoop:
    """``member``'s trainer, batch and K calls a round, timed by a plain loop: what the
    panel's rounds would read without the harness around them."""

    def __init__(self, member: TFMember):
        self.name = f"{member.name}[bare loop]"
        self.member = member

    def run_round(self) -> float:
        m = self.member
        t0 = time.perf_counter()
        for _ in range(m.k):
            loss = m.trainer.step(m.x, m.y)
        sync(loss)
        return (time.perf_counter() - t0) / (m.k * m.n)


def overhead_spec(name: str, impl: str, task_name: str, profile) -> Spec:
    return Spec(
        name=name,
        panel=f"overhead-{task_name}",
        kind="sweep",  # a small panel of two: the sweep's rounds and cap
        implementation=impl,
        task_name=task_name,
        batch_size=TASKS[task_name].batch_size,
        profile=profile,
    )


def overhead_entry(name: str, params: dict, profile) -> Entry:
    spec = overhead_spec(name, params["impl"], params["task_name"], profile)
    limits = panel_limits(spec)
    return Entry(spec.panel, "panel", limits["time_cap_s"], 1, spec.task_name, optional=True)


@pytest.mark.parametrize("impl, task_name", OVERHEAD)
def test_harness_overhead(benchmark, request, impl, task_name, profile, task_data):
    """The harness's per-step figure against the same trainer's K calls timed by a bare
    loop, the two members of one panel (rounds interleaved in blocks, same process, same
    trainer): what the panel's rounds and the recording add (linreg's tiny step shows it
    most)."""
    spec = overhead_spec(request.node.name, impl, task_name, profile)
    benchmark.group = "harness-overhead"
    plan = PANELS.plan
    why = plan.start(spec.panel) if plan is not None else None
    if why is not None:
        pytest.skip(why)
    task = TASKS[task_name]
    member = TFMember(spec, task_data(task), resident_mb())
    bare = BareLoop(member)
    limits = panel_limits(spec)
    if plan is not None:
        limits["time_cap_s"] = plan.cap(spec.panel)
    result = run_blocks(
        [member, bare], [(bare.name, member.name)], target_pct=profile.panel_target_pct, **limits
    )
    est = result.ratio(bare.name, member.name)  # > 1: the harness reads faster than bare
    harness = result.rounds[member.name]
    kept = harness.quiet()
    seconds = [harness.seconds[i] for i in kept]
    bare_rounds = result.rounds[bare.name]
    bare_s = float(np.median([bare_rounds.seconds[i] for i in bare_rounds.quiet()]))
    info = {
        **member.finish(),
        **panel_fields(result, harness, kept),
        "kind": "overhead",
        "harness_s_per_step": float(np.median(seconds)),
        "bare_loop_s_per_step": bare_s,
        "harness_overhead_pct": None if est is None else 100 * (1 / est.ratio - 1),
        "harness_overhead_low_pct": None if est is None else 100 * (1 / est.high - 1),
        "harness_overhead_high_pct": None if est is None else 100 * (1 / est.low - 1),
    }
    member.close()
    record(benchmark, spec, Outcome(seconds=seconds, info=info), None)


register_entry("test_harness_overhead", overhead_entry)
