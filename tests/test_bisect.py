"""``python -m bench bisect``: the search on a fake measurement (one slowdown, two steps,
noisy and misread steps, skipped commits, nothing to find), the command's report and exit
codes on a real git history with the measurement faked (each step's result, or each step an
``ABRun`` on fake sides). The end-to-end bisection of a planted history on linreg, which
starts processes: tests/test_bisect_integration.py.

The budget (16 commits, one ~10% slowdown in the middle, on the MLP) is measured by
``experiments/bisect_budget.py``, not here: timed assertions flake on a shared machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from experiment_loader import load_experiment as load_script
from fake_lab import fake_lab

from bench.ab import bisect as B
from bench.ab import bisect_cli as C
from bench.ab.cli import build_parser as ab_parser
from bench.ab.measure import Settings
from bench.stats import paired as S
from bench.workers.process import InputError

ROOT = Path(__file__).resolve().parent.parent


def load_experiment():
    return load_script("bisect_budget")


# --- the search, on a fake measurement ------------------------------------------------------


class Fake:
    """``measure(base, head)`` of a history whose commit i multiplies the step time by
    ``factors[i]``, read with an interval of +-``halfwidth`` and, as noise, times ``bias``
    (by head commit, or by (base, head)); a commit in ``broken`` cannot be measured. Records
    what was measured."""

    def __init__(self, n, factors, broken=(), commits=None, halfwidth=0.02, bias=None):
        self.commits = commits or [f"c{i:02d}" for i in range(n + 1)]
        self.halfwidth, self.bias = halfwidth, bias or {}
        self.time, t = [], 1.0
        for i in range(n + 1):
            t *= factors.get(i, 1.0)
            self.time.append(t)
        self.broken = set(broken)
        self.calls: list[tuple[int, int]] = []

    def __call__(self, base: str, head: str) -> B.Measurement:
        b, h = self.commits.index(base), self.commits.index(head)
        self.calls.append((b, h))
        if h in self.broken:
            return B.Measurement(base, head, B.FAILED, error=f"c{h:02d} does not build\ntrace")
        ratio = self.time[h] / self.time[b] * self.bias.get(h, self.bias.get((b, h), 1.0))
        low, high = ratio / (1 + self.halfwidth), ratio * (1 + self.halfwidth)
        verdict = S.verdict(S.Estimate(ratio, low, high, 30), 0.04)
        bench = {"name": "custom_graph-mlp", "verdict": verdict, "ratio": ratio}
        bench |= {"ci_low": low, "ci_high": high}
        outcome = B.SLOW if bench["verdict"] == "SLOWER" else B.SAME
        return B.Measurement(base, head, outcome, [bench], seconds=1.0)


def positions(result: B.Bisection) -> list[int]:
    return [result.commits.index(c.commit) for c in result.culprits]


def test_one_slowdown_in_16_commits_is_found_in_5_measurements_then_checked_with_2():
    fake = Fake(16, {8: 1.10})
    result = B.bisect(fake.commits, fake)
    assert result.status == "found" and result.exit_code == 0 and positions(result) == [8]
    culprit = result.culprits[0]
    assert culprit.found_after == 5  # BAD vs GOOD, then four halvings
    assert culprit.measurement.head == "c08" and culprit.measurement.base == "c00"
    assert culprit.parent.base == "c07" and culprit.confirmed
    # halving against GOOD; the culprit against its parent; BAD against it: no second step
    assert fake.calls == [(0, 16), (0, 8), (0, 4), (0, 6), (0, 7), (7, 8), (8, 16)]


@pytest.mark.parametrize("at", [1, 2, 9, 15, 16])
def test_the_culprit_is_found_wherever_it_is(at):
    fake = Fake(16, {at: 1.5})
    result = B.bisect(fake.commits, fake)
    assert positions(result) == [at]
    assert len(fake.calls) <= 7  # 1 + log2(16) + the culprit's step + BAD against it
    assert result.culprits[0].confirmed
    assert (fake.calls[-1] == (at, 16)) == (at != 16)  # BAD itself: nothing after it to check


def test_a_slowdown_in_two_steps_finds_the_second_against_the_first():
    """The larger step first: it is found, BAD is still SLOWER than it, and the rest of the
    range is bisected with it as the base."""
    fake = Fake(16, {3: 1.12, 11: 1.08})
    result = B.bisect(fake.commits, fake)
    assert result.status == "found" and positions(result) == [3, 11]
    first, second = result.culprits
    assert first.base == "c00" and second.base == "c03"
    assert second.measurement.benchmarks[0]["ratio"] == pytest.approx(1.08)
    assert (3, 16) in fake.calls and fake.calls[-1] == (11, 16)


def test_a_smaller_first_step_is_found_first_as_it_is_slower_than_good():
    fake = Fake(16, {3: 1.08, 11: 1.12})
    result = B.bisect(fake.commits, fake)
    assert result.status == "found" and positions(result) == [3, 11]
    first, second = result.culprits
    assert first.base == "c00" and second.base == "c03"


def test_a_commit_slower_than_good_goes_with_bad_though_bad_read_too_slow():
    """BAD read +25% for a +10% step (the A/B estimate that opened the bisection is the one
    chosen for being SLOWER): the planted commit shows under half of that, but is SLOWER."""
    fake = Fake(16, {8: 1.10}, bias={(0, 16): 1.14})
    assert (
        fake("c00", "c08").benchmarks[0]["ratio"] ** 2 < fake("c00", "c16").benchmarks[0]["ratio"]
    )
    result = B.bisect(fake.commits, fake)
    assert positions(result) == [8] and result.culprits[0].measurement.part[0] < 0.5


def test_a_misread_commit_is_not_confirmed_and_the_real_one_is_found_after_it():
    """Commit 4 read +10% against GOOD (noise): the halving ends on it, but against commit 3
    it is not slower; BAD is still SLOWER than it, so the rest is bisected: commit 8."""
    fake = Fake(16, {8: 1.10}, bias={(0, 4): 1.10})
    result = B.bisect(fake.commits, fake)
    assert result.status == "found" and positions(result) == [4, 8]
    assert [c.confirmed for c in result.culprits] == [False, True]
    assert result.culprits[1].base == "c04"


def test_no_confirmed_culprit_is_undecided():
    fake = Fake(4, {3: 1.10}, bias={(0, 2): 1.10, (2, 4): 1 / 1.10})
    result = B.bisect(fake.commits, fake)
    assert positions(result) == [2] and not result.culprits[0].confirmed
    assert result.status == "undecided" and result.exit_code == 3


def test_a_commit_with_most_of_the_slowdown_counts_though_its_interval_is_wide():
    """A noisy step (bench ab: "no change", its interval across 1) that shows more than half
    of BAD's slowdown goes with BAD: the search decides between two levels."""
    fake = Fake(16, {8: 1.13}, halfwidth=0.09, bias={(0, 8): 1 / 1.06})
    assert fake("c00", "c08").outcome == B.SAME  # +6.6% [-2.1%, +16.2%]
    result = B.bisect(fake.commits, fake)
    assert positions(result) == [8]
    assert 0.5 < result.culprits[0].measurement.part[0] < 0.6


def test_the_part_of_the_slowdown_is_a_log_ratio_share_over_the_slower_benchmarks():
    def m(*rows):
        keys = ("name", "verdict", "ratio", "ci_low", "ci_high")
        return B.Measurement("a", "b", B.SAME, [dict(zip(keys, r)) for r in rows])

    end = m(("x", "SLOWER", 1.21, 1.1, 1.3), ("y", "no change", 1.01, 0.9, 1.1))
    est, low, high = B.part_of(m(("x", "no change", 1.1, 1.0, 1.21), ("y", "-", 3, 3, 3)), end)
    assert est == pytest.approx(0.5) and low == pytest.approx(0) and high == pytest.approx(1)
    assert B.part_of(m(("y", "no change", 1.1, 1.0, 1.2)), end) is None


def test_bad_not_slower_is_nothing_to_bisect_after_one_measurement():
    fake = Fake(16, {5: 1.02})  # under the threshold
    result = B.bisect(fake.commits, fake)
    assert result.status == "nothing" and result.exit_code == 0 and result.culprits == []
    assert fake.calls == [(0, 16)]


def test_a_commit_that_cannot_run_is_skipped_for_its_neighbour():
    fake = Fake(16, {11: 1.2}, broken={8, 9})
    result = B.bisect(fake.commits, fake)
    assert result.status == "found" and positions(result) == [11]
    assert result.skipped == {"c08": "c08 does not build", "c09": "c09 does not build"}
    # 8 is the middle, then its nearest neighbour; later 9, and 10 instead
    assert fake.calls == [(0, 16), (0, 8), (0, 7), (0, 11), (0, 9), (0, 10), (10, 11), (11, 16)]


def test_a_culprit_hidden_among_skipped_commits_is_undecided_with_exit_3():
    fake = Fake(8, {5: 1.2}, broken={4, 5})
    result = B.bisect(fake.commits, fake)
    assert result.status == "undecided" and result.exit_code == 3
    assert result.undecided == [["c04", "c05", "c06"]]  # c06 was measured slower, c03 not
    assert set(result.skipped) == {"c04", "c05"}


def test_every_candidate_skipped_is_undecided():
    fake = Fake(4, {2: 1.2}, broken={1, 2, 3})
    result = B.bisect(fake.commits, fake)
    assert result.status == "undecided" and result.undecided == [["c01", "c02", "c03", "c04"]]


def test_good_against_bad_that_cannot_run_is_bad_input():
    fake = Fake(4, {2: 1.2}, broken={4})
    with pytest.raises(InputError, match="GOOD against BAD could not be measured: c04 does"):
        B.bisect(fake.commits, fake)


def test_the_followed_benchmarks_narrow_the_users_selection():
    assert C.followed_selection(None, ["custom_graph-mlp"]) == "custom_graph-mlp"
    assert (
        C.followed_selection("mlp and not xla", ["a-mlp", "b-mlp"])
        == "(mlp and not xla) and (a-mlp or b-mlp)"
    )


# --- the command on a real history, the measurement faked ------------------------------------


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """GOOD and 6 commits of notes; only the commit graph matters here."""
    repo = tmp_path_factory.mktemp("history") / "repo"
    return repo, load_experiment().make_history(repo, [None] * 6, keep=("pyproject.toml",))


def fake_ab(monkeypatch, fake):
    def ab_measure(settings, selection, repo, lab):
        def measure(base, head, follow=None):
            return fake(base, head)

        return measure

    monkeypatch.setattr(C, "ab_measure", ab_measure)


def test_the_command_reports_the_culprit_and_writes_json(history, monkeypatch, tmp_path, capsys):
    repo, commits = history
    fake_ab(monkeypatch, Fake(6, {4: 1.3}, commits=commits))
    out = tmp_path / "bisect.json"
    argv = [commits[0], commits[-1], "--repo", str(repo), "--json", str(out)]
    assert C.main(argv) == 0
    printed = capsys.readouterr().out
    assert f'slower commit: {commits[4][:10]} "commit 4: a note" (#4 of 6' in printed
    assert (
        f"against the commit before it, #3 {commits[3][:10]}: custom_graph-mlp +30.0% "
        "[+27.5%, +32.6%], SLOWER: confirmed" in printed
    )
    assert f"BAD {commits[6][:10]} against it: not slower" in printed
    assert "no further step" in printed
    doc = json.loads(out.read_text())
    assert doc["schema"] == B.SCHEMA and doc["status"] == "found" and doc["exit_code"] == 0
    assert [c["position"] for c in doc["culprits"]] == [4]
    assert doc["culprits"][0]["measurement"]["benchmarks"][0]["ratio"] == pytest.approx(1.3)
    assert doc["culprits"][0]["confirmed"] and doc["culprits"][0]["parent"]["base"] == commits[3]
    assert len(doc["measurements"]) == doc["culprits"][0]["found_after_measurements"] + 2


def test_the_command_says_when_there_is_nothing_to_bisect(history, monkeypatch, capsys):
    repo, commits = history
    fake_ab(monkeypatch, Fake(6, {}, commits=commits))
    assert C.main([commits[0], commits[-1], "--repo", str(repo)]) == 0
    assert "is not slower than GOOD" in capsys.readouterr().out


def test_the_command_bisects_with_ab_runs_on_fake_sides(history, tmp_path, capsys):
    """Each step an ABRun of the commit against its base, the measuring faked
    (tests/fake_lab.py): commit 4 makes custom_graph 30% slower. The first step measures the
    user's selection, the later ones only what BAD was slower on; every step's table goes to
    stderr, and stdout is the bisection's report alone."""
    repo, commits = history

    def ratio(bench, sides) -> float:
        if bench.implementation != "custom_graph":
            return 1.0
        base, head = (commits.index(s.revision) for s in sides)
        return 1.3 if base < 4 <= head else 1.0

    labs: list = []
    out = tmp_path / "bisect.json"
    argv = [commits[0], commits[-1], "--repo", str(repo), "-k", "mlp", "--json", str(out)]
    assert C.main(argv + ["--max-seconds", "4"], lab=fake_lab(labs, ratio=ratio)) == 0
    printed, err = capsys.readouterr()
    assert f'slower commit: {commits[4][:10]} "commit 4: a note"' in printed
    assert "BASE:" not in printed and "BASE:" in err and "SLOWER: custom_graph-mlp" in err
    doc = json.loads(out.read_text())
    assert doc["followed"] == ["custom_graph-mlp"] and doc["culprits"][0]["confirmed"]
    steps = [(commits.index(m["base"]), commits.index(m["head"])) for m in doc["measurements"]]
    assert steps == [(0, 6), (0, 3), (0, 4), (3, 4), (4, 6)] and len(labs) == 5
    assert {name for name, _ in labs[0].set_ups} == {"custom_graph-mlp", "keras_fit-mlp"}
    assert all({name for name, _ in lab.set_ups} == {"custom_graph-mlp"} for lab in labs[1:])
    # bisect's steps have no deadline (--budget-seconds 0): a first pass gets --max-seconds
    assert {cap for lab in labs for _, _, cap, _ in lab.samples} == {4.0}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-rev", "{bad}"], "GOOD 'no-such-rev': not a git revision of"),
        (["{bad}", "{good}"], "is not on BAD '{good}''s first-parent line"),
        (["{good}", "{good}"], "are the same commit"),
        (["{good}", "{bad}", "--base", "x"], "--base: not an option of bisect"),
        (["{good}", "{bad}", "--threshold", "0%"], "--threshold must be between 0 and 100%"),
    ],
    ids=["unknown", "reversed", "same", "base", "threshold"],
)
def test_bad_input_is_one_line_and_exit_2(history, capsys, argv, message):
    repo, commits = history
    fill = {"good": commits[0], "bad": commits[-1]}
    argv = [a.format(**fill) for a in argv] + ["--repo", str(repo)]
    assert C.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message.format(**fill) in err[0]


def test_a_bisection_step_has_no_second_pass_unless_asked_while_bench_ab_has_its_deadline():
    assert ab_parser().parse_args([]).budget_seconds == Settings().budget_s > 0
    assert C.build_parser().parse_args(["a", "b"]).budget_seconds == 0
    given = C.build_parser().parse_args(["a", "b", "--budget-seconds", "90"])
    assert given.budget_seconds == 90


@pytest.mark.parametrize("fraction", [0.4, "0.14,custom_xla-cnn=0.25"])
def test_the_planted_slowdown_takes_a_number_or_per_benchmark_fractions(tmp_path, fraction):
    """bisect_budget.py plants with a number, ab_budget.py with a per-benchmark text: both
    edit the custom loop's step (and the result still compiles)."""
    load_experiment()  # puts experiments/ on the path for ab_budget
    ab_budget = load_script("ab_budget")
    (tmp_path / "implementations").mkdir()
    source = ROOT / "implementations" / "custom_loop.py"
    target = tmp_path / "implementations" / "custom_loop.py"
    target.write_text(source.read_text())
    ab_budget.plant(tmp_path, fraction)
    text = target.read_text()
    assert "planted slowdown" in text and "PLANT_KEY = f'custom_{mode}-{task.name}'" in text
    compile(text, str(target), "exec")


def test_a_planted_runs_summary_counts_false_alarms_on_the_benchmarks_without_the_plant():
    """ab_budget.py plants in the custom loops only: in a planted run of the CI selection the
    keras_fit benchmarks are A/A comparisons, and their verdicts are false alarms."""
    ab_budget = load_script("ab_budget")

    def bench(name, verdict, ratio):
        return {"name": name, "verdict": verdict, "ratio": ratio, "ci_low": 0.98 * ratio,
                "ci_high": 1.02 * ratio}  # fmt: skip

    runs = [
        {"wall_s": 200.0, "exit_code": 1, "benchmarks": [
            bench("keras_fit-mlp", "no change", 1.0), bench("custom_graph-mlp", "SLOWER", 1.05)]},
        {"wall_s": 210.0, "exit_code": 1, "benchmarks": [
            bench("keras_fit-mlp", "FASTER", 0.96), bench("custom_graph-mlp", "SLOWER", 1.06)]},
    ]  # fmt: skip
    out = ab_budget.summarize(runs, planted=True)
    assert out["unplanted_benchmarks"] == ["keras_fit-mlp"]
    assert out["false_alarms_unplanted"] == 1
    assert out["per_benchmark"]["custom_graph-mlp"]["SLOWER"] == 2


def test_merging_planted_runs_sums_them_up_again_and_refuses_other_experiments(tmp_path):
    """ab_budget.py merge: more runs of the same experiment join the summary; a file of another
    experiment (other plants) or one that repeats a seed is refused."""

    ab_budget = load_script("ab_budget")

    def doc(seeds, verdict, fraction="0.30"):
        runs = [
            {"seed": s, "wall_s": 200.0 + s, "exit_code": 1, "benchmarks": [
                {"name": "custom_graph-mlp", "verdict": verdict, "ratio": 1.08,
                 "ci_low": 1.05, "ci_high": 1.11}]}
            for s in seeds
        ]  # fmt: skip
        return {"mode": "planted", "rev": "HEAD", "fraction": fraction, "select": None,
                "ab_args": [], "summary": {}, "runs": runs}  # fmt: skip

    files = {}
    for name, d in {
        "a": doc([0, 1], "SLOWER"),
        "b": doc([2], "no change"),
        "other": doc([3], "SLOWER", fraction="0.15"),
        "again": doc([1], "SLOWER"),
    }.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(d))
    out = tmp_path / "all.json"
    assert ab_budget.merge([str(files["a"]), str(files["b"])], str(out)) == 0
    merged = json.loads(out.read_text())
    assert [r["seed"] for r in merged["runs"]] == [0, 1, 2]
    assert merged["summary"]["per_benchmark"]["custom_graph-mlp"]["SLOWER"] == 2
    assert merged["summary"]["runs"] == 3 and merged["merged_from"] == ["a.json", "b.json"]
    with pytest.raises(SystemExit, match="fraction"):
        ab_budget.merge([str(files["a"]), str(files["other"])], None)
    with pytest.raises(SystemExit, match="repeat seeds"):
        ab_budget.merge([str(files["a"]), str(files["again"])], None)
