"""The TensorFlow side's handle on the JAX worker (``bench/jax/worker.py``): start it, ask it,
stop it. No TensorFlow and no JAX here: the worker is a ``bench.workers.process.Worker`` running
another script over the same pipe protocol, in its own process group, killed on every exit
path (``Worker.close``; the caller's ``ExitStack`` or fixture teardown runs it).

Used by ``bench/benchmarks/bench_jax.py`` (benchmarks, convergence) and ``tests/test_jax.py``
(equivalence, the worker's crash path).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from bench.workers.process import Side, Worker, jax_env

ROOT = Path(__file__).resolve().parents[2]
JAX_WORKER = Path(__file__).resolve().parent / "worker.py"
SKIP_REASON = "jax is not installed: pip install -e '.[jax]' to run the JAX backend"
HELLO_TIMEOUT_S = 300.0  # importing jax and Keras while TensorFlow runs on both cores
SETUP_TIMEOUT_S = 600.0  # first call (XLA compilation) and warm-up of a CNN on 2 cores
TRAIN_TIMEOUT_S = 3600.0  # the full profile's convergence of the CNN


def jax_available() -> bool:
    return importlib.util.find_spec("jax") is not None


def start(stack: contextlib.ExitStack, index: int = 0) -> tuple[Worker, dict]:
    """A JAX worker for this tree and interpreter, closed (killed) when ``stack`` unwinds.
    Returns it and its answer to ``hello`` (versions, device, ``import_s``)."""
    side = Side("jax", "working tree", "working tree", ROOT, sys.executable)
    env = jax_env()
    worker = Worker(side, index, env, script=JAX_WORKER)
    stack.callback(worker.close)
    hello = worker.request({"op": "hello"}, HELLO_TIMEOUT_S)
    return worker, hello


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def round_timeout(per_call_s: float, calls: int) -> float:
    """How long one round may take before the worker counts as hung."""
    return 120.0 + 20 * per_call_s * calls


def backend_fields(hello: dict) -> dict:
    v = hello["versions"]
    return {
        "backend": "jax",
        "jax": v["jax"],
        "jaxlib": v["jaxlib"],
        "keras": v["keras"],
        "device": f"/{v['device']}:0",
        "device_kind": v["device_kind"],
        "import_s": hello["import_s"],
    }
