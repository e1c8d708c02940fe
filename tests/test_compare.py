"""Tests of ``python -m bench compare`` on synthetic pytest-benchmark JSON (no TensorFlow).
The command in a fresh interpreter: tests/test_compare_integration.py."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest

from bench.report.compare_cli import main, parse_threshold

FIXTURES = Path(__file__).parent / "fixtures"


def loopbench_info(**overrides: object) -> dict:
    info = {
        "tensorflow": "2.21.0",
        "keras": "3.12.0",
        "python": "3.11.9",
        "numpy": "2.1.3",
        "device": "CPU",
        "gpus": [],
        "cpu_model": "AMD EPYC 7763 64-Core Processor",
        "cpu_count": 4,
        "profile": "quick",
        "calibration_gflops": 100.0,
        "calibration_matmul_s": 0.02,
        "calibration_n": 1024,
    }
    info.update(overrides)
    return info


def step_bench(
    implementation: str = "keras_fit",
    task: str = "mlp",
    batch_size: int = 256,
    data: list[float] | None = None,
    median_s: float = 0.004,
    noise: float = 0.01,
    rounds: int = 15,
    seed: int = 0,
    save_data: bool = True,
) -> dict:
    """A ``kind == "step"`` benchmark whose stats are computed from its rounds."""
    if data is None:
        rng = np.random.default_rng(seed)
        data = list(median_s * (1 + noise * rng.standard_normal(rounds)))
    q1, _, q3 = statistics.quantiles(data, n=4)
    stats = {
        "min": min(data),
        "max": max(data),
        "mean": statistics.fmean(data),
        "stddev": statistics.stdev(data),
        "rounds": len(data),
        "median": statistics.median(data),
        "iqr": q3 - q1,
        "q1": q1,
        "q3": q3,
        "iterations": 20,
    }
    if save_data:
        stats["data"] = data
    name = f"test_step[{implementation}-{task}-{batch_size}]"
    return {
        "group": task,
        "name": name,
        "fullname": f"bench/benchmarks/bench_step.py::{name}",
        "params": {"implementation": implementation, "task": task},
        "extra_info": {
            "kind": "step",
            "implementation": implementation,
            "task": task,
            "dataset": "synthetic",
            "seed": 0,
            "batch_size": batch_size,
            "device": "/CPU:0",
        },
        "stats": stats,
    }


def convergence_bench(
    implementation: str = "keras_fit", task: str = "mlp", accuracy: float | None = 0.88
) -> dict:
    name = f"test_convergence[{implementation}-{task}]"
    return {
        "group": f"convergence-{task}",
        "name": name,
        "fullname": f"bench/bench_convergence.py::{name}",
        "extra_info": {
            "kind": "convergence",
            "implementation": implementation,
            "task": task,
            "dataset": "fashion_mnist",
            "seed": 0,
            "final_accuracy": accuracy,
        },
        "stats": {"median": 12.5, "q1": 12.5, "q3": 12.5, "rounds": 1, "iterations": 1},
    }


def results(benchmarks: list[dict], **loopbench: object) -> dict:
    return {
        "machine_info": {
            "node": "runner",
            "cpu": {"brand_raw": "AMD EPYC 7763 64-Core Processor"},
            "loopbench": loopbench_info(**loopbench),
        },
        "commit_info": {"id": "0" * 40, "branch": "main", "dirty": False},
        "benchmarks": benchmarks,
        "datetime": "2026-11-23T04:00:00+00:00",
        "version": "5.1.0",
    }


def write(tmp_path: Path, name: str, content: dict | str) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def run_with(tmp_path: Path, baseline: dict, current: dict, *options: str) -> int:
    paths = [write(tmp_path, "base.json", baseline), write(tmp_path, "cur.json", current)]
    return main([*paths, *options])


def table_rows(out: str) -> list[str]:
    """Rows of the main table (eight columns), not of the normalized-mode ratio table."""
    return [
        line for line in out.splitlines() if line.startswith("| test_") and line.count("|") == 9
    ]


def verdicts(out: str) -> list[str]:
    return [row.split("|")[-2].strip() for row in table_rows(out)]


def test_identical_results_pass(capsys):
    path = str(FIXTURES / "compare_baseline.json")
    assert main([path, path]) == 0
    out = capsys.readouterr().out
    assert verdicts(out) == ["ok"] * 3
    assert "ok: 3 benchmarks compared" in out


def test_fixture_with_30_percent_slowdown_fails(capsys):
    code = main([str(FIXTURES / "compare_baseline.json"), str(FIXTURES / "compare_current.json")])
    out = capsys.readouterr().out
    assert code == 1
    slower = [row for row in table_rows(out) if "SLOWER" in row]
    assert len(slower) == 1 and "keras_fit-mlp-256" in slower[0]
    assert "custom_graph-mlp-256" in out and "FAIL: test_step[keras_fit-mlp-256]" in out


def test_significant_30_percent_slowdown_fails(tmp_path, capsys):
    base = results([step_bench(median_s=0.004, seed=1)])
    cur = results([step_bench(median_s=0.0052, seed=2)])
    assert run_with(tmp_path, base, cur) == 1
    out = capsys.readouterr().out
    assert verdicts(out) == ["SLOWER"]
    assert "+30" in out and "yes (p=" in out


def test_large_but_noisy_difference_passes(tmp_path, capsys):
    # medians 2.0 -> 2.8 ms (+40%), but with three interleaved rounds each nothing is shown
    base = results([step_bench(data=[0.001, 0.002, 0.003])])
    cur = results([step_bench(data=[0.0012, 0.0028, 0.0032])])
    assert run_with(tmp_path, base, cur) == 0
    out = capsys.readouterr().out
    assert "+40.0%" in out and "slower, not significant" in out


def test_threshold_decides_between_slower_and_ok(tmp_path):
    base = results([step_bench(median_s=0.004, noise=0.005, seed=1)])
    cur = results([step_bench(median_s=0.0046, noise=0.005, seed=2)])  # +15%, significant
    assert run_with(tmp_path, base, cur, "--threshold", "10%") == 1
    assert run_with(tmp_path, base, cur, "--threshold", "20") == 0


def test_without_raw_data_falls_back_to_iqr_overlap(tmp_path, capsys):
    base = results([step_bench(data=[0.001, 0.002, 0.003, 0.004, 0.005], save_data=False)])
    overlapping = results([step_bench(data=[0.002, 0.003, 0.004, 0.005, 0.006], save_data=False)])
    apart = results([step_bench(data=[0.007, 0.008, 0.009, 0.010, 0.011], save_data=False)])
    assert run_with(tmp_path, base, overlapping) == 0
    out = capsys.readouterr().out
    assert "IQRs overlap" in out and "--benchmark-save-data" in out
    assert run_with(tmp_path, base, apart) == 1
    assert "yes (IQRs apart)" in capsys.readouterr().out


def test_significant_speedup_is_reported_and_passes(tmp_path, capsys):
    base = results([step_bench(median_s=0.004, seed=1)])
    cur = results([step_bench(median_s=0.002, seed=2)])
    assert run_with(tmp_path, base, cur) == 0
    assert "faster" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("current_accuracy", "expected"),
    [(0.86, 1), (0.87, 0), (0.875, 0), (0.90, 0)],
    ids=["drop-2pp", "drop-exactly-1pp", "drop-0.5pp", "gain"],
)
def test_accuracy_drop_over_one_point_fails(tmp_path, capsys, current_accuracy, expected):
    base = results([convergence_bench(accuracy=0.88)])
    cur = results([convergence_bench(accuracy=current_accuracy)])
    assert run_with(tmp_path, base, cur) == expected
    assert verdicts(capsys.readouterr().out) == ["ACCURACY DROP" if expected else "ok"]


def test_accuracy_not_recorded_is_not_compared(tmp_path):
    base = results([convergence_bench(task="linreg", accuracy=None)])
    cur = results([convergence_bench(task="linreg", accuracy=None)])
    assert run_with(tmp_path, base, cur) == 0


def test_different_machines_refused_without_normalize(tmp_path, capsys):
    base = results([step_bench()])
    cur = results([step_bench()], cpu_model="Intel Xeon Platinum 8370C", tensorflow="2.21.1")
    assert run_with(tmp_path, base, cur) == 2
    err = capsys.readouterr().err
    assert "cpu_model" in err and "tensorflow" in err and "--normalize" in err
    assert "device" not in err and "Traceback" not in err


def test_cpu_model_falls_back_to_cpuinfo_brand(tmp_path, capsys):
    base, cur = results([step_bench()]), results([step_bench()])
    del base["machine_info"]["loopbench"]["cpu_model"]
    del cur["machine_info"]["loopbench"]["cpu_model"]
    cur["machine_info"]["cpu"]["brand_raw"] = "Intel Xeon Platinum 8370C"
    assert run_with(tmp_path, base, cur) == 2
    assert "cpu_model" in capsys.readouterr().err


def two_implementations(scale: float, seed: int) -> list[dict]:
    return [
        step_bench("custom_graph", median_s=0.002 * scale, seed=seed),
        step_bench("keras_fit", median_s=0.004 * scale, seed=seed + 1),
    ]


def test_normalize_passes_a_uniformly_slower_machine(tmp_path, capsys):
    base = results(two_implementations(1.0, seed=1), calibration_matmul_s=0.02)
    cur = results(
        two_implementations(2.0, seed=3),
        calibration_matmul_s=0.04,
        cpu_model="Intel Xeon Platinum 8370C",
        device="CPU",
    )
    assert run_with(tmp_path, base, cur) == 2
    capsys.readouterr()
    assert run_with(tmp_path, base, cur, "--normalize") == 0
    out = capsys.readouterr().out
    assert "machines differ: cpu_model" in out
    assert verdicts(out) == ["ok", "ok"]
    assert "(× matmul)" in out
    ratio_lines = [line for line in out.splitlines() if "keras_fit" in line and "2.0" in line]
    assert ratio_lines, "the implementation ratio table shows keras_fit / custom_graph"


def test_normalize_still_catches_a_real_slowdown(tmp_path, capsys):
    base = results(two_implementations(1.0, seed=1), calibration_matmul_s=0.02)
    cur = results(two_implementations(2.0, seed=3), calibration_matmul_s=0.02)
    assert run_with(tmp_path, base, cur, "--normalize") == 1
    assert verdicts(capsys.readouterr().out) == ["SLOWER", "SLOWER"]


def test_normalize_needs_calibration(tmp_path, capsys):
    base = results([step_bench()], calibration_matmul_s=None)
    assert run_with(tmp_path, base, results([step_bench()]), "--normalize") == 2
    assert "calibration_matmul_s" in capsys.readouterr().err


def bad_input_cases() -> dict[str, object]:
    return {
        "not-json": "{not json",
        "json-list": "[1, 2]",
        "no-benchmarks-key": json.dumps({"machine_info": {}}),
        "benchmark-without-stats": json.dumps(results([{"name": "x"}])),
        "no-common-benchmarks": json.dumps(results([step_bench(task="cnn")])),
        "no-counted-kind": json.dumps(
            results([{**step_bench(), "extra_info": {"kind": "parity"}}])
        ),
    }


@pytest.mark.parametrize("case", list(bad_input_cases()))
def test_bad_current_file_exits_2_with_one_message(tmp_path, capsys, case):
    base = write(tmp_path, "base.json", results([step_bench()]))
    cur = write(tmp_path, "cur.json", bad_input_cases()[case])
    assert main([base, cur]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1


def test_missing_file_exits_2(tmp_path, capsys):
    base = write(tmp_path, "base.json", results([step_bench()]))
    assert main([base, str(tmp_path / "missing.json")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err


def test_usage_error_exits_2(capsys):
    assert main(["only-one.json"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_github_json_lists_every_current_step_benchmark(tmp_path):
    base = results([step_bench("custom_graph")])
    cur = results([step_bench("custom_graph"), step_bench("keras_fit"), convergence_bench()])
    out = tmp_path / "gh-bench.json"
    assert run_with(tmp_path, base, cur, "--github-json", str(out)) == 0
    entries = json.loads(out.read_text())
    assert [e["name"] for e in entries] == [  # with the profile and the batch: unique
        "test_step[custom_graph-mlp-256] [quick, batch=256]",
        "test_step[keras_fit-mlp-256] [quick, batch=256]",
    ]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600) or _umask() == 0o177
    for entry, bench in zip(entries, cur["benchmarks"][:2], strict=True):
        assert set(entry) == {"name", "unit", "value", "range", "extra"}
        assert entry["unit"] == "ms/step"
        assert entry["value"] == pytest.approx(bench["stats"]["median"] * 1e3)
        assert isinstance(entry["range"], str) and isinstance(entry["extra"], str)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.json", "cur.json", out.name]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_github_json_is_not_written_on_bad_input(tmp_path):
    out = tmp_path / "gh-bench.json"
    base = results([step_bench()])
    cur = results([step_bench()], device="GPU")
    assert run_with(tmp_path, base, cur, "--github-json", str(out)) == 2
    assert not out.exists()


def test_matches_on_name_when_the_file_moved(tmp_path, capsys):
    moved = step_bench()
    moved["fullname"] = "tests/bench_step.py::" + moved["name"]
    assert run_with(tmp_path, results([step_bench()]), results([moved])) == 0
    assert "ok: 1 benchmarks compared" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "percent"), [("10%", 10.0), ("10", 10.0), ("2.5%", 2.5), ("0.5%", 0.5), ("0", 0.0)]
)
def test_parse_threshold(text, percent):
    assert parse_threshold(text) == percent


@pytest.mark.parametrize("text", ["0.1", "-5", "ten", "nan"])
def test_parse_threshold_refuses_ambiguous_or_invalid(text):
    with pytest.raises(Exception, match="threshold|percentage"):
        parse_threshold(text)
