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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import implementations
from bench.host import cpu_counters, process_age_s
from bench.jax import client as jax_client
from bench.tasks import get_task
from bench.tasks.task import skip_unsupported
from bench.timing.blocks import PanelResult, Rounds, baseline_of, ratio_fields, run_blocks
from bench.timing.members import JaxMember, TFMember, resident_mb
from bench.timing.plan import Entry, Plan, run_rank
from bench.timing.profiles import Profile
from bench.timing.spec import Spec, twin_key

# Test function name -> (item name, callspec params, profile, config) -> Spec; registered by
# the benchmark modules. A builder skips (pytest.skip) what the profile or the task excludes.
BUILDERS: dict[str, Callable[..., Spec]] = {}


# Test function name -> (item name, callspec params, profile) -> the plan entry of a benchmark
# that is not a panel member (a convergence run, a distributed launch), or None where it
# would skip or is not budgeted; registered by the benchmark modules.
ENTRY_BUILDERS: dict[str, Callable[..., Entry | None]] = {}


def register(test_name: str, builder: Callable[..., Spec]) -> None:
    BUILDERS[test_name] = builder


def register_entry(test_name: str, builder: Callable[..., Entry | None]) -> None:
    ENTRY_BUILDERS[test_name] = builder


def entry_of(item: pytest.Item, profile: Profile) -> Entry | None:
    """The plan entry of a collected item that is not a panel member, or None."""
    builder = ENTRY_BUILDERS.get(getattr(item, "originalname", None) or "")
    callspec = getattr(item, "callspec", None)
    if builder is None:
        return None
    try:
        return builder(item.name, dict(callspec.params) if callspec else {}, profile)
    except pytest.skip.Exception:
        return None


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
    order = list(implementations.REGISTRY)
    plain = [s for s in specs if s.key == twin_key(s.implementation)] or list(specs)
    plain.sort(key=lambda s: order.index(s.implementation) if s.implementation in order else 99)
    i = baseline_of([s.implementation for s in plain])
    return None if i is None else plain[i]


class Panels:
    """The session's panels: each measured once, when its first benchmark runs, within the
    time the run's plan (``bench/timing/plan.py``) gives it."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Outcome]] = {}
        self.members: dict[str, list[Spec]] = {}  # the session's, by panel (set_plan)
        self.plan: Plan | None = None
        self.stack = contextlib.ExitStack()
        self._jax: tuple | None = None
        self._tmp: Path | None = None

    def close(self) -> None:
        self.stack.close()
        self._jax = None

    def set_plan(self, items: list, profile: Profile) -> Plan:
        """The session's panels, from its collected ``items``, and the run's plan: every
        panel, convergence run and distributed launch as an entry (``register``,
        ``register_entry``). ``items`` are put in the plan's run order (``run_rank``: the
        optional entries' items last), every other item where it was."""
        self.members = {}
        keys: list[str | None] = []
        entries: dict[str, Entry | None] = {}
        for item in items:
            member = spec_of(item, profile)
            entry = None if member is not None else entry_of(item, profile)
            if member is not None:
                self.members.setdefault(member.panel, []).append(member)
            key = member.panel if member is not None else entry.key if entry else None
            keys.append(key)
            if key is not None:
                entries.setdefault(key, entry)
        for key in entries:
            if key in self.members:
                entries[key] = panel_entry(self.members[key])
        order = sorted(range(len(items)), key=lambda i: run_rank(entries.get(keys[i])))
        items[:] = [items[i] for i in order]
        ordered = dict.fromkeys(keys[i] for i in order if keys[i] is not None)
        started = time.monotonic() - (process_age_s() or 0.0)
        self.plan = Plan([entries[k] for k in ordered], profile.run_budget_s, started)
        return self.plan

    def jax_worker(self) -> tuple:
        """The session's JAX worker and its hello (started on first use)."""
        if self._jax is None:
            self._jax = jax_client.start(self.stack)
        return self._jax

    def tmp(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(self.stack.enter_context(tempfile.TemporaryDirectory()))
        return self._tmp

    def outcome(self, spec: Spec, task_data) -> Outcome:
        if spec.panel not in self.outcomes:
            members = list(self.members.get(spec.panel, []))
            if spec.name not in {s.name for s in members}:
                members.append(spec)
            why = self.plan.start(spec.panel) if self.plan else None
            if why is not None:
                skip = pytest.skip.Exception(why)
                self.outcomes[spec.panel] = {m.name: Outcome(error=skip) for m in members}
            else:
                self.outcomes[spec.panel] = self.measure(members, task_data)
        found = self.outcomes[spec.panel].pop(spec.name, None)
        if found is None:  # not gathered (run twice?): measure it alone
            found = self.measure([spec], task_data)[spec.name]
        return found

    def measure(self, specs: list[Spec], task_data) -> dict[str, Outcome]:
        """Build, warm up and time ``specs`` interleaved; each member's outcome."""
        outcomes = {s.name: Outcome() for s in specs}
        built: list = []
        try:
            build_start = time.monotonic()
            live = self.build(specs, task_data, outcomes, built)
            panel = specs[0].panel
            per_member = (time.monotonic() - build_start) / max(1, len(specs))
            if self.plan is not None:
                self.plan.built(panel, per_member)
            # Members capped to a few rounds spend outside the blocks' cap (run_blocks).
            cap = (
                self.plan.cap(panel, fixed_s=capped_cost_s(built))
                if self.plan is not None
                else panel_limits(specs[0])["time_cap_s"]
            )
            if not live:
                return outcomes
            result = self.time_blocks(built, live, cap)
            ratios = ratio_info(result, live, choose_baseline(live))
            planned = {"planned_cap_s": cap, "build_s_per_member": per_member}
            for member, s in zip(built, live):
                self.finish(member, s, result, ratios[s.name], planned, outcomes[s.name])
        finally:
            for member in built:
                member.close()
            built.clear()
            gc.collect()
        return outcomes

    def build(self, specs: list[Spec], task_data, outcomes: dict, built: list) -> list[Spec]:
        """Build every member into ``built``; a member that fails to build records its
        error in ``outcomes``. Returns the specs of the members built."""
        live = []
        start_mb = resident_mb()
        for s in specs:
            try:
                dataset = task_data(get_task(s.task_name))
                if s.backend == "jax":
                    worker, hello = self.jax_worker()
                    member = JaxMember(s, dataset, worker, hello, self.tmp())
                else:
                    member = TFMember(s, dataset, start_mb)
            except (Exception, pytest.skip.Exception) as e:
                outcomes[s.name].error = e
                continue
            built.append(member)
            live.append(s)
        return live

    def time_blocks(self, built: list, live: list[Spec], cap_s: float) -> PanelResult:
        """The blocks, until the panel's targets are met or its ``cap_s`` is spent."""
        # Whose CPU time is the panel's own: this process and the JAX worker's.
        pids = (os.getpid(), *([self._jax[0].proc.pid] if self._jax else []))
        # A member capped to a few rounds (too slow for the panel's pace) has no interval to
        # wait for: the others' ratios are the panel's targets.
        capped = {m.name for m in built if getattr(m, "max_rounds", None) is not None}
        targets = [t for t in targets_of(live, choose_baseline(live)) if not capped & set(t)]
        limits = {**panel_limits(live[0]), "time_cap_s": cap_s}
        return run_blocks(
            built,
            targets,
            target_pct=live[0].profile.panel_target_pct,
            counters=lambda: cpu_counters(pids),
            **limits,
        )

    @staticmethod
    def finish(member, s: Spec, result: PanelResult, ratios: dict, planned: dict, out: Outcome):
        """One member's outcome from the panel's blocks: its kept rounds and fields
        (``planned``: what the run's plan gave the panel and what building it took)."""
        try:
            info = member.finish()
        except Exception as e:
            out.error = e
            return
        rounds = result.rounds[s.name]
        kept = rounds.quiet()
        out.info = {**info, **panel_fields(result, rounds, kept), **ratios}
        out.info["panel_info"].update(
            round_seconds=s.profile.round_seconds,
            run_budget_s=s.profile.run_budget_s,
            profile_cap_s=panel_limits(s)["time_cap_s"],
            **planned,
        )
        out.seconds = [rounds.seconds[i] for i in kept]


def panel_entry(specs: list[Spec]) -> Entry:
    """A panel as an entry of the run's plan: a batch-sweep point is optional, the first to
    go when time is short; a step panel always runs."""
    first = specs[0]
    return Entry(
        key=first.panel,
        kind="panel",
        cap_s=panel_limits(first)["time_cap_s"],
        members=len(specs),
        task=first.task_name,
        optional=first.kind == "sweep",
    )


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
    benchmark.group = group
    with skip_unsupported(spec.implementation, get_task(spec.task_name)):
        outcome = PANELS.outcome(spec, task_data)
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
