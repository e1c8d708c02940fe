"""Interleaved A/B regression check: BASE against HEAD, on this machine, now.

    python -m bench ab [--base REV|DIR] [--head REV|DIR] [-k EXPR] [--threshold 4%]
                       [--base-python PY] [--head-python PY] [--json F] [--github-json F]
                       [--tasks FILE]

BASE and HEAD are each a git revision of this repository (exported into a temporary
directory that is removed on every exit path), a directory holding another checkout, or the
working tree (``.``; HEAD's default; BASE defaults to ``HEAD``). ``--base-python`` /
``--head-python`` run a side under another interpreter or venv, so "did upgrading TensorFlow
slow my loop?" is ``--base . --base-python old-venv --head . --head-python new-venv``.

How it measures (docs/regression.md): long-lived worker processes
(``bench/ab/worker.py``), ``--pairs`` of them per side, each building the trainer from its own
side's code, compiling and warming it up. The coordinator then takes turns: for each process
pair, one round of K steps + host sync on one side, then the same on the other, in random
order, so both versions share the same fraction of a second of a noisy machine. A benchmark
is sampled until its interval is decisive or its share of ``--budget-seconds`` (the run's
deadline, shared out by ``bench/ab/budget.py``: leftovers go to the widest intervals) has
passed. A SLOWER or FASTER
verdict is then checked by fresh worker processes (a process carries a bias of its own): the
benchmark is measured again by them and judged on all its rounds. Steal
(``/proc/stat``) is read around every round; pairs with a contended round are dropped.
Statistics: ``bench/stats/paired.py``.

``--tasks FILE`` (or ``$LOOPBENCH_TASKS``): the tasks of a user's task file instead of the
built-in ones (``builtin`` adds those), loaded by every worker with its own side's code
(``bench/tasks/user.py``); a side whose code predates user tasks skips them with the reason.
A task with several inputs (a dict or list of shapes) is skipped with the reason: the workers
trade one batch as the arrays ``x`` and ``y``.

The run itself is a library call, ``bench.ab.run.ABRun(sides, selection, settings).run()``,
which ``python -m bench bisect`` makes for each of its steps too: this module reads and checks
the options (``add_measuring_options`` is shared with bisect), resolves the sides, and
prints and writes what the run found.

Exit codes: 0 no regression, 1 a SLOWER verdict, 2 bad input (unknown revision, a side
without the implementation registry, a bad task file, a worker that crashed or hung: its own
error is shown).
No worker outlives the command: each leads its own process group, killed on every exit path,
and exits by itself when its stdin closes.

Imports no TensorFlow (the workers do).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench.ab.budget import EXTEND
from bench.ab.measure import WARMUP_STEPS, Selection, Settings, WorkerLab
from bench.ab.output import github_entries, machine, markdown_verdict, print_verdicts, side_record
from bench.ab.run import HEADLINE, ABResults, ABRun, OpenLab
from bench.ab.sides import resolve_side
from bench.host import STEAL_LIMIT
from bench.report.compare_cli import parse_threshold
from bench.report.files import write_json_atomic, write_text_atomic
from bench.stats import paired as S
from bench.tasks.user import specs_from
from bench.workers.process import InputError, run_command

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "loopbench-ab/1"
DEFAULTS = Settings()


# --- the options ------------------------------------------------------------------------------


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """What is measured: -k, --batch, --tasks."""
    p.add_argument(
        "-k",
        dest="select",
        help="pytest -k expression on names like custom_graph-mlp, over every implementation "
        f"(default: the headline benchmarks, {', '.join(HEADLINE)} on every task)",
    )
    p.add_argument("--batch", type=int, action="append", help="batch size(s) (default: the task's)")
    p.add_argument(
        "--tasks",
        action="append",
        metavar="FILE",
        help="a task file of your own, loaded by both sides' workers (repeatable; 'builtin' "
        "names the built-in tasks; default: the built-in tasks, or $LOOPBENCH_TASKS)",
    )


def add_verdict_options(p: argparse.ArgumentParser) -> None:
    """How a benchmark is judged: --threshold, --confidence, --interval-scale."""
    p.add_argument(
        "--threshold",
        default=f"{100 * DEFAULTS.threshold:g}%",
        type=parse_threshold,
        help="smallest slowdown reported (default %(default)s)",
    )
    p.add_argument("--confidence", type=float, default=DEFAULTS.confidence)
    p.add_argument(
        "--interval-scale",
        type=float,
        default=DEFAULTS.interval_scale,
        help=f"widen the signed-rank interval by this factor for the workers' own biases "
        f"(default {DEFAULTS.interval_scale}, measured here: bench/stats/paired.py)",
    )


def add_sampling_options(p: argparse.ArgumentParser, budget_s: float) -> None:
    """How it is sampled, and for how long (``budget_s``: --budget-seconds' default)."""
    d = DEFAULTS
    p.add_argument(
        "--pairs", type=int, default=d.pairs, help=f"worker processes per side (default {d.pairs})"
    )
    p.add_argument(
        "--round-seconds",
        type=float,
        default=d.round_seconds,
        help=f"a round's length, K steps (default {d.round_seconds:g}: the shorter, the closer "
        "in time the two rounds of a pair, docs/regression.md)",
    )
    p.add_argument(
        "--min-pairs", type=int, default=d.min_pairs, help="round pairs before stopping early"
    )
    p.add_argument(
        "--min-seconds",
        type=float,
        default=d.min_seconds,
        help="sampling seconds before a benchmark (or its confirmation) may stop early "
        "(default %(default)g; the deadline and --max-seconds still win)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=d.max_seconds,
        help=f"sampling time cap of a benchmark's first pass (default {d.max_seconds:g}); an "
        f"undecided one may get up to {EXTEND:g}x that in all while the budget lasts",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=budget_s,
        help="the run's deadline for sampling, counted from its start, confirmation included: "
        "shared out over the benchmarks, leftovers to the widest intervals "
        "(bench/ab/budget.py; default %(default)g; 0: none, each benchmark gets --max-seconds)",
    )
    p.add_argument(
        "--no-confirm",
        action="store_true",
        help="do not re-measure a SLOWER/FASTER benchmark with fresh worker processes",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the round order")


def add_measuring_options(p: argparse.ArgumentParser, budget_s: float) -> None:
    """The options of a run that ``bench bisect`` passes on to every step."""
    add_selection_options(p)
    add_verdict_options(p)
    add_sampling_options(p, budget_s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench ab",
        description="Measure BASE against HEAD on this machine, interleaved round by round.",
    )
    p.add_argument("--base", default="HEAD", help="revision or directory (default: HEAD)")
    p.add_argument("--head", default=".", help="revision or directory (default: . = working tree)")
    p.add_argument("--base-python", help="interpreter or venv for BASE (default: this one)")
    p.add_argument("--head-python", help="interpreter or venv for HEAD (default: this one)")
    add_measuring_options(p, DEFAULTS.budget_s)
    p.add_argument("--json", dest="json_out", help="write the full result (rounds, verdicts) here")
    p.add_argument(
        "--github-json",
        help="write github-action-benchmark customSmallerIsBetter JSON: each benchmark's "
        "HEAD/BASE ratio, with its interval and verdict",
    )
    p.add_argument(
        "--markdown",
        metavar="FILE",
        help="write the verdict as markdown (for a pull request comment); also appended to "
        "$GITHUB_STEP_SUMMARY when that is set",
    )
    p.add_argument("--repo", default=str(ROOT), help="repository the revisions belong to")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's settings from ``add_measuring_options``' options; InputError for a bad one."""
    if not 0 < args.threshold < 100:
        raise InputError(f"--threshold must be between 0 and 100%, got {args.threshold:g}%")
    if args.pairs < 1 or args.min_pairs < 6 or args.round_seconds <= 0:
        raise InputError("--pairs must be >= 1, --min-pairs >= 6, --round-seconds > 0")
    if not 0.5 <= args.confidence < 1:
        raise InputError("--confidence must be in [0.5, 1)")
    if args.budget_seconds < 0 or args.max_seconds <= 0 or args.min_seconds < 0:
        raise InputError(
            "--budget-seconds must be >= 0 (0: none), --max-seconds > 0, --min-seconds >= 0"
        )
    if not 1 <= args.interval_scale <= 10:
        raise InputError("--interval-scale must be in [1, 10]")
    return Settings(
        threshold=args.threshold / 100,
        confidence=args.confidence,
        round_seconds=args.round_seconds,
        pairs=args.pairs,
        min_pairs=args.min_pairs,
        max_seconds=args.max_seconds,
        seed=args.seed,
        interval_scale=args.interval_scale,
        confirm=not args.no_confirm,
        budget_s=args.budget_seconds or None,
        min_seconds=args.min_seconds,
    )


def selection_from(args: argparse.Namespace) -> Selection:
    tasks = [t if t == "builtin" else str(Path(t).resolve()) for t in specs_from(args.tasks)]
    return Selection(args.select, tuple(args.batch or ()), tuple(tasks))


# --- the command ----------------------------------------------------------------------------


def document(results: ABResults, argv: list[str]) -> dict:
    """The ``--json`` file (docs/results-schema.md)."""
    settings, selection = results.settings, results.selection
    return {
        "schema": SCHEMA,
        "datetime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench", "ab", *argv],
        "settings": {
            "threshold_pct": 100 * settings.threshold,
            "confidence": settings.confidence,
            "round_seconds": settings.round_seconds,
            "process_pairs": settings.pairs,
            "min_pairs": settings.min_pairs,
            "min_seconds": settings.min_seconds,
            "max_seconds": settings.max_seconds,
            "budget_seconds": settings.budget_s,
            "extend_to_seconds": EXTEND * settings.max_seconds,
            "order": "random",
            "seed": settings.seed,
            "select": "headline" if selection.expression is None else selection.expression,
            "tasks": list(selection.tasks) or None,
            "warmup_steps": WARMUP_STEPS,
            "interval_scale": settings.interval_scale,
            "confirm": settings.confirm,
            "steal_limit_pct": 100 * STEAL_LIMIT,
        },
        "machine": {**machine(), "steal_pct_session": results.steal_pct},
        "sides": {s.label: side_record(s) for s in results.sides},
        "benchmarks": results.benchmarks,
        "summary": {
            "slower": results.named(S.SLOWER),
            "faster": results.named(S.FASTER),
            "exit_code": results.exit_code,
            "wall_s": results.wall_s,
            "workers_s": results.workers_s,
            "passes_s": results.passes_s,
            "confirm_s": results.confirm_s,
            "first_pass_order": results.first_pass_order,
        },
    }


def write_outputs(results: ABResults, args: argparse.Namespace, argv: list[str]) -> None:
    """--json, --github-json, --markdown, and the job summary where GitHub has one."""
    threshold = results.settings.threshold
    if args.json_out:
        write_json_atomic(args.json_out, document(results, argv))
    if args.github_json:
        write_json_atomic(args.github_json, github_entries(results.benchmarks, threshold))
    verdict = markdown_verdict(results.benchmarks, threshold, results.sides)
    if args.markdown:
        write_text_atomic(args.markdown, verdict)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(verdict)


def run(args: argparse.Namespace, argv: list[str], lab: OpenLab = WorkerLab) -> int:
    settings, selection = settings_from(args), selection_from(args)
    repo = Path(args.repo).resolve()
    with contextlib.ExitStack() as stack:  # the exported revisions, removed on every exit path
        sides = [
            resolve_side("base", args.base, args.base_python, repo, stack),
            resolve_side("head", args.head, args.head_python, repo, stack),
        ]
        results = ABRun(sides, selection, settings, lab).run()
    print_verdicts(results.benchmarks, settings.threshold, results.wall_s)
    write_outputs(results, args, argv)
    return results.exit_code


def main(argv: list[str] | None = None, lab: OpenLab = WorkerLab) -> int:
    """``python -m bench ab``; ``lab``: where the run measures (a fake, in the tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = functools.partial(run, lab=lab)
    return run_command("ab", command, build_parser().parse_args(argv), argv)
