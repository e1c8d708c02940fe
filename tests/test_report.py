"""Tests for ``python -m bench report`` on small hand-made pytest-benchmark fixtures.

Expected numbers are computed here from the fixtures' raw JSON, not taken from the report
code, so a wrong formula (inverted speedup, wrong baseline, mean instead of median) fails.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import section

from bench.__main__ import main as cli
from bench.report.cli import main
from bench.report.load import ResultsError, load_results, load_run
from bench.report.rows import fmt

pytestmark = pytest.mark.usefixtures("tables_only")
FIXTURES = Path(__file__).parent / "fixtures"
CPU = FIXTURES / "report_cpu.json"
GPU = FIXTURES / "report_gpu.json"
IMPLEMENTATIONS = ["keras_fit", "keras_fit_xla", "custom_eager", "custom_graph", "custom_xla"]


def raw(path: Path) -> dict:
    return json.loads(path.read_text())


def step_medians(path: Path, task: str) -> dict[str, float]:
    return {
        b["extra_info"]["implementation"]: b["stats"]["median"]
        for b in raw(path)["benchmarks"]
        if b["group"] == task and b["extra_info"]["kind"] == "step"
    }


def first_table(text: str) -> list[dict[str, str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    # stop at the first table: a second header row would repeat the first column's title
    out = []
    for row in rows:
        if row[0] == header[0]:
            break
        out.append(dict(zip(header, row, strict=True)))
    return out


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


def run_report(tmp_path: Path, *args: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    return main([*args, "--out", str(out)]), out


def test_step_tables_list_every_implementation_fastest_first(tmp_path, capsys):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    md = (out / "report.md").read_text()
    for task in ("linreg", "mlp", "cnn"):
        rows = first_table(section(md, f"## {task}: step time"))
        medians = step_medians(CPU, task)
        assert [r["implementation"] for r in rows] == sorted(medians, key=medians.get)
        assert set(medians) == set(IMPLEMENTATIONS)
    # the same tables go to the terminal
    assert (
        first_table(section(md, "## mlp: step time"))[0]["implementation"]
        in capsys.readouterr().out
    )
    assert "| implementation" in md and "ms/step (median)" in md


@pytest.mark.parametrize("task", ["linreg", "mlp", "cnn"])
def test_speedups_are_keras_fit_median_over_implementation_median(tmp_path, task):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    rows = first_table(section((out / "report.md").read_text(), f"## {task}: step time"))
    medians = step_medians(CPU, task)
    for row in rows:
        impl, cell = row["implementation"], row["speedup vs keras_fit"]
        if impl == "keras_fit":
            assert cell == "1.00x (baseline)"
            continue
        expected = medians["keras_fit"] / medians[impl]
        assert number(cell) == pytest.approx(expected, rel=5e-3), impl  # 3 significant digits
        assert number(row["ms/step (median)"]) == pytest.approx(medians[impl] * 1e3, rel=5e-3)


def test_eager_overhead_per_step_and_per_op(tmp_path):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    text = section((out / "report.md").read_text(), "## mlp: step time")
    benches = {
        b["extra_info"]["implementation"]: b
        for b in raw(CPU)["benchmarks"]
        if b["group"] == "mlp" and b["extra_info"]["kind"] == "step"
    }
    graph = benches["custom_graph"]
    delta_ms = (benches["custom_eager"]["stats"]["median"] - graph["stats"]["median"]) * 1e3
    per_op_us = delta_ms * 1e3 / graph["extra_info"]["graph_ops"]
    match = re.search(r"Eager overhead.*?: ([\d.,]+) ms/step, ([\d.,]+) µs per op", text)
    assert match, text
    assert number(match[1]) == pytest.approx(delta_ms, rel=5e-3)
    assert number(match[2]) == pytest.approx(per_op_us, rel=5e-3)


def test_sweep_table_has_samples_per_s_by_batch_size(tmp_path):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    rows = first_table(
        section((out / "report.md").read_text(), "## mlp: batch-size sweep (samples/s)")
    )
    sweep = [b for b in raw(CPU)["benchmarks"] if b["group"] == "sweep-mlp"]
    assert {r["implementation"] for r in rows} == {b["extra_info"]["implementation"] for b in sweep}
    by_impl = {r["implementation"]: r for r in rows}
    for b in sweep:
        e = b["extra_info"]
        cell = by_impl[e["implementation"]][f"samples/s @ batch {e['batch_size']}"]
        assert number(cell) == pytest.approx(e["batch_size"] / b["stats"]["median"], rel=5e-3)


def test_convergence_section_shows_parity_anchor_and_reference(tmp_path):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    md = (out / "report.md").read_text()
    rows = {r["implementation"]: r for r in first_table(section(md, "## mlp: convergence"))}
    assert set(rows) == {*IMPLEMENTATIONS, "sklearn_mlp (reference)"}
    assert rows["keras_fit"]["parity vs keras_fit (pp)"] == "baseline"
    assert rows["custom_eager"]["parity vs keras_fit (pp)"] == "-1.61 FAIL"
    assert rows["custom_graph"]["parity vs keras_fit (pp)"] == "+0.03 PASS"
    assert rows["custom_eager"]["anchor"] == ">= 87% FAIL"
    assert rows["custom_xla"]["anchor"] == ">= 87% PASS"
    assert rows["keras_fit"]["final accuracy (%)"] == "88.12 ± 0.09"
    assert rows["keras_fit"]["seeds"] == "3"
    linreg = {r["implementation"]: r for r in first_table(section(md, "## linreg: convergence"))}
    assert linreg["keras_fit"]["w"] == "2.9982" and linreg["keras_fit"]["b"] == "2.0013"


def test_anchor_is_na_off_fashion_mnist(tmp_path):
    data = raw(CPU)
    for b in data["benchmarks"]:
        if b["group"] == "convergence-mlp":
            b["extra_info"].update(dataset="digits", accuracy_target=None, anchor_ok=None)
    path = tmp_path / "digits.json"
    path.write_text(json.dumps(data))
    code, out = run_report(tmp_path, str(path))
    assert code == 0
    rows = first_table(section((out / "report.md").read_text(), "## mlp: convergence"))
    assert {r["anchor"] for r in rows} == {"n/a"}


def test_header_describes_the_machine(tmp_path):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    header = section((out / "report.md").read_text(), "## Machine")
    lb = raw(CPU)["machine_info"]["loopbench"]
    for text in (lb["cpu_model"], lb["tensorflow"], lb["keras"], "2026-11-23", "quick", "oneDNN"):
        assert text in header
    assert "118 (fp32, n=2048)" in header  # calibration_gflops 118.4 to 3 digits


def test_csv_has_one_row_per_benchmark_with_flattened_fields(tmp_path):
    code, out = run_report(tmp_path, str(CPU), str(GPU), "--label", "cpu", "--label", "gpu")
    assert code == 0
    frame = pd.read_csv(out / "results.csv")
    n_cpu, n_gpu = len(raw(CPU)["benchmarks"]), len(raw(GPU)["benchmarks"])
    assert len(frame) == n_cpu + n_gpu
    expected = {
        "run", "source", "group", "name", "kind", "implementation", "task", "batch_size",
        "samples_per_s", "compile_s", "stats_median", "stats_q1", "stats_q3", "stats_iqr",
        "stats_data", "final_accuracy", "curves", "machine_device", "machine_calibration_gflops",
    }  # fmt: skip
    assert expected <= set(frame.columns)
    assert frame["run"].value_counts().to_dict() == {"cpu": n_cpu, "gpu": n_gpu}
    assert set(frame["source"]) == {str(CPU), str(GPU)}
    assert frame["name"].is_unique is False  # same names on both machines
    curves = frame.loc[frame["name"] == "test_convergence[keras_fit-mlp]", "curves"].item()
    assert json.loads(curves)["epoch"][-1] == 10


def test_load_results_and_load_run_api():
    run = load_run(CPU)
    assert run.label == "report_cpu"
    assert run.datetime == raw(CPU)["datetime"]
    assert run.machine_info["loopbench"]["device"] == "CPU"
    assert len(run.benchmarks) == len(raw(CPU)["benchmarks"])
    frame = load_results([CPU, CPU])
    assert list(frame["run"].unique()) == ["report_cpu", "report_cpu-2"]
    assert issubclass(ResultsError, ValueError)


def test_pngs_written_when_matplotlib_present(tmp_path, plots):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    names = {p.name for p in out.glob("*.png")}
    assert names == {
        "step_linreg.png", "step_mlp.png", "step_cnn.png", "sweep_mlp.png",
        "curves_linreg.png", "curves_mlp.png",
    }  # fmt: skip
    for name in names:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![step_mlp](step_mlp.png)" in (out / "report.md").read_text()


def test_plots_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    assert not list(out.glob("*.png"))
    assert "plots skipped: matplotlib not installed" in capsys.readouterr().out
    assert "plots skipped: matplotlib not installed" in (out / "report.md").read_text()
    assert (out / "results.csv").exists()


def test_side_by_side_runs_with_labels(tmp_path, plots):
    code, out = run_report(tmp_path, str(CPU), str(GPU), "--label", "laptop", "--label", "a100")
    assert code == 0
    md = (out / "report.md").read_text()
    rows = {r["implementation"]: r for r in first_table(section(md, "## mlp: step time"))}
    cpu, gpu = step_medians(CPU, "mlp"), step_medians(GPU, "mlp")
    assert set(rows) == set(cpu) | set(gpu)
    for impl in gpu:
        assert number(rows[impl]["ms/step laptop"]) == pytest.approx(cpu[impl] * 1e3, rel=5e-3)
        assert number(rows[impl]["ms/step a100"]) == pytest.approx(gpu[impl] * 1e3, rel=5e-3)
        ratio = gpu[impl] / cpu[impl]
        assert number(rows[impl]["a100 / laptop"]) == pytest.approx(ratio, rel=5e-3)
    assert rows["custom_eager"]["ms/step a100"] == "—"  # not run on the GPU machine
    assert "### laptop" in md and "### a100" in md
    assert "NVIDIA A100-SXM4-40GB" in section(md, "## Machines")
    pngs = {p.name for p in out.glob("*.png")}
    assert {"step_mlp.png", "step_cnn.png", "sweep_mlp.png", "curves_mlp_laptop.png"} <= pngs


def test_same_file_twice_gets_unique_labels(tmp_path):
    code, out = run_report(tmp_path, str(CPU), str(CPU))
    assert code == 0
    assert "ms/step report_cpu-2" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("make_input", "problem"),
    [
        (lambda d: d / "missing.json", "no such file"),
        (lambda d: _write(d / "notes.json", "ms/step: 3.2\n"), "not valid JSON"),
        (lambda d: FIXTURES / "report_other_tool.json", "not a pytest-benchmark results file"),
        (lambda d: _write(d / "list.json", "[1, 2]"), "not a pytest-benchmark results file"),
        (lambda d: FIXTURES / "report_not_suite.json", "no tf-loop-bench benchmarks"),
        (lambda d: d, "is a directory"),
    ],
    ids=["missing", "not-json", "other-tool", "json-list", "not-this-suite", "directory"],
)
def test_bad_input_exits_2_with_one_message_and_no_output_dir(
    tmp_path, capsys, make_input, problem
):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    bad = make_input(inputs)
    out = tmp_path / "out"
    # a good file first: every input is validated before anything is written
    code = main([str(CPU), str(bad), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: ") and problem in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # no temp dir left


def test_bad_input_leaves_an_existing_report_untouched(tmp_path):
    code, out = run_report(tmp_path, str(CPU))
    assert code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _ = run_report(tmp_path, str(FIXTURES / "report_not_suite.json"))
    assert code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_rerun_replaces_report_files_and_keeps_others(tmp_path, plots):
    code, out = run_report(tmp_path, str(CPU), str(GPU), "--label", "cpu", "--label", "gpu")
    assert code == 0
    (out / "notes.txt").write_text("mine")
    assert "ms/step gpu" in (out / "report.md").read_text()
    assert list(out.glob("curves_*"))
    code, out = run_report(tmp_path, str(GPU))
    assert code == 0
    md = (out / "report.md").read_text()
    assert "ms/step gpu" not in md and "## linreg" not in md  # the GPU run has no linreg
    assert len(pd.read_csv(out / "results.csv")) == len(raw(GPU)["benchmarks"])
    assert not list(out.glob("curves_*"))  # stale plots from the first report are gone
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_label_count_must_match_files(tmp_path, capsys):
    code, out = run_report(tmp_path, str(CPU), str(GPU), "--label", "only-one")
    assert code == 2
    assert "--label given 1 time(s) for 2 file(s)" in capsys.readouterr().err
    assert not out.exists()


def test_out_that_is_a_file_is_an_error(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("not a directory")
    assert main([str(CPU), "--out", str(out)]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert out.read_text() == "not a directory"


def test_cli_dispatch_and_help(tmp_path, capsys):
    assert cli(["report", "--help"]) == 0
    assert "--out" in capsys.readouterr().out
    assert cli(["report", str(CPU), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").exists()


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.000123456, "0.000123"), (12345.6, "12,300"), (9.996, "10.0"), (3.93, "3.93"),
     (256, "256"), (0.0, "0"), (None, "—"), (float("nan"), "—")],
)  # fmt: skip
def test_fmt_three_significant_digits(value, text):
    assert fmt(value) == text


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_distributed_section_shows_strategy_replicas_and_efficiency(tmp_path):
    src = FIXTURES / "report_distributed.json"
    data = json.loads(src.read_text())
    assert main([str(src), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "tf.distribute" in md and "scaling efficiency" in md
    for bench in data["benchmarks"]:
        e = bench["extra_info"]
        rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines()]
        row = next(
            r for r in rows if r[:3] == [e["strategy"], e["implementation"], str(e["replicas"])]
        )
        assert row[7] == f"{e['scaling_efficiency']:.2f}"


def test_spread_over_runs_is_slowest_over_fastest_median(tmp_path):
    code, out = run_report(tmp_path, str(CPU), str(GPU), "--label", "laptop", "--label", "a100")
    assert code == 0
    rows = {
        r["implementation"]: r
        for r in first_table(section((out / "report.md").read_text(), "## mlp: step time"))
    }
    cpu, gpu = step_medians(CPU, "mlp"), step_medians(GPU, "mlp")
    for impl in gpu:
        expected = 100 * (max(cpu[impl], gpu[impl]) / min(cpu[impl], gpu[impl]) - 1)
        assert float(rows[impl]["spread"].rstrip("%").replace(",", "")) == pytest.approx(
            expected, rel=5e-3
        )
    assert rows["custom_eager"]["spread"] == "—"  # in one run only


def test_steal_is_shown_in_the_header_and_contended_benchmarks_are_named(tmp_path):
    data = raw(CPU)
    data["machine_info"]["loopbench"]["steal_pct_session"] = 3.25
    benches = [b for b in data["benchmarks"] if b["group"] == "mlp"]
    quiet, replaced, contended = (
        benches[0]["extra_info"],
        benches[1]["extra_info"],
        benches[2]["extra_info"],
    )
    quiet.update(rounds=15, rounds_run=15, steal_pct=0.0)
    replaced.update(rounds=15, rounds_run=21, steal_pct=0.0)
    contended.update(rounds=15, rounds_run=30, steal_pct=7.5)
    path = tmp_path / "steal.json"
    path.write_text(json.dumps(data))
    code, out = run_report(tmp_path, str(path))
    assert code == 0
    md = (out / "report.md").read_text()
    assert "3.25% of CPU time taken by the hypervisor" in section(md, "## Machine")
    notes = section(md, "## mlp: step time")
    assert f"{replaced['implementation']} 6" in notes
    assert f"{contended['implementation']} 15" in notes
    assert f"{contended['implementation']} 7.50%" in notes
    assert f"{quiet['implementation']} 0" not in notes
    # without steal fields (files from before they existed) there is no such note
    code, out = run_report(tmp_path, str(CPU))
    assert "hypervisor" not in (out / "report.md").read_text()
