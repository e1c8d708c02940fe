"""``experiments/knobs_interleaved.py`` on linreg, with rounds of a few milliseconds: a
micro-batch variant against its twin (both XLA), a matmul round beside each pair."""

from __future__ import annotations

import random

import numpy as np
import pytest
from experiment_loader import load_experiment as load_script

from bench.timing.machine import matmul_timer

pytestmark = pytest.mark.integration


def load_experiment():
    return load_script("knobs_interleaved")


def test_micro_batches_are_compared_with_a_matmul_round_beside_each_pair():
    experiment = load_experiment()
    labels = {(c[0], c[1], c[3]) for c in experiment.COMPARISONS}
    assert ("mlp", "custom_xla_split", "custom_xla_loop") in labels
    matmul = matmul_timer()
    pairs = 10
    r = experiment.compare(
        "linreg",
        "custom_xla_split",
        {},
        "custom_xla_loop",
        {},
        pairs,
        0.005,
        100.0,
        matmul,
        random.Random(0),
    )
    assert (r["variant"], r["twin"]) == ("custom_xla_split", "custom_xla_loop")
    assert r["low"] <= r["ratio"] <= r["high"] and r["speedup"] == pytest.approx(1 / r["ratio"])
    assert len(r["matmul_gflops_beside"]) == pairs and min(r["matmul_gflops_beside"]) > 0
    assert r["variant_meta"]["steps_per_call"] == r["twin_meta"]["steps_per_call"] == 16
    # the share beside is the variant's rate over the matmul rounds' rate, pair by pair: it
    # lies within the spread of the session-wide figure scaled by each round's rate
    low, high = r["variant_pct_of_matmul_beside_iqr"]
    assert 0 < low <= r["variant_pct_of_matmul_beside"] <= high
    scaled = r["variant_pct_of_matmul"] * 100.0 / np.array(r["matmul_gflops_beside"])
    assert scaled.min() / 3 < r["variant_pct_of_matmul_beside"] < scaled.max() * 3
