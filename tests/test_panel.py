"""Panels: the block scheduler (bench/timing/blocks.py), the paired ratios it yields, and a
real panel of TensorFlow trainers (bench/timing/panel.py): one round of every member per
block in random order, ratios recovered through a drift that hits every member alike, a
planted slowdown moving its own ratio only, a member that cannot be built failing alone, and
members capped to the budget. A retrace inside the blocks, a JAX member timed in its
TensorFlow twin's blocks and the command line: tests/test_panel_integration.py."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from bench.timing.blocks import Rounds, paired_ratio, run_blocks


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Synthetic:
    """A member whose round takes ``ratio`` x the machine's current slowness x noise, on a
    fake clock: the machine's slowness is a shared drift, the noise each round's own."""

    def __init__(self, name, ratio, machine, rng, clock, noise=0.02, log=None):
        self.name, self.ratio, self.machine, self.rng = name, ratio, machine, rng
        self.clock, self.noise, self.log = clock, noise, log

    def run_round(self):
        seconds = 1e-3 * self.ratio * self.machine() * math.exp(self.rng.normal(0, self.noise))
        self.clock.now += 0.2
        if self.log is not None:
            self.log.append(self.name)
        return seconds


def no_steal():
    return None


def test_every_member_runs_one_round_per_block_in_a_random_order():
    clock, rng, log = FakeClock(), np.random.default_rng(0), []
    members = [Synthetic(n, 1.0, lambda: 1.0, rng, clock, log=log) for n in "abcde"]
    result = run_blocks(
        members,
        [],
        min_blocks=20,
        max_blocks=20,
        time_cap_s=1e9,
        target_pct=0.0,
        counters=no_steal,
        clock=clock,
    )
    assert result.blocks == 20
    assert [log[i : i + 5] for i in range(0, 100, 5)] == result.orders
    for order in result.orders:
        assert sorted(order) == list("abcde")
    assert len({tuple(o) for o in result.orders}) > 10  # a fresh order per block
    for name in "abcde":
        assert result.rounds[name].block == list(range(20))
    # The same seed gives the same orders: a run can be replayed.
    again = run_blocks(
        members, [], min_blocks=20, max_blocks=20, time_cap_s=1e9, target_pct=0.0,
        counters=no_steal, clock=clock,
    )  # fmt: skip
    assert again.orders == result.orders


def drifting_machine(clock):
    """Slow spells: the machine runs at 1x, then 2.5x slower for 3 s of every 7, plus a slow
    creep (what a bursty neighbour and a warming host do to every member alike)."""
    return lambda: (2.5 if (clock.now % 7.0) < 3.0 else 1.0) * (1 + clock.now / 100)


@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_known_ratios_are_recovered_through_a_shared_drift(noise):
    clock, rng = FakeClock(), np.random.default_rng(1)
    machine = drifting_machine(clock)
    truth = {"base": 1.0, "fast": 0.5, "same": 1.0, "slow": 1.7}
    members = [Synthetic(n, r, machine, rng, clock, noise) for n, r in truth.items()]
    result = run_blocks(
        members,
        [("base", n) for n in truth if n != "base"],
        min_blocks=30,
        max_blocks=30,
        time_cap_s=1e9,
        target_pct=0.0,
        counters=no_steal,
        clock=clock,
    )
    for name, ratio in truth.items():
        est = result.ratio("base", name)  # base's time / name's: name's speedup over base
        assert est.ratio == pytest.approx(1 / ratio, rel=0.02), name
        assert est.low <= 1 / ratio <= est.high, name
    # Without the pairing, the same rounds' medians are thrown off by the drift.
    medians = {n: np.median(result.rounds[n].seconds) for n in truth}
    assert max(medians.values()) / min(medians.values()) > 0  # (they exist)
    slow_spells = [s for s in result.rounds["base"].seconds]
    assert max(slow_spells) / min(slow_spells) > 2  # the drift was really there


def test_sampling_stops_at_the_target_or_at_the_time_cap():
    clock, rng = FakeClock(), np.random.default_rng(2)
    quiet = [Synthetic(n, 1.0, lambda: 1.0, rng, clock, 0.002) for n in "ab"]
    done = run_blocks(
        quiet, [("a", "b")], min_blocks=8, max_blocks=100, time_cap_s=1e9, target_pct=2.0,
        counters=no_steal, clock=clock,
    )  # fmt: skip
    assert (done.stopped_by, done.blocks) == ("target", 8)
    noisy = [Synthetic(n, 1.0, lambda: 1.0, rng, clock, 0.5) for n in "ab"]
    capped = run_blocks(
        noisy, [("a", "b")], min_blocks=8, max_blocks=100, time_cap_s=4.0, target_pct=2.0,
        counters=no_steal, clock=clock,
    )  # fmt: skip
    assert capped.stopped_by == "time_cap" and capped.blocks == 10  # 0.4 s of rounds a block
    assert capped.info()["stopped_by"] == "time_cap"


def test_the_run_budget_counts_from_the_process_start():
    from bench.host import process_age_s
    from bench.timing.panel import Panels
    from bench.timing.profiles import PROFILES

    age = process_age_s()
    if age is None:
        pytest.skip("no /proc here")
    assert 0.5 < age < 24 * 3600  # pytest itself ran (importing TensorFlow) before this test
    plan = Panels().set_plan([], PROFILES["quick"])
    assert plan.started == pytest.approx(time.monotonic() - age, abs=0.5)
    assert plan.budget_s == PROFILES["quick"].run_budget_s


def test_contended_blocks_are_left_out_of_a_ratio():
    a, b = Rounds(), Rounds()
    for i in range(20):
        stolen = i % 5 == 0
        a.block.append(i), a.seconds.append(3.0 if stolen else 1.0), a.steal.append(0.0)
        b.block.append(i), b.seconds.append(1.0), b.steal.append(0.3 if stolen else 0.0)
    est = paired_ratio(a, b)
    assert est.n == 16 and est.ratio == pytest.approx(1.0)


def test_blocks_where_a_neighbour_in_the_vm_ran_are_left_out():
    """A busy neighbour inside the VM is no steal, and it slows members unequally (here one
    member 40%, the other not at all): the blocks in which other processes took more than
    FOREIGN_LIMIT of the CPU are left out of the ratio and of the members' kept rounds."""
    from bench.host import FOREIGN_LIMIT

    a, b = Rounds(), Rounds()
    for i in range(30):
        neighbour = i % 3 == 0
        a.block.append(i), a.seconds.append(1.4 if neighbour else 1.0), a.steal.append(0.0)
        a.foreign.append(0.5 if neighbour else 0.01)
        b.block.append(i), b.seconds.append(1.0), b.steal.append(0.0), b.foreign.append(0.02)
    est = paired_ratio(a, b)
    assert est.n == 20 and est.ratio == pytest.approx(1.0)
    assert a.quiet() == [i for i in range(30) if i % 3] and len(b.quiet()) == 30
    assert 0.02 < FOREIGN_LIMIT < 0.5


def test_contention_is_judged_over_the_whole_block():
    """Counters are read around each block, not each round (a short round is a few clock
    ticks: one tick of a kernel thread would mark it contended): a neighbour that ran during
    one member's round leaves the whole block out, for every member alike."""
    from bench.host import FOREIGN_LIMIT

    state = {"ticks": 0, "busy": 0, "own": 0, "reads": 0}

    def counters():
        state["reads"] += 1
        return (0, state["ticks"], state["busy"], state["own"])

    class Member(Synthetic):
        def run_round(self):
            block = len(log) // 3
            state["ticks"] += 8  # 2 cores x 4 ticks: a 40 ms round
            state["own"] += 4
            # the neighbour takes a tick of the block's 24 (4%, under the limit), or in
            # every third block 6 ticks, all during member c's round (25%: contended)
            state["busy"] += 4 + (1 if self.name == "a" else 0)
            if block % 3 == 0 and self.name == "c":
                state["busy"] += 5
            log.append(self.name)
            return super().run_round()

    rng, clock, log = np.random.default_rng(0), FakeClock(), []
    members = [Member(n, 1.0, lambda: 1.0, rng, clock) for n in "abc"]
    result = run_blocks(
        members, [], min_blocks=12, max_blocks=12, time_cap_s=1e9, target_pct=0.0,
        counters=counters, clock=clock,
    )  # fmt: skip
    assert state["reads"] == 2 * 12  # before and after each block
    for name in "abc":
        assert result.rounds[name].quiet() == [i for i in range(12) if i % 3], name
        flags = result.rounds[name].foreign
        assert all(f > FOREIGN_LIMIT for f in flags[::3]) and max(flags[1::3]) < FOREIGN_LIMIT


def test_cpu_counters_tell_this_process_from_others():
    from bench.host import cpu_counters, foreign_fraction

    before = cpu_counters()
    x = np.random.default_rng(0).standard_normal((300, 300))
    end = __import__("time").perf_counter() + 0.3
    while __import__("time").perf_counter() < end:
        x = np.tanh(x @ x.T / 300)
    after = cpu_counters()
    if before is None:
        pytest.skip("no /proc/stat here")
    assert after[3] > before[3]  # this process's own CPU time grew
    fake = (0, 100, 50, 0), (0, 300, 150, 60)  # 100 busy ticks of 200, 60 of them ours
    assert foreign_fraction(*fake) == pytest.approx(40 / 200)
    assert foreign_fraction(before, None) is None


class Work:
    """A member doing real CPU work: ``reps`` element-wise passes over an array per step (one
    thread: no BLAS threads spinning while descheduled), timed in this thread's CPU time, so
    that other processes on a shared machine (a CI neighbour, a test suite on the other core)
    and other threads of this one (earlier tests' TensorFlow and tf.data threads; the
    process's CPU time read 1.25 for 0.8 in a full run) do not make the test flaky: what it
    checks is the scheduler and the paired ratios, not the machine."""

    def __init__(self, name, reps):
        self.name, self.reps = name, reps
        self.a = np.random.default_rng(0).standard_normal(20_000)

    def run_round(self):
        import time

        t0 = time.thread_time()
        for _ in range(20):
            x = self.a
            for _ in range(self.reps):
                x = np.tanh(x * 1.0001 + 0.1)
        return (time.thread_time() - t0) / 20


def panel_of(reps: dict) -> dict:
    members = [Work(n, r) for n, r in reps.items()]
    result = run_blocks(
        members,
        [],
        min_blocks=15,
        max_blocks=15,
        time_cap_s=1e9,
        target_pct=0.0,
    )
    return {n: result.ratio("base", n).ratio for n in reps}


def test_a_planted_slowdown_moves_its_own_ratio_only():
    """The same members twice, once with 30% more work planted in one of them: its speedup
    over the baseline drops by about 30%, the others' stay put."""
    before = panel_of({"base": 4, "double": 8, "victim": 4})
    after = panel_of({"base": 4, "double": 8, "victim": 5})  # +1 of 4: the work is linear
    assert after["victim"] / before["victim"] == pytest.approx(4 / 5, rel=0.10)
    assert after["double"] / before["double"] == pytest.approx(1.0, rel=0.10)
    assert before["double"] == pytest.approx(0.5, rel=0.15)


# --- a real panel of TensorFlow trainers ---------------------------------------------------------


def specs(*impls, task="linreg"):
    from bench.tasks import TASKS
    from bench.timing.profiles import PROFILES
    from bench.timing.spec import Spec, twin_key

    return [
        Spec(
            name=f"test_step[{impl}-{task}]",
            panel=task,
            kind="step",
            implementation=impl,
            task_name=task,
            batch_size=TASKS[task].batch_size,
            profile=PROFILES["smoke"],
            twins=(twin_key("custom_graph"),) if impl == "custom_graph_loop" else (),
        )
        for impl in impls
    ]


def test_a_member_that_cannot_be_built_fails_alone(task_data):
    from bench.timing import panel

    bad = specs("keras_fit", "custom_graph")
    bad[1] = panel.Spec(**{**bad[1].__dict__, "implementation": "no_such_impl"})
    out = panel.Panels().measure(bad, task_data)
    assert isinstance(out[bad[1].name].error, KeyError)
    assert out[bad[0].name].error is None
    assert out[bad[0].name].info["speedup"] == 1.0  # alone: its own baseline


def test_twins_are_among_the_targets():
    from bench.timing.panel import choose_baseline, targets_of

    members = specs("custom_graph", "custom_graph_loop", "custom_xla")
    base = choose_baseline(members)
    assert base.implementation == "custom_graph"  # no keras_fit: the first in the registry
    pairs = targets_of(members, base)
    assert ("test_step[custom_graph-linreg]", "test_step[custom_graph_loop-linreg]") in pairs
    assert len(pairs) == 3  # each against the baseline, the loop against its twin (the same)


def test_the_quick_profile_leaves_out_bf16_where_the_cpu_emulates_it(monkeypatch):
    """A Zen 3 (AVX2, no avx512_bf16) emulates bfloat16: its quick run took 9 minutes, 74 s of
    them a bf16 CNN convergence, so the quick profile skips bf16 there; the full one keeps it."""
    from bench import host as steal
    from bench.benchmarks import bench_step
    from bench.timing.profiles import PROFILES

    zen3 = {"sse2", "avx", "avx2", "fma"}
    monkeypatch.setattr(steal, "cpu_flags", lambda: zen3)
    assert not steal.cpu_has_bf16()
    monkeypatch.setattr(steal, "cpu_flags", lambda: zen3 | {"avx512f", "avx512_bf16"})
    assert steal.cpu_has_bf16()
    monkeypatch.setattr(steal, "cpu_flags", set)  # unknown: nothing skipped on a guess
    assert steal.cpu_has_bf16()

    monkeypatch.setattr(bench_step, "cpu_has_bf16", lambda: False)
    params = {"impl": "custom_graph", "task_name": "mlp", "precision": "mixed_bfloat16"}
    with pytest.raises(pytest.skip.Exception, match="without bf16 units"):
        bench_step.precision_spec("x", params, PROFILES["quick"], None)
    spec = bench_step.precision_spec("x", params, PROFILES["full"], None)
    assert spec.precision == "mixed_bfloat16" and spec.twins == (
        ("tensorflow", "custom_graph", "float32", None, None),
    )


def test_a_member_with_a_round_cap_sits_out_the_later_blocks():
    clock, rng = FakeClock(), np.random.default_rng(5)
    members = [Synthetic(n, 1.0, lambda: 1.0, rng, clock) for n in "abc"]
    members[1].max_rounds = 3
    result = run_blocks(
        members, [("a", "c")], min_blocks=10, max_blocks=10, time_cap_s=1e9, target_pct=0.0,
        counters=no_steal, clock=clock,
    )  # fmt: skip
    assert result.blocks == 10 and len(result.rounds["b"].seconds) == 3
    assert len(result.rounds["a"].seconds) == len(result.rounds["c"].seconds) == 10
    assert result.rounds["b"].block == [0, 1, 2]


def test_a_capped_members_rounds_do_not_spend_the_panels_time_cap():
    """The full profile's XLA loops of convolutions (12 s a round) used to spend the CNN
    panel's whole cap in its first blocks, leaving every other ratio 12 blocks. A capped
    member's rounds count against its own budget, not the panel's cap."""
    clock, rng = FakeClock(), np.random.default_rng(6)
    members = [Synthetic(n, 1.0, lambda: 1.0, rng, clock) for n in "abc"]
    slow = members[2]
    slow.max_rounds = 3
    fast_round = slow.run_round

    def slow_round():  # 50 times a fast member's round on the clock
        seconds = fast_round()
        clock.now += 0.2 * 49
        return seconds

    slow.run_round = slow_round
    result = run_blocks(
        members, [("a", "b")], min_blocks=6, max_blocks=1000, time_cap_s=10.0, target_pct=0.0,
        counters=no_steal, clock=clock,
    )  # fmt: skip
    assert result.stopped_by == "time_cap" and len(result.rounds["c"].seconds) == 3
    # 10 s of the fast members' 0.4 s blocks, beside the slow member's 3 x 10 s of its own
    assert len(result.rounds["a"].seconds) == 25 and result.blocks == 25
    assert result.capped_seconds == pytest.approx(30.0) and result.seconds == pytest.approx(40.0)
    assert result.info()["capped_seconds"] == pytest.approx(30.0)


def test_under_a_run_budget_a_panels_cap_pays_for_its_capped_members(monkeypatch, task_data):
    """Under the run's budget the capped members' rounds come out of the panel's share
    (``Plan.cap``'s ``fixed_s``), so the run still ends on time."""
    import dataclasses

    from bench.timing import panel
    from bench.timing.members import TFMember
    from bench.timing.plan import Plan

    assert panel.capped_cost_s([]) == 0.0
    seen = {}
    real_run_blocks = panel.run_blocks

    def spy(*args, **kwargs):
        seen["cap"] = kwargs["time_cap_s"]
        return real_run_blocks(*args, **kwargs)

    monkeypatch.setattr(panel, "run_blocks", spy)
    tight = dataclasses.replace(PROFILES_SMOKE(), member_budget_s=0.0)
    members = [dataclasses.replace(s, profile=tight) for s in specs("keras_fit", "custom_graph")]
    built = []
    real_init = TFMember.__init__

    def keep(self, *a, **k):
        real_init(self, *a, **k)
        built.append(self)

    monkeypatch.setattr(TFMember, "__init__", keep)
    panels = panel.Panels()
    entry = panel.panel_entry(members)
    panels.plan = Plan([entry], budget_s=60.0, started=time.monotonic())
    assert panels.plan.start(entry.key) is None
    panels.measure(members, task_data)
    cost = sum(m.max_rounds * m.round_cap["call_s"] for m in built)
    assert len(built) == 2 and cost > 0
    assert seen["cap"] == panels.plan.granted[entry.key] <= max(0.0, entry.cap_s)
    assert panel.capped_cost_s(built) == pytest.approx(cost)


def test_a_member_too_slow_for_the_budget_is_capped_with_the_reason(task_data):
    """The profile's member budget against one call's time: under it, the usual warm-up and
    round length; over it, one call a round for at most budget / call rounds (at least 3),
    the reason recorded, and the panel's other ratios still measured."""
    import dataclasses

    from bench.timing import panel
    from bench.timing.members import capped_rounds

    spec = specs("custom_xla_loop", task="cnn")[0]
    assert capped_rounds(spec, 0.01, 1, 16) == (None, None)  # 8 calls: 0.08 s < 3 s
    assert capped_rounds(spec, 0.5, 1, 16)[0] == 6  # 8 calls: 4 s > 3 s; 3 s / 0.5 s
    rounds, cap = capped_rounds(spec, 2.0, 1, 16)  # at least 3 rounds, however slow
    assert rounds == 3 and cap["max_rounds"] == 3 and "125 ms/step (16 per call)" in cap["reason"]
    quick = dataclasses.replace(spec.profile, member_budget_s=60.0)
    assert capped_rounds(dataclasses.replace(spec, profile=quick), 10.0, 1, 16)[0] == 6

    tight = dataclasses.replace(PROFILES_SMOKE(), member_budget_s=0.0)
    members = [dataclasses.replace(s, profile=tight) for s in specs("keras_fit", "custom_graph")]
    out = panel.Panels().measure(members, task_data)
    for s in members:
        info = out[s.name].info
        assert out[s.name].error is None and info["rounds_run"] == 3
        assert info["round_cap"]["max_rounds"] == 3 and info["steps_per_round"] == 1


def PROFILES_SMOKE():  # noqa: N802
    from bench.timing.profiles import PROFILES

    return PROFILES["smoke"]


def test_the_plan_puts_optional_items_last_and_keeps_the_rest_in_place(monkeypatch):
    """``Panels.set_plan``: one entry per panel and per planned benchmark, in the run's order;
    the items of optional entries moved after every other item."""
    from types import SimpleNamespace

    from bench.timing import panel
    from bench.timing.plan import Entry
    from bench.timing.profiles import PROFILES

    def item(test, name):
        return SimpleNamespace(originalname=test, name=name, callspec=SimpleNamespace(params={}))

    monkeypatch.setitem(
        panel.ENTRY_BUILDERS,
        "test_opt",
        lambda name, p, prof: Entry(name, "convergence", 5.0, optional=True),
    )
    monkeypatch.setitem(
        panel.ENTRY_BUILDERS, "test_req", lambda name, p, prof: Entry(name, "convergence", 5.0)
    )
    items = [
        item("test_opt", "o1"),
        item("test_other", "x"),
        item("test_req", "r1"),
        item("test_opt", "o2"),
    ]
    plan = panel.Panels().set_plan(items, PROFILES["quick"])
    assert [it.name for it in items] == ["x", "r1", "o1", "o2"]
    assert [e.key for e in plan.entries] == ["r1", "o1", "o2"]
    assert plan.budget_s == PROFILES["quick"].run_budget_s
