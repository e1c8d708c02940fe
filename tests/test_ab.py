"""The interleaved A/B check (``python -m bench ab``): its statistics on synthetic rounds, a
run (``ABRun``, and the command around it) on fake sides with a fake clock, bad input, and
the outputs. The worker protocol on a tiny task, cleanup when a worker crashes or hangs, and
the end-to-end run: tests/test_ab_integration.py.

The budgets (A/A false alarms, detection of planted 10% and 5% slowdowns) are measured by
``experiments/ab_budget.py``, not here: timed assertions flake on a shared machine.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from fake_lab import fake_lab

from bench.ab.cli import main
from bench.ab.measure import Benchmark, Selection, Settings
from bench.ab.output import format_table, github_entries, markdown_verdict, summary_line, undecided
from bench.ab.run import ABRun, keyword_match, select_benchmarks
from bench.ab.sides import numerics_rtol, resolve_side
from bench.stats import paired as S
from bench.workers.process import InputError, Side

ROOT = Path(__file__).resolve().parent.parent


# --- statistics -----------------------------------------------------------------------------


def synthetic_pairs(ratio: float, n: int, seed: int, noise: float = 0.06) -> np.ndarray:
    """Log-ratios of n round pairs: each round's time is a shared machine state (which the
    pairing cancels) times its own log-normal noise, with outliers as a shared VM has."""
    rng = np.random.default_rng(seed)
    machine = rng.lognormal(0, 0.2, n)  # slow phases shared by both rounds of a pair
    base = machine * rng.lognormal(0, noise, n)
    head = ratio * machine * rng.lognormal(0, noise, n)
    spikes = rng.random(n) < 0.05  # a burst of steal caught one round of the pair, either one
    on_head = rng.random(n) < 0.5
    head[spikes & on_head] *= 1.8
    base[spikes & ~on_head] *= 1.8
    return np.log(head / base)


@pytest.mark.parametrize("ratio", [0.8, 0.95, 1.0, 1.05, 1.1, 1.5])
def test_known_ratio_is_recovered(ratio):
    est = S.hodges_lehmann(synthetic_pairs(ratio, 200, seed=1))
    assert est.low < ratio < est.high
    assert est.ratio == pytest.approx(ratio, rel=0.015)
    assert est.detectable_pct < 2.0


def test_interval_covers_the_truth_about_as_often_as_it_claims():
    hits = sum(
        S.hodges_lehmann(synthetic_pairs(1.0, 60, seed=s), 0.95).low
        < 1.0
        < S.hodges_lehmann(synthetic_pairs(1.0, 60, seed=s), 0.95).high
        for s in range(200)
    )
    assert 0.90 <= hits / 200 <= 0.99


def test_a_a_is_not_flagged():
    verdicts = [
        S.verdict(S.hodges_lehmann(synthetic_pairs(1.0, 40, seed=s)), 0.03) for s in range(200)
    ]
    # 40 pairs of rounds with 6% noise each: the estimate's spread is about 1.4%, so beyond
    # the 3% threshold (and significant) about 2% of the time, either way
    assert verdicts.count(S.SLOWER) + verdicts.count(S.FASTER) <= 8


@pytest.mark.parametrize("ratio, expected", [(1.10, S.SLOWER), (1 / 1.10, S.FASTER)])
def test_a_clear_shift_is_flagged(ratio, expected):
    est = S.hodges_lehmann(synthetic_pairs(ratio, 40, seed=3))
    assert S.verdict(est, 0.03) == expected
    assert S.decided(est, 0.03)


def test_a_shift_below_the_threshold_is_not_a_regression():
    est = S.hodges_lehmann(synthetic_pairs(1.02, 400, seed=4))
    assert est.low > 1  # significant...
    assert S.verdict(est, 0.05) == S.NO_CHANGE  # ...but smaller than the threshold
    assert S.missed_pct(est) == pytest.approx(100 * (est.high - 1))


def test_the_interval_scale_widens_around_the_estimate():
    d = synthetic_pairs(1.05, 100, seed=5)
    plain, wide = S.hodges_lehmann(d), S.hodges_lehmann(d, scale=1.7)
    assert wide.ratio == plain.ratio
    assert math.log(wide.high / wide.ratio) == pytest.approx(
        1.7 * math.log(plain.high / plain.ratio)
    )
    assert math.log(wide.ratio / wide.low) == pytest.approx(1.7 * math.log(plain.ratio / plain.low))


def test_decided_only_when_the_interval_clears_the_threshold():
    assert S.decided(S.Estimate(1.0, 0.99, 1.01, 50), 0.03)  # inside the band
    assert S.decided(S.Estimate(1.10, 1.05, 1.15, 50), 0.03)  # above it
    assert not S.decided(S.Estimate(1.03, 1.01, 1.05, 50), 0.03)  # straddles +3%
    assert not S.decided(S.Estimate(1.0, 0.95, 1.05, 6), 0.03)  # too wide


def test_contended_pairs_are_dropped_unless_too_few_remain():
    t = np.ones(10)
    steal = np.zeros(10)
    steal[[2, 5]] = 0.3
    keep = S.kept_pairs(t, t, steal, np.zeros(10), 0.02, minimum=5)
    assert keep.sum() == 8 and not keep[2] and not keep[5]
    everything = S.kept_pairs(t, t, np.full(10, 0.3), np.zeros(10), 0.02, minimum=5)
    assert everything.all()
    no_steal_counter = S.kept_pairs(t, t, np.full(10, np.nan), np.full(10, np.nan), 0.02, 5)
    assert no_steal_counter.all()


# --- selection --------------------------------------------------------------------------------


def test_keyword_expressions_follow_pytest():
    assert keyword_match("xla and not cnn", "custom_xla-mlp")
    assert not keyword_match("xla and not cnn", "custom_xla-cnn")
    assert keyword_match("(graph or fit) and MLP", "keras_fit-mlp")
    with pytest.raises(InputError, match="-k"):
        keyword_match("and or", "x")


def _side(label: str, impls: list[str]) -> Side:
    return Side(label, label, "directory", ROOT, "python", implementations=impls)


def test_a_benchmark_one_side_lacks_is_skipped_with_the_reason():
    sides = [_side("base", ["custom_graph"]), _side("head", ["custom_graph", "new_loop"])]
    benches, skips = select_benchmarks(sides, Selection("mlp"))
    assert [b.name for b in benches] == ["custom_graph-mlp", "new_loop-mlp"]
    assert skips == {"new_loop-mlp": "not in base's registry"}
    benches, _ = select_benchmarks(sides, Selection("custom_graph and linreg", (8, 32)))
    assert [b.name for b in benches] == ["custom_graph-linreg-b8", "custom_graph-linreg"]
    headline = select_benchmarks(
        [_side("base", ["custom_eager", "custom_graph", "keras_fit"])] * 2, Selection()
    )
    assert [b.name for b in headline[0]] == [
        f"{i}-{t}" for i in ("custom_graph", "keras_fit") for t in ("linreg", "mlp", "cnn")
    ]
    with pytest.raises(InputError, match="selects no benchmark"):
        select_benchmarks(sides, Selection("nothing_like_this"))


def test_with_tasks_the_sides_tasks_are_benchmarked_and_one_lacking_a_task_skips_it():
    sides = [_side("base", ["custom_graph"]), _side("head", ["custom_graph"])]
    sides[0].tasks = {"linreg": {"batch_size": 32, "numerics_rtol": None}}  # older code
    sides[1].tasks = {
        "linreg": {"batch_size": 32, "numerics_rtol": None},
        "tiny": {"batch_size": 16, "numerics_rtol": 1e-4},
    }
    benches, skips = select_benchmarks(sides, Selection("custom_graph"))
    assert [(b.name, b.batch_size) for b in benches] == [
        ("custom_graph-linreg", 32),
        ("custom_graph-tiny", 16),
    ]
    assert skips == {"custom_graph-tiny": "task tiny not in base's code (older than --tasks?)"}
    assert numerics_rtol("tiny", sides) == 1e-4  # the task's own, from HEAD's code
    assert numerics_rtol("cnn", sides) == 1e-3 and numerics_rtol("linreg", sides) == 1e-5


# --- the run, on fake sides: ABRun, and bench ab's command around it ---------------------------


def slower_custom_graph(bench: Benchmark, sides: list[Side]) -> float:
    return 1.10 if bench.implementation == "custom_graph" else 1.0


def test_a_run_on_fake_sides_confirms_its_verdicts_within_its_deadline(capsys):
    """ABRun with the measuring faked (tests/fake_lab.py): the slowed benchmarks read SLOWER,
    are measured again by fresh workers (a second start, a second process pair each) and
    judged on all their rounds; the unchanged ones read no change; one the workers cannot run
    is skipped with why; the run ends by its deadline, its workers closed."""
    labs: list = []
    impls = ("custom_graph", "keras_fit", "custom_xla")
    lab = fake_lab(
        labs, ratio=slower_custom_graph, implementations=impls, unsupported=("custom_xla",)
    )
    sides = [
        Side("base", "HEAD", "revision", ROOT, "python", revision="1234567890abc"),
        Side("head", ".", "working tree", ROOT, "python"),
    ]
    settings = Settings(pairs=1, budget_s=45.0)  # less than the benchmarks would take
    results = ABRun(sides, Selection("linreg or mlp"), settings, lab).run()
    fake = labs[0]
    assert [(r["name"], r["verdict"], r.get("first_verdict")) for r in results.benchmarks] == [
        ("custom_graph-linreg", S.SLOWER, S.SLOWER),
        ("custom_graph-mlp", S.SLOWER, S.SLOWER),
        ("keras_fit-linreg", S.NO_CHANGE, None),
        ("keras_fit-mlp", S.NO_CHANGE, None),
        ("custom_xla-linreg", S.SKIPPED, None),
        ("custom_xla-mlp", S.SKIPPED, None),
    ]
    assert results.benchmarks[-1]["skip_reason"] == "custom_xla cannot run mlp here"
    assert results.named(S.SLOWER) == ["custom_graph-linreg", "custom_graph-mlp"]
    assert results.exit_code == 1 and sorted(results.first_pass_order) == sorted(
        r["name"] for r in results.benchmarks
    )
    slower = results.benchmarks[0]
    assert fake.starts == 2 and slower["process_pairs"] == 2
    assert {r["pair"] for r in slower["rounds"]} == {0, 1}
    assert slower["ratio"] == pytest.approx(1.10, rel=0.01) and slower["ci_low"] > 1.05
    # each confirmation's share of the deadline is asked once it is set up
    confirmations = fake.samples[-2:]
    assert [(name, now) for name, now, _, _ in confirmations] == fake.set_ups[-2:]
    assert all(min_new == settings.min_pairs for *_, min_new in confirmations)
    assert results.workers_s == 10.0 and results.confirm_s > 0
    # the deadline shares out the time left: no first pass gets its --max-seconds, and the run
    # ends by the deadline, confirmations included
    assert all(cap < settings.max_seconds for _, _, cap, _ in fake.samples)
    assert results.wall_s == fake.now <= settings.budget_s
    assert fake.closed and not fake.live
    out, err = capsys.readouterr()
    assert out.startswith("BASE: HEAD @ 1234567890 (revision) -- Python 3.11, TensorFlow 2.21")
    assert "ab: confirming 2 verdict(s) with 1 fresh worker pair(s) ..." in err


def test_a_run_without_a_deadline_gives_each_benchmark_max_seconds_and_no_second_pass():
    """An undecided benchmark (noisy, unchanged) samples for --max-seconds, once."""
    labs: list = []
    sides = [Side(label, ".", "working tree", ROOT, "python") for label in ("base", "head")]
    settings = Settings(budget_s=None, max_seconds=3.0, confirm=False)
    lab = fake_lab(labs, ratio=lambda bench, sides: 1.0, noise=0.2)
    results = ABRun(sides, Selection("custom_graph-mlp"), settings, lab).run()
    assert [cap for _, _, cap, _ in labs[0].samples] == [3.0]
    assert results.benchmarks[0]["verdict"] == S.NO_CHANGE and results.confirm_s == 0.0


def test_the_command_around_a_run_on_fake_sides_prints_and_writes_every_output(
    tmp_path, capsys, monkeypatch
):
    """``bench ab``'s main() with the measuring faked: exit 1 on a SLOWER verdict (0 without
    one), the sides, the table and the summary line on stdout, --json with its keys,
    --github-json, --markdown, and the job summary."""
    labs: list = []
    out, gh, md, summary = (tmp_path / n for n in ("ab.json", "gh.json", "ab.md", "summary.md"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    argv = ["--base", ".", "--head", ".", "-k", "linreg", "--pairs", "1", "--json", str(out)]
    argv += ["--github-json", str(gh), "--markdown", str(md)]
    assert main(argv, lab=fake_lab(labs, ratio=slower_custom_graph)) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("BASE: working tree @ ") and printed[1].startswith("HEAD: ")
    assert "SLOWER" in next(line for line in printed if line.startswith("custom_graph-linreg"))
    assert (
        printed[-1].startswith("ab: 2 benchmark(s) in ")
        and "SLOWER: custom_graph-linreg" in (printed[-1])
    )
    doc = json.loads(out.read_text())
    assert list(doc) == [
        "schema", "datetime", "command", "settings", "machine", "sides", "benchmarks", "summary",
    ]  # fmt: skip
    assert doc["schema"] == "loopbench-ab/1" and doc["command"][4:] == argv
    assert doc["settings"] == {
        "threshold_pct": 3.0, "confidence": 0.95, "round_seconds": 0.01, "process_pairs": 1,
        "min_pairs": 30, "min_seconds": 5.0, "max_seconds": 20.0, "budget_seconds": 210.0,
        "extend_to_seconds": 60.0, "order": "random", "seed": 0, "select": "linreg",
        "tasks": None, "warmup_steps": 5, "interval_scale": S.INTERVAL_SCALE, "confirm": True,
        "steal_limit_pct": 2.0,
    }  # fmt: skip
    assert set(doc["machine"]) == {"cpu_model", "cpu_count", "platform", "steal_pct_session"}
    assert doc["sides"]["head"]["versions"]["tensorflow"] == "2.21"
    summary_doc = doc["summary"]
    assert list(summary_doc) == [
        "slower", "faster", "exit_code", "wall_s", "workers_s", "passes_s", "confirm_s",
        "first_pass_order",
    ]  # fmt: skip
    assert summary_doc["slower"] == ["custom_graph-linreg"] and summary_doc["exit_code"] == 1
    assert summary_doc["wall_s"] == labs[0].now
    assert [b["name"] for b in doc["benchmarks"]] == ["custom_graph-linreg", "keras_fit-linreg"]
    assert [e["name"] for e in json.loads(gh.read_text())] == [
        "ab custom_graph-linreg batch=32: HEAD/BASE",
        "ab keras_fit-linreg batch=32: HEAD/BASE",
    ]
    verdict = md.read_text()
    assert verdict.startswith(":red_circle: `bench ab`: **1 slower**, 0 faster, 1 unchanged (")
    assert summary.read_text() == verdict
    # nothing slower: exit 0
    assert main(["-k", "keras_fit and mlp"], lab=fake_lab(labs, ratio=slower_custom_graph)) == 0


# --- sides and bad input ------------------------------------------------------------------------


def test_a_bad_revision_is_one_clear_line(capsys):
    assert main(["--base", "no-such-revision-xyz", "-k", "custom_graph-linreg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--base 'no-such-revision-xyz': neither a directory nor a git revision" in err[0]


def test_a_revision_is_exported_and_removed_afterwards():
    with contextlib.ExitStack() as stack:
        side = resolve_side("base", "HEAD", None, ROOT, stack)
        assert side.kind == "revision" and len(side.revision) == 40
        assert (side.root / "implementations" / "__init__.py").is_file()
        exported = side.root
    assert not exported.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budget-seconds", "-5"], "--budget-seconds must be >= 0"),
        (["--max-seconds", "0"], "--max-seconds > 0"),
        (["--min-seconds", "-1"], "--min-seconds >= 0"),
        (["--threshold", "0%"], "--threshold must be between 0 and 100%"),
    ],
)
def test_bad_time_and_threshold_options_are_one_line_and_exit_2(argv, message, capsys):
    assert main([*argv, "-k", "custom_graph-linreg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_bad_interpreter_is_refused(capsys):
    assert main(["--base-python", "/nonexistent/venv", "-k", "linreg"]) == 2
    assert "--base-python /nonexistent/venv: not a Python interpreter" in capsys.readouterr().err


# --- the outputs ----------------------------------------------------------------------------------


def _fake(name, verdict, ratio, low, high, base_ms=1.0, batch=32):
    impl, task = name.split("-")
    return {
        "name": name,
        "implementation": impl,
        "task": task,
        "batch_size": batch,
        "verdict": verdict,
        "ratio": ratio,
        "ci_low": low,
        "ci_high": high,
        "missed_pct": 100 * (high - 1),
        "pairs": 40,
        "skip_reason": None,
        "base": {"median_s": base_ms / 1e3},
        "head": {"median_s": ratio * base_ms / 1e3},
        "numerics": {"changed": False},
    }


def test_the_markdown_verdict_shows_the_changes_and_collapses_the_rest():
    class FakeSide:
        def __init__(self, label, text):
            self.label, self.text = label, text

        def describe(self):
            return self.text

    results = [
        _fake("keras_fit-mlp", "no change", 1.004, 0.99, 1.02),
        _fake("custom_graph-mlp", "SLOWER", 1.08, 1.05, 1.11),
        _fake("custom_xla-cnn", "FASTER", 0.9, 0.88, 0.93, batch=64),
        {**_fake("custom_xla-mlp", "skipped", 1.0, 1.0, 1.0), "skip_reason": "not in base"},
    ]
    sides = [FakeSide("base", "main @ 1234567"), FakeSide("head", "working tree")]
    text = markdown_verdict(results, 0.04, sides)
    first, *rest = text.splitlines()
    assert first == (
        ":red_circle: `bench ab`: **1 slower**, 1 faster, 1 unchanged, 1 skipped (threshold 4%; "
        "HEAD `working tree` vs BASE `main @ 1234567`)"
    )
    changed, collapsed = text.split("<details>")
    row = next(line for line in changed.splitlines() if "`custom_graph-mlp`" in line)
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "`custom_graph-mlp`", "1.000", "1.080", "+8.0% [+5.0%, +11.0%]", "SLOWER",
    ]  # fmt: skip
    assert "`custom_xla-cnn`" in changed and "`keras_fit-mlp`" not in changed
    assert "1 unchanged; slowdowns above +2.0% ruled out</summary>" in collapsed
    assert "`keras_fit-mlp`" in collapsed and "- `custom_xla-mlp` skipped: not in base" in text
    entries = github_entries(results, 0.04)
    assert [e["name"] for e in entries] == [
        "ab keras_fit-mlp batch=32: HEAD/BASE",
        "ab custom_graph-mlp batch=32: HEAD/BASE",
        "ab custom_xla-cnn batch=64: HEAD/BASE",
    ]
    assert entries[1]["value"] == 1.08 and entries[1]["range"] == "1.0500..1.1100"


def test_benchmark_names_match_the_step_benchmarks():
    assert Benchmark("custom_xla", "mlp", 256, True).name == "custom_xla-mlp"
    assert Benchmark("custom_xla", "mlp", 64, False).name == "custom_xla-mlp-b64"


def test_an_interval_still_reaching_past_the_threshold_reads_undecided_not_unchanged():
    """A slow CPU's CNN stopped by the budget at +-8% is neither a regression nor ruled out:
    the summary line, the table and the markdown say so; a narrow "no change" does not."""

    class FakeSide:
        def __init__(self, label):
            self.label = label

        def describe(self):
            return self.label

    wide = {**_fake("custom_graph-cnn", "no change", 1.02, 0.95, 1.10), "detectable_pct": 7.5}
    narrow = {**_fake("custom_graph-mlp", "no change", 1.0, 0.99, 1.01), "detectable_pct": 1.0}
    slower = {**_fake("custom_xla-mlp", "SLOWER", 1.08, 1.05, 1.11), "detectable_pct": 3.0}
    for r in (wide, narrow, slower):
        r["pairs_dropped_steal"] = 0
    assert undecided(wide, 0.03) and not undecided(narrow, 0.03) and not undecided(slower, 0.03)
    assert not undecided(wide, 0.12)  # inside a wider band: decided

    line = summary_line([wide, narrow, slower], 0.03, 100.0)
    assert "undecided when the time ran out: custom_graph-cnn (±7.5%)" in line
    assert "custom_graph-mlp (" not in line
    table = format_table([wide, narrow], 0.03)
    cnn, mlp = table.splitlines()[2:]
    assert "undecided" in cnn and "no change" in mlp and "undecided" not in mlp

    text = markdown_verdict([wide, narrow, slower], 0.03, [FakeSide("base"), FakeSide("head")])
    assert "**1 slower**, 0 faster, 1 unchanged, 1 undecided" in text.splitlines()[0]
    shown, open_, same = text.split("<details>")  # only the changes shown, the rest collapsed
    assert "`custom_xla-mlp`" in shown and "`custom_graph-cnn`" not in shown
    assert "1 undecided when the time ran out" in open_ and "| undecided" in open_
    assert "`custom_graph-cnn`" in open_ and "`custom_graph-mlp`" not in open_
    assert "`custom_graph-mlp`" in same and "`custom_graph-cnn`" not in same
