"""The run's time plan: one planner for everything a benchmark run does under a run budget
(``--run-budget``; the quick profile's 270 s, counted from pytest's start). No TensorFlow.

At collection pytest already sees every benchmark, so the plan is built there
(``conftest.py``): one ``Entry`` per panel (its members are built, then timed in blocks for up
to its cap), per convergence run and per distributed launch (each costs what it costs; its cap
is a guess). One rule then decides, whenever an entry starts and again once a panel is built:

    the time left, less the building still to come, is shared among the entries still to come
    in proportion to their caps; if that share is under ``MIN_SHARE`` of the caps, the
    optional entries (lowest priority first, the latest first among equals) drop out of the
    pool until it is not, or no optional entry is left.

An optional entry that dropped out is skipped when its turn comes, with the reason (in the
terminal, as the test's skip reason, and in the results' ``machine_info``); a panel that runs
gets its share of its cap for its blocks (``panel_info.planned_cap_s``); a required entry
always runs, at worst with its first few blocks. So a slow CPU runs less and says what it
skipped, and a run ends past its budget by at most one entry's building. Without a budget
every entry gets its own cap and nothing is skipped.

This replaces five rules that patched each other (a 50% "behind schedule" rule for the
convergence and distributed runs, a sweep point checked before and after building, the step
panels holding time back for the sweep, and ordering the panels costliest first so the
building guess erred high): the building guess is now per task, from that task's panels
built so far (``Plan.built``), not one figure for every panel.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# The least share of its cap an entry is worth running for: a quarter. For a quick sweep
# point that is 2 s of its 8 s, about 6 blocks, the fewest that give an interval; below it a
# slow CPU's sweep points were measured from their first 6 blocks (0 to 1.5 s, intervals like
# 0.05x to 0.27x) while the time held back for them starved the step tables (docs/timing.md,
# "Profiles").
MIN_SHARE = 0.25

# Building a panel member before anything of its task was built (at least): replaced by the
# task's own figure once one of its panels is built. On this project's 2-core VM, halved by a
# spinning neighbour, a member took 0.3 s (linreg), 2.5 s (MLP) and 3.3 s (CNN) to build and
# warm up (panel_info.build_s_per_member, results/lean-core/quick-head-halved-2.json).
BUILD_GUESS_S = 2.0


# A convergence run or a distributed launch before one of its kind has run (then the median of
# those that ran): the quick profile's convergence runs took 0.4-15 s each on this project's
# 2-core VM (results/quick.json).
RUN_GUESS_S = 10.0


WHAT = {"panel": "panel", "convergence": "convergence run", "distributed": "distributed launch"}


@dataclass(frozen=True)
class Entry:
    """One piece of the run: a panel, a convergence run or a distributed launch."""

    key: str  # a panel id, or the test's name
    kind: str  # "panel", "convergence" or "distributed"
    cap_s: float  # a panel: its blocks' time cap; otherwise a guess of what it takes
    members: int = 0  # built before its cap starts (a panel's members)
    task: str | None = None  # whose building guess applies to its members
    optional: bool = False
    priority: int = 0  # among optional entries, the lowest drop out first


def run_rank(entry: Entry | None) -> tuple[int, int]:
    """Where an entry's items run (a stable sort of the collected items): the optional ones
    last, the most important of them first; everything else where pytest put it. So the
    required entries meet the machine first and their building and cost are known (not
    guessed) by the time an optional one starts: a low guess costs an optional entry, not a
    step table."""
    return (1, -entry.priority) if entry is not None and entry.optional else (0, 0)


@dataclass
class Plan:
    """The run's entries in the order they run, and the rule that shares the time left."""

    entries: Sequence[Entry]
    budget_s: float | None
    started: float  # when the run started, on ``clock``
    clock: Callable[[], float] = time.monotonic
    skipped: dict[str, str] = field(default_factory=dict)  # key -> reason
    granted: dict[str, float] = field(default_factory=dict)  # panel key -> its blocks' cap
    _done: set[str] = field(default_factory=set)
    _build: dict[str | None, float] = field(default_factory=dict)  # per member, by task
    _cost: dict[str, list[float]] = field(default_factory=dict)  # kind -> what runs took
    _begun: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        keys = [e.key for e in self.entries]
        if len(set(keys)) != len(keys):
            raise ValueError(f"plan entries must have distinct keys: {keys}")
        self._by_key = {e.key: e for e in self.entries}

    def start(self, key: str) -> str | None:
        """``key``'s turn: why it is skipped, or None (it runs; what it took is counted when
        the next entry starts). A key not in the plan (collected after it was made) runs."""
        self._close_running()
        entry = self._by_key.get(key)
        if entry is None or key in self._done:
            return self.skipped.get(key)
        self._done.add(key)
        self._begun[key] = self.clock()
        pending = [entry, *self._pending()]
        left = self._left()
        pool = {e.key for e in self._pool(pending, pending, left)}
        if key in pool:
            return None
        reason = self._reason(entry, left, pending)
        self.skipped[key] = reason
        self._begun.pop(key)
        return reason

    def cap(self, key: str, fixed_s: float = 0.0) -> float:
        """A started panel's cap for its blocks, now that its members are built: its share
        of the time left, less ``fixed_s`` (what it spends outside its blocks' cap: the rounds
        of members capped to a few rounds), within [0, its own cap]."""
        entry = self._by_key.get(key)
        if entry is None or not self.budget_s:
            cap = entry.cap_s if entry else 0.0
        else:
            pending = [entry, *self._pending()]
            building = pending[1:]
            left = self._left() - fixed_s
            pool = self._pool(pending, building, left)
            factor = self._factor(pool, building, left)
            cap = max(0.0, min(entry.cap_s, factor * entry.cap_s))
        self.granted[key] = cap
        return cap

    def built(self, key: str, seconds_per_member: float) -> None:
        """What building one member of ``key``'s panel took: the guess for its task's."""
        entry = self._by_key.get(key)
        if entry is not None:
            self._build[entry.task] = seconds_per_member

    def info(self) -> dict:
        """The plan in a results file's ``machine_info`` (docs/results-schema.md)."""
        return {
            "run_budget_s": self.budget_s,
            "entries": len(self.entries),
            "skipped": [
                {"key": k, "kind": self._by_key[k].kind, "reason": r}
                for k, r in self.skipped.items()
            ],
        }

    # --- the rule ---------------------------------------------------------------------

    def _pool(self, pending: list[Entry], building: list[Entry], left: float) -> list[Entry]:
        """``pending`` less the optional entries that drop out: lowest priority first, the
        latest first among equals, until the pool's share is ``MIN_SHARE`` of its caps."""
        pool = list(pending)
        if not self.budget_s:
            return pool
        while self._factor(pool, building, left) < MIN_SHARE:
            optional = [i for i, e in enumerate(pool) if e.optional]
            if not optional:
                break
            drop = min(optional, key=lambda i: (pool[i].priority, -i))
            pool.pop(drop)
        return pool

    def _factor(self, pool: list[Entry], building: list[Entry], left: float) -> float:
        """The share of its cap every entry of ``pool`` gets: the time left, less the
        building of the pool's entries in ``building``, over the pool's caps."""
        in_pool = {e.key for e in pool}
        spare = left - sum(self._build_guess(e) for e in building if e.key in in_pool)
        caps = sum(self._cap_guess(e) for e in pool)
        return spare / caps if caps > 0 else float("inf")

    def _left(self) -> float:
        if not self.budget_s:
            return float("inf")
        return self.started + self.budget_s - self.clock()

    def _pending(self) -> list[Entry]:
        return [e for e in self.entries if e.key not in self._done]

    def _build_guess(self, entry: Entry) -> float:
        """Building ``entry``'s members: its task's figure, or, for a task not built yet, the
        most any task took and at least ``BUILD_GUESS_S`` (erring high: linreg's members build
        in a tenth of the time of the CNN's)."""
        per_member = self._build.get(entry.task)
        if per_member is None:
            per_member = max([BUILD_GUESS_S, *self._build.values()])
        return per_member * entry.members

    def _cap_guess(self, entry: Entry) -> float:
        """A panel's cap; for another kind, the median of what its kind took so far (its
        own guess until one has run)."""
        seen = sorted(self._cost.get(entry.kind, [])) if entry.kind != "panel" else []
        return seen[len(seen) // 2] if seen else entry.cap_s

    def _close_running(self) -> None:
        """Count what the non-panel entries started so far took (a panel's is its cap)."""
        now = self.clock()
        for key, begun in list(self._begun.items()):
            entry = self._by_key[key]
            if entry.kind != "panel":
                self._cost.setdefault(entry.kind, []).append(now - begun)
            del self._begun[key]

    def _reason(self, entry: Entry, left: float, pending: list[Entry]) -> str:
        need = sum(MIN_SHARE * self._cap_guess(e) + self._build_guess(e) for e in pending)
        what = "sweep point" if entry.key.startswith("sweep-") else WHAT[entry.kind]
        return (
            f"the run budget ({self.budget_s:g} s, --run-budget) is spent on this machine: "
            f"{max(left, 0.0):.0f} s left, and what is still to come ({len(pending)} of the "
            f"run's entries, this one included) needs {need:.0f} s at least; this {what} is "
            "optional (--run-budget 0 runs it)"
        )
