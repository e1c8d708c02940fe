"""The A/B worker (``bench/ab/worker.py``) times a one-step trainer, and an older tree's
trainers without ``steps_per_call``, per call as before. Its requests are called in this
process (the protocol and process handling: tests/test_ab_integration.py; trainers that run
several steps per call: tests/test_ab_worker_integration.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.ab import worker as ab_worker

ROOT = str(Path(__file__).resolve().parent.parent)


def linreg_batch(folder: Path) -> str:
    path = folder / "b.npz"
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(8, 1)
    np.savez(path, x=x, y=3 * x + 2)
    return str(path)


@pytest.fixture
def batch(tmp_path):
    return linreg_batch(tmp_path)


def setup(impl: str, batch: str, trainers: dict, warmup: int = 5) -> dict:
    request = {"op": "setup", "id": impl, "impl": impl, "task": "linreg", "batch": batch}
    return ab_worker.op_setup({**request, "warmup": warmup}, trainers, ROOT)


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
