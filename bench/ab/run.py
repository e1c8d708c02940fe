"""One interleaved A/B run as a library call: ``ABRun(sides, selection, settings).run()``.

``python -m bench ab`` (``bench/ab/cli.py``) and every step of ``python -m bench bisect``
(``bench/ab/bisect_cli.py``) make one and read its ``ABResults``. A run starts its workers,
selects the benchmarks (``Selection``: ``-k`` over both sides' registries), measures them
within its deadline (``bench/ab/budget.py``: a first pass, then the widest intervals), and
has every SLOWER or FASTER verdict measured again by fresh workers and judged on all its
rounds (a worker process carries a bias of its own: docs/regression.md).

Where it measures is passed in (``lab``: worker processes, ``bench.ab.measure.WorkerLab``, by
default), with the clock it runs on, so a run is tested on fake sides with a fake clock
(tests/test_ab.py). Imports no TensorFlow (the workers do).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

import numpy as np
from _pytest.mark.expression import Expression

from bench.ab.budget import EXTEND, Plan, first_pass_cap, run_plan
from bench.ab.measure import (
    Benchmark,
    Sampled,
    Selection,
    Settings,
    Unsupported,
    WorkerLab,
    estimate,
    result,
    skipped,
)
from bench.ab.output import format_sides, progress
from bench.ab.sides import side_tasks
from bench.host import cpu_steal_counters, steal_fraction
from bench.stats import paired as S
from bench.workers.process import InputError, Side

# Without -k: the headline step benchmarks of the compiled loops on every task (12 today).
# The eager loop (10x slower, and not what a regression gate is for) and any variants added
# to the registry later run only when -k selects them, so the CI gate keeps its time.
HEADLINE = ("keras_fit", "keras_fit_xla", "custom_graph", "custom_xla")


# --- what is measured ---------------------------------------------------------------------


def keyword_match(expression: str | None, name: str) -> bool:
    """pytest's ``-k`` grammar (and, or, not, parentheses; case-insensitive substrings)."""
    if not expression:
        return True
    try:
        compiled = Expression.compile(expression)
    except Exception as e:  # pytest's ParseError
        raise InputError(f"-k {expression!r}: {e}") from None
    return compiled.evaluate(lambda word, **_: word.lower() in name.lower())


def select_benchmarks(
    sides: list[Side], selection: Selection
) -> tuple[list[Benchmark], dict[str, str]]:
    """Implementation x task (x batch) matching ``-k`` over the union of both sides'
    registries, or the ``HEADLINE`` implementations without ``-k``; returns the benchmarks
    and, for those one side lacks (an implementation, or a --tasks task), why they are
    skipped."""
    expression = selection.expression
    tasks = side_tasks(sides)
    names: list[str] = []
    for impls in (s.implementations for s in sides if s.implementations is not None):
        names += [n for n in impls if n not in names]
    if expression is None:
        names = [n for n in names if n in HEADLINE]
    out, skip = [], {}
    for impl in names:
        for task, batch_size in tasks.items():
            for b in selection.batches or [batch_size]:
                bench = Benchmark(impl, task, b, b == batch_size)
                if not keyword_match(expression, bench.name):
                    continue
                missing = [
                    s.label for s in sides if s.implementations and impl not in s.implementations
                ]
                no_task = [s.label for s in sides if s.tasks is not None and task not in s.tasks]
                if missing:
                    skip[bench.name] = f"not in {' and '.join(missing)}'s registry"
                elif no_task:
                    skip[bench.name] = (
                        f"task {task} not in {' and '.join(no_task)}'s code (older than --tasks?)"
                    )
                out.append(bench)
    if not out:
        raise InputError(
            f"-k {expression!r} selects no benchmark; implementations: {', '.join(names)}; "
            f"tasks: {', '.join(tasks)}"
        )
    return out, skip


# --- where it is measured -------------------------------------------------------------------


class Lab(Protocol):
    """Where a run measures: worker processes (``bench.ab.measure.WorkerLab``), or a fake."""

    def clock(self) -> float:
        """Seconds, as the run's deadline and its benchmarks' shares are counted."""

    def start(self) -> None:
        """Start ``settings.pairs`` workers per side: the first, then fresh ones for the
        confirmations, which later set-ups use. The first tells each side's
        ``implementations``, ``versions`` and ``tasks``."""

    def set_up(self, bench: Benchmark, prior: Sampled | None = None) -> Sampled:
        """The benchmark set up on the newest workers (holding ``prior``'s rounds), live
        until ``drop``; raises ``Unsupported`` where a side cannot run it."""

    def sample(self, sampled: Sampled, cap_s: float, min_new: int) -> None:
        """Take rounds (``bench.ab.measure.sample``)."""

    def drop(self, sampled: Sampled) -> None:
        """Free the benchmark in its workers."""


# A run's lab, made from its sides, settings and selection, and the stack that closes the
# lab's processes and files when the run ends, however it ends (``WorkerLab`` is one).
OpenLab = Callable[[list[Side], Settings, Selection, contextlib.ExitStack], Lab]


# --- the run ----------------------------------------------------------------------------------


@dataclass
class ABResults:
    """What a run found: each benchmark's record (``bench.ab.measure.result``, or
    ``skipped``) in the selection's order, and where its time went (seconds from its start)."""

    sides: list[Side]
    selection: Selection
    settings: Settings
    benchmarks: list[dict]
    first_pass_order: list[str]  # as the passes took them (bench.ab.budget.next_bench)
    workers_s: float  # until the workers had started
    passes_s: float  # until the first and second passes had ended
    confirm_s: float  # the confirmations'
    wall_s: float
    steal_pct: float | None  # the CPU time stolen over the run (None: no counter here)

    def named(self, verdict: str) -> list[str]:
        return [r["name"] for r in self.benchmarks if r["verdict"] == verdict]

    @property
    def exit_code(self) -> int:
        """``bench ab``'s: 1 where a benchmark is SLOWER, else 0."""
        return 1 if self.named(S.SLOWER) else 0


def confirm_guess(setup_s: float, pair_s: float, settings: Settings) -> float:
    """Seconds a benchmark's confirmation takes at least: its setup (as in its first pass)
    and ``min_seconds`` or ``min_pairs`` pairs at ``pair_s`` each, whichever is longer."""
    return setup_s + max(settings.min_seconds, settings.min_pairs * pair_s)


def pair_seconds(state: Sampled) -> float:
    """A round pair's seconds: as sampled, or before any round, both sides' K steps at the
    warm-up's pace."""
    if state.rounds:
        return state.seconds / len(state.rounds)
    per_step = [s["per_step_s"] for s in state.setups.values()]
    return 2 * state.k * float(np.median(per_step)) if per_step else 0.0


class Passes:
    """A run's first and second passes: ``bench.ab.budget.run_plan`` with this run's
    measuring; what each benchmark has sampled, and its record once finished."""

    def __init__(
        self,
        benches: list[Benchmark],
        skips: dict[str, str],
        lab: Lab,
        settings: Settings,
        sides: list[Side],
        workers_s: float,
    ) -> None:
        self.benches, self.skips, self.lab = benches, skips, lab
        self.settings, self.sides = settings, sides
        self.workers_s = workers_s  # what the fresh workers of a confirmation cost
        self.done: dict[str, dict] = {}
        self.sampled: dict[str, Sampled] = {}
        self.order: list[str] = []  # the first pass's (costliest first, budget.py)

    def run(self, deadline: float | None) -> list[dict]:
        """Every benchmark's record, in the selection's order, by ``deadline``."""
        settings = self.settings
        plan = Plan(
            deadline=deadline,
            max_seconds=settings.max_seconds,
            extend_to=EXTEND * settings.max_seconds,
            min_pairs=settings.min_pairs,
            reserve=self.reserve,
        )
        run_plan(
            self.benches,
            plan,
            self.start,
            self.lab.sample,
            self.width,
            self.finish,
            clock=self.lab.clock,
            cost=self.cost,
        )
        return [self.done[b.name] for b in self.benches]

    def start(self, bench: Benchmark) -> Sampled | None:
        self.order.append(bench.name)
        if bench.name in self.skips:
            self.done[bench.name] = skipped(bench, self.skips[bench.name])
            return None
        try:
            self.sampled[bench.name] = self.lab.set_up(bench)
        except Unsupported as e:
            self.done[bench.name] = skipped(bench, str(e))
            return None
        return self.sampled[bench.name]

    def width(self, state: Sampled) -> float | None:
        est = estimate(state.rounds, self.settings)[1]
        return None if S.decided(est, self.settings.threshold) else est.detectable_pct

    def finish(self, bench: Benchmark, state: Sampled) -> None:
        self.lab.drop(state)
        self.done[bench.name] = result(bench, state, self.settings, self.sides)
        progress(self.done[bench.name])

    def reserve(self, current: Benchmark | None) -> float:
        """The confirmation's time (budget.py): fresh workers and, per benchmark flagged
        so far and for ``current`` (should it be flagged), its setup and least sampling."""
        if not self.settings.confirm:
            return 0.0
        names = [n for n, r in self.done.items() if r["verdict"] in (S.SLOWER, S.FASTER)]
        if current is not None and current.name not in self.done:
            names.append(current.name)
        guesses = [
            confirm_guess(self.sampled[n].setup_s, pair_seconds(self.sampled[n]), self.settings)
            for n in names
            if n in self.sampled
        ]
        return self.workers_s + sum(guesses) if guesses else 0.0

    def cost(self, bench: Benchmark) -> float | None:
        """What deciding ``bench`` is guessed to take: its least sampling and setup, as
        measured on the same task and batch by another implementation (None before)."""
        seen = [
            confirm_guess(s.setup_s, pair_seconds(s), self.settings)
            for b in self.benches
            if (b.task, b.batch_size) == (bench.task, bench.batch_size)
            and (s := self.sampled.get(b.name)) is not None
        ]
        return float(np.median(seen)) if seen else None


@dataclass
class ABRun:
    """BASE against HEAD (``sides``, in that order) on the ``selection``, measured in turn
    within ``settings``; ``run()`` once. ``lab`` makes where it measures (worker processes by
    default); the progress goes to stderr, the sides' description to ``out`` (None: stdout)."""

    sides: list[Side]
    selection: Selection
    settings: Settings
    lab: OpenLab = WorkerLab
    out: TextIO | None = None

    def run(self) -> ABResults:
        """Measure every selected benchmark; raises InputError where a side or a worker
        fails (a bad revision's tree, a crash, a hang), with the workers stopped."""
        steal0 = cpu_steal_counters()
        with contextlib.ExitStack() as stack:  # the workers and batches, on every exit path
            lab = self.lab(self.sides, self.settings, self.selection, stack)
            t0 = lab.clock()
            pairs = self.settings.pairs
            print(f"ab: starting {pairs} worker(s) per side ...", file=sys.stderr, flush=True)
            lab.start()
            workers_s = lab.clock() - t0
            print(format_sides(self.sides), file=self.out or sys.stdout, flush=True)
            benches, skips = select_benchmarks(self.sides, self.selection)
            passes = Passes(benches, skips, lab, self.settings, self.sides, workers_s)
            deadline = t0 + self.settings.budget_s if self.settings.budget_s else None
            records = passes.run(deadline)
            passes_s = lab.clock() - t0
            confirm_s = self.confirm(passes, records, lab, deadline)
        stolen = steal_fraction(steal0, cpu_steal_counters())
        return ABResults(
            sides=self.sides,
            selection=self.selection,
            settings=self.settings,
            benchmarks=records,
            first_pass_order=passes.order,
            workers_s=workers_s,
            passes_s=passes_s,
            confirm_s=confirm_s,
            wall_s=lab.clock() - t0,
            steal_pct=None if stolen is None else 100 * stolen,
        )

    def confirm(
        self, passes: Passes, records: list[dict], lab: Lab, deadline: float | None
    ) -> float:
        """Measure each SLOWER or FASTER benchmark of ``records`` again, by fresh workers,
        and judge it on all its rounds (in place); the seconds it took."""
        settings = self.settings
        flagged = [i for i, r in enumerate(records) if r["verdict"] in (S.SLOWER, S.FASTER)]
        if not (flagged and settings.confirm):
            return 0.0
        t0 = lab.clock()
        print(
            f"ab: confirming {len(flagged)} verdict(s) with {settings.pairs} fresh worker "
            "pair(s) ...",
            file=sys.stderr,
            flush=True,
        )
        lab.start()
        # The confirmations share what is left until the same deadline, as a first pass (each
        # set up first: its cap is asked once it is ready).
        plan = Plan(deadline, settings.max_seconds, settings.max_seconds, settings.min_pairs)
        for j, i in enumerate(flagged):
            bench = next(b for b in passes.benches if b.name == records[i]["name"])
            later = [records[k]["setup_s"] for k in flagged[j + 1 :]]
            setup_later = float(np.mean(later)) if later else 0.0
            again = lab.set_up(bench, prior=passes.sampled[bench.name])
            try:
                cap = first_pass_cap(plan, lab.clock(), len(flagged) - j, setup_later)
                lab.sample(again, cap, settings.min_pairs)
            finally:
                lab.drop(again)
            first = records[i]["verdict"]
            records[i] = result(bench, again, settings, self.sides)
            records[i]["first_verdict"] = first
            progress(records[i])
        return lab.clock() - t0
