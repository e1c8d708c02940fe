"""One process of a distributed run; prints one JSON line (its last line on stdout).

Started by ``bench.distributed.launch.run_workers`` (benchmarks and tests), or by hand on each host
of a multi-worker cluster (docs/distributed.md). A fresh process because the CPU's split
into logical devices must happen before TensorFlow initialises, and every worker of a
MultiWorkerMirroredStrategy is a process of its own (``TF_CONFIG`` says which).

    python -m bench.distributed.worker bench --strategy mirrored --replicas 1 --replicas 2 \\
        --task mlp --impl keras_fit --impl custom_graph [--per-replica-batch 256] [--out F.json]
    TF_CONFIG=... python -m bench.distributed.worker bench --strategy multiworker --task mlp \\
        --impl custom_graph     # on every worker; worker 0's JSON is the result
    python -m bench.distributed.worker parity --task mlp --global-batch 16 --steps 4
    python -m bench.distributed.worker train --strategy multiworker --task linreg \\
        --impl custom_graph --global-batch 8 --steps 3 --weights-dir DIR

``bench``: times each implementation (``bench.distributed.loop.time_steps``); one that fails is
recorded as ``{"error": "Type: first line"}`` (traceback on stderr) and the next one runs. (In a
multi-worker cluster a worker whose step fails leaves its peers waiting in a collective: that
launch still ends at its timeout.) ``parity``: the
losses of single-device training with global batch B and of a 2-replica MirroredStrategy
with the same global batch, per implementation. ``train``: a few steps, then each worker
saves its weights to ``DIR/worker<index>.npz``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import numpy as np
import tensorflow as tf

from bench.distributed import loop as D
from bench.distributed.launch import ENV_WORKER_GPU, IMPLEMENTATIONS, STRATEGIES, unsupported_reason
from bench.tasks import get_task, initial_weights, load_for_task
from bench.timing.machine import peak_memory_mb, reset_peak_memory, sync
from implementations import get as get_impl
from implementations.common import epoch_dataset, get_weights


def worker_index() -> int:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return int(config.get("task", {}).get("index", 0))


def load(task, n_train: int):
    # Only the first examples are needed; standardised on themselves (values do not matter
    # to a step's time, and the parity runs compare like with like).
    return load_for_task(task, n_train=n_train, quiet=True)


def workers() -> int:
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    return len(config.get("cluster", {}).get("worker", [])) or 1


def cmd_bench(args) -> dict:
    """For each replica count (mirrored) or for the cluster (multiworker), a strategy, one
    fixed global batch, and each implementation timed in turn."""
    task = get_task(args.task)
    replica_counts = args.replicas if args.strategy == "mirrored" else [workers()]
    D.split_cpu(max(replica_counts) if args.strategy == "mirrored" else 1)
    gpus = len(tf.config.list_physical_devices("GPU"))
    loopback = bool(os.environ.get(ENV_WORKER_GPU))  # run_workers' cluster, on this host
    out: dict = {"worker": worker_index(), "workers": workers(), "tensorflow": tf.__version__}
    out["runs"] = []
    for replicas in replica_counts:
        todo = {
            i: unsupported_reason(args.strategy, i, replicas, gpus, loopback) for i in args.impl
        }
        out["runs"].append(bench_replicas(args, task, replicas, todo))
    return out


def bench_replicas(args, task, replicas: int, todo: dict[str, str | None]) -> dict:
    """One replica count: its strategy and fixed global batch, then each implementation that
    ``todo`` gives no reason to skip, timed in turn."""
    run: dict = {"replicas": replicas, "results": {}}
    if all(todo.values()):  # nothing runnable: do not even build the strategy
        run["results"] = {impl: {"skip": reason} for impl, reason in todo.items()}
        return run
    try:
        strategy = D.make_strategy(args.strategy, replicas)
        per_replica = args.per_replica_batch or task.batch_size
        global_batch = per_replica * strategy.num_replicas_in_sync
        data = load(task, global_batch)
        x, y = D.fixed_distributed_batch(strategy, data, global_batch)
    except Exception as e:  # every implementation of this replica count fails alike
        error = failure(e)
        run["results"] = {i: {"skip": r} if r else {"error": error} for i, r in todo.items()}
        return run
    run.update(
        replicas=strategy.num_replicas_in_sync,
        strategy_class={
            "mirrored": "MirroredStrategy",
            "multiworker": "MultiWorkerMirroredStrategy",
        }[args.strategy],
        collective=D.collective(args.strategy),
        devices=list(strategy.extended.worker_devices),
        per_replica_batch=per_replica,
        global_batch=global_batch,
        dataset=data.name,
    )
    for impl, reason in todo.items():
        if reason:
            run["results"][impl] = {"skip": reason}
        else:
            run["results"][impl] = time_impl(args, strategy, impl, task, (x, y), global_batch)
    return run


def time_impl(args, strategy, impl: str, task, batch: tuple, global_batch: int) -> dict:
    """One implementation's timing and peak memory, or its error: the others still run."""
    try:
        reset_peak_memory()
        trainer = D.make_trainer(strategy, impl, task, initial_weights(task), global_batch)
        timing = D.time_steps(
            trainer, *batch, strategy, args.rounds, args.warmup, args.round_seconds
        )
        peak_mb, peak_kind = peak_memory_mb()
    except Exception as e:  # this implementation's failure; the others still run
        return {"error": failure(e)}
    return {
        **timing,
        **D.resolved(trainer),
        "peak_memory_mb": peak_mb,
        "peak_memory_kind": peak_kind,
    }


def failure(e: Exception) -> str:
    """An implementation's error as recorded in the results (its traceback goes to stderr)."""
    traceback.print_exc()
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def cmd_parity(args) -> dict:
    """Single-device training with global batch B against a 2-replica MirroredStrategy with
    the same global batch (B/2 per replica), on the same batches in the same order."""
    task = get_task(args.task)
    D.split_cpu(args.replicas)  # before anything else touches TensorFlow
    strategy = D.make_strategy("mirrored", args.replicas)
    data = load(task, args.global_batch * args.steps)
    weights = initial_weights(task)

    def batches():
        return epoch_dataset(data.x_train, data.y_train, args.global_batch, task.seed, 0)

    out: dict = {
        "replicas": strategy.num_replicas_in_sync,
        "devices": list(strategy.extended.worker_devices),
    }
    for impl in args.impl:
        single = get_impl(impl)(task, weights)
        dist = D.make_trainer(strategy, impl, task, weights, args.global_batch)
        out[impl] = {
            "single": single.step_losses(batches()).tolist(),
            "mirrored": dist.step_losses(D.distribute(strategy, batches())).tolist(),
            "weights_max_abs_diff": max(
                float(np.max(np.abs(a - b)))
                for a, b in zip(get_weights(single.model), get_weights(dist.model), strict=True)
            ),
        }
    # The XLA skip is a claim about TensorFlow: check it still holds (the test reports it).
    out["xla_errors"] = {}
    for impl in ("custom_xla", "keras_fit_xla"):
        dist = D.make_trainer(strategy, impl, task, weights, args.global_batch)
        x, y = next(iter(D.distribute(strategy, batches())))
        try:
            sync(dist.step(x, y))
            out["xla_errors"][impl] = None
        except Exception as e:  # recorded; the test asserts on it
            out["xla_errors"][impl] = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"
    return out


def cmd_train(args) -> dict:
    task = get_task(args.task)
    if args.strategy == "mirrored":
        D.split_cpu(args.replicas)
    strategy = D.make_strategy(args.strategy, args.replicas)
    data = load(task, args.global_batch * args.steps)
    trainer = D.make_trainer(strategy, args.impl, task, initial_weights(task), args.global_batch)
    batches = epoch_dataset(data.x_train, data.y_train, args.global_batch, task.seed, 0)
    losses = trainer.step_losses(D.distribute(strategy, batches))
    index = worker_index()
    path = os.path.join(args.weights_dir, f"worker{index}.npz")
    np.savez(path, *get_weights(trainer.model))
    return {
        "worker": index,
        "replicas": strategy.num_replicas_in_sync,
        "losses": losses.tolist(),
        "weights": path,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.distributed.worker", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("bench", "parity", "train"):
        s = sub.add_parser(name)
        s.add_argument("--task", default="mlp")
        if name == "bench":
            s.add_argument(
                "--replicas", type=int, action="append", help="mirrored: replicas (repeatable)"
            )
        else:
            s.add_argument("--replicas", type=int, default=2, help="mirrored: replicas")
        s.add_argument("--out", help="also write the JSON here")
        if name == "bench":
            s.add_argument("--strategy", choices=STRATEGIES, default="mirrored")
            s.add_argument("--impl", action="append", choices=IMPLEMENTATIONS, required=True)
            s.add_argument(
                "--per-replica-batch", type=int, default=0, help="default: the task's batch"
            )
            s.add_argument("--rounds", type=int, default=7)
            s.add_argument("--warmup", type=int, default=3)
            s.add_argument("--round-seconds", type=float, default=0.25)
        else:
            s.add_argument("--global-batch", type=int, default=16)
            s.add_argument("--steps", type=int, default=4)
        if name == "parity":
            s.add_argument("--impl", action="append", choices=("keras_fit", "custom_graph"))
        if name == "train":
            s.add_argument("--strategy", choices=STRATEGIES, default="multiworker")
            s.add_argument("--impl", choices=IMPLEMENTATIONS, default="custom_graph")
            s.add_argument("--weights-dir", required=True)
    args = p.parse_args(argv)
    if args.command == "parity" and not args.impl:
        args.impl = ["custom_graph", "keras_fit"]
    if args.command == "bench" and not args.replicas:
        args.replicas = [1, 2]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        D.prepare_gpus()  # before anything initialises TensorFlow
        out = {"bench": cmd_bench, "parity": cmd_parity, "train": cmd_train}[args.command](args)
    except Exception:
        traceback.print_exc()
        return 1
    line = json.dumps(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")
    sys.stdout.flush()
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
