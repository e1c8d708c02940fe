"""TensorFlow's start-up lines kept out where they would show, checked for real: importing
TensorFlow in a fresh interpreter, and a failed worker process's message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_tfimport import SEEN

from bench.tfimport import nvidia_driver, shown

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_importing_tensorflow_prints_none_of_them():
    if nvidia_driver():
        pytest.skip("an NVIDIA driver is present: nothing is filtered there")
    code = "from bench.tfimport import import_tensorflow; print(import_tensorflow().__version__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and out.stdout.strip().startswith("2.")
    for word in ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard"):
        assert word not in out.stderr, out.stderr


def test_a_failed_workers_message_shows_its_error_not_the_start_up_lines(tmp_path, monkeypatch):
    """A worker's stderr goes to a file shown when it fails (bench/workers/process.py): the
    start-up lines are taken out there too, the real error kept."""
    from bench.workers.process import InputError, Side, Worker

    monkeypatch.setattr("bench.tfimport.nvidia_driver", lambda: False)
    monkeypatch.delenv("LOOPBENCH_TF_LOGS", raising=False)
    script = tmp_path / "worker.py"
    script.write_text(f"import sys\nsys.stderr.write({SEEN!r})\nsys.exit(3)\n")
    side = Side("head", "HEAD", "directory", tmp_path, sys.executable)
    worker = Worker(side, 0, {}, script)
    try:
        with pytest.raises(InputError) as e:
            worker.request({"op": "hello"}, timeout=60)
    finally:
        worker.close()
    message = str(e.value)
    assert "exited with code 3" in message and "a real error: out of memory" in message
    for word in ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard"):
        assert word not in message, message
    monkeypatch.setenv("LOOPBENCH_TF_LOGS", "1")  # kept on request
    assert "cuInit" in shown(SEEN)
