"""Tests for the report's "what each knob buys" section, knobs.csv and the steps-per-call plot.

``fixtures/report_knobs.json`` is a hand-made run: an mlp step table without ``custom_xla`` (so
``custom_xla_loop`` and ``custom_xla`` at mixed_bfloat16 have no twin), a ``precision-mlp``
group, a ``steps-per-call-mlp`` sweep of two implementations and a ``steps-per-call-linreg``
sweep of one. Expected figures are computed here from the raw JSON, with the twin pairs written
out below, not taken from the report code. ``report_cpu.md`` and ``report_cpu_gpu.md`` are the
reports the code rendered for the older fixtures before the knob section existed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import section
from report_helpers import write as write_file

from bench.report.cli import main

pytestmark = pytest.mark.usefixtures("tables_only")
FIXTURES = Path(__file__).parent / "fixtures"
KNOBS = FIXTURES / "report_knobs.json"
CPU = FIXTURES / "report_cpu.json"
GPU = FIXTURES / "report_gpu.json"
TWINS = {"keras_fit_spe": "keras_fit", "custom_graph_loop": "custom_graph"}


def raw(path: Path = KNOBS) -> dict:
    return json.loads(path.read_text())


def write(tmp_path: Path, data: dict, name: str = "knobs.json") -> Path:
    return write_file(tmp_path, data, name)


def report(tmp_path: Path, *args: str) -> tuple[str, Path]:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 0
    return (out / "report.md").read_text(), out


def table(text: str) -> list[dict[str, str]]:
    """The rows of the first table in ``text``."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    if not lines:
        return []

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    header = cells(lines[0])
    return [dict(zip(header, cells(line), strict=True)) for line in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


def by_group(data: dict, group: str) -> list[dict]:
    return [b for b in data["benchmarks"] if b["group"] == group]


def expected_rows(data: dict, task: str) -> dict[tuple, tuple[float, float]]:
    """(implementation, N, precision, group) -> (speedup, % of matmul) for every variant that
    has its twin in the task's step group."""
    peak = data["machine_info"]["loopbench"]["calibration_gflops"]
    step = {b["extra_info"]["implementation"]: b for b in by_group(data, task)}
    out = {}
    variants = [(b, TWINS.get(b["extra_info"]["implementation"])) for b in by_group(data, task)]
    variants += [
        (b, TWINS[b["extra_info"]["implementation"]])
        for b in by_group(data, f"steps-per-call-{task}")
    ]
    variants += [
        (b, b["extra_info"]["implementation"]) for b in by_group(data, f"precision-{task}")
    ]
    for b, twin in variants:
        e = b["extra_info"]
        if twin is None or twin not in step:
            continue
        speedup = step[twin]["stats"]["median"] / b["stats"]["median"]
        key = (e["implementation"], e["steps_per_call"], e["precision"], b["group"])
        out[key] = (speedup, e["gflops_per_s"] / peak * 100)
    return out


def knob_table(md: str, task: str) -> dict[tuple, dict[str, str]]:
    rows = table(section(md, f"## {task}: what each knob buys"))
    return {(r["variant"], int(r["N"]), r["precision"], r["measured in (group)"]): r for r in rows}


@pytest.mark.parametrize("task", ["mlp", "linreg"])
def test_knob_rows_speedup_and_pct_of_matmul_from_the_raw_json(tmp_path, task):
    md, _ = report(tmp_path, str(KNOBS))
    rows = knob_table(md, task)
    expected = expected_rows(raw(), task)
    assert set(rows) == set(expected)
    assert len(rows) == {"mlp": 12, "linreg": 4}[task]  # the fixture's variants with a twin
    for key, (speedup, pct) in expected.items():
        row = rows[key]
        assert row["speedup"].endswith("x")
        assert number(row["speedup"]) == pytest.approx(speedup, rel=5e-3), key
        assert number(row["% of matmul rate"]) == pytest.approx(pct, rel=5e-3), key
    if task == "mlp":  # spot checks by hand: 2.0 ms / 1.081 ms, 2.0 / 1.25, 6.0 / 8.0
        assert rows[("custom_graph_loop", 16, "float32", "mlp")]["speedup"] == "1.85x"
        bf16 = rows[("custom_graph", 1, "mixed_bfloat16", "precision-mlp")]
        assert bf16["speedup"] == "1.60x"
        assert bf16["twin"] == "custom_graph (N=1, float32)" and bf16["twin ms/step"] == "2.00"
        assert rows[("keras_fit", 1, "mixed_float16", "precision-mlp")]["speedup"] == "0.750x"


def test_variants_without_a_twin_get_no_row_and_are_named(tmp_path):
    md, _ = report(tmp_path, str(KNOBS))
    text = section(md, "## mlp: what each knob buys")
    variants = {(k[0], k[2]) for k in knob_table(md, "mlp")}
    assert ("custom_xla_loop", "float32") not in variants  # custom_xla is not in the step table
    assert ("custom_xla", "mixed_bfloat16") not in variants
    assert "No twin in this run's step table for: custom_xla_loop (N=16, float32) in mlp" in text
    assert "custom_xla (N=1, mixed_bfloat16) in precision-mlp" in text


@pytest.mark.parametrize(
    "break_twin",
    [
        lambda b: b.update(group="elsewhere-mlp"),  # the twin gone from the step table
        lambda b: b["extra_info"].update(batch_size=512),  # measured at another batch size
        lambda b: b["extra_info"].update(precision="mixed_bfloat16"),  # not float32
    ],
    ids=["absent", "other-batch", "other-precision"],
)
def test_twin_must_be_in_the_step_table_at_the_same_batch_and_float32(tmp_path, break_twin):
    data = raw()
    graph = next(
        b for b in by_group(data, "mlp") if b["extra_info"]["implementation"] == "custom_graph"
    )
    break_twin(graph)
    md, _ = report(tmp_path, str(write(tmp_path, data)))
    rows = knob_table(md, "mlp")
    assert not [k for k in rows if k[0] in ("custom_graph_loop", "custom_graph")]
    assert rows[("keras_fit_spe", 16, "float32", "mlp")]["speedup"] == "1.50x"  # 6.0 / 4.0
    assert "custom_graph_loop (N=64, float32) in steps-per-call-mlp" in md


def test_precision_and_steps_per_call_groups_stay_out_of_the_step_table_and_sweep(tmp_path):
    md, _ = report(tmp_path, str(KNOBS))
    data = raw()
    for task in ("mlp", "linreg"):
        rows = table(section(md, f"## {task}: step time"))
        step = by_group(data, task)
        assert len(rows) == len(step)
        assert {r["implementation"] for r in rows} == {
            b["extra_info"]["implementation"] for b in step
        }
        medians = sorted(b["stats"]["median"] * 1e3 for b in step)
        assert [number(r["ms/step (median)"]) for r in rows] == pytest.approx(medians, rel=5e-3)
    assert "batch-size sweep" not in md and "## Not in any table" not in md


def test_a_step_group_the_report_does_not_know_is_named_not_tabled(tmp_path):
    data = raw()
    probe = copy.deepcopy(by_group(data, "mlp")[0])
    probe.update(group="probe-mlp", name="test_probe[keras_fit-mlp]")
    probe["stats"]["median"] = 0.0123
    data["benchmarks"].append(probe)
    md, _ = report(tmp_path, str(write(tmp_path, data)))
    step_table = table(section(md, "## mlp: step time"))
    assert len(step_table) == len(by_group(data, "mlp"))
    assert "12.3" not in {r["ms/step (median)"] for r in step_table}
    assert "test_probe[keras_fit-mlp] (group 'probe-mlp')" in section(md, "## Not in any table")


def test_steps_per_call_results_without_one_step_twin_are_not_compared(tmp_path):
    data = raw()
    for b in data["benchmarks"]:
        b["extra_info"].pop("one_step_twin", None)
    md, out = report(tmp_path, str(write(tmp_path, data)))
    rows = knob_table(md, "mlp")
    assert {k[3] for k in rows} == {"precision-mlp"}  # only the precision variants remain
    assert "No `one_step_twin` recorded" in section(md, "## mlp: what each knob buys")
    linreg = section(md, "## linreg: what each knob buys")
    assert not table(linreg) and "custom_graph_loop (N=64, float32)" in linreg
    assert set(pd.read_csv(out / "knobs.csv")["knob"]) == {"precision"}


def test_knobs_csv_has_the_table_rows(tmp_path):
    _, out = report(tmp_path, str(KNOBS))
    frame = pd.read_csv(out / "knobs.csv")
    for task in ("mlp", "linreg"):
        expected = expected_rows(raw(), task)
        rows = frame[frame["task"] == task]
        keys = set(
            zip(rows["implementation"], rows["steps_per_call"], rows["precision"], rows["group"])
        )
        assert keys == set(expected)
        for _, r in rows.iterrows():
            speedup, pct = expected[
                (r["implementation"], r["steps_per_call"], r["precision"], r["group"])
            ]
            assert r["speedup"] == pytest.approx(speedup, rel=1e-9)
            assert r["pct_of_matmul_peak"] == pytest.approx(pct, rel=1e-6)
            assert r["twin_ms_per_step"] / r["ms_per_step"] == pytest.approx(speedup, rel=1e-9)


def test_report_names_knobs_csv_and_drops_a_stale_one(tmp_path, capsys):
    _, out = report(tmp_path, str(KNOBS))
    assert "knobs.csv" in capsys.readouterr().out.splitlines()[-1]
    _, out = report(tmp_path, str(CPU))  # same --out, a run without variants
    assert not (out / "knobs.csv").exists()
    assert "knobs.csv" not in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize(
    ("args", "golden"),
    [
        ([str(CPU)], "report_cpu.md"),
        ([str(CPU), str(GPU), "--label", "cpu", "--label", "gpu"], "report_cpu_gpu.md"),
    ],
)
def test_older_files_render_as_before(tmp_path, args, golden):
    md, out = report(tmp_path, *args)
    assert md == (FIXTURES / golden).read_text()
    assert not (out / "knobs.csv").exists()


def test_several_runs_get_one_knob_section_per_task_with_only_the_runs_that_have_variants(tmp_path):
    md, _ = report(tmp_path, str(CPU), str(KNOBS), "--label", "cpu", "--label", "knobs")
    text = section(md, "## mlp: what each knob buys")
    assert "### knobs" in text and "### cpu" not in text
    assert md.count("## mlp: what each knob buys") == 1


def test_steps_per_call_plot_draws_each_implementation_and_its_twin(tmp_path, plots, monkeypatch):
    from matplotlib.figure import Figure  # lazy: matplotlib is optional (``plots`` skips)

    figures = {}
    savefig = Figure.savefig

    def keep(fig, path, **kwargs):
        figures[Path(path).name] = fig
        savefig(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    md, out = report(tmp_path, str(KNOBS))
    for task in ("mlp", "linreg"):
        name = f"steps_per_call_{task}.png"
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![steps_per_call_{task}]({name})" in md
    ax = figures["steps_per_call_mlp.png"].axes[0]
    data = raw()
    # errorbar keeps its label on the container, axhline on the line
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    lines.update(
        {line.get_label(): line for line in ax.get_lines() if line.get_linestyle() == "--"}
    )
    for impl, twin in TWINS.items():
        sweep = sorted(
            (
                b
                for b in by_group(data, "steps-per-call-mlp")
                if b["extra_info"]["implementation"] == impl
            ),
            key=lambda b: b["extra_info"]["steps_per_call"],
        )
        line = lines[impl]
        assert list(line.get_xdata()) == [1, 4, 16, 64]
        assert list(line.get_ydata()) == pytest.approx([b["stats"]["median"] * 1e3 for b in sweep])
        dashed = lines[f"{twin} (one step per call)"]
        assert dashed.get_linestyle() == "--" and dashed.get_color() == line.get_color()
        twin_ms = next(
            b for b in by_group(data, "mlp") if b["extra_info"]["implementation"] == twin
        )
        assert list(dashed.get_ydata()) == pytest.approx([twin_ms["stats"]["median"] * 1e3] * 2)
    assert ax.get_xscale() == "log"
    assert "steps_per_call_cnn.png" not in figures  # no sweep for the CNN in the fixture


def test_no_steps_per_call_plot_without_the_sweep(tmp_path, plots):
    data = raw()
    data["benchmarks"] = [
        b for b in data["benchmarks"] if not b["group"].startswith("steps-per-call-")
    ]
    md, out = report(tmp_path, str(write(tmp_path, data)))
    assert not list(out.glob("steps_per_call_*"))
    assert "## mlp: what each knob buys" in md  # the step-table and precision variants remain
    assert "## linreg: what each knob buys" not in md


def _convergence(impl: str, precision: str | None, accuracy: float, delta: float | None) -> dict:
    extra = {
        "kind": "convergence",
        "implementation": impl,
        "task": "mlp",
        "dataset": "fashion-mnist",
        "seeds": [0],
        "final_accuracy": accuracy,
        "final_accuracy_std": 0.0,
        "final_loss": 0.4,
        "parity_delta_pp": delta,
        "parity_ok": None if delta is None else abs(delta) <= 1.0,
    }
    if precision is not None:
        extra["precision"] = precision
    return {
        "group": "convergence-mlp",
        "name": f"test_convergence[{impl}-mlp]",
        "extra_info": extra,
        "stats": {"median": 10.0, "min": 10.0, "max": 10.0, "mean": 10.0, "rounds": 1},
    }


def test_a_mixed_precision_convergence_row_is_its_own_row(tmp_path):
    """keras_fit in mixed_bfloat16 is not the parity baseline: it is labelled with its
    precision, listed after the float32 rows, and its parity reads against its float32 twin."""
    data = raw()
    data["benchmarks"] += [
        _convergence("keras_fit", None, 0.85, None),  # an older file: no precision field
        _convergence("keras_fit", "mixed_bfloat16", 0.8370, -1.3),
        _convergence("custom_graph", "float32", 0.851, 0.1),
    ]
    md, _ = report(tmp_path, str(write(tmp_path, data)))
    rows = [
        line.split("|")[1].strip()
        for line in section(md, "## mlp: convergence").splitlines()
        if line.startswith("| ") and "implementation" not in line
    ]
    assert rows == ["keras_fit", "custom_graph", "keras_fit (mixed_bfloat16)"]
    mixed = next(line for line in md.splitlines() if "keras_fit (mixed_bfloat16)" in line)
    assert "-1.30 FAIL vs keras_fit float32" in mixed and "baseline" not in mixed


def step_of(data: dict, impl: str, task: str = "mlp") -> dict:
    """``impl``'s result in the task's step group."""
    return next(b for b in by_group(data, task) if b["name"] == f"test_step[{impl}-{task}]")


def with_split(data: dict, median: float) -> dict:
    """The fixture plus a custom_xla_split-mlp step result (custom_xla_loop's, renamed, at
    ``median`` seconds per step), as bench_step records it."""
    data = copy.deepcopy(data)
    loop = step_of(data, "custom_xla_loop")
    split = copy.deepcopy(loop)
    split["name"] = "test_step[custom_xla_split-mlp]"
    split["stats"]["median"] = median
    split["extra_info"].update(
        implementation="custom_xla_split",
        one_step_twin="custom_xla",
        micro_batches=2,
        micro_batch_twin="custom_xla_loop",
        gflops_per_s=split["extra_info"]["flops_per_step"] / median / 1e9,
    )
    data["benchmarks"].append(split)
    return data


def test_micro_batches_are_compared_with_the_same_loop_on_whole_batches(tmp_path):
    data = with_split(raw(), median=0.8e-3)
    md, out = report(tmp_path, str(write(tmp_path, data)))
    rows = table(section(md, "## mlp: what each knob buys"))
    split = [r for r in rows if r["variant"] == "custom_xla_split"]
    assert len(split) == 1  # a micro-batch variant, not also a steps-per-call one
    row = split[0]
    loop = step_of(data, "custom_xla_loop")
    assert row["knob"] == "micro-batches (2)"
    assert row["twin"] == "custom_xla_loop (N=16, float32)"
    assert number(row["speedup"]) == pytest.approx(loop["stats"]["median"] / 0.8e-3, rel=5e-3)
    peak = data["machine_info"]["loopbench"]["calibration_gflops"]
    pct = data["benchmarks"][-1]["extra_info"]["gflops_per_s"] / peak * 100
    assert number(row["% of matmul rate"]) == pytest.approx(pct, rel=5e-3)
    frame = pd.read_csv(out / "knobs.csv")
    csv_row = frame[frame["implementation"] == "custom_xla_split"]
    assert list(csv_row["knob"]) == ["micro-batches"] and list(csv_row["micro_batches"]) == [2]
    assert set(frame[frame["implementation"] != "custom_xla_split"]["micro_batches"]) == {1}


def test_a_micro_batch_variant_without_its_twin_is_named(tmp_path):
    data = with_split(raw(), median=0.8e-3)
    data["benchmarks"] = [
        b for b in data["benchmarks"] if b["name"] != "test_step[custom_xla_loop-mlp]"
    ]
    md, _ = report(tmp_path, str(write(tmp_path, data)))
    text = section(md, "## mlp: what each knob buys")
    assert "custom_xla_split" not in {r["variant"] for r in table(text)}
    assert "custom_xla_split (N=16, float32, 2 micro-batches) in mlp" in text


def test_the_micro_batch_sweep_is_compared_with_the_step_tables_whole_batch_loop(tmp_path):
    data = with_split(raw(), median=0.8e-3)
    loop = step_of(data, "custom_xla_loop")
    for m, median in ((1, 1.2e-3), (4, 0.9e-3)):
        point = copy.deepcopy(data["benchmarks"][-1])
        point.update(
            name=f"test_micro_batches[custom_xla_split-mlp-m{m}]", group="micro-batches-mlp"
        )
        point["stats"]["median"] = median
        point["extra_info"].update(micro_batches=m)
        data["benchmarks"].append(point)
    md, out = report(tmp_path, str(write(tmp_path, data)))
    rows = table(section(md, "## mlp: what each knob buys"))
    sweep = {r["knob"]: r for r in rows if r["measured in (group)"] == "micro-batches-mlp"}
    assert set(sweep) == {"micro-batches (1)", "micro-batches (4)"}
    for m, median in ((1, 1.2e-3), (4, 0.9e-3)):
        row = sweep[f"micro-batches ({m})"]
        assert row["twin"] == "custom_xla_loop (N=16, float32)"
        assert number(row["speedup"]) == pytest.approx(loop["stats"]["median"] / median, rel=5e-3)
    assert "## Not in any table" not in md  # the sweep's group is known, not left over
    step_table = table(section(md, "## mlp: step time"))
    assert [r["implementation"] for r in step_table].count("custom_xla_split") == 1
    frame = pd.read_csv(out / "knobs.csv")
    assert sorted(frame[frame["group"] == "micro-batches-mlp"]["micro_batches"]) == [1, 4]
