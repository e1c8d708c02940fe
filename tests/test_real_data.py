"""The real Fashion-MNIST files, where installed (Debian's dataset-fashion-mnist).

CI installs them and sets LOOPBENCH_REQUIRE_REAL_DATA=1, so there a missing install fails
instead of silently testing the fallback."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.tasks import data

REQUIRED = os.environ.get("LOOPBENCH_REQUIRE_REAL_DATA") == "1"


def test_real_fashion_mnist_loads_and_is_sane():
    ds = data.load_idx_dataset("fashion-mnist")
    if ds is None:
        if REQUIRED:
            pytest.fail("LOOPBENCH_REQUIRE_REAL_DATA=1 but no Fashion-MNIST IDX files were found")
        pytest.skip("Fashion-MNIST IDX files not installed (apt-get install dataset-fashion-mnist)")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert 60 < ds.x_train.mean() < 85  # Fashion-MNIST's mean pixel is about 72.9
