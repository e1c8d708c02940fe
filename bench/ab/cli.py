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
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.ab import jax_sides as ab_jax
from bench.ab.budget import Plan, first_pass_cap, run_plan
from bench.ab.measure import (  # noqa: F401 (Unsupported, WARMUP_STEPS: part of this module's API)
    SETUP_TIMEOUT_S,
    WARMUP_STEPS,
    Benchmark,
    Sampled,
    Settings,
    Unsupported,
    drop,
    estimate,
    measure,
    result,
    sample,
    set_up,
    skipped,
)
from bench.ab.output import (
    format_sides,
    format_table,
    github_entries,
    machine,
    markdown_verdict,
    progress,
    side_record,
    summary_line,
)
from bench.ab.sides import (  # noqa: F401 (numerics_rtol: re-exported for the tests)
    InputError,
    Side,
    Worker,
    WorkerAnswerError,
    numerics_rtol,
    resolve_side,
    side_tasks,
    start_workers,
)
from bench.host import STEAL_LIMIT, cpu_steal_counters, steal_fraction
from bench.report.compare_cli import parse_threshold
from bench.report.files import write_json_atomic, write_text_atomic
from bench.stats import paired as S
from bench.tasks.user import specs_from
from bench.workers.process import run_command

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "loopbench-ab/1"
# Without -k: the headline step benchmarks of the compiled loops on every task (12 today).
# The eager loop (10x slower, and not what a regression gate is for) and any variants added
# to the registry later run only when -k selects them, so the CI gate keeps its time.
HEADLINE = ("keras_fit", "keras_fit_xla", "custom_graph", "custom_xla")
# From A/A and planted runs (docs/regression.md, experiments/ab_budget.py).
DEFAULT_THRESHOLD = "3%"
# The whole run's deadline, confirmation included. A run that flagged all six planted custom
# benchmarks ended up to 23 s after it (the setups and least pairs of its last first passes,
# and its confirmations' floors, cannot be cut), so 210 keeps CI's check within 4 minutes.
DEFAULT_BUDGET_S = 210.0
EXTEND = 3.0  # an undecided benchmark's sampling, over both passes, is at most this x --max-seconds
# The least sampling before stopping early (measure.Settings.min_seconds): 30 pairs of 0.01 s
# rounds are 0.6 s, and one run decided a planted +3.4% FASTER (-15.7%) after 1.2 s.
DEFAULT_MIN_SECONDS = 5.0


# --- what is measured ---------------------------------------------------------------------


def keyword_match(expression: str | None, name: str) -> bool:
    """pytest's ``-k`` grammar (and, or, not, parentheses; case-insensitive substrings)."""
    if not expression:
        return True
    from _pytest.mark.expression import Expression

    try:
        compiled = Expression.compile(expression)
    except Exception as e:  # pytest's ParseError
        raise InputError(f"-k {expression!r}: {e}") from None
    return compiled.evaluate(lambda word, **_: word.lower() in name.lower())


def select_benchmarks(
    sides: list[Side], expression: str | None, batches: list[int] | None
) -> tuple[list[Benchmark], dict[str, str]]:
    """Implementation x task (x batch) matching ``-k`` over the union of both sides'
    registries, or the ``HEADLINE`` implementations without ``-k``; returns the benchmarks
    and, for those one side lacks (an implementation, or a --tasks task), why they are
    skipped."""
    tasks = side_tasks(sides)

    known = [s.implementations for s in sides if s.implementations is not None]
    names: list[str] = []
    for impls in known:
        names += [n for n in impls if n not in names]
    if expression is None:
        names = [n for n in names if n in HEADLINE]
    out, skip = [], {}
    for impl in names:
        for task, batch_size in tasks.items():
            sizes = batches or [batch_size]
            for b in sizes:
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


def write_batch(
    bench: Benchmark, directory: Path, cache: dict, worker: Worker | None = None
) -> Path:
    """The fixed batch both sides train on (the harness's: the first ``batch_size`` training
    examples, tiled if fewer), written once for every worker. A task that is not built in (a
    user task: loading its data may need TensorFlow) is written by ``worker`` (HEAD's); one
    with several inputs, whose ``x`` is a dict or tuple of arrays the worker cannot index as
    one array (a TypeError), is ``Unsupported``."""
    from bench.tasks import TASKS, load_for_task

    path = directory / f"{bench.name}.npz"
    if bench.task not in TASKS:
        request = {"op": "write_batch", "task": bench.task, "batch_size": bench.batch_size}
        try:
            worker.request({**request, "path": str(path)}, SETUP_TIMEOUT_S)
        except WorkerAnswerError as e:
            if not e.error.startswith("TypeError"):
                raise
            raise Unsupported(
                f"bench ab times single-input tasks only: {bench.task}'s inputs are not one "
                f"array (a task with several inputs; writing its batch failed: {e.error})"
            ) from None
        return path
    task = TASKS[bench.task]
    if task.name not in cache:
        cache[task.name] = load_for_task(task, quiet=True)
    data = cache[task.name]
    idx = np.arange(bench.batch_size) % len(data.x_train)
    np.savez(path, x=data.x_train[idx], y=data.y_train[idx])
    return path


# --- measuring one benchmark --------------------------------------------------------------


# --- the command ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench ab",
        description="Measure BASE against HEAD on this machine, interleaved round by round.",
    )
    p.add_argument("--base", default="HEAD", help="revision or directory (default: HEAD)")
    p.add_argument("--head", default=".", help="revision or directory (default: . = working tree)")
    p.add_argument("--base-python", help="interpreter or venv for BASE (default: this one)")
    p.add_argument("--head-python", help="interpreter or venv for HEAD (default: this one)")
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
    p.add_argument(
        "--threshold",
        default=DEFAULT_THRESHOLD,
        type=parse_threshold,
        help="smallest slowdown reported (default %(default)s)",
    )
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument(
        "--interval-scale",
        type=float,
        default=S.INTERVAL_SCALE,
        help=f"widen the signed-rank interval by this factor for the workers' own biases "
        f"(default {S.INTERVAL_SCALE}, measured here: bench/stats/paired.py)",
    )
    p.add_argument("--pairs", type=int, default=2, help="worker processes per side (default 2)")
    p.add_argument(
        "--round-seconds",
        type=float,
        default=0.01,
        help="a round's length, K steps (default 0.01: the shorter, the closer in time the "
        "two rounds of a pair, docs/regression.md)",
    )
    p.add_argument("--min-pairs", type=int, default=30, help="round pairs before stopping early")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=DEFAULT_MIN_SECONDS,
        help="sampling seconds before a benchmark (or its confirmation) may stop early "
        "(default %(default)g; the deadline and --max-seconds still win)",
    )
    p.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="sampling time cap of a benchmark's first pass (default 20); an undecided one may "
        f"get up to {EXTEND:g}x that in all while the budget lasts",
    )
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="the run's deadline for sampling, counted from its start, confirmation included: "
        "shared out over the benchmarks, leftovers to the widest intervals "
        "(bench/ab/budget.py; default %(default)g; 0: none, each benchmark gets --max-seconds)",
    )
    p.add_argument(
        "--no-confirm",
        action="store_true",
        help="do not re-measure a SLOWER/FASTER benchmark with fresh worker processes",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the round order")
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


def run(args: argparse.Namespace, argv: list[str]) -> int:
    if not 0 < args.threshold < 100:
        raise InputError(f"--threshold must be between 0 and 100%, got {args.threshold:g}%")
    threshold = args.threshold / 100
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
    settings = Settings(
        threshold,
        args.confidence,
        args.round_seconds,
        args.pairs,
        args.min_pairs,
        args.max_seconds,
        args.seed,
        args.interval_scale,
        not args.no_confirm,
        args.budget_seconds or None,
        args.min_seconds,
    )
    repo = Path(args.repo).resolve()
    t0 = time.monotonic()
    steal0 = cpu_steal_counters()
    with contextlib.ExitStack() as stack:
        sides = [
            resolve_side("base", args.base, args.base_python, repo, stack),
            resolve_side("head", args.head, args.head_python, repo, stack),
        ]
        print(f"ab: starting {args.pairs} worker(s) per side ...", file=sys.stderr, flush=True)
        tasks = [t if t == "builtin" else str(Path(t).resolve()) for t in specs_from(args.tasks)]
        grid = start_workers(sides, args.pairs, stack, tasks)
        jax = (
            ab_jax.start_jax_workers(sides, args.pairs, stack)
            if ab_jax.wanted(args.select)
            else None
        )
        workers_s = time.monotonic() - t0  # what the fresh workers of a confirmation cost
        print(format_sides(sides), flush=True)
        benches, skips = select_benchmarks(sides, args.select, args.batch)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loopbench-ab-")))
        rng, cache = random.Random(args.seed), {}
        done: dict[str, dict] = {}
        sampled: dict[str, Sampled] = {}
        started: list[str] = []  # the first pass's order (costliest first, budget.py)

        def start(bench: Benchmark) -> Sampled | None:
            started.append(bench.name)
            if bench.name in skips:
                done[bench.name] = skipped(bench, skips[bench.name])
                return None
            workers = ab_jax.grid_for(bench.implementation, grid, jax)
            try:
                batch = write_batch(bench, tmp, cache, grid[0][1])
                sampled[bench.name] = set_up(bench, batch, workers, settings)
            except Unsupported as e:
                done[bench.name] = skipped(bench, str(e))
                return None
            return sampled[bench.name]

        def width(state: Sampled) -> float | None:
            est = estimate(state.rounds, settings)[1]
            return None if S.decided(est, settings.threshold) else est.detectable_pct

        def finish(bench: Benchmark, state: Sampled) -> None:
            drop(state)
            done[bench.name] = result(bench, state, settings, sides)
            progress(done[bench.name])

        def reserve(current: Benchmark | None) -> float:
            """The confirmation's time (budget.py): fresh workers and, per benchmark flagged
            so far and for ``current`` (should it be flagged), its setup and least sampling."""
            if not settings.confirm:
                return 0.0
            names = [n for n, r in done.items() if r["verdict"] in (S.SLOWER, S.FASTER)]
            if current is not None and current.name not in done:
                names.append(current.name)
            guesses = [
                confirm_guess(sampled[n].setup_s, pair_seconds(sampled[n]), settings)
                for n in names
                if n in sampled
            ]
            return workers_s + sum(guesses) if guesses else 0.0

        def cost(bench: Benchmark) -> float | None:
            """What deciding ``bench`` is guessed to take: its least sampling and setup, as
            measured on the same task and batch by another implementation (None before)."""
            seen = [
                confirm_guess(s.setup_s, pair_seconds(s), settings)
                for b in benches
                if (b.task, b.batch_size) == (bench.task, bench.batch_size)
                and (s := sampled.get(b.name)) is not None
            ]
            return float(np.median(seen)) if seen else None

        deadline = t0 + settings.budget_s if settings.budget_s else None
        run_plan(
            benches,
            Plan(
                deadline=deadline,
                max_seconds=settings.max_seconds,
                extend_to=EXTEND * settings.max_seconds,
                min_pairs=settings.min_pairs,
                reserve=reserve,
            ),
            start,
            lambda state, cap, min_new: sample(state, settings, rng, cap, min_new),
            width,
            finish,
            cost=cost,
        )
        results = [done[b.name] for b in benches]
        passes_s, confirm_s = time.monotonic() - t0, 0.0
        flagged = [i for i, r in enumerate(results) if r["verdict"] in (S.SLOWER, S.FASTER)]
        if flagged and settings.confirm:
            # A worker process carries a bias of its own (docs/regression.md): before a verdict
            # stands,
            # the benchmark is measured again by fresh processes, and judged on all rounds.
            print(
                f"ab: confirming {len(flagged)} verdict(s) with {args.pairs} fresh worker "
                "pair(s) ...",
                file=sys.stderr,
                flush=True,
            )
            fresh = start_workers(sides, args.pairs, stack, tasks)
            fresh_jax = ab_jax.start_jax_workers(sides, args.pairs, stack) if jax else None
            # The confirmations share what is left until the same deadline, as a first pass
            # (each set up first: its cap is asked once it is ready).
            plan = Plan(deadline, settings.max_seconds, settings.max_seconds, settings.min_pairs)
            for j, i in enumerate(flagged):
                bench = next(b for b in benches if b.name == results[i]["name"])
                later = [results[k]["setup_s"] for k in flagged[j + 1 :]]
                setup_later = float(np.mean(later)) if later else 0.0
                left = len(flagged) - j
                again = measure(
                    bench,
                    write_batch(bench, tmp, cache, fresh[0][1]),
                    ab_jax.grid_for(bench.implementation, fresh, fresh_jax),
                    settings,
                    rng,
                    prior=sampled[bench.name],
                    cap=lambda left=left, s=setup_later: first_pass_cap(
                        plan, time.monotonic(), left, s
                    ),
                )
                first = results[i]["verdict"]
                results[i] = result(bench, again, settings, sides)
                results[i]["first_verdict"] = first
                progress(results[i])
            confirm_s = time.monotonic() - t0 - passes_s
    slower = [r["name"] for r in results if r["verdict"] == S.SLOWER]
    faster = [r["name"] for r in results if r["verdict"] == S.FASTER]
    code = 1 if slower else 0
    stolen = steal_fraction(steal0, cpu_steal_counters())
    doc = {
        "schema": SCHEMA,
        "datetime": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "-m", "bench", "ab", *argv],
        "settings": {
            "threshold_pct": 100 * threshold,
            "confidence": args.confidence,
            "round_seconds": args.round_seconds,
            "process_pairs": args.pairs,
            "min_pairs": args.min_pairs,
            "min_seconds": args.min_seconds,
            "max_seconds": args.max_seconds,
            "budget_seconds": settings.budget_s,
            "extend_to_seconds": EXTEND * args.max_seconds,
            "order": "random",
            "seed": args.seed,
            "select": args.select if args.select is not None else "headline",
            "tasks": tasks or None,
            "warmup_steps": WARMUP_STEPS,
            "interval_scale": args.interval_scale,
            "confirm": not args.no_confirm,
            "steal_limit_pct": 100 * STEAL_LIMIT,
        },
        "machine": {**machine(), "steal_pct_session": None if stolen is None else 100 * stolen},
        "sides": {s.label: side_record(s) for s in sides},
        "benchmarks": results,
        "summary": {
            "slower": slower,
            "faster": faster,
            "exit_code": code,
            "wall_s": time.monotonic() - t0,
            "workers_s": workers_s,
            "passes_s": passes_s,
            "confirm_s": confirm_s,
            "first_pass_order": started,
        },
    }
    print()
    print(format_table(results, threshold))
    print()
    print(summary_line(results, threshold, doc["summary"]["wall_s"]))
    if args.json_out:
        write_json_atomic(args.json_out, doc)
    if args.github_json:
        write_json_atomic(args.github_json, github_entries(results, threshold))
    verdict = markdown_verdict(results, threshold, sides)
    if args.markdown:
        write_text_atomic(args.markdown, verdict)
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a", encoding="utf-8") as summary:
            summary.write(verdict)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_command("ab", run, build_parser().parse_args(argv), argv)
