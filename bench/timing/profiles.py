"""The benchmark profiles (``pytest --profile smoke|quick|full``): how long a step is warmed up
and timed, which benchmarks each profile runs, and the run's time budget (docs/timing.md,
"Profiles"). No TensorFlow: the A/B coordinator and the planner read them too.
"""

from __future__ import annotations

from dataclasses import dataclass

# implementations.REGISTRY less implementations.MULTI_STEP (the one-step loops), written out so
# this module does not import TensorFlow; tests/test_harness.py checks it against the registry.
ONE_STEP_IMPLEMENTATIONS = (
    "keras_fit",
    "keras_fit_xla",
    "custom_eager",
    "custom_graph",
    "custom_xla",
)


@dataclass(frozen=True)
class Profile:
    name: str
    rounds: int  # rounds kept per benchmark
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
    # time left (bench/timing/plan.py), so a slow CPU, whose convergence runs and
    # builds take longer, samples less instead of running longer. pytest --run-budget.
    run_budget_s: float | None = None
    panel_cap_s: float = 40.0
    panel_max_blocks: int = 100
    sweep_panel_cap_s: float = 8.0
    sweep_panel_max_blocks: int = 40
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
        warmup_steps=10,
        round_seconds=0.25,
        sweep_rounds=15,
        sweep_batches=(32, 64, 128, 256, 512, 1024, 2048),
        # The batch sweep: every one-step implementation; the multi-step ones get their own
        # sweep over N (bench_step.py's test_steps_per_call).
        sweep_implementations=ONE_STEP_IMPLEMENTATIONS,
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
