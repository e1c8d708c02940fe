"""The report on results measured interleaved in panels (issue "The comparison table, measured
interleaved"): paired speedups with their 95% intervals in the step table, the knob table and
the TensorFlow-vs-JAX table, the panels' notes, and the new CSV columns. The fields are added by
``report_helpers.panelize`` to the hand-made fixtures; results without them render as before
(``test_report_knobs.test_older_files_render_as_before`` holds the golden files)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from report_helpers import panelize, section, write
from test_report import CPU, first_table, raw, run_report
from test_report_backend import with_jax
from test_report_knobs import KNOBS

from bench.report.ratios import ratio_text
from bench.report.rows import Ratio

pytestmark = pytest.mark.usefixtures("tables_only")


def group(data: dict, name: str) -> list[dict]:
    return [b for b in data["benchmarks"] if b["group"] == name]


def render(tmp_path, data: dict) -> tuple[str, object]:
    code, out = run_report(tmp_path, str(write(tmp_path, data, "panel.json")))
    assert code == 0
    return (out / "report.md").read_text(), out


def step_table(md: str, task: str = "mlp") -> dict[str, dict[str, str]]:
    return {r["implementation"]: r for r in first_table(section(md, f"## {task}: step time"))}


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        (Ratio(1.73, 1.65, 1.83), "1.73x [1.65, 1.83]"),
        (Ratio(1.01, 0.98, 1.04), "1.01x [0.980, 1.04] ~ no difference"),
        (Ratio(0.5, 0.45, 1.0), "0.500x [0.450, 1.00] ~ no difference"),  # 1 itself: included
        (Ratio(0.5, 0.45, 0.999), "0.500x [0.450, 0.999]"),
    ],
)
def test_a_ratio_reads_with_its_interval_and_no_winner_when_it_includes_1(ratio, text):
    assert ratio_text(ratio) == text
    assert Ratio(0.5, 0.4, 0.8).inverted() == Ratio(2.0, 1.25, 2.5)


def test_the_step_table_shows_the_paired_speedups_and_their_intervals(tmp_path):
    data = raw(CPU)
    speedups = {"custom_xla": (1.73, 1.65, 1.83), "custom_graph": (1.01, 0.98, 1.04)}
    panelize(group(data, "mlp"), "mlp", speedups=speedups)
    md, _ = render(tmp_path, data)
    rows = step_table(md)
    # from the fields, not the medians (6.12 ms / 3.93 ms would read 1.56x)
    assert rows["custom_xla"]["speedup vs keras_fit"] == "1.73x [1.65, 1.83]"
    assert rows["custom_graph"]["speedup vs keras_fit"] == "1.01x [0.980, 1.04] ~ no difference"
    assert rows["keras_fit"]["speedup vs keras_fit"] == "1.00x (baseline)"
    ratio = 6.12 / 3.93  # the helper's estimate for the others: the medians' ratio, x/÷ 1.03
    assert rows["keras_fit_xla"]["speedup vs keras_fit"] == ratio_text(
        Ratio(6.12 / 4.25, 6.12 / 4.25 / 1.03, 6.12 / 4.25 * 1.03)
    )
    assert ratio != 1.73
    notes = section(md, "## mlp: step time")
    assert "measured interleaved (panel mlp, 25 blocks of one round of every" in notes
    assert "~ no difference: the interval includes 1" in notes
    assert "Panel mlp stopped" not in notes  # it reached its target
    # another task's table, without the fields, reads as before
    linreg = step_table(md, "linreg")
    assert linreg["custom_xla"]["speedup vs keras_fit"] == "2.97x"  # 0.92 ms / 0.31 ms
    assert "interleaved" not in section(md, "## linreg: step time")


def test_a_panel_without_keras_fit_names_the_baseline_its_speedups_are_against(tmp_path):
    data = raw(CPU)
    data["benchmarks"] = [b for b in data["benchmarks"] if b["name"] != "test_step[keras_fit-mlp]"]
    panelize(group(data, "mlp"), "mlp", baseline="keras_fit_xla")
    md, _ = render(tmp_path, data)
    rows = step_table(md)
    assert rows["keras_fit_xla"]["speedup vs keras_fit_xla"] == "1.00x (baseline)"
    assert rows["custom_xla"]["speedup vs keras_fit_xla"].startswith("1.08x [")  # 4.25 / 3.93
    notes = section(md, "## mlp: step time")
    assert "keras_fit is not in the panel, so the speedups are against keras_fit_xla." in notes
    assert "No keras_fit benchmark" not in notes


def test_a_member_without_an_estimate_falls_back_to_the_medians(tmp_path):
    data = raw(CPU)
    panelize(group(data, "mlp"), "mlp")
    eager = next(b for b in group(data, "mlp") if "custom_eager" in b["name"])
    eager["extra_info"].update(speedup=None, speedup_low=None, speedup_high=None)
    md, _ = render(tmp_path, data)
    assert step_table(md)["custom_eager"]["speedup vs keras_fit"] == "0.622x"  # 6.12 / 9.84
    assert "A speedup without an interval is the ratio of the medians." in md


@pytest.mark.parametrize(
    ("info", "line"),
    [
        (
            {"stopped_by": "time_cap", "blocks": 18, "time_cap_s": 40.0, "target_pct": 2.0},
            "Panel mlp stopped at its 40 s cap after 18 blocks, before every interval was "
            "within ±2%.",
        ),
        (
            {"stopped_by": "max_blocks", "blocks": 60, "target_pct": 1.5},
            "Panel mlp stopped at its limit of 60 blocks, before every interval was within ±1.5%.",
        ),
        (
            {
                "stopped_by": "time_cap",
                "blocks": 14,
                "time_cap_s": 12.345,
                "target_pct": 2.0,
                "profile_cap_s": 40.0,
                "run_budget_s": 270.0,
            },
            "Panel mlp stopped at its 12.3 s cap (its share of the run's 270 s budget; 40 s "
            "without it) after 14 blocks, before every interval was within ±2%.",
        ),
        ({"stopped_by": "target"}, None),
    ],
    ids=["time-cap", "max-blocks", "run-budget", "target"],
)
def test_a_panel_that_stopped_before_its_target_is_named_once(tmp_path, info, line):
    data = raw(KNOBS)
    mlp = [b for b in data["benchmarks"] if b["extra_info"]["task"] == "mlp"]  # all groups
    panelize(mlp, "mlp", **info)
    md, _ = render(tmp_path, data)
    if line is None:
        assert "stopped" not in md
        return
    assert line in section(md, "## mlp: step time")
    assert md.count("Panel mlp stopped") == 1  # not again under the knob table


@pytest.mark.parametrize("stopped_by", ["time_cap", "target"])
def test_older_panel_fields_change_nothing_and_processes_are_not_reported(tmp_path, stopped_by):
    """Older files record ``processes`` (multi-process panels, since deleted) and
    ``held_back_for_sweep`` (the sweep hold-back, replaced by the run's planner, which records
    ``planned_cap_s``): the report reads the same with either set of fields."""
    data = raw(KNOBS)
    mlp = [b for b in data["benchmarks"] if b["extra_info"]["task"] == "mlp"]
    panelize(mlp, "mlp", stopped_by=stopped_by, time_cap_s=12.0, planned_cap_s=12.0)
    (tmp_path / "new").mkdir()
    new, _ = render(tmp_path / "new", data)
    for b in mlp:
        info = b["extra_info"]["panel_info"]
        del info["planned_cap_s"]
        info.update(processes=2, held_back_for_sweep=True)
    (tmp_path / "old").mkdir()
    old, _ = render(tmp_path / "old", data)
    assert old == new
    assert "processes" not in new


def test_each_sweep_panel_that_stopped_early_is_named_under_the_sweep(tmp_path):
    data = raw(CPU)
    sweep = group(data, "sweep-mlp")
    for batch in (64, 256, 1024):
        members = [b for b in sweep if b["extra_info"]["batch_size"] == batch]
        stopped = "time_cap" if batch == 1024 else "target"
        panelize(members, f"sweep-mlp-b{batch}", stopped_by=stopped, blocks=9, time_cap_s=20.0)
    md, _ = render(tmp_path, data)
    text = section(md, "## mlp: batch-size sweep (samples/s)")
    assert "Panel sweep-mlp-b1024 stopped at its 20 s cap after 9 blocks" in text
    assert "sweep-mlp-b64" not in text and "sweep-mlp-b256" not in text


def test_the_knob_table_uses_the_variants_paired_estimate_against_its_twin(tmp_path):
    data = raw(KNOBS)
    mlp = [b for b in data["benchmarks"] if b["group"] in ("mlp", "steps-per-call-mlp")]
    names = panelize(mlp, "mlp")  # precision-mlp left out: its twins are not in its panel
    loop = next(b for b in mlp if b["name"] == "test_step[custom_graph_loop-mlp]")
    twin = names["custom_graph"]
    loop["extra_info"]["paired"][twin].update(speedup=1.8, low=1.7, high=1.9)
    spe = next(b for b in mlp if b["name"] == "test_step[keras_fit_spe-mlp]")
    spe["extra_info"]["paired"][names["keras_fit"]].update(speedup=1.02, low=0.99, high=1.05)
    md, out = render(tmp_path, data)
    text = section(md, "## mlp: what each knob buys")
    rows = {(r["variant"], r["N"], r["measured in (group)"]): r for r in first_table(text)}
    assert rows[("custom_graph_loop", "16", "mlp")]["speedup"] == "1.80x [1.70, 1.90]"
    assert rows[("keras_fit_spe", "16", "mlp")]["speedup"] == "1.02x [0.990, 1.05] ~ no difference"
    # not measured with its twin: the ratio of the medians, as before (2.0 ms / 1.25 ms)
    assert rows[("custom_graph", "1", "precision-mlp")]["speedup"] == "1.60x"
    assert "the paired estimate of their within-block ratios; without an interval" in text
    frame = pd.read_csv(out / "knobs.csv")
    by_name = {(r.implementation, r.steps_per_call, r.group): r for r in frame.itertuples()}
    loop_row = by_name[("custom_graph_loop", 16, "mlp")]
    assert (loop_row.speedup, loop_row.speedup_low, loop_row.speedup_high) == (1.8, 1.7, 1.9)
    precision_row = by_name[("custom_graph", 1, "precision-mlp")]
    assert precision_row.speedup == pytest.approx(1.6)
    assert math.isnan(precision_row.speedup_low) and math.isnan(precision_row.speedup_high)


def test_in_one_panel_for_the_whole_task_every_knob_row_has_its_interval(tmp_path):
    data = raw(KNOBS)
    mlp = [b for b in data["benchmarks"] if b["extra_info"]["task"] == "mlp"]  # all groups
    panelize(mlp, "mlp")
    bf16 = next(b for b in mlp if b["name"] == "test_precision[custom_graph-mlp-mixed_bfloat16]")
    bf16["extra_info"]["paired"]["test_step[custom_graph-mlp]"].update(
        speedup=1.5, low=1.4, high=1.6
    )
    md, out = render(tmp_path, data)
    text = section(md, "## mlp: what each knob buys")
    rows = first_table(text)
    assert all("[" in r["speedup"] for r in rows)
    bf16_row = next(r for r in rows if r["precision"] == "mixed_bfloat16")
    assert bf16_row["speedup"] == "1.50x [1.40, 1.60]"  # not the medians' 1.60x
    assert "without an interval" not in text
    knobs = pd.read_csv(out / "knobs.csv")
    mlp_rows = knobs[knobs["task"] == "mlp"]
    assert len(mlp_rows) == len(rows) and mlp_rows["speedup_low"].notna().all()
    linreg_rows = knobs[knobs["task"] == "linreg"]  # not in a panel: no interval
    assert len(linreg_rows) and linreg_rows["speedup_low"].isna().all()


def test_knobs_csv_of_older_results_has_empty_interval_columns(tmp_path):
    code, out = run_report(tmp_path, str(KNOBS))
    assert code == 0
    frame = pd.read_csv(out / "knobs.csv")
    columns = list(frame.columns)
    assert columns[columns.index("speedup") :] == ["speedup", "speedup_low", "speedup_high"]
    assert frame["speedup_low"].isna().all() and frame["speedup_high"].isna().all()


def test_the_backend_table_uses_the_jax_results_paired_estimates(tmp_path):
    data = with_jax(tmp_path / "jax.json")
    names = panelize(group(data, "mlp"), "mlp")
    jax_fit = next(b for b in group(data, "mlp") if b["name"] == names["jax_fit"])
    paired = jax_fit["extra_info"]["paired"]
    paired[names["keras_fit_xla"]].update(speedup=0.5, low=0.45, high=0.55)  # JAX 2x slower
    paired[names["keras_fit"]].update(speedup=1.0, low=0.97, high=1.03)
    md, _ = render(tmp_path, data)
    text = section(md, "## mlp: TensorFlow vs JAX")
    rows = {r["JAX"]: r for r in first_table(text)}
    assert rows["jax_fit"]["JAX / TF XLA"] == "2.00 [1.82, 2.22]"  # 1 / 0.5 [1 / 0.55, 1 / 0.45]
    assert rows["jax_fit"]["JAX / TF"] == "1.00 [0.97, 1.03] ~ no difference"
    assert "the rows were measured interleaved in the same blocks (panel mlp)" in text
    assert "not interleaved" not in text
    assert "A CPU is not a GPU: these ratios say nothing about an accelerator." in text


def test_the_backend_note_of_older_results_is_unchanged(tmp_path):
    with_jax(tmp_path / "jax.json")
    code, out = run_report(tmp_path, str(tmp_path / "jax.json"))
    assert code == 0
    text = section((out / "report.md").read_text(), "## mlp: TensorFlow vs JAX")
    assert (
        "TensorFlow in the pytest process, the same run (not interleaved: read ratios within "
        "about 10% on a shared machine). Above 1: JAX slower. Compile:" in text
    )
    assert "[" not in "".join(r["JAX / TF"] for r in first_table(text))


def test_results_csv_has_the_panel_columns(tmp_path):
    data = raw(CPU)
    panelize(group(data, "mlp"), "mlp", stopped_by="time_cap", blocks=18)
    _, out = render(tmp_path, data)
    frame = pd.read_csv(out / "results.csv").set_index("name")
    new = ["speedup", "speedup_low", "speedup_high", "speedup_vs", "panel", "panel_blocks"]
    new += ["panel_stopped_by"]
    assert set(new) <= set(frame.columns)
    row = frame.loc["test_step[custom_xla-mlp]"]
    assert row["speedup"] == pytest.approx(6.12 / 3.93)
    assert row["speedup_low"] == pytest.approx(6.12 / 3.93 / 1.03)
    assert (row["speedup_vs"], row["panel"], row["panel_stopped_by"]) == (
        "keras_fit",
        "mlp",
        "time_cap",
    )
    assert row["panel_blocks"] == 18
    assert frame.loc["test_step[custom_xla-linreg]", new].isna().all()  # not in a panel
    # older results: the same columns, empty, and every earlier column as it was
    code, old_out = run_report(tmp_path / "old", str(CPU))
    assert code == 0
    old = pd.read_csv(old_out / "results.csv")
    assert set(new) <= set(old.columns) and old[new].isna().all().all()
