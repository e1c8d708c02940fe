"""Which commit made it slower: ``python -m bench bisect``, the command.

    python -m bench bisect GOOD BAD [-k EXPR] [--json FILE] [any option of bench ab]

GOOD and BAD are revisions of this repository (``--repo``), GOOD an ancestor of BAD. The
search, and what each step decides, are ``bench/ab/bisect.py``'s; each step here is one
``ABRun`` (``bench/ab/run.py``) of the commit under test against its base, with every
option of ``bench ab`` but the sides and its outputs (``add_measuring_options``).

Exit codes: 0 culprit(s) found and confirmed, or BAD is not slower (nothing to find); 2 bad
input (a revision that does not resolve, GOOD not on BAD's first-parent line, GOOD or BAD
cannot be measured); 3 could not decide (a culprit is among commits that were skipped, or no
culprit was confirmed). Where each step measures is passed in (``lab``, as ``ABRun`` takes
it), so the command is tested without processes (tests/test_bisect.py). Imports no
TensorFlow (the A/B workers do).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.ab.bisect import (
    FAILED,
    SAME,
    SLOW,
    Measurement,
    bisect,
    format_result,
    format_steps,
    label,
    record,
    short,
)
from bench.ab.cli import ROOT, add_measuring_options, selection_from, settings_from
from bench.ab.measure import Selection, Settings, WorkerLab
from bench.ab.output import print_verdicts
from bench.ab.run import ABRun, OpenLab
from bench.ab.sides import resolve_revision, resolve_side
from bench.report.files import write_json_atomic
from bench.stats import paired as S
from bench.workers.process import InputError, run_command

# bench ab's options that name the two sides or its own outputs: in a bisection the sides are
# the commits and the output is the bisection's (GOOD and BAD, --json).
NOT_PASSED_ON = (
    "--base",
    "--head",
    "--base-python",
    "--head-python",
    "--github-json",
    "--markdown",
)


# --- measuring with bench ab ----------------------------------------------------------------


def followed_selection(expression: str | None, names: list[str]) -> str:
    """A ``-k`` expression selecting the benchmarks BAD was slower on (within the user's)."""
    names_expr = " or ".join(names)
    return f"({expression}) and ({names_expr})" if expression else names_expr


def ab_measure(
    settings: Settings, selection: Selection, repo: Path, lab: OpenLab = WorkerLab
) -> Callable[..., Measurement]:
    """``measure(base, head, follow)``: an ``ABRun`` of ``head`` against ``base`` (revisions
    of ``repo``); with ``follow`` (benchmark names), only those are measured and judged. Its
    tables go to stderr, as progress: stdout is the bisection's own report."""

    def measure(base: str, head: str, follow: list[str] | None = None) -> Measurement:
        step = selection
        if follow:
            step = replace(selection, expression=followed_selection(selection.expression, follow))
        t0 = time.monotonic()
        try:
            with contextlib.ExitStack() as stack:  # the exported revisions
                sides = [
                    resolve_side("base", base, None, repo, stack),
                    resolve_side("head", head, None, repo, stack),
                ]
                results = ABRun(sides, step, settings, lab, out=sys.stderr).run()
        except InputError as e:
            error = str(e).strip() or type(e).__name__
            return Measurement(base, head, FAILED, error=error, seconds=time.monotonic() - t0)
        print_verdicts(results.benchmarks, settings.threshold, results.wall_s, sys.stderr)
        seconds = time.monotonic() - t0
        rows = [b for b in results.benchmarks if not follow or b["name"] in follow]
        measured = [b for b in rows if b["verdict"] != S.SKIPPED]
        keep = ("name", "verdict", "ratio", "ci_low", "ci_high", "skip_reason")
        benchmarks = [{k: b.get(k) for k in keep} for b in rows]
        if not measured:
            why = "; ".join(f"{b['name']} skipped: {b['skip_reason']}" for b in rows)
            return Measurement(base, head, FAILED, benchmarks, why or "nothing measured", seconds)
        outcome = SLOW if any(b["verdict"] == S.SLOWER for b in measured) else SAME
        return Measurement(base, head, outcome, benchmarks, seconds=seconds)

    return measure


# --- the command ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """GOOD and BAD, and every option of bench ab but the sides and its outputs (passed on to
    each step)."""
    p = argparse.ArgumentParser(
        prog="python -m bench bisect",
        usage="%(prog)s GOOD BAD [-k EXPR] [--json FILE] [bench ab options]",
        description="Find the commit(s) between GOOD and BAD that made the selected benchmarks "
        "slower, each step an interleaved A/B measurement (docs/regression.md).",
    )
    p.add_argument("good", metavar="GOOD", help="a revision that is not slower")
    p.add_argument("bad", metavar="BAD", help="a later revision that is slower")
    # A step judges a range, for which the estimate suffices (slower, or over half of BAD's
    # slowdown): its benchmarks get --max-seconds each and no second pass (bench/ab/budget.py),
    # unless --budget-seconds is given.
    add_measuring_options(p, budget_s=0.0)
    p.add_argument(
        "--json",
        dest="json_out",
        help="write the bisection here: every step's verdicts, ratios, intervals",
    )
    p.add_argument(
        "--repo", default=str(ROOT), help="repository GOOD and BAD belong to (default: this one)"
    )
    for option in NOT_PASSED_ON:  # refused in run(), saying why
        p.add_argument(option, help=argparse.SUPPRESS)
    return p


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise InputError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def commit_range(repo: Path, good: str, bad: str) -> tuple[list[str], dict[str, str]]:
    """GOOD, then BAD's first-parent line after it, oldest first; and each commit's subject."""
    ids = {}
    for which, spec in (("GOOD", good), ("BAD", bad)):
        ids[which] = resolve_revision(repo, spec)
        if ids[which] is None:
            raise InputError(f"{which} {spec!r}: not a git revision of {repo}")
    if ids["GOOD"] == ids["BAD"]:
        raise InputError(f"GOOD {good!r} and BAD {bad!r} are the same commit")
    lines = git(repo, "log", "--first-parent", "--format=%H %s", ids["BAD"], "--").splitlines()
    line: list[tuple[str, str]] = []
    for entry in lines:
        sha, _, subject = entry.partition(" ")
        line.append((sha, subject))
        if sha == ids["GOOD"]:
            break
    else:
        raise InputError(
            f"GOOD {good!r} is not on BAD {bad!r}'s first-parent line (GOOD must be the older)"
        )
    line.reverse()
    return [sha for sha, _ in line], dict(line)


def run(args: argparse.Namespace, argv: list[str], lab: OpenLab = WorkerLab) -> int:
    given = [o for o in NOT_PASSED_ON if getattr(args, o[2:].replace("-", "_")) is not None]
    if given:
        raise InputError(
            f"{', '.join(given)}: not an option of bisect (GOOD and BAD are the sides; every "
            "commit runs under this interpreter)"
        )
    settings, selection = settings_from(args), selection_from(args)
    repo = Path(args.repo).resolve()
    commits, subjects = commit_range(repo, args.good, args.bad)
    t0 = time.monotonic()
    print(
        f"bisect: GOOD {short(commits[0], subjects)} .. BAD {short(commits[-1], subjects)}: "
        f"{len(commits) - 1} commits",
        file=sys.stderr,
        flush=True,
    )
    follow: list[str] = []  # the benchmarks BAD is slower on, once the first step said so
    steps: list[Measurement] = []
    ab = ab_measure(settings, selection, repo, lab)

    def measure(base: str, head: str) -> Measurement:
        what = f"{label(head, commits)} against {label(base, commits)}"
        print(f"bisect: step {len(steps) + 1}: {what} ...", file=sys.stderr, flush=True)
        steps.append(ab(base, head, follow))
        if len(steps) == 1:
            follow.extend(b["name"] for b in steps[0].benchmarks if b["verdict"] == S.SLOWER)
        print(f"bisect: {what}: {steps[-1].outcome}", file=sys.stderr, flush=True)
        return steps[-1]

    result = bisect(commits, measure)
    wall = time.monotonic() - t0
    print()
    print(format_steps(result))
    print()
    print(format_result(result, subjects))
    print(f"{len(result.measurements)} A/B measurement(s), {wall:.0f} s")
    if args.json_out:
        write_json_atomic(args.json_out, record(result, subjects, argv, follow, wall))
    return result.exit_code


def main(argv: list[str] | None = None, lab: OpenLab = WorkerLab) -> int:
    """``python -m bench bisect``; ``lab``: where each step measures (a fake, in the tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = functools.partial(run, lab=lab)
    return run_command("bisect", command, build_parser().parse_args(argv), argv)
