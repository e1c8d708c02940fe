"""The A/B worker (``bench/ab/worker.py``) with trainers that run several steps per call,
for real (an XLA loop and fit's): it stacks the coordinator's one batch N times and reports
round times per training step. A one-step trainer: tests/test_ab_worker.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_ab_worker import ROOT, linreg_batch, setup

from bench.ab import worker as ab_worker
from implementations.keras_parts import STEPS_PER_CALL

pytestmark = pytest.mark.integration


@pytest.fixture
def batch(tmp_path):
    return linreg_batch(tmp_path)


def updates(trainer) -> int:
    optimizer = getattr(trainer, "optimizer", None) or trainer.model.optimizer
    return int(optimizer.iterations)


@pytest.mark.parametrize("impl", ["custom_xla_loop", "keras_fit_spe"])
def test_a_multi_step_trainer_is_timed_per_step(impl, batch):
    trainers: dict = {}
    answer = setup(impl, batch, trainers)
    n = STEPS_PER_CALL
    assert answer["steps_per_call"] == n and np.isfinite(answer["loss_after_warmup"])
    trainer = trainers[impl]["trainer"]
    before = updates(trainer)
    assert before % n == 0  # whole calls only (the 5 warm-up steps: one call)
    result = ab_worker.op_round({"op": "round", "id": impl, "k": 3}, trainers, ROOT)
    assert updates(trainer) - before == 3 * n  # K calls of N steps
    assert result["retraced"] == 0
    # the coordinator divides by K: the worker has divided by N
    assert result["seconds"] == pytest.approx(result["round_seconds"] / n)
