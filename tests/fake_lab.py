"""Where an ``ABRun`` measures, faked (``bench.ab.run.Lab``): no processes, a fake clock.

HEAD's step takes ``ratio(bench, sides)`` times BASE's, each round with a little log-normal
noise; starting workers and setting a benchmark up take fixed seconds of the fake clock, and
the rounds are taken as ``bench.ab.measure.sample`` takes them. Used by tests/test_ab.py and
tests/test_bisect.py, through ``bench ab``'s and ``bench bisect``'s ``main(argv, lab=...)``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

from bench.ab.measure import Benchmark, Sampled, Selection, Settings, Unsupported, decided
from bench.workers.process import Side

VERSIONS = {"python": "3.11", "tensorflow": "2.21", "keras": "3.12", "numpy": "2.0"}


class FakeLab:
    def __init__(
        self,
        sides: list[Side],
        settings: Settings,
        selection: Selection,
        stack: contextlib.ExitStack,
        *,
        ratio: Callable[[Benchmark, list[Side]], float],
        implementations: tuple[str, ...] = ("custom_graph", "keras_fit"),
        unsupported: tuple[str, ...] = (),
        start_s: float = 10.0,
        setup_s: float = 2.0,
        round_s: float = 0.01,
        noise: float = 0.01,
    ) -> None:
        self.sides, self.settings, self.selection = sides, settings, selection
        self.ratio, self.implementations, self.unsupported = ratio, implementations, unsupported
        self.start_s, self.setup_s, self.round_s, self.noise = start_s, setup_s, round_s, noise
        self.rng = random.Random(settings.seed)
        self.now = 0.0
        self.starts = 0  # worker starts: the first, then one per confirmation phase
        self.ratios: dict[str, float] = {}
        self.set_ups: list[tuple[str, float]] = []  # (benchmark, clock once set up)
        self.samples: list[tuple[str, float, float, int]] = []  # (benchmark, clock, cap, min)
        self.live: set[str] = set()
        stack.callback(self.close)
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def clock(self) -> float:
        return self.now

    def start(self) -> None:
        self.now += self.start_s
        self.starts += 1
        for side in self.sides:  # what the workers' hello tells
            side.implementations = list(self.implementations)
            side.versions = {**VERSIONS, "device": "CPU", "onednn": True}

    def set_up(self, bench: Benchmark, prior: Sampled | None = None) -> Sampled:
        if bench.implementation in self.unsupported:
            raise Unsupported(f"{bench.implementation} cannot run {bench.task} here")
        self.now += self.setup_s
        self.ratios[bench.name] = self.ratio(bench, self.sides)
        self.set_ups.append((bench.name, self.now))
        self.live.add(bench.name)
        pairs = self.settings.pairs
        grid = [[f"base {p} ({self.starts})", f"head {p} ({self.starts})"] for p in range(pairs)]
        setups = {
            w: {"compile_s": 0.5, "loss_after_warmup": 0.25, "per_step_s": 1e-3}
            for row in grid
            for w in row
        }
        return Sampled.set_up_on(prior, bench.name, grid, setups, k=10, setup_s=self.setup_s)

    def sample(self, sampled: Sampled, cap_s: float, min_new: int) -> None:
        self.samples.append((sampled.bench_id, self.now, cap_s, min_new))
        ratio = self.ratios[sampled.bench_id]
        min_s = self.settings.min_seconds if min_new else 0.0
        started, new = self.now, 0
        while True:
            for p in range(len(sampled.grid) - sampled.offset):
                base = 1e-3 * self.rng.lognormvariate(0, self.noise)
                head = ratio * 1e-3 * self.rng.lognormvariate(0, self.noise)
                sampled.rounds.append(
                    {"pair": sampled.offset + p, "first": "base", "base_s": base, "head_s": head,
                     "base_steal_pct": 0.0, "head_steal_pct": 0.0}
                )  # fmt: skip
                self.now += 2 * self.round_s
                new += 1
            if new < min_new:
                continue
            elapsed = self.now - started
            if elapsed > cap_s or (elapsed >= min_s and decided(sampled, self.settings)):
                break
        sampled.seconds += self.now - started

    def drop(self, sampled: Sampled) -> None:
        self.live.discard(sampled.bench_id)
        sampled.live = False


def fake_lab(labs: list[FakeLab], **options) -> Callable[..., FakeLab]:
    """``ABRun``'s ``lab``: a FakeLab with ``options`` per run, each kept in ``labs``."""

    def open_lab(sides, settings, selection, stack) -> FakeLab:
        labs.append(FakeLab(sides, settings, selection, stack, **options))
        return labs[-1]

    return open_lab
