"""The parent side of a distributed run: which (strategy, implementation, replicas) can run on
this machine, and the worker processes that measure them (``python -m bench.distributed.worker``,
``bench/distributed/worker.py``), started, waited for and killed on every way out. No
TensorFlow here: the pytest process plans and launches cheaply. What runs inside a worker is
``bench/distributed/loop.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.tfimport import shown
from bench.workers.process import kill_group

STRATEGIES = ("mirrored", "multiworker")
IMPLEMENTATIONS = ("keras_fit", "keras_fit_xla", "custom_graph", "custom_xla")
ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"  # multi-worker runs started by this suite never leave the host
ENV_WORKER_GPU = "LOOPBENCH_WORKER_GPU"

XLA_LOGICAL_CPU_REASON = (
    "XLA (jit_compile=True) on a MirroredStrategy over logical CPU devices fails in "
    "TensorFlow itself: XLA's CPU backend has one device, so the compiled step on replica 0 "
    "reads replica 1's variables across devices and TensorFlow raises 'InvalidArgumentError: "
    "Trying to access resource ... located in device CPU:1 from device CPU:0' (see "
    "https://www.tensorflow.org/xla/known_issues#tfvariable_on_a_different_device); "
    "on a multi-GPU host each replica is its own GPU (not verified here: no GPU)"
)


XLA_CPU_COLLECTIVES_REASON = (
    "XLA (jit_compile=True) with MultiWorkerMirroredStrategy across CPU-only workers fails in "
    "TensorFlow itself: 'UnimplementedError: Collectives are not yet implemented for CPU "
    "devices when compiling with XLA' (the gradient all-reduce is inside the compiled step), "
    "and the worker then aborts; GPU workers are another matter (not verified here: no GPU)"
)


XLA_MULTI_GPU_REASON = (
    "XLA (jit_compile=True) under MirroredStrategy on several GPUs: not known to run -- it "
    "fails over logical CPU devices in TensorFlow itself, and custom_xla compiles strategy.run "
    "with its cross-replica all-reduce, a step spanning every replica's GPU, which XLA does not "
    "compile (https://www.tensorflow.org/xla/known_issues); tests/test_distributed_integration.py "
    "(marker gpu) records what TensorFlow says on a host with 2 or more GPUs"
)


KERAS_MULTI_WORKER_REASON = (
    "Keras 3's training step fails under MultiWorkerMirroredStrategy with more than one "
    "worker, in Keras itself: its train function hard-codes reduction='auto', i.e. "
    "strategy.reduce('MEAN', loss, axis=0) on a scalar ('ValueError: Invalid reduction "
    "dimension 0 for input with 0 dimensions', tensorflow/tensorflow#72388), and fit() fails "
    "earlier still ('Attempt to convert a value (PerReplica...) to a Tensor'); the custom "
    "loop runs"
)


def unsupported_reason(
    strategy: str, impl: str, replicas: int, gpus: int, loopback: bool = True
) -> str | None:
    """Why this combination cannot run on a machine with ``gpus`` GPUs, or None if it can.
    ``multiworker``: ``replicas`` workers, all on this host when ``loopback`` (``run_workers``'s
    clusters: one GPU each), else one per host (started by hand), where this host's GPUs do not
    limit their number."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown implementation {impl!r}; valid: {', '.join(IMPLEMENTATIONS)}")
    xla = impl.endswith("xla") and replicas > 1
    if strategy == "multiworker":
        if replicas > 1 and impl.startswith("keras_fit"):
            return KERAS_MULTI_WORKER_REASON
        if loopback and gpus and replicas > gpus:
            # NCCL refuses two ranks on one GPU, and they would share its memory and time.
            return f"{replicas} workers on one host need {replicas} GPUs; this host has {gpus}"
        if xla and not gpus:
            return XLA_CPU_COLLECTIVES_REASON
        return None
    if gpus and replicas > gpus:
        return f"{replicas} replicas need {replicas} GPUs; this host has {gpus}"
    if xla:
        return XLA_MULTI_GPU_REASON if gpus else XLA_LOGICAL_CPU_REASON
    return None


def free_port() -> int:
    """A TCP port on the loopback address that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def tf_config(ports: Sequence[int], index: int) -> str:
    """``TF_CONFIG`` for worker ``index`` of a cluster of loopback workers (worker 0 is the
    chief: MultiWorkerMirroredStrategy's default)."""
    return json.dumps(
        {
            "cluster": {"worker": [f"{LOOPBACK}:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


@dataclass
class WorkerResult:
    index: int
    returncode: int  # negative: killed by that signal (timeout, or a peer failed)
    stdout: str
    stderr: str
    output: dict | None = field(default=None)  # the JSON on stdout's last line


class WorkerError(RuntimeError):
    pass


def run_workers(
    args: Sequence[str], workers: int | None, timeout: float, env: dict | None = None
) -> list[WorkerResult]:
    """Run ``python -m bench.distributed.worker ARGS``: one process (``workers=None``, no
    ``TF_CONFIG``), or ``workers`` processes forming a loopback MultiWorkerMirroredStrategy
    cluster. Waits at most ``timeout`` seconds in all; every process is killed on the way
    out, whatever happened. Raises ``WorkerError`` (with the workers' stderr) if any failed."""
    envs = _worker_envs(env, workers)
    procs: list[subprocess.Popen] = []
    with contextlib.ExitStack() as stack:
        # Files, not pipes: a worker blocked on a full stderr pipe while its peer waits for
        # it in a collective would deadlock until the timeout.
        files = [
            (
                stack.enter_context(tempfile.TemporaryFile("w+")),
                stack.enter_context(tempfile.TemporaryFile("w+")),
            )
            for _ in envs
        ]
        try:
            for worker_env, (out, err) in zip(envs, files, strict=True):
                procs.append(_start(args, worker_env, out, err))
            timed_out = _wait(procs, timeout)
        finally:
            for proc in procs:
                kill_group(proc)
        outs = [[_read(f) for f in pair] for pair in files]
    results = [
        _result(i, proc, out, err)
        for i, (proc, (out, err)) in enumerate(zip(procs, outs, strict=True))
    ]
    if timed_out or any(r.returncode != 0 or r.output is None for r in results):
        detail = "\n".join(
            f"--- worker {r.index}: exit {r.returncode}\n{shown(r.stderr)[-3000:]}" for r in results
        )
        what = f"timed out after {timeout:.0f}s" if timed_out else "failed"
        raise WorkerError(f"bench.distributed.worker {' '.join(args)} {what}\n{detail}")
    return results


def _worker_envs(env: dict | None, workers: int | None) -> list[dict]:
    """Each worker's environment: ``env`` (default: this process's) with this tree on the path;
    for a cluster, its ``TF_CONFIG`` (loopback ports free a moment ago) and its GPU."""
    base_env = dict(os.environ if env is None else env)
    base_env.pop("TF_CONFIG", None)
    base_env.pop(ENV_WORKER_GPU, None)
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    base_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), base_env.get("PYTHONPATH", "")) if p
    )
    ports = [free_port() for _ in range(workers or 0)]
    envs = []
    for i in range(workers or 1):
        worker_env = dict(base_env)
        if workers:
            worker_env["TF_CONFIG"] = tf_config(ports, i)
            worker_env[ENV_WORKER_GPU] = str(i)
        envs.append(worker_env)
    return envs


def _start(args: Sequence[str], env: dict, out, err) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.distributed.worker", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        start_new_session=True,  # its own process group, killed as one
    )


def _wait(procs: list[subprocess.Popen], timeout: float) -> bool:
    """Wait until every process has ended, or one has failed (its peers would wait in a
    collective until the timeout). True if ``timeout`` ran out first."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        if any(p.poll() not in (None, 0) for p in procs):
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)
    return False


def _read(f) -> str:
    f.seek(0)
    return f.read()


def _result(index: int, proc: subprocess.Popen, out: str, err: str) -> WorkerResult:
    lines = out.strip().splitlines()
    try:
        output = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        output = None
    return WorkerResult(index, proc.returncode, out, err, output)


def run_bench(
    strategy: str,
    task: str,
    replicas: Sequence[int],
    impls: Sequence[str],
    *,
    rounds: int,
    warmup_steps: int,
    round_seconds: float,
    per_replica_batch: int = 0,
    timeout: float | None = None,
) -> dict:
    """Time ``impls`` in ``bench.distributed.worker`` subprocesses; worker 0's JSON.
    ``mirrored``: one process, one run per replica count. ``multiworker``: ``replicas[0]``
    loopback workers."""
    if strategy == "multiworker" and len(replicas) != 1:
        raise ValueError("multiworker: one cluster size per call")
    args = ["bench", "--strategy", strategy, "--task", task]
    args += ["--rounds", str(rounds), "--warmup", str(warmup_steps)]
    args += ["--round-seconds", str(round_seconds), "--per-replica-batch", str(per_replica_batch)]
    for impl in impls:
        args += ["--impl", impl]
    if strategy == "mirrored":
        for r in replicas:
            args += ["--replicas", str(r)]
    runs = len(replicas) * len(impls)
    if timeout is None:  # imports and compilation, then the timed rounds, with a wide margin
        timeout = 120 + runs * (60 + 4 * (rounds + 2) * round_seconds)
    workers = replicas[0] if strategy == "multiworker" else None
    return run_workers(args, workers, timeout)[0].output
