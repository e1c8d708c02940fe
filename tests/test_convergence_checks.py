"""``bench.convergence.failures``: the one verdict every convergence benchmark (TensorFlow,
mixed precision, JAX) gives on its result."""

from __future__ import annotations

from bench.convergence import failures
from bench.tasks import TASKS


def result(**fields) -> dict:
    return {"final_accuracy": 0.88, "parity_ok": True, "anchor_ok": True, **fields}


def test_a_passing_result_has_no_failures():
    assert failures("custom_graph/mlp", TASKS["mlp"], result(), "keras_fit's") == []
    assert failures("x/mlp", TASKS["mlp"], result(parity_ok=None, anchor_ok=None), "y") == []


def test_each_failure_is_named():
    bad = result(parity_ok=False, parity_delta_pp=-1.3, anchor_ok=False)
    got = failures("keras_fit/mlp in mixed_bfloat16", TASKS["mlp"], bad, "its float32 run's")
    assert got == [
        "keras_fit/mlp in mixed_bfloat16: mean accuracy 0.8800 is -1.30 pp from its float32 "
        "run's (allowed +-1.0)",
        "keras_fit/mlp in mixed_bfloat16: accuracy 0.8800 below the external anchor 0.87 on "
        "full fashion-mnist",
    ]


def test_linreg_parameters_off_the_truth_fail():
    task = TASKS["linreg"]
    near = result(params=[3.01, 2.0], param_error=0.01)
    far = result(params=[3.2, 2.0], param_error=0.2)
    assert failures("custom_xla/linreg", task, near, "keras_fit's") == []
    assert failures("custom_xla/linreg", task, far, "keras_fit's") == [
        "custom_xla/linreg recovered parameters [3.2000, 2.0000]; truth [3, 2] (tolerance 0.05)"
    ]
