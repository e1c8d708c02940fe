"""How ``python -m bench ab`` spends its time: a deadline for the whole run, shared out.

A CI check has a fixed budget (docs/regression.md: 4 minutes), and its benchmarks differ in
how long they take to decide: on a quiet machine a linreg step is known to +-1% in seconds,
while a graph-mode MLP step (bimodal on this project's machine) can use its whole cap and
still be undecided. A fixed cap per benchmark either wastes the time the quick ones leave or
runs past the budget on a slow CPU. So:

1. **First pass**, each task once in the order given, then the costliest to decide first
   (``next_bench``): each benchmark is set up and sampled until its interval is decisive
   (``bench.stats.paired.decided``), or for its share of the time left: what remains until the
   deadline, less the setups still to come (guessed from those so far), split evenly over the
   benchmarks not yet started, and never more than ``max_seconds``. A decided
   benchmark is dropped from its workers at once; an undecided one stays set up ("live").
2. **Second pass**: while time remains, the live benchmark with the **widest interval** (of
   those with time left before their own reserve, below) gets
   another slice of rounds, on top of the rounds it has (same workers, same steps per round),
   until it is decided, reaches ``extend_to`` seconds of sampling in all, or the deadline
   comes. Time the quick benchmarks saved goes where the noise is.
3. **Confirmation within the same deadline.** A flagged verdict (SLOWER or FASTER) is
   measured again by fresh workers after the passes (``bench/ab/run.py``). ``reserve`` keeps
   the confirmation's time back from the passes: the fresh workers' start-up and, per
   flagged benchmark, its own setup's time and its least sampling time (``min_seconds``, or
   ``min_pairs`` at its own pace where that is longer). The benchmark being sampled, in
   either pass, counts as flagged, since its next rounds may flag it: without that, a
   verdict found at the end of the last first pass had no time left for its confirmation
   (one run here went 32 s past its deadline). So even a run with nothing flagged ends its
   passes one confirmation (about 15-25 s here) before the deadline; the default deadline
   (210 s) allows for it. The confirmations share what is left until the same deadline
   (``first_pass_cap`` again).

At most ``max_live`` benchmarks stay set up at once (the narrowest is finished when one more
would be kept), so a user's big models do not pile up in the workers. Without a deadline
(``--budget-seconds 0``) every benchmark gets ``max_seconds``, as before.

The plan takes the measuring as functions, so it is tested with fakes (tests/test_ab_budget.py).
No TensorFlow, no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any

# An undecided benchmark's sampling, over both passes, is at most this x its first pass's cap
# (``max_seconds``): the second pass's ``extend_to``.
EXTEND = 3.0


@dataclass(frozen=True)
class Plan:
    deadline: float | None  # clock time by which sampling should end; None: no budget
    max_seconds: float  # the first pass's cap per benchmark
    extend_to: float  # the most sampling seconds one benchmark gets over both passes
    min_pairs: int  # new pairs every first pass takes, cap or not
    slice_s: float = 2.0  # one second-pass turn
    max_live: int = 6
    # Seconds to keep back before the deadline for what follows the passes (confirming the
    # verdicts flagged so far, and the one being sampled should it be flagged), given that
    # benchmark (None: none); None: nothing.
    reserve: Callable[[Any], float] | None = None

    def end(self, current: Any = None) -> float | None:
        """The deadline for sampling ``current`` in the passes: ``deadline`` less the
        reserve."""
        if self.deadline is None:
            return None
        return self.deadline - (self.reserve(current) if self.reserve else 0.0)


def first_pass_cap(plan: Plan, now: float, left: int, setup_s: float, current: Any = None) -> float:
    """The sampling cap of the next benchmark's first pass (it and ``left - 1`` more to go,
    each of the others still to be set up in about ``setup_s``)."""
    end = plan.end(current)
    if end is None:
        return plan.max_seconds
    share = (end - now - (left - 1) * setup_s) / max(left, 1)
    return max(0.0, min(plan.max_seconds, share))


def next_bench(pending: Sequence[Any], cost: Callable[[Any], float | None]) -> Any:
    """The benchmark to start next: the first one whose cost is not known yet (so every kind
    is seen early), else the costliest (first of equals). The confirmations' reserve grows as
    verdicts are flagged, so the benchmarks started last get the least time; those should be
    the ones that decide in seconds, not a CNN whose setup alone takes 10."""
    costs = [cost(b) for b in pending]
    unknown = [b for b, c in zip(pending, costs) if c is None]
    if unknown:
        return unknown[0]
    return pending[max(range(len(pending)), key=lambda i: (costs[i], -i))]


def widest(widths: dict[Any, float]) -> Any:
    """The key with the widest interval (first of equals)."""
    return max(widths, key=lambda key: widths[key])


def run_plan(
    benches: Sequence[Any],
    plan: Plan,
    start: Callable[[Any], Any | None],
    sample: Callable[[Any, float, int], None],
    width: Callable[[Any], float | None],
    finish: Callable[[Any, Any], None],
    clock: Callable[[], float] = time.monotonic,
    cost: Callable[[Any], float | None] = lambda bench: None,
) -> None:
    """Measure ``benches`` within ``plan``.

    ``start(bench)``: set it up; the sampled state, or None where it was skipped.
    ``sample(state, cap_s, min_new)``: take rounds until decided (after ``min_new`` new pairs)
    or ``cap_s`` seconds; ``state.seconds`` adds up the time spent sampling.
    ``width(state)``: the interval's half-width while undecided, None once decided.
    ``finish(bench, state)``: drop it from the workers and record its result (called once per
    started benchmark, in any order).
    ``cost(bench)``: the seconds it is guessed to take to decide, once something like it has
    been measured (None until then); the first pass takes the costliest first (next_bench)."""
    live: dict[Any, Any] = {}
    setups: list[float] = []
    pending = list(benches)
    while pending:
        bench = next_bench(pending, cost)
        left = len(pending)
        pending.remove(bench)
        t0 = clock()
        state = start(bench)
        if state is None:
            continue
        setups.append(clock() - t0)
        cap = first_pass_cap(plan, clock(), left, median(setups), bench)
        sample(state, cap, plan.min_pairs)
        if plan.deadline is None or width(state) is None:
            finish(bench, state)
            continue
        live[bench] = state
        if len(live) > plan.max_live:
            narrowest = min(live, key=lambda b: width(live[b]) or 0.0)
            finish(narrowest, live.pop(narrowest))
    while live:
        # the widest interval that still has room (each keeps its own confirmation back)
        rooms = {b: plan.end(b) - clock() for b in live}
        open_ = {b: width(s) or 0.0 for b, s in live.items() if rooms[b] >= plan.slice_s / 2}
        if not open_:
            break
        bench = widest(open_)
        state, room = live[bench], rooms[bench]
        cap = min(plan.slice_s, room, plan.extend_to - state.seconds)
        if cap > 0:
            sample(state, cap, 0)
        if cap <= 0 or width(state) is None or state.seconds >= plan.extend_to:
            finish(bench, live.pop(bench))
    for bench, state in live.items():  # the deadline came
        finish(bench, state)
