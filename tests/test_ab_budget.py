"""bench ab's time plan (bench/ab/budget.py), on fake benchmarks and a fake clock: whose
interval shrinks as 1/sqrt(seconds sampled), decided once it is narrower than 1."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from bench.ab import measure as M
from bench.ab.budget import Plan, first_pass_cap, next_bench, run_plan
from bench.ab.run import confirm_guess


@dataclass
class State:
    name: str
    noise: float  # the interval's half-width after one second of sampling
    seconds: float = 0.0
    turns: list[float] = field(default_factory=list)  # each sample call's cap

    def width(self) -> float:
        return self.noise / max(self.seconds, 1e-9) ** 0.5


class Fake:
    """Benchmarks with known noise; setting one up takes ``setup_s`` of the fake clock."""

    def __init__(self, noise: dict[str, float], setup_s: float = 2.0, skip=()):
        self.noise, self.setup_s, self.skip = noise, setup_s, set(skip)
        self.now = 0.0
        self.states: dict[str, State] = {}
        self.finished: list[str] = []
        self.live_max = 0

    def clock(self) -> float:
        return self.now

    def start(self, name: str) -> State | None:
        if name in self.skip:
            return None
        self.now += self.setup_s
        self.states[name] = State(name, self.noise[name])
        self.live_max = max(self.live_max, len(self.states) - len(self.finished))
        return self.states[name]

    def sample(self, state: State, cap: float, min_new: int) -> None:
        state.turns.append(cap)
        step = 0.25  # a pass over the process pairs
        spent = 0.0
        while True:
            spent += step
            if min_new and spent < 1.0:  # min_new pairs take a second, cap or not
                continue
            if spent >= cap or state.noise / (state.seconds + spent) ** 0.5 < 1:
                break
        state.seconds += spent
        self.now += spent

    def width(self, state: State) -> float | None:
        w = state.width()
        return None if w < 1 else w

    def finish(self, name: str, state: State) -> None:
        assert name not in self.finished, f"{name} finished twice"
        self.finished.append(name)

    def run(self, plan: Plan) -> None:
        run_plan(
            list(self.noise), plan, self.start, self.sample, self.width, self.finish, self.clock
        )


def plan(deadline=None, max_seconds=20.0, extend=3.0, max_live=6) -> Plan:
    return Plan(deadline, max_seconds, extend * max_seconds, min_pairs=30, max_live=max_live)


def test_the_first_pass_cap_shares_what_is_left_and_stays_within_max_seconds():
    assert first_pass_cap(plan(), now=0, left=12, setup_s=3) == 20  # no budget
    # 200 s for 12 benchmarks, 11 more setups of 3 s: (200 - 33) / 12
    assert first_pass_cap(plan(200), now=0, left=12, setup_s=3) == pytest.approx(167 / 12)
    assert first_pass_cap(plan(200), now=190, left=1, setup_s=3) == pytest.approx(10)
    assert first_pass_cap(plan(200), now=0, left=1, setup_s=3) == 20  # never above max_seconds
    assert first_pass_cap(plan(200), now=250, left=3, setup_s=3) == 0  # late: min pairs only


def test_without_a_budget_each_benchmark_gets_max_seconds_and_no_second_pass():
    fake = Fake({"a": 10.0, "b": 2.0, "c": 0.5})
    fake.run(plan(None, max_seconds=20))
    assert fake.finished == ["a", "b", "c"]
    assert [s.turns for s in fake.states.values()] == [[20], [20], [20]]
    assert fake.states["a"].seconds == pytest.approx(20)  # undecided at its cap
    assert fake.states["c"].seconds == pytest.approx(1.0)  # decided after its minimum


def test_time_the_quick_ones_leave_goes_to_the_widest_intervals_within_the_deadline():
    noise = {"quick1": 0.5, "wide": 9.0, "quick2": 0.5, "medium": 6.5, "quick3": 0.5}
    fake = Fake(noise, setup_s=2.0)
    fake.run(plan(deadline=150.0, max_seconds=40))
    assert sorted(fake.finished) == sorted(noise)  # each once (Fake.finish asserts)
    assert fake.now <= 150.0 + 2.0  # the deadline, give or take one slice
    s = fake.states
    # first pass: an even share of what was left when it started (at 5 s: 145 s, less the
    # three setups to come), at most max_seconds
    assert s["wide"].turns[0] == pytest.approx((145 - 3 * 2) / 4)
    # the quick ones took a second each, and their time went to the two noisy ones, the
    # widest first
    assert all(s[q].seconds == pytest.approx(1.0) for q in ("quick1", "quick2", "quick3"))
    assert s["medium"].seconds > s["medium"].turns[0] and s["wide"].seconds > 40
    assert s["medium"].width() < 1  # decided in the second pass
    assert s["wide"].seconds > s["medium"].seconds
    assert s["wide"].seconds <= 120.0 + 1e-9  # at most extend_to (the Fake's simulated clock)


def test_no_benchmark_gets_more_than_extend_to_even_with_time_left():
    fake = Fake({"hopeless": 100.0})
    fake.run(plan(deadline=1000.0, max_seconds=10, extend=3.0))
    assert fake.states["hopeless"].seconds == pytest.approx(30.0, abs=0.5)
    assert fake.finished == ["hopeless"]


def test_a_late_run_takes_only_the_minimum_pairs_and_still_finishes_everything():
    fake = Fake({"a": 10.0, "b": 10.0, "c": 10.0}, setup_s=60.0)  # a very slow machine
    fake.run(plan(deadline=100.0, max_seconds=20))
    assert sorted(fake.finished) == ["a", "b", "c"]
    assert fake.states["c"].turns == [0.0]  # past the deadline: its minimum pairs only
    assert fake.states["c"].seconds == pytest.approx(1.0)


def test_skipped_benchmarks_are_not_finished_and_at_most_max_live_stay_set_up():
    noise = {f"b{i}": 50.0 for i in range(5)} | {"skipme": 1.0}
    fake = Fake(noise, setup_s=0.5, skip={"skipme"})
    fake.run(plan(deadline=300.0, max_seconds=5, max_live=2))
    assert "skipme" not in fake.finished and len(fake.finished) == 5
    assert fake.live_max <= 3  # two kept plus the one being measured


def test_verdicts_to_confirm_keep_their_confirmation_time_back_from_the_passes():
    """Once a benchmark is flagged (here: "slow", decided at once), the passes end early by
    its confirmation's guess (fresh workers' start-up plus a setup and the least sampling
    time per flagged verdict); with nothing flagged they run to the deadline."""
    noise = {"slow": 0.5, "wide": 20.0, "medium": 15.0}  # these two never decide

    def run(flagged: set[str]) -> Fake:
        fake = Fake(noise, setup_s=2.0)

        def reserve(current) -> float:
            n = len(flagged & set(fake.states))
            return 0.0 if not n else 10.0 + n * (2.0 + 5.0)

        p = plan(deadline=150.0, max_seconds=100, extend=1.2)
        fake.run(Plan(p.deadline, p.max_seconds, p.extend_to, p.min_pairs, reserve=reserve))
        return fake

    plain, flagged = run(set()), run({"slow"})
    assert 148.0 <= plain.now <= 152.0  # to the deadline, give or take a slice
    assert 131.0 <= flagged.now <= 135.0  # 150 less 10 + (2 + 5): room for the confirmation
    # the first pass after the flagged one (at 5 s, one setup to come) shares the shorter time
    assert flagged.states["wide"].turns[0] == pytest.approx((150 - 17 - 5 - 2) / 2)
    assert plain.states["wide"].turns[0] == pytest.approx((150 - 5 - 2) / 2)


class FakeWorker:
    """A worker whose rounds take 10 ms of a fake clock; HEAD's steps are ``head_ratio`` x
    BASE's."""

    def __init__(self, label: str, clock: dict, head_ratio: float):
        self.side = type("Side", (), {"label": label, "describe": lambda self: label})()
        self.name, self.clock, self.ratio = f"{label} worker", clock, head_ratio

    def request(self, request: dict, timeout: float) -> dict:
        self.clock["now"] += 0.01
        per_step = 1e-3 * (self.ratio if self.side.label == "head" else 1.0)
        return {"seconds": request["k"] * per_step, "retraced": 0}


@pytest.mark.parametrize(("min_s", "cap_s"), [(0.0, 20.0), (5.0, 20.0), (5.0, 2.0)])
def test_a_first_pass_samples_its_least_seconds_before_stopping_early(monkeypatch, min_s, cap_s):
    """A plain 20% difference is decided after the first 30 pairs (0.6 s of 10 ms rounds);
    with ``min_s`` the pass goes on to that many seconds, unless its cap (the deadline's share)
    comes first. A short spell of slow noise cannot then decide alone."""
    clock = {"now": 0.0}
    monkeypatch.setattr(M.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(M, "cpu_steal_counters", lambda: None)
    grid = [[FakeWorker("base", clock, 1.2), FakeWorker("head", clock, 1.2)]]
    state = M.Sampled(k=10, rounds=[], setups={}, grid=grid, seconds=0.0, bench_id="b", live=True)
    settings = M.Settings(pairs=1, budget_s=None, min_seconds=min_s)
    M.sample(state, settings, random.Random(0), cap_s, 30)
    assert M.decided(state, settings)
    assert state.seconds == pytest.approx(max(0.6, min(min_s, cap_s)), abs=0.03)


def test_a_confirmation_is_guessed_from_the_benchmarks_own_setup_and_pace():
    settings = M.Settings(min_pairs=30, min_seconds=5.0)
    assert confirm_guess(2.0, 0.01, settings) == pytest.approx(2.0 + 5.0)  # min_seconds
    assert confirm_guess(4.0, 0.5, settings) == pytest.approx(4.0 + 30 * 0.5)  # min_pairs (CNN)


def test_the_benchmark_being_sampled_keeps_its_own_confirmation_time_back():
    """The last first pass may flag a verdict: its confirmation's time is held back while it
    is sampled, and given back to the second pass when it is not flagged."""
    noise = {"a": 20.0, "last": 20.0}  # neither decides
    fake = Fake(noise, setup_s=2.0)
    asked = []

    def reserve(current) -> float:
        asked.append(current)
        return 30.0 if current == "last" else 0.0

    p = plan(deadline=150.0, max_seconds=100, extend=1.2)
    fake.run(Plan(p.deadline, p.max_seconds, p.extend_to, p.min_pairs, reserve=reserve))
    assert "last" in asked and "a" in asked
    # "a": (150 - 2 - 2) / 2 = 73; "last" starts at 77 with 150 - 30 left to it: 43
    assert fake.states["a"].turns[0] == pytest.approx(73)
    assert fake.states["last"].turns[0] == pytest.approx(150 - 30 - 77)
    assert 148.0 <= fake.now <= 152.0  # the second pass took "a" on to the deadline


def test_the_first_pass_takes_each_kind_once_then_the_costliest_first():
    """Unknown costs go first, in the order given (so every task is seen early); then the
    benchmarks that take longest to decide, so the confirmations' reserve, which grows as
    verdicts are flagged, squeezes the quick ones last."""

    names = ["fit-lin", "fit-cnn", "fit-mlp", "xla-lin", "xla-cnn", "xla-mlp"]
    fake = Fake({n: 0.5 for n in names})
    per_task = {"lin": 1.0, "cnn": 12.0, "mlp": 4.0}

    def cost(name: str) -> float | None:
        task = name.split("-")[1]
        return per_task[task] if any(s.endswith(task) for s in fake.states) else None

    order: list[str] = []
    start = fake.start
    fake.start = lambda name: (order.append(name), start(name))[1]
    run_plan(names, plan(), fake.start, fake.sample, fake.width, fake.finish, fake.clock, cost)
    assert order == ["fit-lin", "fit-cnn", "fit-mlp", "xla-cnn", "xla-mlp", "xla-lin"]
    assert sorted(fake.finished) == sorted(names)
    # first of equals; no cost function keeps the order given
    assert next_bench(["a", "b"], lambda n: 3.0) == "a"
    assert next_bench(["a", "b", "c"], lambda n: {"a": 1.0, "b": 5.0, "c": 5.0}[n]) == "b"
    assert next_bench(["a", "b"], lambda n: None) == "a"
