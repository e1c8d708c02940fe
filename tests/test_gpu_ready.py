"""What a GPU host needs that a CPU run cannot show, checked without a GPU (issue "Ready for a
GPU host"): memory growth is set before TensorFlow can initialise, whatever the command (in a
fresh process: tests/test_gpu_ready_integration.py), and every JAX worker starts without
preallocating the GPU."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_conftest_leaves_no_set_memory_growth_call_behind():
    """set_memory_growth after TensorFlow initialised raises on a GPU host: the environment
    variable, set at conftest import, is the one mechanism."""
    assert "set_memory_growth(" not in (ROOT / "conftest.py").read_text()


def test_every_jax_worker_starts_without_preallocating(monkeypatch):
    from bench.ab import jax_sides
    from bench.jax import client
    from bench.workers.process import jax_env

    assert jax_env()["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert jax_env()["KERAS_BACKEND"] == "jax"
    seen = []

    class FakeWorker:
        def __init__(self, side, index, env, script):
            seen.append(env)
            self.proc = None

        def request(self, request, timeout):
            return {"versions": {}, "implementations": []}

        def close(self):
            pass

    monkeypatch.setattr(client, "Worker", FakeWorker)
    with contextlib.ExitStack() as stack:
        client.start(stack)
    assert seen and seen[-1]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "jax_env()" in Path(jax_sides.__file__).read_text()  # bench ab's JAX workers too


def test_nvidia_smi_is_asked_about_the_gpu_tensorflow_used():
    from bench.timing.machine import nvidia_smi_id

    assert nvidia_smi_id(0, "") == "0" and nvidia_smi_id(1, "") == "1"
    assert nvidia_smi_id(0, "3,1") == "3" and nvidia_smi_id(1, "3, 1") == "1"
    assert nvidia_smi_id(0, "GPU-8f2c") == "GPU-8f2c"  # a UUID, which nvidia-smi takes too


def test_micro_batches_are_skipped_on_a_gpu_as_a_cpu_knob(monkeypatch):
    from bench.benchmarks import bench_step
    from bench.timing.profiles import PROFILES

    quick, full = PROFILES["quick"], PROFILES["full"]
    split = {"impl": "custom_xla_split", "task_name": "mlp"}
    assert bench_step.step_spec("x", split, quick, None).implementation == "custom_xla_split"
    monkeypatch.setattr(bench_step, "device_name", lambda: "/GPU:0")
    with pytest.raises(pytest.skip.Exception, match="CPU knob"):
        bench_step.step_spec("x", split, quick, None)
    with pytest.raises(pytest.skip.Exception, match="CPU knob"):
        bench_step.micro_batch_spec("x", {**split, "m": 2}, full, None)
    loop = {"impl": "custom_xla_loop", "task_name": "mlp"}
    assert bench_step.step_spec("x", loop, quick, None).implementation == "custom_xla_loop"


def test_tensor_float_32_is_off_in_the_tests():
    """tests/conftest.py's float32_matmuls: equivalence tolerances are float32's."""
    import tensorflow as tf

    assert not tf.config.experimental.tensor_float_32_execution_enabled()


def test_the_yardstick_is_labelled_as_it_ran():
    from bench.timing.machine import calibrate_matmul, matmul_precision

    assert matmul_precision((8, 0), True) == matmul_precision((9, 0), True) == "tf32"
    assert matmul_precision((7, 5), True) == "fp32"  # Turing: no TF32
    assert matmul_precision((9, 0), False) == matmul_precision(None, True) == "fp32"
    cal = calibrate_matmul(seconds=0.0)
    assert cal["calibration_precision"] == "fp32"  # a CPU; TF32 is off here anyway
    # the launch-latency yardstick is a GPU's: none on a CPU
    assert cal["calibration_small_n"] is None and cal["calibration_small_matmul_s"] is None


SMI_GPU = "81559, 550.54.15, 1980, 2619, 1980, 2619, 700.00, Disabled"
SMI_APPS = "4242, python, 1024, GPU-8f2c\n77, /usr/bin/other, [N/A], GPU-8f2c\n"


def test_gpu_facts_are_read_from_nvidia_smi(monkeypatch):
    from bench.timing import machine as harness  # the device facts live in machine.py

    answers = {"--query-gpu": SMI_GPU, "--query-compute-apps": SMI_APPS}

    def fake_smi(*args):
        return next(text for flag, text in answers.items() if any(flag in a for a in args))

    monkeypatch.setattr(harness, "nvidia_smi", fake_smi)
    facts = harness.smi_gpu_facts("0")
    assert facts == {
        "memory_mb": 81559.0,
        "driver_version": "550.54.15",  # text: 535.10 is not 535.1
        "clock_sm_mhz": 1980.0,
        "clock_mem_mhz": 2619.0,
        "clock_max_sm_mhz": 1980.0,
        "clock_max_mem_mhz": 2619.0,
        "power_limit_w": 700.0,
        "mig_mode": "Disabled",
    }
    apps = harness.gpu_processes()
    assert [a["pid"] for a in apps] == [4242, 77] and apps[1]["used_memory_mb"] is None
    assert apps[0]["name"] == "python" and apps[0]["gpu_uuid"] == "GPU-8f2c"
    assert not apps[0]["this_process"]
    monkeypatch.setattr(harness.os, "getpid", lambda: 4242)
    assert harness.gpu_processes()[0]["this_process"]
    monkeypatch.setattr(harness, "nvidia_smi", lambda *args: None)  # no nvidia-smi
    assert harness.gpu_processes() is None
    assert set(harness.smi_gpu_facts("0").values()) == {None}
    assert harness.parse_smi_line("1, 2", harness.SMI_GPU_FIELDS)["memory_mb"] is None


def test_gpu_facts_are_null_on_a_cpu(monkeypatch):
    from bench.timing import machine as harness  # the device facts live in machine.py

    monkeypatch.setattr(harness, "nvidia_smi", lambda *args: pytest.fail("asked nvidia-smi"))
    info = harness.machine_info("quick", {})
    assert info["device"] == "CPU" and info["gpus"] == []
    for key in ("gpu_driver", "cuda_version", "cudnn_version", "cuda_visible_devices"):
        assert info[key] is None, key
    assert info["gpu_processes"] is None


def test_gpu_software_comes_from_the_build_and_nvidia_smi(monkeypatch):
    import tensorflow as tf

    from bench.timing import machine as harness  # the device facts live in machine.py

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    monkeypatch.setattr(harness, "nvidia_smi", lambda *a: SMI_APPS if "apps" in a[0] else SMI_GPU)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    info = harness.gpu_software()
    build = tf.sysconfig.get_build_info()
    assert info["gpu_driver"] == "550.54.15" and info["cuda_visible_devices"] == "3"
    assert (info["cuda_version"], info["cudnn_version"]) == (
        build.get("cuda_version"),
        build.get("cudnn_version"),
    )
    assert len(info["gpu_processes"]) == 2


def test_the_quick_profile_runs_float16_on_a_gpu_only(monkeypatch):
    from bench.benchmarks import bench_step
    from bench.timing.profiles import PROFILES

    quick = PROFILES["quick"]
    fp16 = {"impl": "keras_fit", "task_name": "cnn", "precision": "mixed_float16"}
    bf16 = {"impl": "custom_graph", "task_name": "mlp", "precision": "mixed_bfloat16"}
    cpu_choice = bench_step.chosen_precision_benchmarks(quick, cpu=True)
    assert cpu_choice == quick.precision_benchmarks  # the CPU's, as before
    assert not any(p == "mixed_float16" for *_, p in cpu_choice)
    with pytest.raises(pytest.skip.Exception, match="precision benchmarks"):
        bench_step.precision_spec("x", fp16, quick, None)
    gpu_choice = bench_step.chosen_precision_benchmarks(quick, cpu=False)
    assert {(i, t) for i, t, p in gpu_choice if p == "mixed_float16"} == {
        (i, t) for i in ("keras_fit", "custom_graph") for t in ("mlp", "cnn")
    }
    monkeypatch.setattr(bench_step, "device_name", lambda: "/GPU:0")
    monkeypatch.setattr(bench_step, "gpu_compute_capability", lambda: (9, 0))
    assert bench_step.precision_spec("x", fp16, quick, None).precision == "mixed_float16"
    assert bench_step.precision_spec("x", bf16, quick, None).precision == "mixed_bfloat16"
    monkeypatch.setattr(bench_step, "gpu_compute_capability", lambda: (7, 5))
    with pytest.raises(pytest.skip.Exception, match="compute capability 8.0"):
        bench_step.precision_spec("x", bf16, quick, None)
    assert bench_step.precision_spec("x", fp16, quick, None).precision == "mixed_float16"


def test_keras_fit_spe_feeds_its_batches_from_the_device(task_data):
    """On a GPU the iterator's batches are delivered on the device (prefetch_to_device);
    on a CPU nothing changes. The device path, pointed at the CPU, trains identically."""
    import tensorflow as tf

    from bench.tasks import TASKS, initial_weights
    from implementations.common import epoch_dataset
    from implementations.keras_fit import keras_fit, keras_fit_spe

    task = TASKS["linreg"]
    data = task_data(task)
    batches = list(epoch_dataset(data.x_train, data.y_train, 32, seed=0, epoch=0))[:8]
    x, y = tf.stack([b[0] for b in batches[:4]]), tf.stack([b[1] for b in batches[:4]])
    assert keras_fit(task, initial_weights(task)).input_device is None  # no iterator
    out = []
    for device in (None, "/device:CPU:0"):
        trainer = keras_fit_spe(task, initial_weights(task), steps_per_call=4)
        assert trainer.input_device is None  # this machine has no GPU
        trainer.input_device = device
        losses = trainer.step_losses(batches)
        out.append((losses, [float(trainer.step(x, y)) for _ in range(2)]))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


def test_jax_peak_memory_is_the_devices_own_on_a_gpu(monkeypatch):
    # Importing the worker module sets KERAS_BACKEND=jax in this process's environment; set
    # first through monkeypatch, the variable is restored (removed) after the test, so the
    # subprocesses later tests start stay on TensorFlow (a fresh-clone CI run failed so).
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    from bench.jax.worker import peak_memory

    class Device:
        def __init__(self, platform, stats):
            self.platform, self.stats = platform, stats

        def memory_stats(self):
            return self.stats

    gpu = Device("gpu", {"peak_bytes_in_use": 3 * 2**20, "bytes_in_use": 2**20})
    assert peak_memory(gpu) == (3.0, "jax_device_peak")
    mb, kind = peak_memory(Device("cpu", None))
    assert kind == "cpu_rss_hwm" and mb > 0
    assert peak_memory(Device("gpu", None))[1] == "cpu_rss_hwm"  # no statistics kept


def test_no_test_leaves_the_jax_backend_in_the_environment():
    """Runs after the test above (file order): subprocesses started by later tests inherit
    this process's environment, and KERAS_BACKEND=jax there turns TensorFlow's benchmarks
    into JAX's."""
    import os

    assert os.environ.get("KERAS_BACKEND") in (None, "tensorflow")
