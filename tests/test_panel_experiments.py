"""The pure parts of experiments/panel_estimators.py (the estimators recover a known ratio from a
results file's rounds; two runs are compared ratio by ratio) and experiments/panel_budget.py
(``agree`` reports each panel baseline's ms/step in both files)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from experiment_loader import load_experiment


def results_file(path, truth, drift, seed):
    """A results file with one panel: ``truth`` maps names to seconds per step; every round
    of a block shares that block's machine slowness ``drift[block]``."""
    rng = np.random.default_rng(seed)
    benches = []
    for name, seconds in truth.items():
        blocks = list(range(len(drift)))
        data = [seconds * drift[b] * math.exp(rng.normal(0, 0.02)) for b in blocks]
        benches.append(
            {
                "name": name,
                "stats": {"data": data},
                "extra_info": {"block_of_round": blocks, "speedup_vs_name": "base"},
            }
        )
    path.write_text(json.dumps({"benchmarks": benches}))
    return path


def test_every_estimator_recovers_a_known_speedup_through_a_shared_drift(tmp_path):
    est = load_experiment("panel_estimators")
    drift = np.exp(np.random.default_rng(9).normal(0, 0.3, 40))  # a slow, bursty machine
    a = results_file(tmp_path / "a.json", {"base": 2e-3, "fast": 1e-3}, drift, 1)
    out = est.run_estimates(a)
    assert set(out) == {"fast"}  # the baseline has no ratio to itself
    paired = ("hl", "mean_log", "trimmed", "quiet_half_hl")
    for name in paired:
        assert out["fast"][name] == pytest.approx(2.0, rel=0.02)
    # the paired estimators cancel the drift; quantiles of unpaired rounds only roughly
    assert out["fast"]["median"] == pytest.approx(2.0, rel=0.3)


def test_two_runs_are_compared_ratio_by_ratio(tmp_path):
    est = load_experiment("panel_estimators")
    rng = np.random.default_rng(3)
    a = results_file(tmp_path / "a.json", {"base": 2e-3, "fast": 1e-3}, rng.uniform(1, 2, 30), 1)
    b = results_file(tmp_path / "b.json", {"base": 2e-3, "fast": 0.8e-3}, rng.uniform(1, 2, 30), 2)
    result = est.compare([a, b])
    hl = result["estimators"]["hl"]
    assert hl["pairs"] == 1
    assert hl["median_pct"] == pytest.approx(100 * math.log(1.25), abs=2.0)  # 2.0x vs 2.5x


def test_agree_reports_each_panel_baselines_time_in_both_runs(tmp_path):
    budget = load_experiment("panel_budget")

    def bench(name, base, median):
        return {"name": name, "stats": {"median": median}, "extra_info": {"speedup_vs_name": base}}

    def results(path, ms):
        benches = [bench("base-mlp", "base-mlp", ms), bench("fast-mlp", "base-mlp", ms / 2)]
        benches.append(bench("alone", None, 1.0))  # no panel: not a baseline
        path.write_text(json.dumps({"benchmarks": benches}))
        return path

    a, b = results(tmp_path / "a.json", 2.85e-3), results(tmp_path / "b.json", 3.82e-3)
    assert budget.baselines_apart(a, b) == {"base-mlp": [pytest.approx(2.85), pytest.approx(3.82)]}
