"""The run's time plan (bench/timing/plan.py), on fake entries and a fake clock: on time every
entry gets its cap; behind, the optional entries drop out first, each with the reason; a run
never ends past its budget by more than one entry's building."""

from __future__ import annotations

import pytest

from bench.timing.plan import BUILD_GUESS_S, MIN_SHARE, Entry, Plan


class FakeClock:
    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def step(key, cap=40.0, members=3, task=None):
    return Entry(key, "panel", cap, members, task or key)


def sweep(key, cap=8.0, members=3, task="mlp"):
    return Entry(key, "panel", cap, members, task, optional=True)


QUICK = [
    Entry("conv-a", "convergence", 10.0),
    Entry("conv-bf16", "convergence", 20.0, optional=True, priority=1),
    Entry("dist", "distributed", 10.0, optional=True, priority=1),
    step("linreg"),
    step("mlp"),
    step("cnn"),
    sweep("sweep-mlp-b32"),
    sweep("sweep-mlp-b512"),
]


def run(plan: Plan, clock: FakeClock, build_s: dict[str, float], cost_s: dict[str, float]):
    """Run every entry of ``plan`` in order on ``clock``: a panel builds (``build_s`` per
    member, by task) then spends its granted cap; another entry costs ``cost_s``. Returns
    {key: granted cap or the skip reason}."""
    out = {}
    for e in plan.entries:
        why = plan.start(e.key)
        if why is not None:
            out[e.key] = why
            continue
        if e.kind != "panel":
            clock.now += cost_s.get(e.key, e.cap_s)
            out[e.key] = None
            continue
        clock.now += build_s.get(e.task, 1.0) * e.members
        plan.built(e.key, build_s.get(e.task, 1.0))
        out[e.key] = plan.cap(e.key)
        clock.now += out[e.key]
    plan.start("the end")  # counts the last non-panel entry
    return out


def test_on_time_every_entry_gets_its_cap():
    clock = FakeClock()
    plan = Plan(QUICK, budget_s=1000.0, started=0.0, clock=clock)
    out = run(plan, clock, {}, {})
    assert plan.skipped == {}
    for e in QUICK:
        assert out[e.key] == (e.cap_s if e.kind == "panel" else None)


def test_without_a_budget_nothing_is_skipped_however_late():
    clock = FakeClock(1e6)
    plan = Plan(QUICK, budget_s=None, started=0.0, clock=clock)
    out = run(plan, clock, {}, {})
    assert plan.skipped == {} and out["mlp"] == 40.0 and out["sweep-mlp-b512"] == 8.0


def test_behind_the_optional_entries_go_first_each_with_the_reason():
    """A CPU halved: everything takes twice as long. The step panels share what is left;
    the sweep points (priority 0) drop out before the optional convergence run and the
    distributed launch (priority 1); every skip says why and how to run it anyway."""
    clock = FakeClock()
    plan = Plan(QUICK, budget_s=150.0, started=0.0, clock=clock)
    out = run(plan, clock, {"linreg": 2.0, "mlp": 4.0, "cnn": 6.0}, {"conv-a": 60.0})
    assert set(plan.skipped) == {"sweep-mlp-b32", "sweep-mlp-b512"}
    for key, why in plan.skipped.items():
        assert out[key] == why and "--run-budget 0 runs it" in why and "optional" in why
        assert "sweep point" in why
    assert out["conv-bf16"] is None and out["dist"] is None  # they still fit
    for key in ("linreg", "mlp", "cnn"):  # required: they run, on a share of their caps
        assert 0 < out[key] < 40.0
    assert plan.info()["skipped"][0]["key"] == "sweep-mlp-b32"


def test_far_behind_every_optional_entry_is_skipped_and_the_required_ones_run():
    clock = FakeClock()
    plan = Plan(QUICK, budget_s=60.0, started=0.0, clock=clock)
    out = run(plan, clock, {"linreg": 2.0, "mlp": 4.0, "cnn": 6.0}, {"conv-a": 55.0})
    assert set(plan.skipped) == {"conv-bf16", "dist", "sweep-mlp-b32", "sweep-mlp-b512"}
    assert "the run budget (60 s, --run-budget) is spent" in plan.skipped["conv-bf16"]
    assert all(out[k] == 0.0 for k in ("linreg", "mlp", "cnn"))  # their first blocks only


def test_the_lowest_priority_goes_first_and_the_latest_among_equals():
    clock = FakeClock()
    entries = [
        step("a", cap=10.0, members=0),
        Entry("opt-hi", "convergence", 10.0, optional=True, priority=1),
        sweep("s1", cap=10.0, members=0),
        sweep("s2", cap=10.0, members=0),
    ]
    # 8 s left for 40 s of caps: 0.2 of each, under MIN_SHARE; without s2 (the latest of the
    # lowest priority) 8 / 30, enough: a's cap is its share of that
    plan = Plan(entries, budget_s=8.0, started=0.0, clock=clock)
    assert plan.start("a") is None
    assert plan.cap("a") == pytest.approx(10.0 * 8.0 / 30.0)
    clock.now = 2.0
    # 6 s for 30 s of caps (0.2): the sweep points would go first; opt-hi (priority 1) runs
    assert plan.start("opt-hi") is None
    clock.now = 5.0  # 3 s for s1 and s2: s2 drops out, s1 gets 0.3 of its cap
    assert plan.start("s1") is None and plan.cap("s1") == pytest.approx(3.0)
    clock.now = 8.0
    why = plan.start("s2")
    assert why is not None and "0 s left" in why and "this panel is optional" in why


def test_a_run_never_ends_past_its_budget_by_more_than_one_entrys_build():
    """Whatever the pace, with the building guessed from the task's own panels: the end of
    the run is within one panel's building of the deadline."""
    for slowness in (0.5, 1.0, 2.0, 4.0, 8.0):
        clock = FakeClock()
        budget = 200.0
        plan = Plan(QUICK, budget_s=budget, started=0.0, clock=clock)
        build = {t: 1.5 * slowness for t in ("linreg", "mlp", "cnn")}
        cost = {"conv-a": 30.0 * slowness, "conv-bf16": 10.0 * slowness, "dist": 10 * slowness}
        run(plan, clock, build, cost)
        one_build = max(build.values()) * 3
        late_from_required = 30.0 * slowness if 30.0 * slowness > budget else 0.0
        assert clock.now <= budget + one_build + late_from_required, slowness


def test_a_panels_cap_pays_for_what_it_spends_outside_its_blocks():
    clock = FakeClock()
    plan = Plan([step("cnn", cap=40.0, members=2)], budget_s=30.0, started=0.0, clock=clock)
    assert plan.start("cnn") is None
    clock.now = 5.0
    assert plan.cap("cnn", fixed_s=10.0) == pytest.approx(15.0)  # 25 s left, 10 s elsewhere
    assert plan.granted["cnn"] == pytest.approx(15.0)


def test_the_building_guess_is_per_task_once_one_of_its_panels_was_built():
    clock = FakeClock()
    entries = [step("cnn", cap=10.0, members=1), sweep("sweep-cnn-b32", cap=10.0, task="cnn")]
    entries.append(sweep("sweep-mlp-b32", cap=10.0, members=1, task="mlp"))
    plan = Plan(entries, budget_s=100.0, started=0.0, clock=clock)
    assert plan._build_guess(entries[1]) == BUILD_GUESS_S * 3  # nothing built yet
    plan.start("cnn")
    plan.built("cnn", 7.0)
    assert plan._build_guess(entries[1]) == 21.0  # the CNN's own figure
    assert plan._build_guess(entries[2]) == 7.0  # another task: the most seen so far
    plan.built("cnn", 0.5)
    assert plan._build_guess(entries[2]) == BUILD_GUESS_S  # and never less than the guess


def test_non_panel_entries_are_guessed_from_their_kind_once_one_ran():
    clock = FakeClock()
    entries = [Entry("c1", "convergence", 10.0), Entry("c2", "convergence", 10.0)]
    plan = Plan(entries, budget_s=100.0, started=0.0, clock=clock)
    plan.start("c1")
    clock.now = 30.0
    plan.start("c2")  # c1 took 30 s
    assert plan._cap_guess(entries[1]) == 30.0


def test_a_skipped_entry_started_again_gives_the_same_reason_and_unknown_keys_run():
    clock = FakeClock(1000.0)
    plan = Plan([sweep("s", members=0)], budget_s=10.0, started=0.0, clock=clock)
    why = plan.start("s")
    assert why is not None and plan.start("s") == why
    assert plan.start("not planned") is None


def test_plan_keys_are_distinct_and_min_share_is_a_quarter():
    with pytest.raises(ValueError, match="distinct"):
        Plan([step("a"), step("a")], budget_s=1.0, started=0.0)
    assert MIN_SHARE == 0.25


def test_optional_entries_run_last_the_most_important_first():
    from bench.timing.plan import run_rank

    entries = [QUICK[6], QUICK[1], QUICK[3], None, QUICK[2], QUICK[0]]
    ranked = sorted(range(len(entries)), key=lambda i: run_rank(entries[i]))
    # required and unplanned items keep their places, ahead of every optional one; among
    # the optional, priority 1 (bf16 convergence, distributed) before priority 0 (sweep)
    assert [entries[i] for i in ranked] == [QUICK[3], None, QUICK[0], QUICK[1], QUICK[2], QUICK[6]]
