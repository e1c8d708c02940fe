"""``python -m bench ab`` for real: the worker protocol on a tiny task (in a worker process,
and a task file's ops called in this process), cleanup when a worker crashes, hangs or is
interrupted, a bad task file or BASE, and an end-to-end run that finds a doubled step
slower. The statistics and a run on fake sides: tests/test_ab.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench import tasks
from bench.ab import worker as ab_worker
from bench.ab.cli import main
from bench.ab.output import undecided
from bench.ab.sides import WORKER
from bench.tasks import user as user_tasks
from bench.workers.process import InputError, Side, Worker, worker_env

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


# --- task files (--tasks) ---------------------------------------------------------------------


TINY_TASKS = """
import keras
from bench.tasks import Task

def build():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])

TINY = Task("tiny", build, input_shape=(8,), num_classes=3, n_train=64, batch_size=16,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True){extra})
"""


PY_FUNCTION_TASK = """
import keras
import tensorflow as tf
from bench.tasks import Task

class Sin(keras.layers.Layer):
    def call(self, x):
        return tf.ensure_shape(tf.py_function(tf.sin, [x], tf.float32), x.shape)

def build():
    return keras.Sequential([keras.Input((8,)), Sin(), keras.layers.Dense(3)])

PYF = Task("pyf", build, input_shape=(8,), num_classes=3, n_train=64, batch_size=16,
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
"""


def test_a_worker_loads_a_task_file_writes_its_batch_and_trains_it(tmp_path):
    """The worker's side of --tasks, called in this process: hello loads the file with the
    side's code, write_batch writes the task's fixed batch, setup trains on it."""
    good = tmp_path / "good.py"
    good.write_text(TINY_TASKS.format(extra=""))
    saved = user_tasks.selected_tasks()
    try:
        hello = ab_worker.op_hello({"op": "hello", "tasks": [str(good)]}, {}, str(ROOT))
        assert hello["tasks"] == {"tiny": {"batch_size": 16, "numerics_rtol": 1e-4}}
        assert ab_worker.op_hello({"op": "hello"}, {}, str(ROOT))["tasks"] is None  # as before
        batch = tmp_path / "b.npz"
        request = {"op": "write_batch", "task": "tiny", "batch_size": 16, "path": str(batch)}
        ab_worker.op_write_batch(request, {}, str(ROOT))
        with np.load(batch) as b:
            assert b["x"].shape == (16, 8) and b["y"].shape == (16,) and b["y"].max() < 3
        request = {"op": "setup", "id": "t", "impl": "custom_graph", "task": "tiny"}
        setup = ab_worker.op_setup({**request, "batch": str(batch), "warmup": 2}, {}, str(ROOT))
        assert np.isfinite(setup["loss_after_warmup"]) and setup["traces"] == 1
        # a model the implementation cannot run: answered with the reason (the benchmark is
        # then skipped), not an error that ends the run
        pyfunc = tmp_path / "pyfunc.py"
        pyfunc.write_text(PY_FUNCTION_TASK)
        ab_worker.op_hello({"op": "hello", "tasks": [str(pyfunc)]}, {}, str(ROOT))
        request = {**request, "impl": "custom_xla", "task": "pyf", "batch": str(batch)}
        answer = ab_worker.op_setup({**request, "id": "p", "warmup": 1}, {}, str(ROOT))
        assert set(answer) == {"unsupported"}  # XLA_CPU_JIT here, XLA_GPU_JIT on a GPU
        assert re.fullmatch(
            r"custom_xla cannot run pyf: XLA \(XLA_\w+_JIT\) has no kernel for EagerPyFunc",
            answer["unsupported"],
        ), answer
    finally:
        user_tasks._selected[:] = saved
    assert tasks.get_task("tiny").name == "tiny"


def test_a_bad_task_file_is_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text(TINY_TASKS.format(extra=", num_classes_typo=1").replace(", num_classes=3", ""))
    argv = ["--base", ".", "--head", ".", "--pairs", "1", "--tasks", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and f"{bad}: cannot import the task file" in err[-1]
    assert "Traceback" not in "\n".join(err)


# --- sides and bad input ------------------------------------------------------------------------


def test_a_base_without_the_registry_gives_exit_2(tmp_path, capsys):
    (tmp_path / "README.md").write_text("not this project\n")
    assert main(["--base", str(tmp_path), "-k", "custom_graph-linreg", "--pairs", "1"]) == 2
    err = capsys.readouterr().err
    assert "base worker 0" in err and "no implementation registry" in err


# --- the worker protocol and its cleanup ----------------------------------------------------------


@pytest.fixture
def worker():
    side = Side("head", "working tree", "working tree", ROOT, sys.executable)
    w = Worker(side, 0, worker_env(), script=WORKER)
    yield w
    w.close()


def test_worker_protocol_on_a_tiny_task(worker, tmp_path):
    hello = worker.request({"op": "hello"}, 300)
    assert Path(hello["implementations_file"]).resolve().is_relative_to(ROOT)
    assert {"tensorflow", "keras", "python", "device", "onednn"} <= set(hello["versions"])
    assert "custom_graph" in hello["implementations"]
    batch = tmp_path / "b.npz"
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(8, 1)
    np.savez(batch, x=x, y=3 * x + 2)
    setup = worker.request(
        {
            "op": "setup",
            "id": "g",
            "impl": "custom_graph",
            "task": "linreg",
            "batch": str(batch),
            "warmup": 2,
        },
        300,
    )
    assert setup["compile_s"] > 0 and setup["per_step_s"] > 0
    assert np.isfinite(setup["loss_after_warmup"]) and setup["traces"] == 1
    r = worker.request({"op": "round", "id": "g", "k": 5}, 60)
    assert r["seconds"] > 0 and r["retraced"] == 0
    # a failed request is answered, and the worker keeps serving
    with pytest.raises(InputError, match="unknown implementation 'nope'"):
        worker.request(
            {"op": "setup", "id": "n", "impl": "nope", "task": "linreg", "batch": str(batch)}, 60
        )
    assert worker.request({"op": "drop", "id": "g"}, 10)["ok"]
    assert worker.request({"op": "quit"}, 10)["ok"]
    worker.proc.wait(timeout=10)
    assert worker.proc.returncode == 0


def test_a_crashed_worker_is_reported_with_its_stderr(worker):
    worker.send({"op": "crash", "how": "exit", "code": 7})
    with pytest.raises(InputError, match="exited with code 7"):
        worker.receive(30, "'crash'")


def test_a_hung_worker_times_out_and_is_killed(worker):
    worker.send({"op": "crash", "how": "sleep", "seconds": 600})
    with pytest.raises(InputError, match="hung"):
        worker.receive(1.0, "'crash'")
    worker.close()
    assert worker.proc.poll() is not None


def test_a_worker_exits_when_its_coordinator_goes_away(worker):
    worker.proc.stdin.close()  # what a coordinator killed outright leaves behind
    assert worker.proc.wait(timeout=30) == 0


def _workers_alive(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ab/worker.py" in cmdline and marker in cmdline:
            pids.append(int(proc.name))
    return pids


def _copy_tree(dest: Path, old: str = "", new: str = "") -> Path:
    """This tree's code in ``dest``, with ``old`` replaced by ``new`` in the custom loop."""
    for name in ("bench", "implementations"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    if old:
        impl = dest / "implementations" / "custom_loop.py"
        text = impl.read_text()
        assert old in text, "the patched line changed: update the test"
        impl.write_text(text.replace(old, new, 1))
    return dest


def test_a_worker_crash_mid_run_gives_exit_2_and_no_worker_survives(tmp_path, capsys):
    head = _copy_tree(
        tmp_path / "crashing",
        "    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:\n",
        "    def step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:\n"
        "        raise RuntimeError('planted failure in the step')\n",
    )
    code = main(["--head", str(head), "--base", ".", "-k", "custom_graph-linreg", "--pairs", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "head worker 0" in err and "planted failure in the step" in err
    assert _workers_alive(str(tmp_path)) == []


def test_end_to_end_a_doubled_step_is_slower_and_its_numbers_changed(tmp_path, capsys, monkeypatch):
    head = _copy_tree(
        tmp_path / "slow",
        "        return self._step(x, y)\n",
        "        self._step(x, y)\n        return self._step(x, y)\n",
    )
    out, gh, md = tmp_path / "ab.json", tmp_path / "gh.json", tmp_path / "ab.md"
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier steps' summary\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    argv = [
        "--base",
        ".",
        "--head",
        str(head),
        "-k",
        "custom_graph-linreg or keras_fit-linreg",
        "--pairs",
        "1",
        "--min-pairs",
        "10",
        "--max-seconds",
        "2",
        "--round-seconds",
        "0.02",
        "--json",
        str(out),
        "--github-json",
        str(gh),
        "--markdown",
        str(md),
    ]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["schema"] == "loopbench-ab/1"
    assert doc["sides"]["head"]["root"] == str(head.resolve())
    assert doc["sides"]["base"]["versions"]["tensorflow"]
    by_name = {b["name"]: b for b in doc["benchmarks"]}
    slow = by_name["custom_graph-linreg"]
    assert slow["verdict"] == "SLOWER" and slow["ratio"] > 1.3 and slow["ci_low"] > 1
    assert slow["numerics"]["changed"]  # two steps per step: a different loss after warm-up
    # flagged, so measured again by a fresh pair of worker processes and judged on both
    assert slow["first_verdict"] == "SLOWER" and slow["process_pairs"] == 2
    assert {r["pair"] for r in slow["rounds"]} == {0, 1}
    same = by_name["keras_fit-linreg"]
    assert not same["numerics"]["changed"]
    assert same["numerics"]["rel_diff"] == 0.0
    assert len(slow["rounds"]) >= 10 and {"base_s", "head_s", "kept"} <= set(slow["rounds"][0])
    assert doc["summary"]["slower"] == ["custom_graph-linreg"] and doc["summary"]["exit_code"] == 1
    assert "SLOWER, but the numbers changed" in printed
    charted = {e["name"]: e for e in json.loads(gh.read_text())}
    assert set(charted) == {
        "ab custom_graph-linreg batch=32: HEAD/BASE",
        "ab keras_fit-linreg batch=32: HEAD/BASE",
    }
    point = charted["ab custom_graph-linreg batch=32: HEAD/BASE"]
    assert point["value"] == round(slow["ratio"], 6) and point["unit"] == "HEAD/BASE"
    assert "SLOWER" in point["extra"]
    verdict = md.read_text()
    # the unchanged benchmark, sampled briefly here, reads "undecided" if its interval still
    # reaches past the threshold

    other = "0 unchanged, 1 undecided" if undecided(same, 0.03) else "1 unchanged"
    assert verdict.startswith(f":red_circle: `bench ab`: **1 slower**, 0 faster, {other} (")
    assert summary.read_text() == "earlier steps' summary\n" + verdict
    for path in (out, gh, md):  # readable as the umask allows, not mkstemp's 0600
        assert path.stat().st_mode & 0o044 == 0o044 & ~_umask()
    assert _workers_alive(str(tmp_path)) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_leaves_no_worker_behind(tmp_path, signum):
    head = _copy_tree(tmp_path / "head")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "ab",
            "--base",
            str(head),
            "--head",
            str(head),
            "-k",
            "custom_graph-linreg",
            "--pairs",
            "1",
            "--max-seconds",
            "600",
            "--min-pairs",
            "6",
            "--threshold",
            "0.001%",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().startswith("BASE:")  # every worker is up and answered
        assert len(_workers_alive(str(tmp_path))) == 2
        time.sleep(2.0)  # setting up or timing rounds
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; workers stopped" in err
    assert _workers_alive(str(tmp_path)) == []
