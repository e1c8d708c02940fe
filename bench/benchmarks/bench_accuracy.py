"""Convergence parity and time to accuracy: every implementation trains every task on the
real data and must reach keras_fit's accuracy (within 1 percentage point), plus external
anchors on full Fashion-MNIST and a scikit-learn reference.

Run: ``pytest --benchmark-only -k convergence`` (quick: one seed, the first 10,000
images, a few epochs) or ``--profile full`` (3 seeds, the full training split, each task's
own epochs; 46 minutes on a 2-core CPU, most of it the CNN). Fields: docs/results-schema.md.
"""

from __future__ import annotations

import sys

import pytest
import tensorflow as tf

import implementations
from bench import convergence
from bench.convergence import (
    CONVERGENCE,
    PARITY_PP,
    anchor,
    failures,
    sklearn_reference,
    summarize,
    train,
)
from bench.host import BF16_EMULATED, cpu_has_bf16
from bench.tasks import TASKS, get_task
from bench.tasks.task import skip_unsupported
from bench.tasks.user import selected_tasks
from bench.timing.panel import PANELS, register_entry
from bench.timing.plan import RUN_GUESS_S, Entry

BASELINE = "keras_fit"
# Mean accuracies per task, filled as the baseline runs (it is parametrized first).
BASELINE_ACCURACY: dict[str, float] = {}
# Mean float32 accuracies per (implementation, task): the twins of the mixed-precision runs.
_float32_accuracy: dict[tuple[str, str], float] = {}


@pytest.fixture(autouse=True)
def _show_progress(request, monkeypatch):
    """One line per epoch on the terminal while pytest captures everything else: long
    runs show where they are without flooding CI logs."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def show(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\nloopbench: {message}", file=sys.stderr, end="", flush=True)

    monkeypatch.setattr(convergence, "progress", show)


def _setup(profile, task_data, task_name):
    """(profile, task, data, epochs). The profile names the subset and epochs for the tasks it
    was tuned on (the built-ins); any other task trains on all its data for its own epochs,
    except in the smoke profile (its subset, one epoch)."""
    conv = CONVERGENCE[profile.name]
    task = get_task(task_name)
    if not _tuned(conv, task_name):
        smoke = profile.name == "smoke"
        data = task_data(task, n_train=conv.n_train if smoke else None)
        return conv, task, data, 1 if smoke else task.epochs
    # The synthetic regression set is small already; subsets apply to the image tasks.
    data = task_data(task, n_train=conv.n_train if task.kind == "classification" else None)
    epochs = conv.epochs[task_name] if conv.epochs else task.epochs
    return conv, task, data, epochs


def _tuned(conv, task_name: str) -> bool:
    """Whether the convergence profile was tuned on this task: the built-in ones."""
    return task_name in TASKS


IMPLS = [BASELINE] + [name for name in implementations.REGISTRY if name != BASELINE]


def convergence_skip(profile, impl: str, task_name: str) -> str | None:
    """Why ``test_convergence`` skips ``impl`` on ``task_name`` in ``profile``, or None."""
    conv = CONVERGENCE[profile.name]
    if impl in implementations.MULTI_STEP and not conv.multi_step:
        return (
            f"{impl}: step for step the same training as {implementations.MULTI_STEP[impl]} "
            f"(tests/test_equivalence.py); trained in --profile full"
        )
    if impl in implementations.MICRO_BATCH and task_name == "cnn":
        return (
            f"{impl}: step for step the same training as {implementations.MICRO_BATCH[impl]} "
            "(tests/test_equivalence.py), which trains the CNN here; XLA's loop of convolutions "
            "ran it at about 140 ms per step on a CPU (docs/tasks.md), minutes per seed to repeat "
            "it"
        )
    return None


def plan_start(key: str) -> None:
    """``key``'s turn in the run's plan (bench/timing/plan.py): skipped if it says so."""
    why = PANELS.plan.start(key) if PANELS.plan is not None else None
    if why:
        pytest.skip(why)


def convergence_entry(name: str, params: dict, profile) -> Entry | None:
    if convergence_skip(profile, params["impl"], params["task_name"]):
        return None
    return Entry(name, "convergence", RUN_GUESS_S)


def precision_entry(name: str, params: dict, profile) -> Entry | None:
    if precision_skip(profile, params["impl"], params["task_name"], params["precision"]):
        return None
    # Its float32 twin may be trained with it: twice a run.
    return Entry(name, "convergence", 2 * RUN_GUESS_S, optional=True, priority=1)


@pytest.mark.parametrize("task_name", selected_tasks())
@pytest.mark.parametrize("impl", IMPLS)
def test_convergence(benchmark, request, impl, task_name, profile, task_data):
    why = convergence_skip(profile, impl, task_name)
    if why:
        pytest.skip(why)
    conv, task, data, epochs = _setup(profile, task_data, task_name)
    plan_start(request.node.name)  # a required entry: it runs
    benchmark.group = f"convergence-{task_name}"

    def train_all_seeds():
        return [train(impl, task, data, seed, epochs) for seed in conv.seeds]

    # One round: the wall time of training every seed (evaluation included) is the stat.
    with skip_unsupported(impl, task):
        runs = benchmark.pedantic(train_all_seeds, rounds=1, iterations=1)
    info = {
        "implementation": impl,
        "precision": "float32",
        **summarize(task, data, runs, conv.seeds, epochs),
    }
    full = conv.full_training or (not _tuned(conv, task_name) and profile.name != "smoke")
    info.update(anchor(task, info, full_training=full))
    info.update(parity_baseline=BASELINE, parity_delta_pp=None, parity_ok=None)
    if task.kind == "classification":
        _float32_accuracy[(impl, task_name)] = info["final_accuracy"]
        if impl == BASELINE:
            BASELINE_ACCURACY[task_name] = info["final_accuracy"]
        delta = _parity_delta_pp(task_name, info["final_accuracy"])
        if delta is not None:
            info.update(parity_delta_pp=delta, parity_ok=_parity_ok(profile, delta))
    benchmark.extra_info.update(info)
    problems = failures(f"{impl}/{task_name}", task, info, f"{BASELINE}'s")
    if problems:
        pytest.fail("; ".join(problems))


PRECISION_IMPLS = ("keras_fit", "custom_graph", "custom_xla")
PRECISION = [
    pytest.param(impl, task, precision, id=f"{impl}-{task}-{precision}")
    for precision in ("mixed_bfloat16", "mixed_float16")
    for task in [t for t in ("mlp", "cnn") if t in selected_tasks()]
    + [t for t in selected_tasks() if t not in TASKS]
    for impl in PRECISION_IMPLS
]


@pytest.mark.parametrize("impl, task_name, precision", PRECISION)
def test_convergence_precision(benchmark, request, impl, task_name, precision, profile, task_data):
    """Mixed precision trains to the accuracy of the same implementation in float32, within
    PARITY_PP (1 point): the bound every implementation is held to against keras_fit, and
    wider than 16-bit rounding moves it (tests/test_precision.py), narrower than a real
    training difference. The float32 twin is the one test_convergence trained in this
    session; where it was deselected, it is trained here first."""
    why = precision_skip(profile, impl, task_name, precision)
    if why:
        pytest.skip(why)
    conv, task, data, epochs = _setup(profile, task_data, task_name)
    plan_start(request.node.name)
    benchmark.group = f"convergence-{task_name}"
    if (impl, task_name) not in _float32_accuracy:
        twin = [train(impl, task, data, seed, epochs) for seed in conv.seeds]
        _float32_accuracy[(impl, task_name)] = summarize(task, data, twin, conv.seeds, epochs)[
            "final_accuracy"
        ]

    def train_all_seeds():
        return [train(impl, task, data, seed, epochs, precision) for seed in conv.seeds]

    with skip_unsupported(impl, task):
        runs = benchmark.pedantic(train_all_seeds, rounds=1, iterations=1)
    info = {
        "implementation": impl,
        "precision": precision,
        **summarize(task, data, runs, conv.seeds, epochs),
    }
    info.update(anchor(task, info, full_training=conv.full_training))
    delta = 100 * (info["final_accuracy"] - _float32_accuracy[(impl, task_name)])
    info.update(
        parity_baseline=f"{impl} (float32)",
        parity_delta_pp=delta,
        parity_ok=_parity_ok(profile, delta),
    )
    benchmark.extra_info.update(info)
    problems = failures(f"{impl}/{task_name} in {precision}", task, info, "its float32 run's")
    if problems:
        pytest.fail("; ".join(problems))


def precision_skip(profile, impl: str, task_name: str, precision: str) -> str | None:
    """Why ``test_convergence_precision`` skips this run in ``profile``, or None."""
    conv, task = CONVERGENCE[profile.name], get_task(task_name)
    if not _tuned(conv, task_name):  # another task: every mixed-precision run, in full
        if profile.name != "full":
            return "a user task's mixed-precision runs are in --profile full"
        if task.kind != "classification":
            return "convergence parity compares accuracies: a classification task's"
        if precision == "mixed_float16" and not _gpu():
            return "mixed_float16 is meant for GPUs: a CPU may lack its kernels (run bf16)"
    elif (impl, task_name, precision) not in conv.precision:
        return f"not in the {profile.name} profile's mixed-precision runs (--profile full)"
    if precision == "mixed_float16" and task_name == "cnn" and not _gpu():
        return (
            "mixed_float16 is meant for GPUs: this CPU has no float16 convolution kernels "
            "(10-20x slower than float32: an hour of training per implementation)"
        )
    # the CNN's bf16 convergence took 74 s of a Zen 3's quick run
    bf16_cpu = precision == "mixed_bfloat16" and not _gpu() and not cpu_has_bf16()
    if bf16_cpu and profile.name != "full":
        return BF16_EMULATED
    return None


def _gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


def _parity_ok(profile, delta_pp: float) -> bool | None:
    """Within PARITY_PP of the reference; not judged (None) in the smoke profile, whose one
    epoch on a subset is no training to compare: two runs of a model with dropout, one under
    XLA (which draws other masks), ended 2.7 points apart there (examples/convnet_dropout.py,
    2026-12-01) and agree to the step elsewhere (tests/test_equivalence.py)."""
    return None if profile.name == "smoke" else abs(delta_pp) <= PARITY_PP


def _parity_delta_pp(task_name: str, accuracy: float) -> float | None:
    """Accuracy minus the baseline implementation's on this task, in percentage points; None
    until the baseline has run."""
    if task_name not in BASELINE_ACCURACY:
        return None
    return 100 * (accuracy - BASELINE_ACCURACY[task_name])


@pytest.mark.skipif("mlp" not in selected_tasks(), reason="the MLP task is not selected")
def test_convergence_sklearn_reference(benchmark, profile, task_data):
    conv, task, data, epochs = _setup(profile, task_data, "mlp")
    benchmark.group = "convergence-mlp"
    info = benchmark.pedantic(
        sklearn_reference, args=(task, data, conv.seeds, epochs), rounds=1, iterations=1
    )
    info["implementation"] = "sklearn_mlp"
    info.update(anchor(task, info, full_training=conv.full_training))
    delta = _parity_delta_pp(task.name, info["final_accuracy"])
    if delta is not None:
        info.update(parity_baseline=BASELINE, parity_delta_pp=delta, parity_ok=None)
    benchmark.extra_info.update(info)


register_entry("test_convergence", convergence_entry)
register_entry("test_convergence_precision", precision_entry)
