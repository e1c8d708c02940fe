"""Which commit made it slower: ``bench ab`` measurements arranged as a bisection, and its
report (the command, ``python -m bench bisect``: ``bench/ab/bisect_cli.py``).

GOOD and BAD are revisions of this repository, GOOD an ancestor of BAD; the commits between
them are BAD's first-parent line back to GOOD. Every step is one interleaved A/B measurement
(``bench.ab.run.ABRun``: fresh worker processes, rounds taken in turn, a Hodges-Lehmann ratio
with its interval, SLOWER verdicts confirmed by fresh processes), so a commit is judged
against GOOD measured in the same seconds, never against a number from minutes before: the
noise that sends a bisection by sequential timings the wrong way cancels.

1. BAD against GOOD. Not SLOWER on any selected benchmark: nothing to bisect (exit 0).
   Otherwise the benchmarks that were SLOWER are the ones followed from then on.
2. Binary search: the commit in the middle of what is left, measured against GOOD, goes with
   BAD if it is SLOWER than GOOD or shows more than half of BAD's slowdown (in log-ratio
   terms, averaged over the followed benchmarks), else with GOOD. The second test decides
   between the two levels a commit has in a one-step slowdown, so a step whose interval is
   too wide for a SLOWER verdict (a busy machine) still counts for the side it is nearer. A
   commit that cannot be measured (its tree does not build, a worker fails to start, a
   benchmark errors, none of the benchmarks runs) is skipped, as ``git bisect skip`` does,
   and its neighbour nearest the middle is tried instead.
3. The culprit against the commit before it: the step it made, with its interval, and the
   confirmation that the halving did not misread a step (one noisy measurement can send a
   commit to the wrong side). An unconfirmed culprit is reported as such.
4. BAD against the culprit. Still SLOWER: the slowdown came in more than one step (or the
   culprit was a misread one); the rest of the range is bisected the same way, with the
   culprit as its base, and so on.

The search (``bisect``) takes the measurement as a function, so it is tested without
processes (tests/test_bisect.py). No TensorFlow, no processes, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tabulate import tabulate

from bench.ab.output import pct
from bench.stats import paired as S
from bench.workers.process import InputError

SCHEMA = "loopbench-bisect/1"
SLOW, SAME, FAILED = "SLOWER", "not slower", "could not run"
EXIT_FOUND, EXIT_UNDECIDED = 0, 3


# --- the search, given a way to measure -----------------------------------------------------


@dataclass
class Measurement:
    """One A/B step: ``head`` against ``base`` on the followed benchmarks."""

    base: str
    head: str
    outcome: str  # bench ab's verdict: SLOW (on any followed benchmark), SAME, or FAILED
    benchmarks: list[dict] = field(default_factory=list)  # name, verdict, ratio, ci_low, ci_high
    error: str | None = None  # why it could not run (FAILED)
    seconds: float = 0.0
    # Set by the search: the part of its range's slowdown this commit already shows, with the
    # interval's ends (``part_of``).
    part: tuple[float, float, float] | None = None


Measure = Callable[[str, str], Measurement]


@dataclass
class Culprit:
    commit: str
    base: str  # what it was measured against: GOOD, or the culprit before it
    measurement: Measurement  # the culprit against ``base``
    parent: Measurement  # the culprit against the commit before it (``measurement`` if base)
    found_after: int  # measurements made when the halving ended on it (the first included)

    @property
    def confirmed(self) -> bool:
        """SLOWER than the commit before it, measured interleaved: not a misread step."""
        return self.parent.outcome == SLOW


@dataclass
class Bisection:
    status: str  # "found", "nothing" (BAD not slower than GOOD) or "undecided"
    commits: list[str]  # GOOD, the commits after it, ..., BAD
    measurements: list[Measurement]
    culprits: list[Culprit]  # in the order of the history
    skipped: dict[str, str]  # commit -> why it could not be measured
    undecided: list[list[str]]  # per range left undecided: the commits its culprit could be
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_UNDECIDED if self.status == "undecided" else EXIT_FOUND


def first_line(error: str | None) -> str:
    return (error or "could not be measured").strip().splitlines()[0]


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def middle(lo: int, hi: int, skipped: set[int]) -> int | None:
    """The commit to measure next between ``lo`` (like the base) and ``hi`` (like the end),
    both excluded: the one nearest the middle that was not skipped (the earlier on a tie)."""
    left = [i for i in range(lo + 1, hi) if i not in skipped]
    return min(left, key=lambda i: (abs(2 * i - lo - hi), i)) if left else None


def part_of(m: Measurement, end: Measurement) -> tuple[float, float, float] | None:
    """How much of ``end``'s slowdown (the range's last commit against its base) ``m`` (a
    commit against the same base) already shows, in log-ratio terms: 0 like the base, 1 like
    the end; its estimate and interval ends, averaged over the benchmarks SLOWER in ``end``.
    None where none of them was measured."""
    slower = {b["name"]: b["ratio"] for b in end.benchmarks if b["verdict"] == S.SLOWER}
    rows = [b for b in m.benchmarks if b["name"] in slower and b.get("ratio")]
    if not rows:
        return None
    keys = ("ratio", "ci_low", "ci_high")
    parts = [[math.log(b[k]) / math.log(slower[b["name"]]) for k in keys] for b in rows]
    return tuple(sum(col) / len(col) for col in zip(*parts))


def halve(
    base: int,
    last: int,
    end: Measurement,
    step: Callable[[int, int], Measurement],
    skipped: dict[int, str],
) -> tuple[int, int, dict[int, Measurement]]:
    """Halve the range (``base``, ``last``], its end measured ``end`` against the base, with
    ``step(base, commit)`` until no commit that could be measured is left between ``lo`` (like
    the base) and ``hi`` (like the end); returns them and the measurements by commit, and
    adds the commits that could not be measured to ``skipped``, with why.

    The middle commit goes with the end if it is SLOWER than the base, or shows more than
    half of the end's slowdown (nearer the end than the base, in log terms); else with the
    base. The second test lets a step whose interval is too wide for a verdict still count
    for the side it is nearer; the first keeps an end measured too slow (its estimate is the
    noisiest number of the range: it was kept for being SLOWER) from sending a commit that is
    clearly slower to the base's side."""
    lo, hi, seen = base, last, {last: end}
    while (mid := middle(lo, hi, set(skipped))) is not None:
        m = step(base, mid)
        part = part_of(m, end) if m.outcome != FAILED else None
        if part is None:
            why = "none of the benchmarks slower in this range ran"
            skipped[mid] = first_line(m.error) if m.outcome == FAILED else why
            continue
        m.part = part
        seen[mid] = m
        lo, hi = (lo, mid) if m.outcome == SLOW or part[0] > 0.5 else (mid, hi)
    return lo, hi, seen


def bisect(commits: list[str], measure: Measure) -> Bisection:
    """Find the commits of ``commits`` (GOOD first, BAD last) that made it slower, with
    ``measure(base, head)``. Raises InputError where GOOD against BAD cannot be measured.

    A range (base, BAD] with BAD SLOWER than its base is halved until one commit is left
    (``halve``). The culprit is then measured against
    the commit before it: confirmed where that reads SLOWER; one that is not (a step misread
    on a noisy machine) is reported as such. And BAD against the culprit: still SLOWER, the
    rest of the range is bisected the same way, with the culprit as its base (so a real
    culprit after a misread one is found all the same). Undecided where no culprit is
    confirmed."""
    log: list[Measurement] = []
    skipped: dict[int, str] = {}

    def step(base: int, head: int) -> Measurement:
        log.append(measure(commits[base], commits[head]))
        return log[-1]

    last = len(commits) - 1
    first = step(0, last)
    if first.outcome == FAILED:
        raise InputError(f"GOOD against BAD could not be measured: {first.error}")
    culprits: list[Culprit] = []
    undecided: list[list[str]] = []
    notes: list[str] = []
    ranges = [(0, first)] if first.outcome == SLOW else []  # (base, BAD against it)
    while ranges:
        base, slower = ranges.pop(0)
        lo, hi, seen = halve(base, last, slower, step, skipped)
        if any(i in skipped for i in range(lo + 1, hi)):
            undecided.append(commits[lo + 1 : hi + 1])
            continue
        found_after = len(log)
        parent = seen[hi] if lo == base else step(lo, hi)  # lo is hi's parent here
        culprits.append(Culprit(commits[hi], commits[base], seen[hi], parent, found_after))
        if hi != last:
            after = step(hi, last)
            if after.outcome == FAILED:
                notes.append(
                    f"BAD against {commits[hi][:10]} could not be measured: "
                    f"{first_line(after.error)}"
                )
            elif after.outcome == SLOW:
                ranges.append((hi, after))
    culprits.sort(key=lambda c: commits.index(c.commit))
    if undecided or (culprits and not any(c.confirmed for c in culprits)):
        status = "undecided"
    else:
        status = "found" if culprits else "nothing"
    skips = {commits[i]: why for i, why in sorted(skipped.items())}
    return Bisection(status, commits, log, culprits, skips, undecided, notes)


# --- the report ---------------------------------------------------------------------------


def short(commit: str, subjects: dict[str, str]) -> str:
    return f'{commit[:10]} "{subjects.get(commit, "")}"'


def _figures(m: Measurement) -> str:
    rows = [b for b in m.benchmarks if b.get("ratio") is not None]
    return ", ".join(
        f"{b['name']} {pct(b['ratio'])} [{pct(b['ci_low'])}, {pct(b['ci_high'])}]" for b in rows
    )


def label(commit: str, commits: list[str]) -> str:
    """GOOD, BAD, or the commit's place after GOOD, with its short hash."""
    i = commits.index(commit)
    place = "GOOD" if i == 0 else "BAD" if i == len(commits) - 1 else f"#{i}"
    return f"{place} {commit[:10]}"


def _part(m: Measurement) -> str:
    if m.part is None:
        return ""
    est, low, high = (f"{100 * x:.0f}%" for x in m.part)
    return f"{est} [{low}, {high}]"


def format_steps(result: Bisection) -> str:
    rows = []
    for i, m in enumerate(result.measurements, 1):
        rows.append(
            [
                i,
                label(m.head, result.commits),
                label(m.base, result.commits),
                m.outcome,
                _figures(m) if m.outcome != FAILED else clip(first_line(m.error), 70),
                _part(m),
                f"{m.seconds:.0f}",
            ]
        )
    headers = ["step", "HEAD", "against", "verdict", "HEAD vs against [CI]", "part", "s"]
    return tabulate(rows, headers=headers, disable_numparse=True)


def format_result(result: Bisection, subjects: dict[str, str]) -> str:
    commits = result.commits
    lines = []
    if result.status == "nothing":
        lines.append(
            f"BAD {short(commits[-1], subjects)} is not slower than GOOD "
            f"{short(commits[0], subjects)} on the selected benchmarks: nothing to bisect"
        )
    n = len(result.culprits)
    for i, c in enumerate(result.culprits, 1):
        against = label(c.base, commits)
        lines.append(
            f"slower commit{f' {i} of {n}' if n > 1 else ''}: {short(c.commit, subjects)} "
            f"({label(c.commit, commits).split()[0]} of {len(commits) - 1}; found after "
            f"{c.found_after} A/B measurements)"
        )
        p = c.parent
        if p.outcome == FAILED:
            lines.append(
                f"  against the commit before it: could not be measured ({first_line(p.error)})"
            )
        else:
            status = (
                "confirmed"
                if c.confirmed
                else "NOT confirmed: a step misread on a noisy machine? Measure again with a "
                "larger --max-seconds"
            )
            lines.append(
                f"  against the commit before it, {label(p.base, commits)}: {_figures(p)}, "
                f"{p.outcome}: {status}"
            )
        if p is not c.measurement:
            lines.append(f"  against {against}: {_figures(c.measurement)}")
        for m in result.measurements:  # BAD against it: the check for a further step
            if m.base == c.commit and m.head == commits[-1] and m.outcome != FAILED:
                more = "a further step" if m.outcome == SLOW else "no further step"
                lines.append(
                    f"  {label(m.head, commits)} against it: {m.outcome} ({_figures(m)}): {more}"
                )
        if c.commit == commits[-1]:
            lines.append("  it is BAD itself")
    for suspects in result.undecided:
        lines.append(
            "could not decide: a slower commit is one of "
            + ", ".join(short(c, subjects) for c in suspects)
            + " (those before the last could not be measured)"
        )
    lines += [f"could not check: {note}" for note in result.notes]
    for commit, why in result.skipped.items():
        lines.append(f"skipped {short(commit, subjects)}: {why}")
    return "\n".join(lines)


def record(
    result: Bisection, subjects: dict[str, str], argv: list[str], follow: list[str], wall_s: float
) -> dict:
    def m_doc(m: Measurement) -> dict:
        return {
            "base": m.base,
            "head": m.head,
            "outcome": m.outcome,
            "part": m.part,
            "error": m.error,
            "seconds": m.seconds,
            "benchmarks": m.benchmarks,
        }

    return {
        "schema": SCHEMA,
        "datetime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench", "bisect", *argv],
        "status": result.status,
        "exit_code": result.exit_code,
        "good": result.commits[0],
        "bad": result.commits[-1],
        "commits": [{"commit": c, "subject": subjects.get(c, "")} for c in result.commits],
        "followed": follow,
        "culprits": [
            {
                "commit": c.commit,
                "subject": subjects.get(c.commit, ""),
                "position": result.commits.index(c.commit),
                "against": c.base,
                "found_after_measurements": c.found_after,
                "found_after_s": sum(m.seconds for m in result.measurements[: c.found_after]),
                "confirmed": c.confirmed,
                "measurement": m_doc(c.measurement),
                "parent": m_doc(c.parent),
            }
            for c in result.culprits
        ],
        "undecided": result.undecided,
        "skipped": result.skipped,
        "notes": result.notes,
        "measurements": [m_doc(m) for m in result.measurements],
        "wall_s": wall_s,
    }
