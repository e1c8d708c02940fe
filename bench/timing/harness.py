"""How a training step is timed, and what is recorded with it. Imports TensorFlow.

The method (docs/timing.md):
1. build the implementation from the task and the seeded initial weights;
2. put one fixed batch on the device (the input pipeline is not what is timed) -- for an
   implementation that runs N steps per call (``trainer.steps_per_call``), N distinct
   batches stacked into one tensor ``x[N, B, ...]``;
3. time the first call alone -- tracing and XLA compilation -- as ``compile_s``;
4. run warm-up steps, then estimate a call's time and pick ``K`` calls per round so a round
   lasts about ``round_seconds``;
5. each timed round runs K calls (K x N steps) and then fetches the last loss to the host, so
   the device has finished every step before the clock stops; one data point = round time /
   (K x N): results are always seconds per training step;
6. if the step was traced again while being timed, fail: the numbers would include it.

The step benchmarks do steps 1-4 for every member of a comparison group first and then time
the group's rounds interleaved, in blocks (``bench/timing/panel.py``, ``bench/timing/blocks.py``);
``measure_steps`` times one trainer alone (the harness-overhead check).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import implementations
from bench.host import (  # noqa: F401 (re-exported)
    STEAL_LIMIT,
    cpu_model,
    cpu_steal_counters,
    steal_fraction,
)
from bench.tasks import Task
from bench.tasks.data import map_inputs, n_examples, take
from bench.timing.machine import (  # noqa: F401 (re-exported: where callers import them)
    SMALL_MATMUL_N,
    SMI_APP_FIELDS,
    SMI_GPU_FIELDS,
    best_round,
    calibrate_matmul,
    device_name,
    gpu_compute_capability,
    gpu_details,
    gpu_processes,
    gpu_software,
    machine_info,
    matmul_precision,
    matmul_timer,
    nvidia_smi,
    nvidia_smi_id,
    onednn_enabled,
    parse_smi_line,
    peak_memory_mb,
    reset_peak_memory,
    smi_gpu_facts,
    sync,
)


class RetraceError(RuntimeError):
    """The step was traced (and maybe compiled) again inside the timed region."""


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int  # rounds kept per benchmark
    max_rounds: int  # rounds run at most, replacing rounds the hypervisor stole time from
    warmup_steps: int
    round_seconds: float
    sweep_rounds: int  # rounds kept for the batch sweep and tf.distribute (twice that at most)
    sweep_batches: tuple[int, ...]
    sweep_implementations: tuple[str, ...]
    # The implementations that run several steps per call (implementations.MULTI_STEP): the
    # tasks they are timed and trained on, and the N of the steps-per-call sweep.
    multi_step_tasks: tuple[str, ...]
    steps_per_call_sweep: tuple[int, ...]
    # The mixed-precision step benchmarks (bench_step.py's test_precision): which
    # (implementation, task, precision) run; float32 is every other benchmark's precision.
    precision_benchmarks: tuple[tuple[str, str, str], ...] = ()
    # Added to those on a GPU, where float16 is what mixed precision is for (a CPU has no
    # float16 convolution kernels): the same triples, run only when the device is a GPU.
    gpu_precision_benchmarks: tuple[tuple[str, str, str], ...] = ()
    # The M of the micro-batch sweep (bench_step.py's test_micro_batches; implementations.
    # MICRO_BATCH) on the MLP: how many parts pay on this machine's cores.
    micro_batch_sweep: tuple[int, ...] = ()
    # Panels (bench/timing/panel.py): a comparison group is timed in blocks (one round of each
    # member)
    # from ``rounds`` blocks (``sweep_rounds`` for a sweep point) until every ratio's 95%
    # interval is within +-``panel_target_pct``, or the time cap, or the most blocks.
    panel_target_pct: float = 2.0
    # The run's wall time that the panels fit their sampling into, counted from pytest's
    # start (None: each panel takes its cap): each panel's cap shrinks to its share of the
    # time left (bench/timing/blocks.budgeted_cap), so a slow CPU, whose convergence runs and
    # builds take longer, samples less instead of running longer. pytest --run-budget.
    run_budget_s: float | None = None
    panel_cap_s: float = 40.0
    panel_max_blocks: int = 100
    sweep_panel_cap_s: float = 8.0
    sweep_panel_max_blocks: int = 40
    # Processes a panel's TensorFlow members are measured in, block b in process b mod P
    # (bench/timing/panel_worker.py; pytest --panel-processes). One: spreading the MLP panel over
    # two
    # did not make its ratios agree better between runs on this project's VM (docs/timing.md,
    # "How repeatable the numbers are"); its process bias is in the interval (blocks.py) instead.
    panel_processes: int = 1
    # What one panel member's timing may take, its warm-up, round length and rounds (not its
    # first call: tracing and compilation, reported as compile_s). A member whose one call
    # would take it past this -- XLA's CPU loop of convolutions: 570-785 ms per step, 16 steps
    # a call, on a user's convnet -- runs one call per round, no extra warm-up, and at most
    # budget / call rounds (at least MIN_CAPPED_ROUNDS): its figure stays in the tables with
    # the reason in ``round_cap``, and the run keeps its time (bench/timing/members.py).
    member_budget_s: float = 20.0


# The step benchmarks of other precisions than float32, in the full profile: the headline
# loops and the best multi-step one (linreg's one Dense(1) has nothing for 16 bits to speed).
PRECISION_IMPLEMENTATIONS = (
    "keras_fit",
    "keras_fit_xla",
    "custom_graph",
    "custom_xla",
    "custom_xla_loop",
)

PROFILES = {
    # smoke: seconds, for checking the harness itself (its numbers are not to be trusted).
    "smoke": Profile(
        "smoke",
        rounds=3,
        max_rounds=6,
        warmup_steps=1,
        round_seconds=0.02,
        sweep_rounds=3,
        sweep_batches=(),
        sweep_implementations=(),
        multi_step_tasks=("linreg", "mlp", "cnn"),
        steps_per_call_sweep=(),
        precision_benchmarks=(("custom_graph", "mlp", "mixed_bfloat16"),),
        panel_cap_s=5.0,
        panel_max_blocks=6,
        sweep_panel_cap_s=2.0,
        sweep_panel_max_blocks=6,
        member_budget_s=3.0,
    ),
    "quick": Profile(
        "quick",
        rounds=12,
        max_rounds=20,
        warmup_steps=3,
        # 0.1 s: a panel's block of ten members then lasts about a second, so the rounds
        # compared are close in time; at 0.2 s the intervals were no narrower for the time.
        # At 0.02 s (what bench ab uses) each round starts with caches the other members
        # filled: the MLP's steps read 5% slower in the panel than alone (median; 10% at
        # worst), and the ratios agreed no better between a quiet and a loaded run
        # (docs/timing.md, "How repeatable the numbers are").
        round_seconds=0.1,
        # Within 5 minutes on every CPU this project meets: a Zen 3 without AVX-512 ran the
        # quick profile in 9 minutes before (docs/timing.md, "Profiles").
        run_budget_s=270.0,
        sweep_rounds=7,
        sweep_batches=(32, 512),
        sweep_implementations=("custom_eager", "custom_graph", "custom_xla"),
        # The MLP only (about 16 s for the three): where the numbers come from and
        # a call's overhead is still a visible share of a real step. linreg and the CNN
        # (20-140 ms steps: one 16-step XLA call lasts up to 2 s, ten rounds' worth) would
        # add over a minute: --profile full.
        multi_step_tasks=("mlp",),
        steps_per_call_sweep=(),
        # bfloat16 where the issue saw it matter (the CNN, 1.24x) and on the MLP's custom
        # step (about 20 s for the three); float16 (on a CPU) and the rest: --profile full.
        precision_benchmarks=(
            ("keras_fit", "cnn", "mixed_bfloat16"),
            ("custom_graph", "cnn", "mixed_bfloat16"),
            ("custom_graph", "mlp", "mixed_bfloat16"),
        ),
        # float16 on a GPU: the two headline loops on both models (not verified on a GPU yet).
        gpu_precision_benchmarks=tuple(
            (impl, task, "mixed_float16")
            for impl in ("keras_fit", "custom_graph")
            for task in ("mlp", "cnn")
        ),
    ),
    "full": Profile(
        "full",
        rounds=25,
        max_rounds=50,
        warmup_steps=10,
        round_seconds=0.25,
        sweep_rounds=15,
        sweep_batches=(32, 64, 128, 256, 512, 1024, 2048),
        # The batch sweep: every one-step implementation; the multi-step ones get their own
        # sweep over N (bench_step.py's test_steps_per_call).
        sweep_implementations=tuple(
            name for name in implementations.REGISTRY if name not in implementations.MULTI_STEP
        ),
        multi_step_tasks=("linreg", "mlp", "cnn"),
        steps_per_call_sweep=(1, 4, 16, 64),
        micro_batch_sweep=(1, 2, 4, 8),
        precision_benchmarks=tuple(
            (impl, task, precision)
            for impl in PRECISION_IMPLEMENTATIONS
            for task in ("mlp", "cnn")
            for precision in ("mixed_bfloat16", "mixed_float16")
        ),
        panel_cap_s=300.0,
        # The cap or the target ends a full panel, not the count: at 100 the MLP's stopped
        # after 163 s of its 300 with intervals of +-9% (2026-12-02). 400 bounds the paired
        # statistics' cost between blocks (O(n^2) Walsh averages per ratio).
        panel_max_blocks=400,
        sweep_panel_cap_s=60.0,
        sweep_panel_max_blocks=50,
        member_budget_s=150.0,
    ),
}


# --- the fixed batch and the step measurement --------------------------------------------


def fixed_batch(
    task: Task, batch_size: int, dataset, steps_per_call: int = 1
) -> tuple[tf.Tensor, tf.Tensor]:
    """The first ``batch_size`` training examples (tiled if the set is smaller), on device.
    ``steps_per_call`` N > 1: the first N x ``batch_size`` examples as N distinct batches,
    stacked: ``x[N, batch_size, ...]``, ``y[N, batch_size]``. Several inputs: ``x`` is a dict
    or tuple of such tensors, one per input."""
    idx = np.arange(steps_per_call * batch_size) % n_examples(dataset.x_train)
    x, y = take(dataset.x_train, idx), dataset.y_train[idx]
    if steps_per_call > 1:
        x = map_inputs(lambda a: a.reshape(steps_per_call, batch_size, *a.shape[1:]), x)
        y = y.reshape(steps_per_call, batch_size, *y.shape[1:])
    with tf.device(device_name()):
        return map_inputs(tf.constant, x), tf.constant(y)


def steps_per_call(trainer) -> int:
    """Training steps one ``trainer.step`` call runs (1 for a trainer without the attribute)."""
    return int(getattr(trainer, "steps_per_call", 1))


def choose_steps_per_round(step: Callable[[], tf.Tensor], round_seconds: float) -> int:
    """How many calls of ``step`` (each one or several training steps) make a round of about
    ``round_seconds``: at least 3 calls are timed, to a quarter of a round."""
    t0 = time.perf_counter()
    n = 0
    while True:
        loss = step()
        n += 1
        if n >= 3:
            sync(loss)
            if time.perf_counter() - t0 > round_seconds / 4 or n >= 200:
                break
    per_step = (time.perf_counter() - t0) / n
    return max(1, min(1000, math.ceil(round_seconds / per_step)))


def count_graph_ops(trainer, x: tf.Tensor, y: tf.Tensor) -> int | None:
    """Ops in the traced graph of one training step (custom loops only; for those that loop
    N steps per call, of the step the loop runs): roughly what eager mode dispatches one by
    one, so (eager - graph) / ops estimates the per-op dispatch cost."""
    from implementations.custom_loop import CustomLoopTrainer, make_step

    if not isinstance(trainer, CustomLoopTrainer):
        return None
    if steps_per_call(trainer) > 1:
        x, y = map_inputs(lambda a: a[0], x), y[0]
    fn = tf.function(make_step(trainer.model, trainer.optimizer, trainer.task))
    graph = fn.get_concrete_function(x, y).graph
    return sum(1 for op in graph.get_operations() if op.type not in ("Placeholder", "NoOp"))


def measure_fit(trainer, x, y, steps: int) -> dict:
    """Keras implementations only: what ``fit()`` costs, as ``fit(n) = setup + n * per_step``.

    ``fit()`` calls on K and 2K copies of the fixed batch (each the best of three, as one
    call is at the mercy of one slow moment of a shared machine) give
    ``fit_s_per_step = (fit(2K) - fit(K)) / K``, the cost of a step inside ``fit`` (the train
    function plus the iterator and callbacks around it), and
    ``fit_overhead_s = fit(K) - K * fit_s_per_step``, the per-call setup (data adapter, epoch
    iterator, callbacks), floored at 0 where noise makes it negative.

    For ``steps_per_call`` N > 1, ``steps`` counts calls and ``x``, ``y`` stack N batches:
    ``fit`` gets K (2K) copies of the N batches, K x N (2K x N) steps, N per call of its
    train function, and the per-step figure divides by K x N."""
    from implementations.keras_fit import KerasFitTrainer

    if not isinstance(trainer, KerasFitTrainer):
        return {"fit_overhead_s": None, "fit_s_per_step": None}
    n_per_call = steps_per_call(trainer)

    def fit(n: int) -> float:
        if n_per_call > 1:
            ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat(n)
        else:
            ds = tf.data.Dataset.from_tensors((x, y)).repeat(n)
        t0 = time.perf_counter()
        trainer.model.fit(ds, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - t0

    fit(2)  # the first fit() traces its iterator function: not what is measured
    once = min(fit(steps) for _ in range(3))
    twice = min(fit(2 * steps) for _ in range(3))
    total_steps = steps * n_per_call
    per_step = max(twice - once, 0.0) / total_steps
    return {
        "fit_overhead_s": max(0.0, once - total_steps * per_step),
        "fit_s_per_step": per_step,
    }


def first_call_and_warm_up(one_step: Callable[[], tf.Tensor], warmup_steps: int) -> float:
    """Time the first call alone (tracing, XLA compilation), then run ``warmup_steps`` steps
    and wait for them. Returns the first call's seconds (``compile_s``)."""
    t0 = time.perf_counter()
    sync(one_step())
    compile_s = time.perf_counter() - t0
    loss = None
    for _ in range(warmup_steps):
        loss = one_step()
    if loss is not None:
        sync(loss)
    return compile_s


def check_retrace(trainer, traces_before: int, label: str) -> None:
    """Fail if the step was traced again since ``traces_before`` was read."""
    if trainer.traces() != traces_before:
        raise RetraceError(
            f"{label}: step traced {trainer.traces() - traces_before} more time(s) during the "
            "timed rounds; the timings would include tracing/compilation"
        )


def enough_rounds(steal: list[float | None], rounds: int) -> bool:
    """Whether ``rounds`` rounds were uncontended (steal at most ``STEAL_LIMIT``; where steal
    cannot be read, whether ``rounds`` rounds have run)."""
    if any(s is None for s in steal):
        return len(steal) >= rounds
    return sum(s <= STEAL_LIMIT for s in steal) >= rounds


def least_stolen(steal: list[float | None], rounds: int) -> list[int]:
    """The ``rounds`` rounds with the least steal (unknown counts as none), in their order."""
    known = [s if s is not None else 0.0 for s in steal]
    return sorted(sorted(range(len(steal)), key=lambda i: known[i])[:rounds])


def round_steal(steal: list[float | None], kept: list[int]) -> dict:
    """How contended the rounds were: rounds run, each round's steal %, the kept rounds' mean
    (None where steal cannot be read)."""
    measured = all(s is not None for s in steal)
    return {
        "rounds_run": len(steal),
        "round_steal_pct": [None if s is None else 100 * s for s in steal],
        "steal_pct": 100 * float(np.mean([steal[i] for i in kept])) if measured else None,
    }


def measure_steps(
    benchmark,
    trainer,
    x: tf.Tensor,
    y: tf.Tensor,
    profile: Profile,
    between_rounds: Callable[[int], None] | None = None,
    steal_counters: Callable[[], tuple[int, int] | None] = cpu_steal_counters,
) -> dict:
    """Time ``trainer.step(x, y)`` at steady state with pytest-benchmark's fixture.

    A round is K calls; a call is ``trainer.steps_per_call`` N training steps (``x``, ``y``
    stacking N batches where N > 1), so every figure is per training step: round time /
    (K x N). Warm-up runs ``profile.warmup_steps`` steps, rounded up to whole calls.

    Rounds run until ``profile.rounds`` of them were uncontended (steal at most
    ``STEAL_LIMIT``) or ``profile.max_rounds`` have run; the ``profile.rounds`` rounds with the
    least steal are kept (in their order) and become ``benchmark.stats``, in seconds per step.
    Where steal cannot be read, exactly ``profile.rounds`` rounds run and are kept.

    ``between_rounds(k)``, if given, runs untimed before each round, inside the round's steal
    window (the overhead check interleaves a bare loop there). Returns compile time, steps per
    round (K x N), calls per round (K), steps per call (N), the per-step median, which rounds
    were kept and the steal of each round run."""
    n = steps_per_call(trainer)

    def one_step():  # one call: N steps
        return trainer.step(x, y)

    compile_s = first_call_and_warm_up(one_step, math.ceil(profile.warmup_steps / n))
    k = choose_steps_per_round(one_step, profile.round_seconds)

    def timed_round():
        if skipping:
            return
        for _ in range(k):
            loss = one_step()
        sync(loss)

    skipping = False
    timed_round()  # one untimed round at the round's own length
    traces_before = trainer.traces()

    steal: list[float | None] = []  # per round run: fraction of CPU time stolen
    window_start = None

    def setup():
        nonlocal skipping, window_start
        skipping = enough_rounds(steal, profile.rounds)
        if skipping:  # the remaining rounds of pedantic's fixed count are empty, and dropped
            return
        window_start = steal_counters()
        if between_rounds:
            between_rounds(k)

    def teardown():
        if not skipping:
            steal.append(steal_fraction(window_start, steal_counters()))

    benchmark.pedantic(
        timed_round,
        setup=setup,
        teardown=teardown,
        rounds=profile.max_rounds,
        iterations=1,
        warmup_rounds=0,
    )
    check_retrace(trainer, traces_before, f"{trainer.name}/{trainer.task.name}")
    kept = least_stolen(steal, profile.rounds)
    per_step = to_per_step(benchmark, k * n, kept)
    return {
        "compile_s": compile_s,
        "steps_per_round": k * n,
        "calls_per_round": k,
        "steps_per_call": n,
        "median_s": float(np.median(per_step)),
        "kept_rounds": kept,
        **round_steal(steal, kept),
    }


def steal_fields(timing: dict) -> dict:
    """The extra_info fields that say how contended a measurement was."""
    return {
        "rounds_run": timing["rounds_run"],
        "steal_pct": timing["steal_pct"],
        "round_steal_pct": timing["round_steal_pct"],
    }


def to_per_step(benchmark, steps_per_round: int, keep: list[int] | None = None) -> list[float]:
    """Turn pytest-benchmark's per-round data into per-step data in place, keeping only the
    rounds listed in ``keep`` (all if None).

    pytest-benchmark's own ``iterations=K`` would divide each round by K too, but it cannot
    sync the device at the end of a round; we time K steps + sync as one call and apply the
    same division here, before any statistic is computed, so ``stats`` (and the JSON and the
    terminal table) are seconds per step with ``iterations == K``. (For a trainer that runs
    N steps per call, pass K calls x N.)
    """
    meta = benchmark.stats
    if meta is None:  # --benchmark-disable: nothing was timed
        return [float("nan")]
    data = meta.stats.data
    rounds = data if keep is None else [data[i] for i in keep]
    data[:] = [d / steps_per_round for d in rounds]
    meta.iterations = steps_per_round
    return list(data)
