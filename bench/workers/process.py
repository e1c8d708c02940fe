"""The home of every process the suite starts besides pytest's own (no TensorFlow here):
pyperf's master/worker split. The coordinator starts a worker script with plain arguments,
talks to it over a pipe in one JSON line per message (``bench/workers/protocol.py`` is the
worker's side), and owns its lifetime: the worker leads its own process group, and
``kill_group`` takes it and anything it started down on every exit path (a crash, a hang past
the timeout, Ctrl-C); a worker also exits by itself when its stdin closes.

Used by the A/B check (``bench/ab/``: one worker per side and pair), the JAX backend
(``bench/jax/``) and ``tf.distribute``'s workers (``bench/distributed/``, which use ``kill_group``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.tfimport import shown


class InputError(Exception):
    """Bad input or a failed worker: one message on stderr, exit code 2."""


def run_command(label: str, run, args, argv: list[str]) -> int:
    """``run(args, argv)`` for a command that starts workers (``bench ab``, ``bench bisect``):
    SIGTERM unwinds as Ctrl-C does, so every worker is killed on the way out; an
    ``InputError`` is one line and exit code 2; an interruption, 130."""

    def terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return run(args, argv)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{label}: interrupted; workers stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class Side:
    """A tree of this project's code and the interpreter that runs it (an A/B side, or the
    working tree for the JAX and panel workers)."""

    label: str  # "base" or "head"; "jax", "panel"
    spec: str
    kind: str  # "revision", "directory" or "working tree"
    root: Path
    python: str
    revision: str | None = None
    versions: dict = field(default_factory=dict)
    implementations: list[str] | None = None
    # With --tasks: the tasks this side's code selected, name -> batch_size, numerics_rtol.
    tasks: dict[str, dict] | None = None

    def describe(self) -> str:
        rev = f" @ {self.revision[:10]}" if self.revision else ""
        return f"{self.spec}{rev}"


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a process started with ``start_new_session=True`` and its whole group, and reap it."""
    if proc.poll() is None:
        # The worker leads its own process group: take any children with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


class Worker:
    """One worker process: ``script`` (``bench/ab/worker.py``, ``bench/jax/worker.py``) run
    by the side's interpreter on the side's tree:
    requests on its stdin, one JSON answer line each on its stdout, stderr to a file (shown
    when it fails)."""

    def __init__(self, side: Side, index: int, env: dict[str, str], script: Path):
        self.side, self.index = side, index
        self.name = f"{side.label} worker {index}"
        self._err = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed in close())
        self._buffer = b""
        self.proc = subprocess.Popen(
            [side.python, str(script), str(side.root)],
            cwd=side.root,
            env={**env, "PYTHONPATH": str(side.root)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            start_new_session=True,  # its own process group, killed as one
        )

    def send(self, request: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._failure(f"died before {request.get('op')!r}") from None

    def receive(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure(f"no answer to {what} within {timeout:.0f} s (hung)")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise self._failure(f"exited with code {self.proc.returncode} during {what}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerAnswerError(self, what, answer)
        return answer

    def request(self, request: dict, timeout: float) -> dict:
        self.send(request)
        return self.receive(timeout, repr(request.get("op")))

    def stderr_tail(self, lines: int = 25) -> str:
        """The last ``lines`` of the worker's stderr, without TensorFlow's CPU-only start-up
        lines (``bench.tfimport.shown``)."""
        self._err.seek(0)
        return "\n".join(shown(self._err.read()).splitlines()[-lines:])

    def _failure(self, what: str) -> InputError:
        tail = self.stderr_tail()
        return InputError(
            f"{self.name} ({self.side.describe()}) {what}" + (f"\n{tail}" if tail else "")
        )

    def close(self) -> None:
        kill_group(self.proc)
        for f in (self.proc.stdin, self.proc.stdout, self._err):
            with contextlib.suppress(OSError):
                f.close()


class WorkerAnswerError(InputError):
    def __init__(self, worker: Worker, what: str, answer: dict):
        self.error = answer.get("error", "unknown error")
        tb = answer.get("traceback", "").strip().splitlines()
        detail = "\n".join(tb[-12:])
        super().__init__(
            f"{worker.name} ({worker.side.describe()}) failed {what}: {self.error}"
            + (f"\n{detail}" if detail else "")
        )


def jax_env() -> dict[str, str]:
    """A JAX worker's environment: Keras on JAX, and no preallocation. By default each JAX
    process takes 75% of a GPU at its first array: two workers (``bench ab -k jax`` starts
    four), or one beside pytest's TensorFlow, would run out of memory."""
    return {**worker_env(), "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("TF_CONFIG", "PYTHONPATH", "PYTHONSTARTUP"):
        env.pop(name, None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Several workers share one GPU, taking turns: none may reserve all its memory at start.
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env
