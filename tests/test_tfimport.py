"""TensorFlow's CPU-only start-up lines kept out of the suite's output (bench/tfimport.py),
every other line kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.tfimport import NOISE, nvidia_driver, quiet_lines, shown

ROOT = Path(__file__).resolve().parents[1]

SEEN = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796152000.728640    3984 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results due to floating-point round-off errors from different computation orders. To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.
I0000 00:00:1796152000.728953    3984 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
I0000 00:00:1796152000.808109    3984 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 AVX_VNNI FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.
E0000 00:00:1796152007.086637    3984 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1796152007.1 3984 some_kernel.cc:12] a real error: out of memory
"""  # noqa: E501 (TensorFlow's own lines, as 2.21 prints them on this CPU-only VM)


def test_only_the_known_start_up_lines_are_dropped():
    assert quiet_lines(SEEN) == [SEEN.splitlines()[-1]]
    assert not NOISE.search("Traceback (most recent call last):")


@pytest.mark.integration
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
