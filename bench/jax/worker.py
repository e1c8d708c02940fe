"""The JAX backend's worker process: Keras 3 on JAX, in a process of its own, because Keras fixes
its backend when it is first imported (started by ``bench/jax/client.py``, not by hand).

    python /path/to/bench/jax/worker.py ROOT

The protocol is ``bench/ab/worker.py``'s, served by the suite's worker loop
(``bench/workers/protocol.py``): one JSON
object per line, requests on stdin, one answer line each, ``"ok"`` in every answer, a failed
request answered with its error while the worker keeps serving, end of input ends it. Before
anything imports Keras, ``KERAS_BACKEND`` is set to ``jax`` and TensorFlow is hidden
(``import tensorflow`` fails here), so nothing of TensorFlow shares the process or the cores;
``implementations`` is entered without running its ``__init__`` (which imports TensorFlow):
only ``implementations/jax_backend.py`` and its registry are used.

Requests (``hello``, ``setup``, ``round``, ``drop`` are ``ab_worker``'s, with the same fields):

- ``hello``: versions of Python, jax, jaxlib, Keras, NumPy; backend; device; the registry;
  ``import_s`` (importing jax and Keras: the cold start before any compilation).
- ``setup`` ``{id, impl, task, batch: PATH.npz, warmup, batch_size?, round_seconds?,
  steps_per_call?}``: build the trainer from the seeded initial weights, put the batch on the
  device (with ``batch_size``, the file's first N x B rows as N distinct stacked batches for a
  trainer of N steps per call, as ``harness.fixed_batch``; without it, ``ab_worker``'s way: the
  one batch stacked N times), time the first call alone (``compile_s``), warm up, and, with
  ``round_seconds``, choose K calls per round as ``harness.choose_steps_per_round`` does and
  run one untimed round.
- ``round`` ``{id, k}``: K calls, then a host sync, timed here; ``seconds`` per K training
  steps (round time / N), ``steal`` (fraction of CPU time the hypervisor took during it).
- ``fit`` ``{id, k}``: ``jax_fit*`` only, ``harness.measure_fit``'s figures from ``fit()`` calls
  on K and 2K copies of the batch.
- ``info`` ``{id}``: what the trainer resolved to, its trace count, peak memory (``peak_memory``:
  the GPU allocator's peak since the worker started, or the process's resident high-water mark).
- ``step_losses`` ``{impl, task, batches: PATH.npz (x[S, B, ...], y[S, B]), weights_out,
  task_overrides?, steps_per_call?, matmul_precision?}``: the per-step losses; final weights
  into ``weights_out``; ``matmul_precision`` (``"float32"``) overrides JAX's default (TF32 on
  an Ampere or later GPU) while the trainer is built and run.
- ``train`` ``{impl, task, seed, epochs, n_train}``: ``bench.convergence.train``'s loop on the
  real data: curves, training seconds, time to accuracy (``w``, ``b`` for linreg).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np

from bench.host import cpu_steal_counters, steal_fraction
from bench.tasks import get_task, initial_weights, load_for_task
from bench.tasks.data import epoch_order
from bench.workers import protocol

os.environ["KERAS_BACKEND"] = "jax"  # before Keras is imported (nothing above imports it)


def _sync(value) -> float:
    # sync: fetching the loss to the host waits for the step that produced it (and, since
    # each step takes the state the one before returned, for every step before it)
    return float(np.asarray(value).ravel()[-1])


def _registry():
    from implementations import jax_backend  # lazy: the package main() makes, without TensorFlow

    return jax_backend


def _task(request: dict):
    task = get_task(request["task"])
    overrides = request.get("task_overrides") or {}
    return dataclasses.replace(task, **overrides) if overrides else task


def _single_input(task) -> None:
    """The JAX backend trains tasks of one input array: one with several (``input_shape`` a
    dict or list of shapes) is refused, in one line. Read here, not with
    ``bench.tasks.task.multi_input``: a side's older tree has no such function."""
    shape = task.input_shape
    if isinstance(shape, dict) or (
        isinstance(shape, tuple | list)
        and len(shape) > 0
        and all(isinstance(d, tuple | list) for d in shape)
    ):
        raise NotImplementedError(
            f"the JAX backend trains single-input tasks; {task.name} has several inputs"
        )


def _build(request: dict, task, seed: int | None = None):
    _single_input(task)
    jb = _registry()
    if request["impl"] not in jb.REGISTRY:
        raise KeyError(
            f"unknown JAX implementation {request['impl']!r}; valid: {', '.join(jb.REGISTRY)}"
        )
    factory = jb.REGISTRY[request["impl"]]
    weights = initial_weights(task, seed)
    if request.get("steps_per_call") and request["impl"] in jb.MULTI_STEP:
        return factory(task, weights, steps_per_call=int(request["steps_per_call"]))
    return factory(task, weights)


def _peak_memory_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory(device) -> tuple[float | None, str]:
    """(MiB, kind): on an accelerator its allocator's peak (``memory_stats()``), which JAX
    cannot reset, so it is the worker's peak since it started (``"jax_device_peak"``); on a CPU,
    or where the device keeps no statistics, the process's resident high-water mark."""
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            return stats["peak_bytes_in_use"] / 2**20, "jax_device_peak"
    return _peak_memory_mb(), "cpu_rss_hwm"


def op_hello(request: dict, trainers: dict, root: str) -> dict:
    t0 = time.perf_counter()
    import jax  # lazy: after main() hides TensorFlow; op_hello times its import
    import jaxlib  # lazy: as jax
    import keras  # lazy: as jax (and after KERAS_BACKEND)

    import_s = time.perf_counter() - t0
    jb = _registry()
    device = jax.devices()[0]
    return {
        "pid": os.getpid(),
        "implementations_file": jb.__file__,
        "implementations": list(jb.REGISTRY),
        "import_s": import_s,
        "tensorflow_imported": sys.modules.get("tensorflow") is not None,
        "versions": {
            "python": platform.python_version(),
            "executable": sys.executable,
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "backend": keras.backend.backend(),
            "device": device.platform.upper(),
            "device_kind": device.device_kind,
            "devices": [str(d) for d in jax.devices()],
        },
    }


def _device_batch(request: dict, n: int):
    import jax.numpy as jnp  # lazy: after main() hides TensorFlow; op_hello times its import

    with np.load(request["batch"]) as batch:
        bx, by = batch["x"], batch["y"]
    b = request.get("batch_size")
    if b and len(bx) >= n * b:  # N distinct batches (harness.fixed_batch)
        bx, by = bx[: n * b], by[: n * b]
        if n > 1:
            bx, by = bx.reshape(n, b, *bx.shape[1:]), by.reshape(n, b, *by.shape[1:])
    elif n > 1:  # ab_worker's way: the one batch, N times
        bx, by = np.stack([bx] * n), np.stack([by] * n)
    x, y = jnp.asarray(bx), jnp.asarray(by)
    x.block_until_ready()
    y.block_until_ready()
    return x, y


def op_setup(request: dict, trainers: dict, root: str) -> dict:
    with contextlib.suppress(OSError):  # reset the resident high-water mark (Linux)
        Path("/proc/self/clear_refs").write_text("5")
    task = _task(request)
    try:
        _single_input(task)
    except NotImplementedError as e:  # bench ab skips it with the reason
        return {"unsupported": str(e)}
    trainer = _build(request, task)
    n = int(getattr(trainer, "steps_per_call", 1))
    x, y = _device_batch(request, n)

    def step():
        return trainer.step(x, y)

    t0 = time.perf_counter()
    loss = _sync(step())  # tracing and XLA compilation
    compile_s = time.perf_counter() - t0
    for _ in range(-(-int(request.get("warmup", 5)) // n)):  # warm-up steps, in whole calls
        loss = _sync(step())
    # A per-call estimate (harness.choose_steps_per_round): at least 3 calls, a quarter round.
    round_s = float(request.get("round_seconds") or 0.2)
    count, t0 = 0, time.perf_counter()
    while True:
        value = step()
        count += 1
        if count >= 3:
            _sync(value)
            if time.perf_counter() - t0 > round_s / 4 or count >= 200:
                break
    per_call = (time.perf_counter() - t0) / count
    k = max(1, min(1000, math.ceil(round_s / per_call)))
    entry = {"trainer": trainer, "step": step, "steps_per_call": n, "x": x, "y": y}
    trainers[request["id"]] = entry
    if request.get("round_seconds"):
        _round(entry, k)  # one untimed round at the round's own length
    return {
        "compile_s": compile_s,
        "loss_after_warmup": loss,
        "per_step_s": per_call,  # per call: K counts calls
        "steps_per_call": n,
        "calls_per_round": k,
        "traces": trainer.traces(),
    }


def _round(entry: dict, k: int) -> float:
    step = entry["step"]
    t0 = time.perf_counter()
    for _ in range(k):
        value = step()
    _sync(value)
    return time.perf_counter() - t0


def op_round(request: dict, trainers: dict, root: str) -> dict:
    entry = trainers[request["id"]]
    traces = entry["trainer"].traces()
    start = cpu_steal_counters()
    seconds = _round(entry, int(request["k"]))
    steal = steal_fraction(start, cpu_steal_counters())
    return {
        "seconds": seconds / entry["steps_per_call"],  # the coordinator divides by K
        "round_seconds": seconds,
        "steal": steal,
        "retraced": entry["trainer"].traces() - traces,
    }


def op_fit(request: dict, trainers: dict, root: str) -> dict:
    """``harness.measure_fit`` on JAX: ``fit()`` over K and 2K copies of the batch (x N for a
    trainer of N steps per call), best of three each."""
    entry = trainers[request["id"]]
    trainer, k, n = entry["trainer"], int(request["k"]), entry["steps_per_call"]
    if not hasattr(trainer, "fit_seconds"):
        return {"fit_overhead_s": None, "fit_s_per_step": None}
    x, y = np.asarray(entry["x"]), np.asarray(entry["y"])
    if n > 1:
        x, y = x.reshape(-1, *x.shape[2:]), y.reshape(-1, *y.shape[2:])
    b = len(x) // n

    def fit(calls: int) -> float:
        return trainer.fit_seconds(np.concatenate([x] * calls), np.concatenate([y] * calls), b)

    fit(2)  # the first fit() builds its iterator and callbacks: not what is measured
    once = min(fit(k) for _ in range(3))
    twice = min(fit(2 * k) for _ in range(3))
    total = k * n
    per_step = max(twice - once, 0.0) / total
    return {"fit_overhead_s": max(0.0, once - total * per_step), "fit_s_per_step": per_step}


def op_info(request: dict, trainers: dict, root: str) -> dict:
    import jax  # lazy: after main() hides TensorFlow; op_hello times its import

    trainer = trainers[request["id"]]["trainer"]
    peak_mb, kind = peak_memory(jax.devices()[0])
    return {
        "resolved": trainer.resolved(),
        "traces": trainer.traces(),
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": kind,
    }


def op_step_losses(request: dict, trainers: dict, root: str) -> dict:
    import jax  # lazy: after main() hides TensorFlow; op_hello times its import

    with np.load(request["batches"]) as f:
        xs, ys = f["x"], f["y"]
    # "float32": every matmul and convolution in full float32 (on a GPU JAX's default may be
    # TF32), traced -- and so compiled -- inside the setting; None: JAX's default.
    precision = request.get("matmul_precision")
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
        trainer = _build(request, _task(request))
        losses = trainer.step_losses(list(zip(xs, ys)))
    weights = trainer.get_weights()
    np.savez(request["weights_out"], *weights)
    return {"losses": [float(v) for v in losses], "traces": trainer.traces()}


_data_cache: dict = {}


def op_train(request: dict, trainers: dict, root: str) -> dict:
    task, seed, epochs = _task(request), int(request["seed"]), int(request["epochs"])
    key = (task.name, request.get("n_train"))
    if key not in _data_cache:
        _data_cache[key] = load_for_task(task, n_train=request.get("n_train"), quiet=True)
    data = _data_cache[key]
    trainer = _build(request, task, seed)
    curves: dict = {"epoch": [], "train_loss": [], "test_loss": [], "test_accuracy": []}
    clock, tta, b = 0.0, None, task.batch_size
    usable = len(data.x_train) // b * b  # the ragged last batch is dropped, as epoch_dataset does
    for epoch in range(epochs):
        order = epoch_order(len(data.x_train), seed, epoch)[:usable]
        x, y = data.x_train[order], data.y_train[order]
        t0 = time.perf_counter()
        train_loss = trainer.fit_epoch(x, y)  # a host float: the device is done
        clock += time.perf_counter() - t0
        out = trainer.predict(data.x_test).astype(np.float64)
        if task.kind == "regression":
            test_loss, accuracy = float(np.mean((out - data.y_test) ** 2)), None
        else:
            shifted = out - out.max(axis=1, keepdims=True)
            logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            test_loss = float(-np.mean(logp[np.arange(len(out)), data.y_test]))
            accuracy = float(np.mean(out.argmax(axis=1) == data.y_test))
        for name, value in zip(curves, (epoch + 1, train_loss, test_loss, accuracy)):
            curves[name].append(value)
        if tta is None and task.tta_target is not None and accuracy >= task.tta_target:
            tta = clock
        print(
            f"loopbench: {request['impl']}/{task.name} seed {seed} epoch {epoch + 1}/{epochs}: "
            f"test loss {test_loss:.4f} ({clock:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    result = {
        "curves": curves,
        "train_seconds": clock,
        "time_to_accuracy_s": tta,
        "dataset": data.name,
        "n_train": len(data.x_train),
    }
    if task.true_params is not None:  # bench.convergence.recovered_params, without TensorFlow
        flat = np.concatenate([np.ravel(w) for w in trainer.get_weights()])
        result["params"] = [float(v) for v in flat]
    return result


def op_drop(request: dict, trainers: dict, root: str) -> dict:
    trainers.pop(request["id"], None)
    return {}


def _ops(protocol: types.ModuleType) -> dict:
    return {
        "hello": op_hello,
        "setup": op_setup,
        "round": op_round,
        "fit": op_fit,
        "info": op_info,
        "step_losses": op_step_losses,
        "train": op_train,
        "drop": op_drop,
        "crash": protocol.op_crash,
    }


def main(root: str) -> int:
    # TensorFlow hidden: "import tensorflow" raises ImportError, which Keras's JAX backend
    # treats as "not installed" (it only uses tf.data when handed a tf.data.Dataset).
    sys.modules["tensorflow"] = None
    # ``implementations`` without its __init__ (which imports TensorFlow): a bare package
    # whose submodules are found in the tree, so ``implementations.jax_backend`` imports alone.
    package = types.ModuleType("implementations")
    package.__path__ = [os.path.join(root, "implementations")]
    sys.modules["implementations"] = package
    return protocol.serve(root, _ops(protocol))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(os.path.abspath(sys.argv[1])))
