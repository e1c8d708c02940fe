"""Tests for A/B files (``python -m bench ab --json``) in ``python -m bench report``.

The fixture ``fixtures/ab_result.json`` has one benchmark of each kind: SLOWER, no change,
FASTER with its numbers changed, and skipped. Expected figures are computed here from the
fixture's raw JSON, not taken from the report code.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import section
from report_helpers import write as write_file

from bench.report.cli import main
from bench.report.load import ResultsError, read_results

pytestmark = pytest.mark.usefixtures("tables_only")
FIXTURES = Path(__file__).parent / "fixtures"
AB = FIXTURES / "ab_result.json"
CPU = FIXTURES / "report_cpu.json"
HEADING = "## A/B: HEAD vs BASE"


def raw(path: Path = AB) -> dict:
    return json.loads(path.read_text())


def write(tmp_path: Path, data: dict, name: str = "ab.json") -> Path:
    return write_file(tmp_path, data, name)


def run_report(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    return main([*args, "--out", str(out)]), out


def table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the table in ``text`` whose first column is titled ``first_header``."""
    lines = text.splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    start = next(
        i for i, line in enumerate(lines) if line.startswith("|") and cells(line)[0] == first_header
    )
    header = cells(lines[start])
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, cells(line), strict=True)))
    return rows


def test_one_row_per_benchmark_in_file_order_with_change_and_interval(tmp_path):
    code, out = run_report(tmp_path, str(AB))
    assert code == 0
    rows = table(section((out / "report.md").read_text(), HEADING), "benchmark")
    benches = raw()["benchmarks"]
    assert [r["benchmark"] for r in rows] == [b["name"] for b in benches]
    for row, b in zip(rows, benches, strict=True):
        assert row["verdict"] == b["verdict"]
        if b["verdict"] == "skipped":
            assert row["change (95% interval)"] == row["BASE ms/step"] == "—"
            assert row["notes"] == b["skip_reason"]
            continue
        match = re.fullmatch(
            r"([+-][\d.]+)% \[([+-][\d.]+), ([+-][\d.]+)\]", row["change (95% interval)"]
        )
        assert match, row
        for shown, ratio in zip(
            match.groups(), (b["ratio"], b["ci_low"], b["ci_high"]), strict=True
        ):
            assert float(shown) == pytest.approx((ratio - 1) * 100, abs=0.051), b["name"]
        assert float(row["BASE ms/step"]) == pytest.approx(b["base"]["median_s"] * 1e3, rel=5e-3)
        assert float(row["HEAD ms/step"]) == pytest.approx(b["head"]["median_s"] * 1e3, rel=5e-3)
        assert row["detectable"] == f"±{b['detectable_pct']:.1f}%"
        assert row["pairs (kept / dropped)"] == f"{b['pairs']} / {b['pairs_dropped_steal']}"
        assert ("numbers changed" in row["notes"]) == b["numerics"]["changed"]
    by_verdict = {r["verdict"]: r for r in rows}
    assert by_verdict["SLOWER"]["change (95% interval)"].startswith("+8.3% [+5.2, +11.2]")
    assert by_verdict["FASTER"]["change (95% interval)"].startswith("-8.8% ")


def test_sides_versions_threshold_and_confidence(tmp_path):
    data = raw()
    code, out = run_report(tmp_path, str(AB))
    assert code == 0
    text = section((out / "report.md").read_text(), HEADING)
    sides = {r[""]: r for r in table(text, "")}
    base, head = data["sides"]["base"], data["sides"]["head"]
    assert sides["spec"] == {"": "spec", "BASE": base["spec"], "HEAD": head["spec"]}
    assert sides["revision"]["BASE"] == base["revision"][:7]
    assert sides["revision"]["HEAD"] == f"{head['revision'][:7]} (working tree {head['root']})"
    v = base["versions"]
    expected = f"{v['python']} / {v['tensorflow']} / {v['keras']} / {v['numpy']}"
    assert sides["Python / TensorFlow / Keras / NumPy"]["BASE"] == expected
    assert "same versions" in text and "different versions" not in text
    assert "threshold ±3%" in text and "confidence 95%" in text

    data["sides"]["head"]["versions"]["keras"] = "3.14.0"
    code, out = run_report(tmp_path, str(write(tmp_path, data)))
    assert code == 0
    text = section((out / "report.md").read_text(), HEADING)
    line = next(line for line in text.splitlines() if "different versions" in line)
    assert "Keras 3.15.1 (BASE) vs 3.14.0 (HEAD)" in line and "TensorFlow" not in line


def test_an_interval_across_the_threshold_is_undecided_and_bounds_what_was_missed(tmp_path):
    data = raw()
    data["benchmarks"] = [b for b in data["benchmarks"] if b["verdict"] != "SLOWER"]
    quiet = next(b for b in data["benchmarks"] if b["verdict"] == "no change")
    quiet.update(ci_low=0.95, ci_high=1.04)
    code, out = run_report(tmp_path, str(write(tmp_path, data)))
    assert code == 0
    text = section((out / "report.md").read_text(), HEADING)
    rows = {r["benchmark"]: r for r in table(text, "benchmark")}
    assert "undecided: the interval crosses the ±3% threshold" in rows[quiet["name"]]["notes"]
    assert all("undecided" not in r["notes"] for r in rows.values() if r is not rows[quiet["name"]])
    assert "a slowdown above +4.0% is ruled out" in text


def test_ab_only_report_has_a_machine_header_and_ab_csv(tmp_path, capsys):
    data = raw()
    code, out = run_report(tmp_path, str(AB))
    assert code == 0
    header = section((out / "report.md").read_text(), "## Machine")
    for text in (data["machine"]["cpu_model"], data["machine"]["platform"], "2026-11-24", "1.20%"):
        assert text in header
    assert sorted(p.name for p in out.iterdir()) == ["ab.csv", "report.md"]  # no results.csv
    assert "wrote report.md, ab.csv to" in capsys.readouterr().out

    frame = pd.read_csv(out / "ab.csv")
    assert list(frame["name"]) == [b["name"] for b in data["benchmarks"]]
    expected = {
        "run", "source", "verdict", "ratio", "ci_low", "ci_high", "change_pct", "change_pct_low",
        "change_pct_high", "detectable_pct", "pairs", "base_median_s", "head_median_s",
        "numerics_changed", "rounds", "sides_base_spec", "sides_head_versions_keras",
        "settings_threshold_pct", "machine_cpu_model",
    }  # fmt: skip
    assert expected <= set(frame.columns)
    slower = frame.set_index("name").loc["custom_graph-mlp"]
    assert slower["change_pct"] == pytest.approx((1.083 - 1) * 100)
    assert len(json.loads(slower["rounds"])) == len(data["benchmarks"][0]["rounds"])


def test_mixed_with_a_pytest_benchmark_file_renders_both(tmp_path):
    code, out = run_report(tmp_path, str(CPU), str(AB))
    assert code == 0
    md = (out / "report.md").read_text()
    machines = section(md, "## Machines")
    assert raw(CPU)["machine_info"]["loopbench"]["cpu_model"] in machines
    assert raw()["machine"]["cpu_model"] in machines
    assert [r["benchmark"] for r in table(section(md, HEADING), "benchmark")] == [
        b["name"] for b in raw()["benchmarks"]
    ]
    assert "## mlp: step time" in md and "## mlp: convergence" in md
    assert len(pd.read_csv(out / "results.csv")) == len(raw(CPU)["benchmarks"])
    assert len(pd.read_csv(out / "ab.csv")) == len(raw()["benchmarks"])


def test_labels_name_several_ab_files(tmp_path):
    code, out = run_report(tmp_path, str(AB), str(AB), "--label", "monday", "--label", "tuesday")
    assert code == 0
    md = (out / "report.md").read_text()
    assert f"{HEADING} (monday)" in md and f"{HEADING} (tuesday)" in md
    assert set(pd.read_csv(out / "ab.csv")["run"]) == {"monday", "tuesday"}


def test_plot_written_when_matplotlib_present(tmp_path, plots):
    code, out = run_report(tmp_path, str(AB))
    assert code == 0
    png = out / "ab_ratios.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![ab_ratios](ab_ratios.png)" in (out / "report.md").read_text()


def test_report_files_of_the_other_kind_are_removed_on_rerun(tmp_path):
    code, out = run_report(tmp_path, str(CPU), str(AB))
    assert code == 0
    assert {"results.csv", "ab.csv"} <= {p.name for p in out.iterdir()}
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    assert not (out / "ab.csv").exists() and HEADING not in (out / "report.md").read_text()
    code, out = run_report(tmp_path, str(AB))
    assert code == 0
    assert not (out / "results.csv").exists()


def _without(key: str):
    def mutate(d: dict) -> None:
        del d[key]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (_without("sides"), "no 'sides' object"),
        (lambda d: d["sides"].pop("head"), "no 'sides.head' object"),
        (_without("benchmarks"), "no 'benchmarks' list"),
        (lambda d: d.update(benchmarks=[]), "no benchmarks in the file"),
        (lambda d: d["benchmarks"][1].pop("name"), "benchmark #2 has no 'name'"),
        (lambda d: d["benchmarks"][0].pop("verdict"), "custom_graph-mlp: no 'verdict'"),
        (lambda d: d.update(settings=[3.0]), "'settings' is not an object"),
    ],
    ids=["no-sides", "no-head", "no-benchmarks", "empty", "no-name", "no-verdict", "settings"],
)
def test_malformed_ab_file_exits_2_with_one_message_and_writes_nothing(
    tmp_path, capsys, mutate, problem
):
    data = copy.deepcopy(raw())
    mutate(data)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = write(inputs, data)
    out = tmp_path / "out"
    code = main([str(CPU), str(AB), str(bad), "--out", str(out)])  # good files first
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: A/B file (loopbench-ab/1): ") and problem in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # no temp dir left


def test_pytest_benchmark_reader_names_an_ab_file(tmp_path):
    with pytest.raises(ResultsError, match=r"ab_result\.json: .*an A/B file \(loopbench-ab/1\)"):
        read_results(AB)


def test_a_verdict_checked_by_fresh_workers_says_so(tmp_path):
    data = raw()
    benches = {b["name"]: b for b in data["benchmarks"]}
    slower = next(b for b in benches.values() if b["verdict"] == "SLOWER")
    unchanged = next(b for b in benches.values() if b["verdict"] == "no change")
    slower.update(first_verdict="SLOWER", process_pairs=4)
    unchanged.update(first_verdict="SLOWER", process_pairs=4)  # not confirmed
    code, out = run_report(tmp_path, str(write(tmp_path, data)))
    assert code == 0
    rows = {
        line.split("|")[1].strip(): line
        for line in (out / "report.md").read_text().splitlines()
        if line.startswith("| ")
    }
    assert "checked by fresh worker processes (4 process pairs in all)" in rows[slower["name"]]
    assert "SLOWER at first; checked by fresh" in rows[unchanged["name"]]
