"""The device and the machine a result ran on: which device, host syncs, peak memory, oneDNN,
the GPU's facts (nvidia-smi, CUDA and cuDNN versions, TF32), and the matmul yardsticks that
calibrate a run. ``bench/timing/harness.py`` re-exports these. Imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from bench.host import cpu_model

# Private to TensorFlow (whether its oneDNN kernels are on): a build may lack it.
_pywrap_util_port = None
with contextlib.suppress(ImportError):
    from tensorflow.python.util import _pywrap_util_port


def device_name() -> str:
    return "/GPU:0" if tf.config.list_logical_devices("GPU") else "/CPU:0"


def sync(value: tf.Tensor) -> float:
    # sync: fetching a value to the host waits for the step that produced it (and, on one
    # stream, for every step before it).
    return float(np.asarray(value).ravel()[0])


def reset_peak_memory() -> None:
    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")
        return
    # Linux >= 4.0: "5" resets the process's resident high-water mark (VmHWM).
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> tuple[float, str]:
    if tf.config.list_logical_devices("GPU"):
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, "gpu_peak"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "cpu_rss_hwm"
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "cpu_rss_hwm"


def onednn_enabled() -> bool:
    try:
        return bool(_pywrap_util_port.IsMklEnabled())
    except AttributeError:  # a TensorFlow build without it
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") not in ("0", "false")


def nvidia_smi_id(tf_index: int, visible: str | None = None) -> str:
    """nvidia-smi's ``--id`` for TensorFlow's GPU ``tf_index``. TensorFlow numbers the devices
    that ``CUDA_VISIBLE_DEVICES`` leaves, in its order; nvidia-smi numbers all of them by PCI bus
    (``CUDA_DEVICE_ORDER=PCI_BUS_ID``, which conftest sets, makes CUDA's order the same). So
    the i-th visible entry (an index or a UUID, which nvidia-smi also takes), else i."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    if entries and tf_index < len(entries):
        return entries[tf_index]
    return str(tf_index)


# nvidia-smi's --query-gpu fields recorded per GPU: (query field, key, numeric).
SMI_GPU_FIELDS = (
    ("memory.total", "memory_mb", True),
    ("driver_version", "driver_version", False),
    ("clocks.sm", "clock_sm_mhz", True),
    ("clocks.mem", "clock_mem_mhz", True),
    ("clocks.max.sm", "clock_max_sm_mhz", True),
    ("clocks.max.mem", "clock_max_mem_mhz", True),
    ("power.limit", "power_limit_w", True),
    ("mig.mode.current", "mig_mode", False),
)
SMI_APP_FIELDS = (
    ("pid", "pid", True),
    ("process_name", "name", False),
    ("used_memory", "used_memory_mb", True),
    ("gpu_uuid", "gpu_uuid", False),
)


def nvidia_smi(*args: str) -> str | None:
    """nvidia-smi's output, or None where it is missing or fails."""
    try:
        return subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def parse_smi_line(line: str, fields: tuple[tuple[str, str, bool], ...]) -> dict:
    """One ``--format=csv,noheader,nounits`` line as ``{key: value}``: numbers where the field
    is numeric, text otherwise, None for ``N/A``, ``[Not Supported]`` or a short line."""
    values = [v.strip() for v in line.split(",")]
    out: dict = {key: None for _, key, _ in fields}
    if len(values) != len(fields):
        return out
    for (_, key, numeric), value in zip(fields, values):
        if not value or value.strip("[]") in ("N/A", "Not Supported", "Unknown Error"):
            continue
        if not numeric:
            out[key] = value
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        out[key] = int(number) if key == "pid" else number
    return out


def smi_gpu_facts(index: str) -> dict:
    """nvidia-smi's facts of GPU ``index`` (``SMI_GPU_FIELDS``); every value None without it."""
    query = ",".join(field for field, _, _ in SMI_GPU_FIELDS)
    text = nvidia_smi(f"--id={index}", f"--query-gpu={query}", "--format=csv,noheader,nounits")
    return parse_smi_line((text or "").strip(), SMI_GPU_FIELDS)


def gpu_processes() -> list[dict] | None:
    """Every process on a GPU now (``nvidia-smi --query-compute-apps``): ``pid``, ``name``,
    ``used_memory_mb``, ``gpu_uuid``, and ``this_process`` (in a container nvidia-smi may show
    the host's pids, so none is this one). None where nvidia-smi cannot be asked."""
    query = ",".join(field for field, _, _ in SMI_APP_FIELDS)
    text = nvidia_smi(f"--query-compute-apps={query}", "--format=csv,noheader,nounits")
    if text is None:
        return None
    apps = [parse_smi_line(line, SMI_APP_FIELDS) for line in text.splitlines() if line.strip()]
    return [{**app, "this_process": app["pid"] == os.getpid()} for app in apps]


def gpu_compute_capability() -> tuple[int, int] | None:
    """TensorFlow's first GPU's compute capability, or None without a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    return (int(cc[0]), int(cc[1])) if cc else None


def gpu_details() -> list[dict]:
    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        cc = details.get("compute_capability")
        facts = smi_gpu_facts(nvidia_smi_id(int(gpu.name.rsplit(":", 1)[-1])))
        facts.pop("driver_version")  # one per machine: machine_info's gpu_driver
        out.append(
            {
                "name": details.get("device_name", gpu.name),
                "compute_capability": ".".join(map(str, cc)) if cc else None,
                **facts,
            }
        )
    return out


def gpu_software() -> dict:
    """The GPU side's versions and surroundings (docs/results-schema.md); all None on a CPU."""
    keys = ("gpu_driver", "cuda_version", "cudnn_version", "cuda_visible_devices")
    if not tf.config.list_physical_devices("GPU"):
        return {**dict.fromkeys(keys), "gpu_processes": None}
    build = tf.sysconfig.get_build_info()
    return {
        "gpu_driver": smi_gpu_facts(nvidia_smi_id(0))["driver_version"],
        # What TensorFlow was built against; the pip CUDA wheels may be newer minor versions.
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_processes": gpu_processes(),
    }


def matmul_timer(n: int | None = None) -> tuple[int, Callable[[], float]]:
    """A compiled chain of square fp32 matmuls on the device, sized so one call lasts about
    0.1 s: returns ``n`` and ``round()``, which runs the chain once, synced, and returns the
    seconds per n x n matmul. ``n``: 4096 on a GPU, 1024 on a CPU unless given."""
    gpu = bool(tf.config.list_logical_devices("GPU"))
    n = n or (4096 if gpu else 1024)
    with tf.device(device_name()):
        a = tf.random.stateless_uniform((n, n), seed=(1, 2))
        b = tf.random.stateless_uniform((n, n), seed=(3, 4)) / n

    @tf.function
    def chain(a, b, reps):
        for _ in tf.range(reps):
            a = tf.matmul(a, b)
        return a[0, 0]

    sync(chain(a, b, tf.constant(1)))
    reps = 1
    while True:
        t0 = time.perf_counter()
        sync(chain(a, b, tf.constant(reps)))
        dt = time.perf_counter() - t0
        if dt > 0.1 or reps >= 1 << 14:
            break
        reps *= 2
    count = tf.constant(reps)

    def one_round() -> float:
        t0 = time.perf_counter()
        sync(chain(a, b, count))
        return (time.perf_counter() - t0) / reps

    return n, one_round


SMALL_MATMUL_N = 256  # the GPU's launch-latency yardstick: too small to fill the device


def matmul_precision(compute_capability: tuple[int, int] | None, tf32_enabled: bool) -> str:
    """How float32 matmuls ran: ``"tf32"`` where TensorFloat-32 is enabled and the GPU has it
    (compute capability 8.0, Ampere, or later), else ``"fp32"``."""
    if tf32_enabled and compute_capability is not None and compute_capability >= (8, 0):
        return "tf32"
    return "fp32"


def best_round(one_round: Callable[[], float], seconds: float) -> float:
    best = one_round()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        best = min(best, one_round())
    return best


def calibrate_matmul(seconds: float = 1.0) -> dict:
    """The machine's sustained float32 matmul rate: the best of several timed rounds of a
    compiled square matmul chain (``matmul_timer``), synced at the end of each round, labelled
    ``tf32`` or ``fp32`` as it ran (``matmul_precision``). On a GPU also a chain of small
    (``SMALL_MATMUL_N``) matmuls, whose time per matmul is mostly launch latency: the yardstick
    of small steps. None on a CPU, where the big chain already says it."""
    n, one_round = matmul_timer()
    best = best_round(one_round, seconds)
    small: dict = {"calibration_small_n": None, "calibration_small_matmul_s": None}
    if tf.config.list_logical_devices("GPU"):
        small_n, small_round = matmul_timer(SMALL_MATMUL_N)
        small.update(
            calibration_small_n=small_n,
            calibration_small_matmul_s=best_round(small_round, seconds / 2),
        )
    tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    return {
        "calibration_n": n,
        "calibration_matmul_s": best,
        "calibration_gflops": 2 * n**3 / best / 1e9,
        "calibration_precision": matmul_precision(gpu_compute_capability(), tf32),
        **small,
    }


def machine_info(profile: str, calibration: dict) -> dict:
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "gpus": gpu_details(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "onednn": {"env": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "enabled": onednn_enabled()},
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        "xla_flags": {k: os.environ.get(k) for k in ("XLA_FLAGS", "TF_XLA_FLAGS")},
        **gpu_software(),
        "profile": profile,
        **calibration,
    }
