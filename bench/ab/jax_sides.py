"""Keras-on-JAX implementations in ``python -m bench ab``: a JAX worker (``bench/jax/worker.py``,
from the coordinator's tree, importing ``implementations/jax_backend.py`` from its side's tree)
per side and process pair, started only when ``-k`` names JAX, so the default gate does not
pay for them. The JAX worker speaks ``ab_worker``'s protocol (``setup``, ``round``, ``drop``),
so ``bench.ab.measure.WorkerLab`` sets up and times a JAX benchmark as any other, on this grid.

A side whose tree or interpreter has no JAX backend (an older revision, no jax installed) has
no JAX implementations: those benchmarks are skipped with the reason, as for any
implementation one side lacks.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.ab.sides import HELLO_TIMEOUT_S
from bench.workers.process import InputError, Side, Worker, jax_env

JAX_WORKER = Path(__file__).resolve().parent.parent / "jax" / "worker.py"


def wanted(expression: str | None) -> bool:
    """Only a ``-k`` that mentions jax starts JAX workers."""
    return bool(expression) and "jax" in expression.lower()


def start_jax_workers(
    sides: list[Side], pairs: int, stack: contextlib.ExitStack
) -> tuple[list[list[Worker]], set[str]]:
    """``pairs`` JAX workers per side (``[[base_0, head_0], ...]``) and the JAX implementation
    names; each side's ``implementations`` and ``versions`` are extended with its JAX ones."""
    env = jax_env()
    grid = []
    for p in range(pairs):
        row = []
        for side in sides:
            worker = Worker(side, p, env, script=JAX_WORKER)
            worker.name = f"{side.label} jax worker {p}"
            stack.callback(worker.close)
            row.append(worker)
        grid.append(row)
    for row in grid:
        for worker in row:
            worker.send({"op": "hello"})
    names: set[str] = set()
    for p, row in enumerate(grid):
        for worker in row:
            try:
                hello = worker.receive(HELLO_TIMEOUT_S, "'hello'")
            except InputError as e:  # no jax in that interpreter, or no jax_backend in that tree
                if p == 0:
                    worker.side.versions["jax_error"] = str(e).splitlines()[0]
                continue
            imported = Path(hello["implementations_file"]).resolve()
            if worker.side.root.resolve() not in imported.parents:
                raise InputError(
                    f"{worker.name} imported {imported}, not its own tree {worker.side.root}"
                )
            names.update(hello["implementations"])
            if p == 0:
                side = worker.side
                known = side.implementations or []
                side.implementations = known + [
                    n for n in hello["implementations"] if n not in known
                ]
                v = hello["versions"]
                side.versions.update(jax=v["jax"], jaxlib=v["jaxlib"], jax_device=v["device"])
    return grid, names


def grid_for(
    implementation: str, grid: list[list[Worker]], jax: tuple[list[list[Worker]], set[str]] | None
) -> list[list[Worker]]:
    """The JAX grid for a JAX implementation, else the TensorFlow workers' ``grid``."""
    if jax is not None and implementation in jax[1]:
        return jax[0]
    return grid
