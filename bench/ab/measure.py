"""Measuring one benchmark of ``python -m bench ab``: what is measured and how (``Benchmark``,
``Selection``, ``Settings``); set it up in both sides' workers, take rounds in turn, estimate
HEAD/BASE with its interval (``bench/stats/paired.py``), and the benchmark's record in the
JSON; ``WorkerLab``, the worker processes an ``ABRun`` (``bench/ab/run.py``) measures with.
The order in which a run's benchmarks get their time is ``bench/ab/budget.py``'s. Imports no
TensorFlow (the workers do).
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.ab.jax_sides import grid_for, start_jax_workers, wanted
from bench.ab.sides import numerics_rtol, start_workers
from bench.host import STEAL_LIMIT, cpu_steal_counters, steal_fraction
from bench.stats import paired as S
from bench.tasks import TASKS, load_for_task
from bench.workers.process import InputError, Side, Worker, WorkerAnswerError

WARMUP_STEPS = 5
SETUP_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Benchmark:
    implementation: str
    task: str
    batch_size: int
    default_batch: bool

    @property
    def name(self) -> str:
        base = f"{self.implementation}-{self.task}"
        return base if self.default_batch else f"{base}-b{self.batch_size}"


@dataclass(frozen=True)
class Selection:
    """What a run measures: implementation x task (x batch size), over both sides' code."""

    expression: str | None = None  # -k, on names like custom_graph-mlp; None: run.HEADLINE
    batches: tuple[int, ...] = ()  # --batch; (): each task's own
    # --tasks values, loaded by every worker: "builtin" or a task file's absolute path; ():
    # the built-in tasks.
    tasks: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How an A/B run measures and judges: ``python -m bench ab``'s options, by keyword; the
    defaults are the command's (docs/regression.md says where each number came from)."""

    threshold: float = 0.03  # the smallest change reported, a fraction (A/A and planted runs)
    confidence: float = 0.95
    round_seconds: float = 0.01  # a round's length, K steps: the shorter, the closer in time
    pairs: int = 2  # worker processes per side
    min_pairs: int = 30  # round pairs before a benchmark may stop early
    max_seconds: float = 20.0  # a benchmark's first-pass sampling cap
    seed: int = 0  # of the round order
    interval_scale: float = S.INTERVAL_SCALE  # for the workers' own biases
    confirm: bool = True  # re-measure a SLOWER/FASTER verdict with fresh workers
    # The run's sampling deadline, from its start, confirmation included (budget.py); None:
    # none. A run that flagged all six planted custom benchmarks ended up to 23 s after it
    # (the setups and least pairs of its last first passes, and its confirmations' floors,
    # cannot be cut), so 210 keeps CI's check within 4 minutes.
    budget_s: float | None = 210.0
    # The least sampling time before a first pass (or a confirmation) may stop early: this
    # VM's noise is slow, and 30 pairs of 0.01 s rounds are 0.6 s, a spell short enough for
    # one side's slow start to decide alone (a planted +3.4% read FASTER -15.7% after 1.2 s).
    min_seconds: float = 5.0


def timed_round(worker: Worker, bench_id: str, k: int, timeout: float) -> tuple[float, float]:
    """(seconds per step, steal fraction) of one round, steal read around the request."""
    before = cpu_steal_counters()
    answer = worker.request({"op": "round", "id": bench_id, "k": k}, timeout)
    stolen = steal_fraction(before, cpu_steal_counters())
    if answer["retraced"]:
        raise InputError(
            f"{worker.name} ({worker.side.describe()}): {bench_id}'s step was traced again "
            f"{answer['retraced']} time(s) during a timed round; the timing would include it"
        )
    return answer["seconds"] / k, math.nan if stolen is None else stolen


@dataclass
class Sampled:
    """What has been measured of one benchmark: its rounds over every process pair so far.
    While ``live`` (set up in the workers of ``grid[offset:]``), more rounds can be taken."""

    k: int  # steps per round, the same for every worker
    rounds: list[dict]
    setups: dict[Worker, dict]  # each worker's setup answer (compile_s, loss after warm-up)
    grid: list[list[Worker]]  # the process pairs, in the order of the rounds' "pair" index
    seconds: float  # time spent taking rounds
    bench_id: str = ""
    offset: int = 0  # the first pair index of the live grid
    round_timeout: float = 120.0
    live: bool = False
    setup_s: float = 0.0  # time the (last) setup took: requests, compile, warm-up, first round

    @classmethod
    def set_up_on(
        cls, prior: Sampled | None, bench_id: str, grid: list, setups: dict, **fields
    ) -> Sampled:
        """Live on ``grid`` (``setups``: its workers' answers), keeping ``prior``'s rounds,
        setups, pairs and seconds, if any; ``fields``: k, round_timeout, setup_s."""
        return cls(
            rounds=list(prior.rounds) if prior else [],
            setups={**(prior.setups if prior else {}), **setups},
            grid=(prior.grid if prior else []) + grid,
            seconds=prior.seconds if prior else 0.0,
            bench_id=bench_id,
            offset=len(prior.grid) if prior else 0,
            live=True,
            **fields,
        )


def set_up(
    bench: Benchmark,
    batch: Path,
    grid: list[list[Worker]],
    settings: Settings,
    prior: Sampled | None = None,
) -> Sampled:
    """Set up the benchmark in every worker of ``grid`` (build, compile, warm up, one untimed
    round at the round's own length); the result holds ``prior``'s rounds, if any, and is
    live until ``drop``."""
    t0 = time.monotonic()
    request = {
        "op": "setup",
        "id": bench.name,
        "impl": bench.implementation,
        "task": bench.task,
        "batch": str(batch),
        "warmup": WARMUP_STEPS,
    }
    workers = [w for row in grid for w in row]
    for w in workers:
        w.send(request)
    setups = {w: w.receive(SETUP_TIMEOUT_S, f"setup of {bench.name}") for w in workers}
    unsupported = [s["unsupported"] for s in setups.values() if s.get("unsupported")]
    if unsupported:
        for w in workers:
            w.request({"op": "drop", "id": bench.name}, 60)
        raise Unsupported(unsupported[0])
    per_step = float(np.median([s["per_step_s"] for s in setups.values()]))
    k = prior.k if prior else max(1, min(100_000, math.ceil(settings.round_seconds / per_step)))
    round_timeout = max(120.0, 100 * k * per_step)
    for w in workers:  # one untimed round at the round's own length
        timed_round(w, bench.name, k, round_timeout)
    return Sampled.set_up_on(
        prior,
        bench.name,
        grid,
        setups,
        k=k,
        round_timeout=round_timeout,
        setup_s=time.monotonic() - t0,
    )


def sample(
    sampled: Sampled, settings: Settings, rng: random.Random, cap_s: float, min_new: int
) -> None:
    """Take rounds of the live benchmark, one pair per process pair in turn (the side that
    goes first drawn at random), until its interval over all its rounds is decisive, at least
    ``min_new`` pairs are new and, where ``min_new`` asks for any (a first pass or a
    confirmation; a second-pass slice goes on from its first pass), ``settings.min_seconds``
    have passed; or (once ``min_new`` pairs are new) ``cap_s`` seconds have passed: the cap
    wins over the least time."""
    min_s = settings.min_seconds if min_new else 0.0
    grid = sampled.grid[sampled.offset :]
    new = 0
    started = time.monotonic()
    while True:
        for p, (base, head) in enumerate(grid):
            first = rng.choice(("base", "head"))
            order = (base, head) if first == "base" else (head, base)
            times = {}
            for w in order:
                times[w.side.label] = timed_round(
                    w, sampled.bench_id, sampled.k, sampled.round_timeout
                )
            sampled.rounds.append(
                {
                    "pair": sampled.offset + p,
                    "first": first,
                    "base_s": times["base"][0],
                    "head_s": times["head"][0],
                    "base_steal_pct": 100 * times["base"][1],
                    "head_steal_pct": 100 * times["head"][1],
                }
            )
            new += 1
        if new < min_new:
            continue
        elapsed = time.monotonic() - started
        if elapsed > cap_s or (elapsed >= min_s and decided(sampled, settings)):
            break
    sampled.seconds += time.monotonic() - started


def drop(sampled: Sampled) -> None:
    """Free the benchmark in its workers; no more rounds can be taken."""
    if sampled.live:
        for w in (w for row in sampled.grid[sampled.offset :] for w in row):
            w.request({"op": "drop", "id": sampled.bench_id}, 60)
        sampled.live = False


def decided(sampled: Sampled, settings: Settings) -> bool:
    return S.decided(estimate(sampled.rounds, settings)[1], settings.threshold)


class Unsupported(Exception):
    """A worker cannot run the implementation on this (user's) model: skipped, with why."""


def skipped(bench: Benchmark, reason: str) -> dict:
    return {
        "name": bench.name,
        "implementation": bench.implementation,
        "task": bench.task,
        "batch_size": bench.batch_size,
        "verdict": S.SKIPPED,
        "skip_reason": reason,
        "ratio": None,
        "ci_low": None,
        "ci_high": None,
    }


def estimate(rounds: list[dict], settings: Settings) -> tuple[np.ndarray, S.Estimate]:
    keys = ("base_s", "head_s", "base_steal_pct", "head_steal_pct")
    col = {key: np.array([r[key] for r in rounds], dtype=float) for key in keys}
    keep = S.kept_pairs(
        col["base_s"],
        col["head_s"],
        col["base_steal_pct"] / 100,
        col["head_steal_pct"] / 100,
        STEAL_LIMIT,
        settings.min_pairs // 2,
    )
    logr = np.log(col["head_s"][keep] / col["base_s"][keep])
    return keep, S.hodges_lehmann(logr, settings.confidence, settings.interval_scale)


def result(
    bench: Benchmark, sampled: Sampled, settings: Settings, sides: list[Side] | None = None
) -> dict:
    """The benchmark's record in the JSON: verdict, interval, both sides, every round."""
    rounds, setups, grid = sampled.rounds, sampled.setups, sampled.grid
    keep, est = estimate(rounds, settings)
    for r, kept in zip(rounds, keep):
        r["kept"] = bool(kept)
    side_info = {}
    for label, col in (("base", 0), ("head", 1)):
        ws = [row[col] for row in grid]
        times = [r[f"{label}_s"] for r, kept in zip(rounds, keep) if kept]
        side_info[label] = {
            "median_s": float(np.median(times)),
            "compile_s": float(np.median([setups[w]["compile_s"] for w in ws])),
            "loss_after_warmup": setups[ws[0]]["loss_after_warmup"],
            "losses_after_warmup": [setups[w]["loss_after_warmup"] for w in ws],
        }
    b, h = side_info["base"]["loss_after_warmup"], side_info["head"]["loss_after_warmup"]
    rel = abs(h - b) / max(abs(b), 1e-12) if math.isfinite(b) and math.isfinite(h) else math.inf
    tol = numerics_rtol(bench.task, sides or [])
    per_pair = []
    for p in range(len(grid)):
        sel = [i for i, r in enumerate(rounds) if r["pair"] == p and keep[i]]
        lr = [math.log(rounds[i]["head_s"] / rounds[i]["base_s"]) for i in sel]
        per_pair.append(float(math.exp(np.median(lr))) if lr else None)
    return {
        "name": bench.name,
        "implementation": bench.implementation,
        "task": bench.task,
        "batch_size": bench.batch_size,
        "steps_per_round": sampled.k,
        "verdict": S.verdict(est, settings.threshold),
        "first_verdict": None,
        "skip_reason": None,
        "ratio": est.ratio,
        "ci_low": est.low,
        "ci_high": est.high,
        "detectable_pct": est.detectable_pct,
        "missed_pct": S.missed_pct(est),
        "pairs": int(keep.sum()),
        "pairs_dropped_steal": int(len(rounds) - keep.sum()),
        "process_pairs": len(grid),
        "process_pair_ratios": per_pair,
        "seconds": sampled.seconds,
        "setup_s": sampled.setup_s,
        "base": side_info["base"],
        "head": side_info["head"],
        "numerics": {"rel_diff": rel, "tolerance": tol, "changed": bool(rel > tol)},
        "rounds": rounds,
    }


# --- the worker processes an ABRun measures with ------------------------------------------


def write_batch(
    bench: Benchmark, directory: Path, cache: dict, worker: Worker | None = None
) -> Path:
    """The fixed batch both sides train on (the harness's: the first ``batch_size`` training
    examples, tiled if fewer), written once for every worker. A task that is not built in (a
    user task: loading its data may need TensorFlow) is written by ``worker`` (HEAD's); one
    with several inputs, whose ``x`` is a dict or tuple of arrays the worker cannot index as
    one array (a TypeError), is ``Unsupported``."""
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


class WorkerLab:
    """Where an ``ABRun`` measures (its ``Lab``): ``settings.pairs`` worker processes per side,
    and JAX workers beside them where ``-k`` names JAX (``bench/ab/jax_sides.py``), each
    leading its own process group, closed by ``stack``; the fixed batches in a temporary
    directory. ``start`` again starts fresh workers (a confirmation's), which later set-ups
    use."""

    def __init__(
        self,
        sides: list[Side],
        settings: Settings,
        selection: Selection,
        stack: contextlib.ExitStack,
    ) -> None:
        self.sides, self.settings, self.stack = sides, settings, stack
        self.tasks = list(selection.tasks)
        self.want_jax = wanted(selection.expression)
        self.batches = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="loopbench-ab-"))
        )
        self.cache: dict = {}
        self.rng = random.Random(settings.seed)
        self.grid: list[list[Worker]] = []
        self.jax: tuple[list[list[Worker]], set[str]] | None = None

    def clock(self) -> float:
        return time.monotonic()

    def start(self) -> None:
        self.grid = start_workers(self.sides, self.settings.pairs, self.stack, self.tasks)
        if self.want_jax:
            self.jax = start_jax_workers(self.sides, self.settings.pairs, self.stack)

    def set_up(self, bench: Benchmark, prior: Sampled | None = None) -> Sampled:
        batch = write_batch(bench, self.batches, self.cache, self.grid[0][1])
        grid = grid_for(bench.implementation, self.grid, self.jax)
        return set_up(bench, batch, grid, self.settings, prior)

    def sample(self, sampled: Sampled, cap_s: float, min_new: int) -> None:
        sample(sampled, self.settings, self.rng, cap_s, min_new)

    def drop(self, sampled: Sampled) -> None:
        drop(sampled)
