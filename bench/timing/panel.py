"""Panels: every step benchmark that is compared with others is measured interleaved with
them, in one process (the scheduler and the statistics: ``bench/timing/blocks.py``). Imports
TensorFlow.

A panel is a comparison group: a task's step benchmarks at its batch size (``test_step``,
``test_precision``, ``test_steps_per_call``, ``test_micro_batches`` and the JAX twins'
``test_jax_step``: the step table, the knob table and the backend table), or one point of the
batch-size sweep (``test_sweep``, ``sweep-<task>-b<batch>``). When the first benchmark of a
panel runs, every selected benchmark of that panel (after ``-k`` and the profile's skips) is
built and warmed up, then timed in blocks; each benchmark's test then records its own rounds
as its pytest-benchmark stats and its ratios, with intervals, in ``extra_info``. A member that
fails to build or retraces fails (or skips) its own test, not the panel.

Timing within a member follows ``bench/timing/harness.py``: the first call alone is ``compile_s``,
warm-up, K calls per round for the profile's round length, one untimed round, and each timed
round ends with a host sync. A JAX member is a trainer in the JAX worker process
(``bench/jax/worker.py``): its round is a request, timed inside the worker.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from bench.host import cpu_counters, process_age_s
from bench.timing.blocks import (
    SWEEP_MIN_SHARE,
    PanelResult,
    Rounds,
    baseline_of,
    ratio_fields,
    run_blocks,
    step_panel_cap,
)
from bench.timing.members import (  # noqa: F401 (re-exported)
    BUILD_TIMEOUT_S,
    JaxMember,
    RemoteMember,
    Spread,
    TFMember,
    resident_mb,
)
from bench.timing.profiles import Profile
from bench.timing.spec import (  # noqa: F401 (re-exported)
    Spec,
    in_step_panel,
    spec_from_json,
    spec_to_json,
    twin_key,
)

PANEL_WORKER = Path(__file__).resolve().parent / "panel_worker.py"


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


def costliest_panels_first(items: list) -> list:
    """``items`` with the ``test_step`` items (the step panels: a panel is measured when its
    first item runs) put in the order of their task's training FLOPs per step, costliest first
    (stable; a task that does not give its FLOPs counts as 0), every other item where it was.
    Under a run budget a panel's cap sets aside the building of the panels still to come,
    guessed per member from those built so far: a costlier model's members take longer to
    build (on a halved CPU, an MLP or CNN member two to three times a linreg one), so measured
    first they make the guess high, on the safe side, instead of starving the last panels."""
    from bench.tasks import get_task

    def cost(item) -> float:
        try:
            task = get_task(item.callspec.params["task_name"])
        except Exception:
            return 0.0
        return float(task.flops_per_sample or 0) * task.batch_size

    where = [i for i, it in enumerate(items) if getattr(it, "originalname", None) == "test_step"]
    ordered = sorted((items[i] for i in where), key=lambda it: -cost(it))
    out = list(items)
    for i, item in zip(where, ordered):
        out[i] = item
    return out


# --- one panel, measured ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one member's test records: its kept rounds (seconds per step) and extra_info, or
    the error (or skip) its build or check raised."""

    seconds: list[float] = field(default_factory=list)
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


@dataclass
class Budget:
    """The run budget's terms for one panel: the deadline (``time.monotonic()``), and the
    caps and member counts of the session's panels still to come after it."""

    deadline: float
    later_caps: list[float]
    later_members: int
    # For a step panel: the batch-sweep points still to come, counted apart (step_panel_cap)
    sweep_caps: list[float] = field(default_factory=list)
    sweep_members: int = 0


# Past this share of the run budget, the quick profile's optional work (the distributed
# launches, the bf16 convergence runs) no longer starts: the step panels still to come need
# the rest. The convergence runs come first; on this project's Zen 4 class VM they took 61 s
# of a 284 s run, on the same CPU halved they ended at 142 s (docs/timing.md, "Profiles").
BEHIND_SHARE = 0.5


def behind_schedule(profile: Profile, what: str, elapsed_s: float | None = None) -> str | None:
    """Why ``what`` (optional work) is skipped, or None: under a run budget, once more than
    ``BEHIND_SHARE`` of it has gone (counted from pytest's start), a slow CPU runs less.
    ``--profile full`` runs everything it selects, even under a ``--run-budget``."""
    budget = profile.run_budget_s
    if not budget or profile.name == "full":
        return None
    elapsed = process_age_s() if elapsed_s is None else elapsed_s
    if elapsed is None or elapsed <= BEHIND_SHARE * budget:
        return None
    return (
        f"{what}: the run is behind its budget on this machine ({elapsed:.0f} s of "
        f"{budget:g} s gone before it, more than {BEHIND_SHARE:.0%}); the step panels get the "
        "rest (--run-budget 0 runs it)"
    )


def unaffordable(
    spec: Spec,
    members: int,
    budget: Budget | None,
    build_s: list[float],
    now: float | None = None,
) -> str | None:
    """Why ``spec``'s panel is skipped, or None. Under a run budget, a batch-sweep point (the
    quick profile's least important panels, last in the run) whose building (guessed from the
    members built so far, per member) and ``SWEEP_MIN_SHARE`` of its own time cap would not
    fit in the time left is skipped, not measured from a handful of blocks: a slow CPU runs
    less, not only samples less (as ``step_panel_cap`` holds no time back for a sweep point
    that would get less). Step panels always run."""
    if budget is None or spec.kind != "sweep" or not build_s:
        return None
    now = time.monotonic() if now is None else now
    left = budget.deadline - now
    build = float(np.median(build_s)) * members
    blocks = _least_blocks_s(spec)
    if left >= build + blocks:
        return None
    return _spent(
        spec,
        f"{max(left, 0.0):.0f} s left, building this sweep point takes about {build:.0f} s "
        f"and its blocks {blocks:.0f} s at least",
    )


def starved(spec: Spec, cap_s: float) -> str | None:
    """Why a batch-sweep point, once built, is not measured after all, or None: its building
    took longer than ``unaffordable`` guessed, and the run budget left its blocks (``cap_s``)
    less than ``SWEEP_MIN_SHARE`` of its own cap: six blocks in next to no time say nothing
    (intervals like 0.05x to 0.27x) and still cost a few seconds. Step panels always run."""
    least = _least_blocks_s(spec)
    if spec.kind != "sweep" or cap_s >= least:
        return None
    return _spent(
        spec,
        f"built, this sweep point had {cap_s:.1f} s left for its blocks, less than {least:.0f} s",
    )


def _least_blocks_s(spec: Spec) -> float:
    """The least time a sweep point's blocks are worth: ``SWEEP_MIN_SHARE`` of its own cap."""
    return SWEEP_MIN_SHARE * panel_limits(spec)["time_cap_s"]


def _spent(spec: Spec, detail: str) -> str:
    return (
        f"the run budget ({spec.profile.run_budget_s:g} s, --run-budget) is spent on this "
        f"machine: {detail} (--run-budget 0 runs it)"
    )


class Panels:
    """The session's panels: each measured once, when its first benchmark runs."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Outcome]] = {}
        self.members: dict[str, list[Spec]] | None = None  # the session's, by panel
        self.stack = contextlib.ExitStack()
        self._jax: tuple | None = None
        self._tmp: Path | None = None
        self._workers: list = []
        self.tasks: list[str] | None = None  # the session's --tasks values, for the workers
        self.build_s: list[float] = []  # seconds each member built so far took (per panel)
        # When pytest started (time.monotonic()): the run budget counts from it.
        self.started = time.monotonic() - (process_age_s() or 0.0)

    def close(self) -> None:
        self.stack.close()
        self._jax = None
        self._workers = []

    def jax_worker(self) -> tuple:
        """The session's JAX worker and its hello (started on first use)."""
        if self._jax is None:
            from bench.jax import client as jax_client

            self._jax = jax_client.start(self.stack)
        return self._jax

    def panel_workers(self, count: int, tasks: list[str] | None) -> list:
        """``count`` panel worker processes for this tree (started on first use, kept for the
        session, killed when it ends)."""
        from bench.jax import client as jax_client
        from bench.workers.process import Side, Worker, worker_env

        while len(self._workers) < count:
            side = Side("panel", "working tree", "working tree", jax_client.ROOT, sys.executable)
            worker = Worker(side, len(self._workers) + 1, worker_env(), script=PANEL_WORKER)
            self.stack.callback(worker.close)
            worker.request({"op": "hello", "tasks": tasks or []}, jax_client.HELLO_TIMEOUT_S)
            self._workers.append(worker)
        return self._workers[:count]

    def worker_pids(self) -> list[int]:
        """The processes the panels' rounds run in besides this one (JAX, panel workers)."""
        workers = [*self._workers, *([self._jax[0]] if self._jax else [])]
        return [w.proc.pid for w in workers]

    def tmp(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        return self._tmp

    def outcome(self, request: pytest.FixtureRequest, spec: Spec, task_data) -> Outcome:
        if self.tasks is None:
            from bench.tasks.user import specs_from

            self.tasks = specs_from(request.config.getoption("--tasks", default=None)) or []
        if self.members is None:  # every selected benchmark's spec, once per session
            self.members = {}
            for item in request.session.items:
                member = spec_of(item, spec.profile)
                if member is not None:
                    self.members.setdefault(member.panel, []).append(member)
        if spec.panel not in self.outcomes:
            members = list(self.members.get(spec.panel, []))
            if spec.name not in {s.name for s in members}:
                members.append(spec)
            budget = self.budget(spec)
            why = unaffordable(spec, len(members), budget, self.build_s)
            if why is not None:
                self.outcomes[spec.panel] = {
                    m.name: Outcome(error=pytest.skip.Exception(why)) for m in members
                }
            else:
                self.outcomes[spec.panel] = self.measure(members, task_data, budget)
        found = self.outcomes[spec.panel].pop(spec.name, None)
        if found is None:  # not gathered (run twice?): measure it alone
            found = self.measure([spec], task_data)[spec.name]
        return found

    def budget(self, spec: Spec) -> Budget | None:
        """The run budget's terms for ``spec``'s panel (None without a budget): the deadline,
        counted from the process's start, and the panels of the session still to come (for a
        step panel, the batch-sweep points apart: ``step_panel_cap`` decides whether to hold
        time back for them)."""
        budget_s = spec.profile.run_budget_s
        if not budget_s:
            return None
        later = [
            members
            for key, members in (self.members or {}).items()
            if key not in self.outcomes and key != spec.panel
        ]
        step = spec.kind == "step"
        others = [m for m in later if not (step and m[0].kind == "sweep")]
        sweep = [m for m in later if step and m[0].kind == "sweep"]
        return Budget(
            deadline=self.started + budget_s,
            later_caps=[panel_limits(m[0])["time_cap_s"] for m in others],
            later_members=sum(len(m) for m in others),
            sweep_caps=[panel_limits(m[0])["time_cap_s"] for m in sweep],
            sweep_members=sum(len(m) for m in sweep),
        )

    def measure(
        self, specs: list[Spec], task_data, budget: Budget | None = None
    ) -> dict[str, Outcome]:
        """Build, warm up and time ``specs`` interleaved; each member's outcome. With a
        ``budget``, the panel's time cap is its share of the time left (``step_panel_cap``)."""
        from bench.tasks import get_task

        outcomes = {s.name: Outcome() for s in specs}
        built, live = [], []
        start_mb = resident_mb()
        build_start = time.monotonic()
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
            own_cap = limits["time_cap_s"]
            if budget is not None:
                # Building the panels still to come is guessed from this one's, per member.
                per_member = (time.monotonic() - build_start) / max(1, len(specs))
                self.build_s.append(per_member)
                limits["time_cap_s"], held_back = step_panel_cap(
                    own_cap,
                    budget.deadline - time.monotonic(),
                    budget.later_caps,
                    per_member * budget.later_members,
                    budget.sweep_caps,
                    per_member * budget.sweep_members,
                )
                # Members capped to a few rounds spend outside the panel's cap (run_blocks):
                # under the run's budget their rounds come out of it.
                limits["time_cap_s"] = max(0.0, limits["time_cap_s"] - capped_cost_s(built))
                why = starved(specs[0], limits["time_cap_s"])
                if why is not None:
                    for s in live:
                        outcomes[s.name].error = pytest.skip.Exception(why)
                    return outcomes  # the members are closed below
            # Whose CPU time is the panel's own: this process and its workers'.
            pids = (os.getpid(), *self.worker_pids())
            # A member capped to a few rounds (too slow for the panel's pace) has no interval to
            # wait for: the others' ratios are the panel's targets.
            capped = {m.name for m in built if getattr(m, "max_rounds", None) is not None}
            targets = [t for t in targets_of(live, baseline) if not capped & set(t)]
            result = run_blocks(
                built,
                targets,
                target_pct=specs[0].profile.panel_target_pct,
                counters=lambda: cpu_counters(pids),
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
                rounds = result.rounds[s.name]
                kept = rounds.quiet()
                out.info = {**info, **panel_fields(result, rounds, kept), **ratios[s.name]}
                out.info["panel_info"]["processes"] = len(getattr(member, "instances", [0]))
                out.info["panel_info"]["round_seconds"] = s.profile.round_seconds
                out.info["panel_info"]["run_budget_s"] = s.profile.run_budget_s
                out.info["panel_info"]["profile_cap_s"] = own_cap
                if budget is not None and budget.sweep_caps:
                    out.info["panel_info"]["held_back_for_sweep"] = held_back
                out.seconds = [rounds.seconds[i] for i in kept]
        finally:
            for member in built:
                member.close()
            built.clear()
            gc.collect()
        return outcomes


def capped_cost_s(members) -> float:
    """What the rounds of the members capped to a few rounds (``max_rounds``, too slow for the
    panel's pace) will take: rounds x their one call's time."""
    total = 0.0
    for m in members:
        rounds, cap = getattr(m, "max_rounds", None), getattr(m, "round_cap", None) or {}
        if rounds is not None:
            total += rounds * float(cap.get("call_s") or 0.0)
    return total


def panel_fields(result: PanelResult, rounds: Rounds, kept: list[int]) -> dict:
    """The extra_info fields that say how a member's rounds (``kept``: those in its stats)
    were taken (docs/results-schema.md)."""
    measured = all(s is not None for s in rounds.steal)

    def pct(values):
        return [None if v is None else 100 * v for v in values]

    return {
        "panel_info": result.info(),
        "rounds": len(kept),
        "rounds_run": len(rounds.seconds),
        "round_steal_pct": pct(rounds.steal),
        "steal_pct": 100 * float(np.mean([rounds.steal[i] for i in kept])) if measured else None,
        "round_foreign_pct": pct(rounds.foreign),
        "block_of_round": [rounds.block[i] for i in kept],
    }


def run_in_panel(benchmark, request, spec: Spec, group: str, task_data, calibration) -> dict:
    """Record ``spec``'s result from its panel (measured with every selected benchmark of the
    panel when the first of them runs) in pytest-benchmark group ``group``; an implementation
    that cannot run a user's model is skipped with the reason."""
    from bench.tasks import get_task
    from bench.tasks.user import skip_unsupported

    benchmark.group = group
    with skip_unsupported(spec.implementation, get_task(spec.task_name)):
        outcome = PANELS.outcome(request, spec, task_data)
        return record(benchmark, spec, outcome, calibration["calibration_gflops"])


def record(benchmark, spec: Spec, outcome: Outcome, calibration_gflops: float | None) -> dict:
    """Make ``outcome`` this test's result: its rounds become the pytest-benchmark stats
    (seconds per step, ``iterations`` = steps per round), its fields ``extra_info``."""
    if outcome.error is not None:
        raise outcome.error
    seconds = outcome.seconds
    benchmark.pedantic(lambda: None, rounds=len(seconds), iterations=1, warmup_rounds=0)
    if benchmark.stats is not None:
        benchmark.stats.stats.data[:] = seconds
        benchmark.stats.iterations = int(outcome.info["steps_per_round"])
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
