"""The suite's implementations under a ``tf.distribute`` strategy, and how they are timed.

Seed: TensorFlow's "Custom training with tf.distribute.Strategy" and "Multi-worker training
with Keras" tutorials, applied to the suite's own models:

- ``keras_fit`` / ``keras_fit_xla``: ``implementations.keras_fit``'s trainer (the task's model,
  ``compile`` with ``jit_compile`` pinned) constructed inside ``strategy.scope()``; Keras
  itself wraps its step in ``strategy.run``.
- ``custom_graph`` / ``custom_xla``: the task's hand-written model (``build_custom``) built in
  scope, and one distributed step (``make_distributed_step``): ``strategy.run`` of the custom
  loops' own step (``implementations.custom_loop.make_step``) with the loss
  ``tf.nn.compute_average_loss(per_example_loss, global_batch_size=...)``, inside
  ``tf.function`` (with ``jit_compile`` for ``custom_xla``).

Strategies: ``mirrored`` (``MirroredStrategy``: the GPUs of one host, or -- without GPUs --
the CPU split into logical devices, which must happen before TensorFlow initialises, hence
the subprocess in ``bench/distributed/worker.py``) and ``multiworker``
(``MultiWorkerMirroredStrategy``, configured through ``TF_CONFIG``).

Timing (``time_steps``) follows ``bench/timing/harness.py``: first call timed alone as
``compile_s``, warm-up steps, K steps per round chosen by ``choose_steps_per_round``, every
round ends with a host sync, and a retrace during the timed rounds is an error. The parent
side (``run_workers``, ``free_port``, ``tf_config``) does not import TensorFlow.

Importing this module does not import TensorFlow either; the functions that need it import
it when called, so the pytest process can plan and launch subprocesses cheaply.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.tasks import Task
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
    "compile (https://www.tensorflow.org/xla/known_issues); tests/test_distributed.py "
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


class UnsupportedError(RuntimeError):
    """A (strategy, implementation, replicas) combination that cannot run here; the
    benchmarks turn it into a skip that carries the message."""


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


def collective(kind: str) -> str | None:
    """The all-reduce a ``multiworker`` strategy is given: ``"NCCL"`` where this worker sees a
    GPU, ``"RING"`` (gRPC) otherwise; None for ``mirrored`` (TensorFlow's own choice: NCCL
    between GPUs, a copy to one device between logical CPUs). Reads the visible devices
    without initialising TensorFlow (``prepare_gpus`` may have narrowed them)."""
    import tensorflow as tf

    if kind != "multiworker":
        return None
    return "NCCL" if tf.config.get_visible_devices("GPU") else "RING"


# --- inside a worker process (TensorFlow) ---------------------------------------------------


def prepare_gpus() -> None:
    """GPU memory growth, as ``conftest.py`` sets it for the pytest process; and in a loopback
    cluster (``run_workers`` sets ``LOOPBENCH_WORKER_GPU``) each worker sees one GPU of its
    own, so the workers of one host do not all claim every GPU. A worker started by hand on
    a real host uses all of that host's GPUs. Call before TensorFlow initialises."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return
    if os.environ.get(ENV_WORKER_GPU):
        gpus = [gpus[int(os.environ[ENV_WORKER_GPU]) % len(gpus)]]
        tf.config.set_visible_devices(gpus, "GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)


def split_cpu(devices: int) -> None:
    """Without GPUs, split the CPU into ``devices`` logical devices (a MirroredStrategy
    needs one device per replica); with GPUs, do nothing: their replicas are the physical
    GPUs. Call before anything initialises TensorFlow's devices."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)]
    )


def make_strategy(kind: str, replicas: int = 1):
    """``mirrored``: MirroredStrategy over the first ``replicas`` GPUs, else the first
    ``replicas`` logical CPU devices (see ``split_cpu``). ``multiworker``:
    MultiWorkerMirroredStrategy from ``TF_CONFIG`` (each worker's GPUs, else its CPU), its
    all-reduce NCCL or RING (``collective``); the cluster decides the replicas and ``replicas``
    is not used."""
    import tensorflow as tf

    if kind == "multiworker":
        implementation = tf.distribute.experimental.CommunicationImplementation[collective(kind)]
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if kind != "mirrored":
        raise ValueError(f"unknown strategy {kind!r}; valid: {', '.join(STRATEGIES)}")
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if replicas > len(devices):
        raise UnsupportedError(
            f"{replicas} replicas need {replicas} devices; found {len(devices)} "
            f"({', '.join(d.name for d in devices)})"
        )
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices[:replicas]])


def per_example_loss(task: Task, y, out):
    """One loss per example: the task's Keras loss before its reduction (``Loss.call``); its
    mean over the batch is ``implementations.common.loss_value``."""
    import tensorflow as tf

    from implementations.common import keras_loss

    return keras_loss(task).call(y, tf.cast(out, tf.float32))


def make_distributed_step(strategy, model, optimizer, task: Task, global_batch_size: int):
    """The distributed custom step: each replica runs the single-device step
    (``implementations.custom_loop.make_step``, the one step every custom implementation
    runs) with its loss replaced by its share of the global-batch mean
    (``compute_average_loss``), so the optimizer's all-reduce *sum* of the replicas'
    gradients is the gradient of the global-batch mean loss. Returns that loss."""
    import tensorflow as tf

    from implementations.custom_loop import make_step

    def average_loss(task: Task, y, out):
        return tf.nn.compute_average_loss(
            per_example_loss(task, y, out), global_batch_size=global_batch_size
        )

    # Keras's optimizer all-reduces (sums) the gradients across replicas in replica context.
    replica_step = make_step(model, optimizer, task, loss_fn=average_loss)

    def train_step(x, y):
        per_replica = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


class DistributedCustomTrainer:
    """The task's custom-loop model and its optimizer created in ``strategy.scope()``; the step is
    ``make_distributed_step`` in ``tf.function`` (``jit_compile`` for ``custom_xla``).
    ``step`` takes distributed (per-replica) batches, as a distributed dataset yields them."""

    def __init__(
        self, strategy, task: Task, weights: list[np.ndarray], *, global_batch_size: int, name: str
    ):
        import tensorflow as tf

        from implementations.common import make_optimizer, task_model

        self.name, self.task, self.strategy = name, task, strategy
        self.steps_per_call = 1
        self.jit_compile = name == "custom_xla"
        with strategy.scope():
            # build_custom()'s hand-written layers, their (mirrored) variables holding weights
            self.model = task_model(task, weights, custom=True)
            self.optimizer = make_optimizer(task)
            self.optimizer.build(self.model.trainable_variables)
        self._step = tf.function(
            make_distributed_step(strategy, self.model, self.optimizer, task, global_batch_size),
            jit_compile=self.jit_compile,
        )

    def step(self, x, y):
        return self._step(x, y)

    def step_losses(self, batches: Iterable) -> np.ndarray:
        return np.array([float(self._step(x, y)) for x, y in batches], dtype=np.float64)

    def traces(self) -> int:
        return int(self._step.experimental_get_tracing_count())

    def resolved(self) -> dict:
        loop = "tf.function(strategy.run)"
        return {
            "jit_compile": self.jit_compile,
            "jit_compile_requested": self.jit_compile,
            "run_eagerly": False,
            "steps_per_call": 1,
            "loop": loop.replace("tf.function(", "tf.function(jit_compile=True, ")
            if self.jit_compile
            else loop,
        }


def make_trainer(
    strategy, impl: str, task: Task, weights: list[np.ndarray], global_batch_size: int
):
    """A trainer whose ``step(x, y)`` takes per-replica batches and returns the loss."""
    if impl in ("keras_fit", "keras_fit_xla"):
        from implementations.keras_fit import keras_fit, keras_fit_xla

        # Built and compiled in scope: the model records the strategy, and its variables and
        # the optimizer's are mirrored. Keras runs its own step through strategy.run.
        with strategy.scope():
            trainer = (keras_fit if impl == "keras_fit" else keras_fit_xla)(task, weights)
            # Create the optimizer's (mirrored) slots now, as fit() does before its first step
            # under a strategy: created inside the first distributed step, they fail to lift.
            trainer.model.optimizer.build(trainer.model.trainable_variables)
        return trainer
    if impl in ("custom_graph", "custom_xla"):
        return DistributedCustomTrainer(
            strategy, task, weights, global_batch_size=global_batch_size, name=impl
        )
    raise ValueError(f"unknown implementation {impl!r}; valid: {', '.join(IMPLEMENTATIONS)}")


def resolved(trainer) -> dict:
    info = trainer.resolved()
    info.pop("steps_per_execution", None)
    if info.get("loop") == "model.fit":
        info["loop"] = "model.fit (strategy.run inside Keras's train function)"
    return info


def distribute(strategy, batches):
    """``strategy.experimental_distribute_dataset`` over a dataset of *global* batches (such
    as ``implementations.common.epoch_dataset``): each replica, on whichever worker, gets its
    slice of every global batch."""
    import tensorflow as tf

    options = tf.data.Options()
    # DATA: every worker reads the same (in-memory) data and keeps its share of each batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(batches.with_options(options))


def fixed_distributed_batch(strategy, dataset, global_batch_size: int):
    """One global batch (the first training examples, tiled if too few), already split into
    per-replica tensors on their devices: the input pipeline is not what gets timed."""
    import tensorflow as tf

    idx = np.arange(global_batch_size) % len(dataset.x_train)
    batches = tf.data.Dataset.from_tensor_slices((dataset.x_train[idx], dataset.y_train[idx]))
    return next(iter(distribute(strategy, batches.batch(global_batch_size))))


def agree(strategy, value: float) -> float:
    """The mean of ``value`` over all replicas (and workers), so every worker runs the same
    number of steps: collectives hang if one worker runs more steps than another."""
    import tensorflow as tf

    per_replica = strategy.run(lambda: tf.constant(float(value)))
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))


def time_steps(
    trainer, x, y, strategy, rounds: int, warmup_steps: int, round_seconds: float
) -> dict:
    """Steady-state step times, by ``bench/timing/harness.py``'s method; every round runs K steps
    and fetches the last loss (reduced over all replicas) to the host before the clock stops.

    Returns ``compile_s``, ``steps_per_round`` (K), ``round_s`` (each timed round's seconds,
    not yet divided by K) and ``traces``."""
    from bench.timing.harness import check_retrace, choose_steps_per_round, first_call_and_warm_up
    from bench.timing.machine import sync

    def one_step():
        return trainer.step(x, y)

    compile_s = first_call_and_warm_up(one_step, warmup_steps)
    k = math.ceil(agree(strategy, choose_steps_per_round(one_step, round_seconds)))
    traces_before = trainer.traces()

    def timed_round():
        for _ in range(k):
            loss = one_step()
        sync(loss)

    timed_round()  # one untimed round, as benchmark.pedantic(warmup_rounds=1) in the harness
    round_s = []
    for _ in range(rounds):
        t0 = time.perf_counter()  # pytest-benchmark's default timer
        timed_round()
        round_s.append(time.perf_counter() - t0)
    check_retrace(trainer, traces_before, trainer.name)
    return {
        "compile_s": compile_s,
        "steps_per_round": k,
        "round_s": round_s,
        "traces": trainer.traces(),
    }


# --- the parent side: starting workers (no TensorFlow) -----------------------------------------


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
    base_env = dict(os.environ if env is None else env)
    base_env.pop("TF_CONFIG", None)
    base_env.pop(ENV_WORKER_GPU, None)
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    base_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), base_env.get("PYTHONPATH", "")) if p
    )
    ports = [free_port() for _ in range(workers or 0)]
    procs: list[subprocess.Popen] = []
    outs: list[list[str]] = []
    timed_out = False
    with contextlib.ExitStack() as stack:
        # Files, not pipes: a worker blocked on a full stderr pipe while its peer waits for
        # it in a collective would deadlock until the timeout.
        files = [
            (
                stack.enter_context(tempfile.TemporaryFile("w+")),
                stack.enter_context(tempfile.TemporaryFile("w+")),
            )
            for _ in range(workers or 1)
        ]
        try:
            for i, (out, err) in enumerate(files):
                worker_env = dict(base_env)
                if workers:
                    worker_env["TF_CONFIG"] = tf_config(ports, i)
                    worker_env[ENV_WORKER_GPU] = str(i)
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.distributed.worker", *args],
                        cwd=ROOT,
                        env=worker_env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,  # its own process group, killed as one
                    )
                )
            deadline = time.monotonic() + timeout
            # Stop at the first failure too: its peers would wait in a collective until the
            # timeout.
            while any(p.poll() is None for p in procs):
                if any(p.poll() not in (None, 0) for p in procs):
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                time.sleep(0.05)
        finally:
            for proc in procs:
                kill_group(proc)
        for pair in files:
            texts = []
            for f in pair:
                f.seek(0)
                texts.append(f.read())
            outs.append(texts)
    results = []
    for i, (proc, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        lines = out.strip().splitlines()
        try:
            output = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            output = None
        results.append(WorkerResult(i, proc.returncode, out, err, output))
    if timed_out or any(r.returncode != 0 or r.output is None for r in results):
        detail = "\n".join(
            f"--- worker {r.index}: exit {r.returncode}\n{shown(r.stderr)[-3000:]}" for r in results
        )
        what = f"timed out after {timeout:.0f}s" if timed_out else "failed"
        raise WorkerError(f"bench.distributed.worker {' '.join(args)} {what}\n{detail}")
    return results


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
