"""One side's worker process of ``python -m bench ab`` (started by ``bench/ab/sides.py``, not by
hand).

    python /path/to/bench/ab/worker.py SIDE_ROOT

The coordinator starts this file from its own tree, with the interpreter chosen for the side,
and the worker imports the code under test from ``SIDE_ROOT``: the registry
(``implementations.get`` or ``implementations.REGISTRY``) and the tasks
(``bench.tasks.get_task``/``TASKS``, ``initial_weights``). So a BASE revision older than the
A/B check itself still runs. This file therefore imports nothing of the suite's own at module
level, and nothing but the standard library, NumPy and TensorFlow.

Protocol (pyperf's master/worker split): one JSON object per line. The coordinator writes
requests to the worker's stdin; the worker answers each with one line on the pipe that was
its stdout when it started (file descriptor 1 is then pointed at stderr, so a library's stray
``print`` cannot corrupt the protocol). Every answer has ``"ok"``; a failed request answers
``{"ok": false, "error": "...", "traceback": "..."}`` and the worker keeps serving. End of
input (the coordinator exited, however it exited) ends the worker.

Requests:

- ``{"op": "hello", "tasks": [...]}``: versions, device, where the registry was imported from.
  ``tasks`` (optional): ``bench ab --tasks`` values (task files, ``builtin``), loaded with the
  side's ``bench.tasks.user`` and answered as ``tasks``: name -> ``batch_size``,
  ``numerics_rtol``. A side whose code predates user tasks answers with its built-in tasks
  only; a bad task file is an error of one line (no traceback).
- ``{"op": "write_batch", "task", "batch_size", "path"}``: write the fixed batch of a task the
  coordinator cannot load itself (a user task: its data may need TensorFlow), as the
  coordinator writes the built-in tasks' (the first ``batch_size`` training examples, tiled).
- ``{"op": "setup", "id", "impl", "task", "batch": "PATH.npz", "warmup"}``: build the
  trainer from the side's code and the side's seeded initial weights, put the batch (arrays
  ``x``, ``y``, written by the coordinator, the same file for both sides) on the device, time
  the first call alone (``compile_s``), run ``warmup`` steps and report the loss after them
  (the numerics check) and a per-call estimate (``per_step_s``: the coordinator's unit of K).
  A user's model that the implementation cannot run (bench.tasks.task.unsupported_reason)
  answers ``{"unsupported": reason}`` instead.
- ``{"op": "round", "id", "k"}``: K calls, then a host sync, timed here, in the worker;
  ``seconds`` is that time divided by the trainer's steps per call, so the coordinator's
  ``seconds / K`` is per training step. ``retraced`` is how often the step was traced again
  during the round.

Steps per call: a trainer with ``steps_per_call`` N > 1 (read with ``getattr``, default 1, so
older trees without it still run) runs N steps per ``step`` call on N stacked batches; the
worker stacks the coordinator's one batch N times (``x[N, B, ...]``), counts ``warmup`` in
steps (rounded up to whole calls) and reports ``steps_per_call``.
- ``{"op": "drop", "id"}``: release a trainer. ``{"op": "quit"}``: exit.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
import time

import numpy as np


def _protocol():
    """``bench/workers/protocol.py`` of this file's own tree, loaded by its path: the side's
    ``bench`` package (maybe an older layout) must stay the one ``import bench`` finds."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workers", "protocol.py")
    spec = importlib.util.spec_from_file_location("loopbench_worker_protocol", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _serve(root: str, ops: dict | None = None) -> int:
    """Serve the A/B requests (``OPS``) until end of input (``bench/workers/protocol.py``)."""
    return _protocol().serve(root, ops or OPS)


def _side_module(name: str, older: str):
    """A module of the side's code under its name in this layout, or in the older flat one
    (before bench/ had packages), so a BASE from either runs."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return importlib.import_module(older)


def _sync(value) -> float:
    # sync: fetching the loss to the host waits for the step that produced it
    return float(np.asarray(value).ravel()[0])


def _registry_get(name: str):
    import implementations  # lazy: the side's code, on the path once serve() has put it there

    get = getattr(implementations, "get", None)
    if get is not None:
        return get(name)
    registry = getattr(implementations, "REGISTRY", None)
    if registry is None:
        raise ImportError("implementations has neither get() nor REGISTRY")
    if name not in registry:
        raise KeyError(f"unknown implementation {name!r}; valid: {', '.join(registry)}")
    return registry[name]


def op_hello(request: dict, trainers: dict, root: str) -> dict:
    if not os.path.isfile(os.path.join(root, "implementations", "__init__.py")):
        raise ImportError(f"no implementation registry under {root} (implementations/__init__.py)")
    try:
        # lazy: the side's code, on the path once serve() has put it there
        import implementations
        from bench import tasks
    except Exception as e:
        raise ImportError(
            f"no implementation registry under {root} (implementations/, bench/tasks/builtin.py): "
            f"{type(e).__name__}: {e}"
        ) from None
    # lazy: TensorFlow, heavy, once serve() has pointed file descriptor 1 at stderr
    import keras
    import tensorflow as tf

    registry = getattr(implementations, "REGISTRY", None)
    if registry is None and not hasattr(implementations, "get"):
        raise ImportError(f"{root}: implementations has neither get() nor REGISTRY")
    try:
        from tensorflow.python.util import _pywrap_util_port  # lazy: TensorFlow (as above)

        onednn = bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") not in ("0", "false")
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "tasks": _load_tasks(request.get("tasks") or [], tasks),
        "pid": os.getpid(),
        "implementations_file": implementations.__file__,
        "tasks_file": tasks.__file__,
        "implementations": list(registry) if registry is not None else None,
        "versions": {
            "python": platform.python_version(),
            "executable": sys.executable,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "device": "GPU" if gpus else "CPU",
            "gpus": [
                tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in gpus
            ],
            "onednn": onednn,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }


def _load_tasks(specs: list[str], tasks) -> dict | None:
    """The tasks ``specs`` select in this side's code (None without specs: the coordinator's
    built-in tasks, as before --tasks existed)."""
    if not specs:
        return None
    try:
        user_tasks = _side_module("bench.tasks.user", "bench.user_tasks")
    except ImportError:  # a side from before user tasks: its built-in tasks only
        names = list(tasks.TASKS) if "builtin" in specs else []
    else:
        names = user_tasks.select(specs)
    get_task = getattr(tasks, "get_task", None) or tasks.TASKS.__getitem__
    out = {}
    for name in names:
        task = get_task(name)
        tolerance = getattr(task, "equivalence_tolerance", None)
        out[name] = {
            "batch_size": task.batch_size,
            "numerics_rtol": tolerance.early_rtol if tolerance is not None else None,
        }
    return out


def _unsupported(impl: str, task, error: Exception) -> str | None:
    """Why ``impl`` cannot run a user's model at all (XLA without a kernel for one of its ops),
    judged by the side's own code; None for any other error, and where the side predates user
    tasks."""
    try:
        unsupported_reason = _side_module("bench.tasks.task", "bench.user_tasks").unsupported_reason
    except ImportError:
        return None
    return unsupported_reason(impl, task, error)


def op_write_batch(request: dict, trainers: dict, root: str) -> dict:
    from bench import tasks  # lazy: the side's code, on the path once serve() has put it there

    # bench.tasks.load_for_task since bench/ had packages; bench.data's before
    load_for_task = getattr(tasks, "load_for_task", None)
    if load_for_task is None:
        load_for_task = importlib.import_module("bench.data").load_for_task

    get_task = getattr(tasks, "get_task", None) or tasks.TASKS.__getitem__
    data = load_for_task(get_task(request["task"]))
    idx = np.arange(int(request["batch_size"])) % len(data.x_train)
    np.savez(request["path"], x=data.x_train[idx], y=data.y_train[idx])
    return {}


def op_setup(request: dict, trainers: dict, root: str) -> dict:
    import tensorflow as tf  # lazy: TensorFlow, heavy, once serve() has pointed fd 1 at stderr

    from bench import tasks  # lazy: the side's code, on the path once serve() has put it there

    get_task = getattr(tasks, "get_task", None) or tasks.TASKS.__getitem__
    task = get_task(request["task"])
    trainer = _registry_get(request["impl"])(task, tasks.initial_weights(task))
    per_call = int(getattr(trainer, "steps_per_call", 1))  # training steps per step() call
    with np.load(request["batch"]) as batch:
        bx, by = batch["x"], batch["y"]
    if per_call > 1:  # the one batch, N times: x[N, B, ...]
        bx, by = np.stack([bx] * per_call), np.stack([by] * per_call)
    device = "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"
    with tf.device(device):
        x, y = tf.constant(bx), tf.constant(by)

    def step():
        return trainer.step(x, y)

    t0 = time.perf_counter()
    try:
        loss = _sync(step())
    except Exception as e:
        reason = _unsupported(request["impl"], task, e)
        if reason is None:
            raise
        return {"unsupported": reason}  # the implementation cannot run this (user's) model
    compile_s = time.perf_counter() - t0
    for _ in range(-(-int(request.get("warmup", 5)) // per_call)):  # warm-up steps, in whole calls
        value = step()
        loss = _sync(value)
    # A per-call estimate, for the coordinator's choice of K (calls per round).
    n, t0 = 0, time.perf_counter()
    while n < 3 or (time.perf_counter() - t0 < 0.2 and n < 200):
        value = step()
        n += 1
        if n >= 3:
            _sync(value)
    per_step = (time.perf_counter() - t0) / n
    trainers[request["id"]] = {"trainer": trainer, "step": step, "steps_per_call": per_call}
    return {
        "compile_s": compile_s,
        "loss_after_warmup": loss,
        "per_step_s": per_step,  # per call: K counts calls
        "steps_per_call": per_call,
        "traces": trainer.traces(),
    }


def op_round(request: dict, trainers: dict, root: str) -> dict:
    entry = trainers[request["id"]]
    trainer, step, k = entry["trainer"], entry["step"], int(request["k"])
    traces = trainer.traces()
    t0 = time.perf_counter()
    for _ in range(k):
        value = step()
    _sync(value)
    seconds = time.perf_counter() - t0
    # K calls of N steps: the coordinator divides by K, so report the time per N steps.
    return {
        "seconds": seconds / entry["steps_per_call"],
        "round_seconds": seconds,
        "retraced": trainer.traces() - traces,
    }


def op_drop(request: dict, trainers: dict, root: str) -> dict:
    trainers.pop(request["id"], None)
    return {}


OPS = {
    "hello": op_hello,
    "setup": op_setup,
    "round": op_round,
    "drop": op_drop,
    "write_batch": op_write_batch,
    "crash": lambda request, trainers, root: _protocol().op_crash(request, trainers, root),
}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(_serve(os.path.abspath(sys.argv[1])))
