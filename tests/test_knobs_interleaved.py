"""The matmul chain that ``experiments/knobs_interleaved.py`` shares with the calibration
(``bench.timing.machine.matmul_timer``); the experiment's comparison itself, which compiles
XLA, is in tests/test_knobs_interleaved_integration.py."""

from __future__ import annotations

import pytest

from bench.timing.machine import calibrate_matmul, matmul_timer


def test_the_calibration_is_the_best_round_of_the_matmul_chain():
    n, one_round = matmul_timer()
    rounds = [one_round() for _ in range(3)]
    assert n == 1024 and all(0 < s < 1 for s in rounds)
    cal = calibrate_matmul(seconds=0.2)
    assert cal["calibration_n"] == n
    assert cal["calibration_gflops"] == pytest.approx(2 * n**3 / cal["calibration_matmul_s"] / 1e9)
    # the best of its rounds: within a factor of the rounds just timed, not a different measure
    assert cal["calibration_matmul_s"] < 3 * max(rounds)
