"""The two sides of ``python -m bench ab`` and the processes that run them (no TensorFlow).

A side is a tree of this project's code (a git revision exported with ``git archive`` into a
temporary directory, another checkout, or the working tree) and the interpreter that runs it.
A ``Worker`` is one ``bench/ab/worker.py`` process for a side: requests on its stdin, one JSON
answer per line on its stdout, stderr into a file that is shown when it fails. Each worker
leads its own process group and is killed, with anything it started, on every exit path
(``bench/workers/process.py``, as every worker of the suite is); it also exits by itself
when its stdin closes, so it cannot outlive a coordinator that was killed outright.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.tasks import TASKS
from bench.workers.process import InputError, Side, Worker, worker_env

WORKER = Path(__file__).resolve().parent / "worker.py"
HELLO_TIMEOUT_S = 300.0  # importing TensorFlow in several processes at once on 2 cores


# The loss after warm-up, same implementation on both sides: these come from
# tests/test_equivalence.py's early-step tolerances (the CNN is chaotic after a few Adam steps).
NUMERICS_RTOL = {"cnn": 1e-3}
NUMERICS_RTOL_DEFAULT = 1e-5


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, timeout=120, check=False
    )


def resolve_revision(repo: Path, spec: str) -> str | None:
    try:
        out = _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode().strip() if out.returncode == 0 else None


def export_revision(repo: Path, revision: str, dest: Path) -> None:
    """The revision's tracked files, as ``git archive`` gives them, into ``dest``: no worktree
    metadata is left in the repository, whatever happens to this process."""
    out = _git(repo, "archive", "--format=tar", revision)
    if out.returncode != 0:
        raise InputError(f"git archive {revision[:10]} failed: {out.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(dest, filter="data")


def interpreter(spec: str | None, option: str) -> str:
    if not spec:
        return sys.executable
    path = Path(spec)
    if path.is_dir():
        path = path / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise InputError(f"{option} {spec}: not a Python interpreter nor a venv directory")
    return str(path)


def resolve_side(
    label: str, spec: str, python: str | None, repo: Path, stack: contextlib.ExitStack
) -> Side:
    """A side from ``--base``/``--head``: a directory wins over a revision of the same name."""
    exe = interpreter(python, f"--{label}-python")
    if spec in (".", ""):
        return Side(
            label, "working tree", "working tree", repo, exe, resolve_revision(repo, "HEAD")
        )
    path = Path(spec)
    if path.is_dir():
        return Side(label, spec, "directory", path.resolve(), exe, resolve_revision(path, "HEAD"))
    revision = resolve_revision(repo, spec)
    if revision is None:
        raise InputError(f"--{label} {spec!r}: neither a directory nor a git revision of {repo}")
    dest = Path(tempfile.mkdtemp(prefix=f"loopbench-ab-{label}-"))
    stack.callback(shutil.rmtree, dest, ignore_errors=True)
    export_revision(repo, revision, dest)
    return Side(label, spec, "revision", dest, exe, revision)


def start_workers(
    sides: list[Side], pairs: int, stack: contextlib.ExitStack, tasks: list[str] | None = None
) -> list[list[Worker]]:
    """``pairs`` workers per side, started together; each answers hello with its versions
    (and, given ``tasks``, --tasks values, loads those tasks with its side's code).
    Returns ``[[base_0, head_0], [base_1, head_1], ...]``."""
    env = worker_env()
    grid = []
    for p in range(pairs):
        row = []
        for side in sides:
            worker = Worker(side, p, env, script=WORKER)
            stack.callback(worker.close)
            row.append(worker)
        grid.append(row)
    for row in grid:
        for worker in row:
            worker.send({"op": "hello", **({"tasks": tasks} if tasks else {})})
    for row in grid:
        for worker in row:
            hello = worker.receive(HELLO_TIMEOUT_S, "'hello'")
            imported = Path(hello["implementations_file"]).resolve()
            if worker.side.root.resolve() not in imported.parents:
                raise InputError(
                    f"{worker.name} imported the registry from {imported}, not from its own "
                    f"tree {worker.side.root} (an installed copy shadows it?)"
                )
            worker.side.versions = hello["versions"]
            worker.side.implementations = hello["implementations"]
            worker.side.tasks = hello.get("tasks")
    return grid


# --- the sides' tasks (--tasks) -----------------------------------------------------------


def side_tasks(sides: list[Side]) -> dict[str, int]:
    """Task name -> batch size: the built-in tasks, or with --tasks the union of what the
    sides' workers loaded (``Side.tasks``), in order."""
    loaded = [s.tasks for s in sides if s.tasks is not None]
    if not loaded:
        return {t.name: t.batch_size for t in TASKS.values()}
    out: dict[str, int] = {}
    for tasks in loaded:
        for name, info in tasks.items():
            out.setdefault(name, info["batch_size"])
    return out


def numerics_rtol(task: str, sides: list[Side]) -> float:
    """The tolerance on the loss after warm-up: the equivalence tests' early-step one (a user
    task's own, as HEAD's code reports it)."""
    for s in reversed(sides):
        rtol = (s.tasks or {}).get(task, {}).get("numerics_rtol")
        if rtol is not None:
            return rtol
    return NUMERICS_RTOL.get(task, NUMERICS_RTOL_DEFAULT)
