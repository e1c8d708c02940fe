"""Interleaved measurement of a comparison group (a "panel"): the block scheduler and the
paired ratios. No TensorFlow: members are anything with a ``run_round()``.

Why: benchmarks timed one after another, minutes apart, inherit the drift of a shared machine
between those minutes. On this project's 2-core VM the suite's "speedup vs keras_fit" moved
by 16% (median) and 40% (max) between a quiet run and one beside a busy neighbour; timed in
one process, in blocks of one round of each implementation in random order, the same ratios
moved by 3% (issue "The comparison table, measured interleaved"). So every comparison is
measured here the way ``bench ab`` compares two versions of the code:

- every member is built and warmed up first (``bench/timing/panel.py``);
- then blocks run, each one round of every member in a fresh random order; around each block
  the hypervisor's steal and the CPU time other processes of the machine took are read
  (``bench.host.cpu_counters``), and every round of the block carries the block's figures;
- a ratio between two members is the Hodges-Lehmann estimate of their within-block
  log-ratios, with its 95% signed-rank interval (``bench/stats/paired.py``) widened into one
  that another run's estimate falls in (``PANEL_INTERVAL_SCALE``), from the blocks in
  which neither round was contended (steal above ``STEAL_LIMIT``, or other processes above
  ``FOREIGN_LIMIT``: a neighbour in the VM slows a two-threaded step more than a one-threaded
  one, which no pairing cancels);
- sampling stops once every ratio that matters (each member against the baseline and against
  its twin) is known to within ``target_pct`` (half-width of the interval), or at the time cap,
  or at ``max_blocks``; ``stopped_by`` records which.

A slow spell of the machine that lasts longer than a block slows every member of that block
alike, so it cancels in the within-block ratios; sequential medians cannot cancel it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bench.host import (
    FOREIGN_LIMIT,
    STEAL_LIMIT,
    cpu_counters,
    foreign_fraction,
    steal_fraction,
)
from bench.stats.paired import Estimate, hodges_lehmann, kept_pairs

# How much wider than the signed-rank interval a panel's reported interval is (in log space).
# Two factors, both measured on this project's 2-core VM:
# - PROCESS_SCALE: the signed-rank interval treats every block as independent, but each process
#   carries a bias of its own (memory layout, thread placement, which of a graph-mode step's two
#   speeds it settles in). With ``experiments/panel_budget.py processes`` the MLP panel's ratios
#   spread between 5 fresh processes 1.8 times as widely (root mean square over its 12 ratios)
#   as each process's interval claimed, while rebuilding the trainers within one process moved
#   them no more than the interval. Spreading the blocks over two processes made it worse
#   (2.4). As the A/B check's (bench/stats/paired.INTERVAL_SCALE, 1.7).
# - RUN_TO_RUN: what a reader asks of a ratio is whether the next run will say the same (issue
#   "The comparison table, measured interleaved": "an interval that holds from run to run").
#   Another run's estimate carries its own error as well as this one's, so it lies within
#   sqrt(2) times a calibrated interval for the true ratio 95% of the time. Widened by 1.8
#   only, each of two default runs' intervals held the other's estimate in 84-92% of the ratios
#   (results/panel-budget/agree-sweep-share.json, agree-quiet-quiet.json); by 1.8 x sqrt(2),
#   in 91-97% of them, and then in 92% of 306 ratios over ten pairs of five fresh runs, quiet
#   and loaded (82-100% per pair; docs/timing.md, "Intervals that hold from run to run").
PROCESS_SCALE = 1.8
RUN_TO_RUN = math.sqrt(2.0)
PANEL_INTERVAL_SCALE = PROCESS_SCALE * RUN_TO_RUN
MIN_PAIRS_FOR_INTERVAL = 6  # fewer pairs: no 95% signed-rank interval exists


class Member(Protocol):
    """One benchmark of a panel, built and warmed up: ``run_round()`` runs one timed round and
    returns its seconds per training step."""

    name: str

    def run_round(self) -> float: ...


@dataclass
class Rounds:
    """What one member did in the blocks: per round, its block, seconds per step, the fraction
    of CPU time the hypervisor stole and the fraction other processes took (both over the
    round's block)."""

    block: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    steal: list[float | None] = field(default_factory=list)
    foreign: list[float | None] = field(default_factory=list)

    def contended(self, i: int) -> bool:
        steal = self.steal[i]
        foreign = self.foreign[i] if i < len(self.foreign) else None
        return (steal is not None and steal > STEAL_LIMIT) or (
            foreign is not None and foreign > FOREIGN_LIMIT
        )

    def quiet(self) -> list[int]:
        """Indices of the uncontended rounds (all rounds, where fewer than half were)."""
        quiet = [i for i in range(len(self.seconds)) if not self.contended(i)]
        return quiet if 2 * len(quiet) >= len(self.seconds) else list(range(len(self.seconds)))


@dataclass
class PanelResult:
    names: list[str]
    rounds: dict[str, Rounds]
    blocks: int
    stopped_by: str  # "target", "time_cap" or "max_blocks"
    seconds: float
    target_pct: float
    time_cap_s: float
    order_seed: int
    capped_seconds: float = 0.0  # of ``seconds``: rounds of members with a round cap
    interval_scale: float = PANEL_INTERVAL_SCALE
    orders: list[list[str]] = field(default_factory=list)  # each block's order

    def ratio(self, slow: str, fast: str) -> Estimate | None:
        """``slow``'s seconds per step / ``fast``'s, paired within blocks (above 1: ``fast`` is
        faster): the speedup of ``fast`` over ``slow``. None with no common block."""
        return paired_ratio(self.rounds[slow], self.rounds[fast], self.interval_scale)

    def info(self) -> dict:
        return {
            "members": list(self.names),
            "blocks": self.blocks,
            "stopped_by": self.stopped_by,
            "target_pct": self.target_pct,
            "time_cap_s": self.time_cap_s,
            "seconds": self.seconds,
            "capped_seconds": self.capped_seconds,
            "interval_scale": self.interval_scale,
            "order_seed": self.order_seed,
        }


def paired_ratio(num: Rounds, den: Rounds, scale: float = PANEL_INTERVAL_SCALE) -> Estimate | None:
    """``num`` time / ``den`` time per step from the blocks both ran, dropping blocks where
    either round was contended (unless too few would remain: ``ab_stats.kept_pairs``)."""
    a = {b: (num.seconds[i], num.contended(i)) for i, b in enumerate(num.block)}
    b = {b: (den.seconds[i], den.contended(i)) for i, b in enumerate(den.block)}
    common = sorted(set(a) & set(b))
    if not common:
        return None
    a_s = np.array([a[i][0] for i in common], dtype=float)
    b_s = np.array([b[i][0] for i in common], dtype=float)
    a_st = np.array([float(a[i][1]) for i in common])  # 1.0: contended
    b_st = np.array([float(b[i][1]) for i in common])
    keep = kept_pairs(a_s, b_s, a_st, b_st, 0.5, MIN_PAIRS_FOR_INTERVAL)
    if not keep.any():
        return None
    return hodges_lehmann(np.log(a_s[keep] / b_s[keep]), scale=scale)


def half_width_pct(est: Estimate | None) -> float:
    """Half the interval's width in percent; infinite without an interval yet."""
    if est is None or est.n < MIN_PAIRS_FOR_INTERVAL:
        return math.inf
    return est.detectable_pct


def run_blocks(
    members: Sequence[Member],
    targets: Sequence[tuple[str, str]],
    *,
    min_blocks: int,
    max_blocks: int,
    time_cap_s: float,
    target_pct: float,
    seed: int = 0,
    counters: Callable[[], tuple | None] = cpu_counters,
    clock: Callable[[], float] = time.perf_counter,
) -> PanelResult:
    """Time ``members`` in blocks: each block runs one round of every member, in a random
    order drawn from ``seed``. Stops after ``min_blocks`` blocks once every ratio in
    ``targets`` (pairs of member names) has an interval no wider than ``target_pct`` on each
    side; at ``time_cap_s`` seconds of blocks (but not before ``min(min_blocks, 6)`` blocks, the
    fewest that give an interval); or at ``max_blocks``. A member with a ``max_rounds``
    attribute runs in the first that many blocks only, and its rounds do not count against
    ``time_cap_s``: it has a budget of its own (``Profile.member_budget_s``; docs/timing.md:
    the full profile's XLA loops of convolutions once spent the CNN panel's whole cap)."""
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ValueError(f"panel members must have distinct names: {names}")
    rng = random.Random(seed)
    rounds = {name: Rounds() for name in names}
    orders: list[list[str]] = []
    floor = min(min_blocks, MIN_PAIRS_FOR_INTERVAL)
    start = clock()
    capped_s = 0.0  # time in the rounds of members with a round cap of their own
    stopped_by = "max_blocks"
    for block in range(max_blocks):
        # A member with its own round cap (``max_rounds``, a member too slow for the panel's
        # pace: bench/timing/members.py) sits out the blocks after its last round.
        order = [m for m in members if len(rounds[m.name].seconds) < _cap(m)]
        if not order:
            break
        rng.shuffle(order)
        orders.append([m.name for m in order])
        capped_s += run_block(order, block, rounds, counters, clock)
        done = block + 1
        if done >= min_blocks and all(
            half_width_pct(paired_ratio(rounds[a], rounds[b])) <= target_pct for a, b in targets
        ):
            stopped_by = "target"
            break
        if done >= floor and clock() - start - capped_s >= time_cap_s and done < max_blocks:
            stopped_by = "time_cap"
            break
    return PanelResult(
        names=names,
        rounds=rounds,
        blocks=len(orders),
        stopped_by=stopped_by,
        seconds=clock() - start,
        capped_seconds=capped_s,
        target_pct=target_pct,
        time_cap_s=time_cap_s,
        order_seed=seed,
        orders=orders,
    )


def run_block(
    order: Sequence[Member],
    block: int,
    rounds: dict[str, Rounds],
    counters: Callable[[], tuple | None],
    clock: Callable[[], float],
) -> float:
    """One round of each member of ``order``, in that order, recorded in ``rounds`` with the
    block's contention. Returns the seconds spent in the rounds of capped members."""
    # Contention is read over the whole block, not round by round: /proc/stat counts in
    # clock ticks (10 ms), so one tick of a kernel thread is 5% of a 0.1 s round on 2 cores
    # (and 25% of a 20 ms round), against a fraction of that over a block of a dozen rounds.
    # A contended block is left out whole, which pairing within blocks needs anyway.
    capped_s = 0.0
    before = counters()
    for member in order:
        round_start = clock()
        seconds = member.run_round()
        if _cap(member) != math.inf:
            capped_s += clock() - round_start
        rec = rounds[member.name]
        rec.block.append(block)
        rec.seconds.append(float(seconds))
    after = counters()
    steal, foreign = steal_fraction(before, after), foreign_fraction(before, after)
    for member in order:
        rounds[member.name].steal.append(steal)
        rounds[member.name].foreign.append(foreign)
    return capped_s


def _cap(member: Member) -> float:
    cap = getattr(member, "max_rounds", None)
    return math.inf if cap is None else cap


def baseline_of(implementations: Sequence[str], preferred: str = "keras_fit") -> int | None:
    """Which member the speedups are against: ``preferred`` if present, else the first."""
    if not implementations:
        return None
    return implementations.index(preferred) if preferred in implementations else 0


def ratio_fields(est: Estimate | None) -> dict:
    """An estimate as the JSON entries of a ratio (None without one)."""
    if est is None:
        return {"speedup": None, "low": None, "high": None, "pairs": 0}
    return {"speedup": est.ratio, "low": est.low, "high": est.high, "pairs": est.n}
