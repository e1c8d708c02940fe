"""The A/B worker (``bench/ab/worker.py``) with trainers that run several steps per call: it
stacks the coordinator's one batch N times and reports round times per training step. Its
requests are called in this process (the protocol and process handling: tests/test_ab.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.ab import worker as ab_worker
from implementations.keras_parts import STEPS_PER_CALL

ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture
def batch(tmp_path):
    path = tmp_path / "b.npz"
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(8, 1)
    np.savez(path, x=x, y=3 * x + 2)
    return str(path)


def setup(impl: str, batch: str, trainers: dict, warmup: int = 5) -> dict:
    request = {"op": "setup", "id": impl, "impl": impl, "task": "linreg", "batch": batch}
    return ab_worker.op_setup({**request, "warmup": warmup}, trainers, ROOT)


def updates(trainer) -> int:
    optimizer = getattr(trainer, "optimizer", None) or trainer.model.optimizer
    return int(optimizer.iterations)


@pytest.mark.integration
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


def test_a_one_step_trainer_and_an_older_tree_are_timed_as_before(batch, monkeypatch):
    trainers: dict = {}
    assert setup("custom_graph", batch, trainers)["steps_per_call"] == 1
    result = ab_worker.op_round({"op": "round", "id": "custom_graph", "k": 3}, trainers, ROOT)
    assert result["seconds"] == result["round_seconds"]

    # A BASE checkout older than steps_per_call: trainers without the attribute.
    get = ab_worker._registry_get

    class Old:
        def __init__(self, trainer):
            self.inner = trainer

        def step(self, x, y):
            return self.inner.step(x, y)

        def traces(self):
            return self.inner.traces()

    monkeypatch.setattr(ab_worker, "_registry_get", lambda name: lambda *a: Old(get(name)(*a)))
    old: dict = {}
    assert setup("custom_graph", batch, old)["steps_per_call"] == 1
    result = ab_worker.op_round({"op": "round", "id": "custom_graph", "k": 3}, old, ROOT)
    assert result["seconds"] == result["round_seconds"]
