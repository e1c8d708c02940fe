"""Importing TensorFlow without its start-up lines on a CPU-only machine.

The ``tensorflow`` wheel (with CUDA) prints, on every import on a machine without an NVIDIA
driver, lines a user reads as errors -- ``failed call to cuInit: ... UNKNOWN ERROR (303)``,
``cudart_stub ... Could not find cuda drivers``, absl's "All log messages before
absl::InitializeLog()" -- and ``TF_CPP_MIN_LOG_LEVEL`` does not reach them: they are written
before TensorFlow's own logging starts. ``import_tensorflow`` imports it (and initialises its
devices, where cuInit runs) with file descriptor 2 sent to a temporary file, then writes back
every line that is not one of those known ones. On a machine with an NVIDIA driver
(``/proc/driver/nvidia`` or ``/dev/nvidiactl``) nothing is filtered: there a CUDA line may be
a real error. ``LOOPBENCH_TF_LOGS=1`` keeps every line. What the lines said is recorded with
every result instead (device, oneDNN: ``bench/timing/harness.py``'s machine info).

Worker processes (the A/B, bisect, JAX, panel and ``tf.distribute`` workers) write their
stderr to a file that is shown only when one fails; ``shown`` takes the same lines out of it
there, under the same rules, so a failure's message starts with the failure.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

ENV_KEEP = "LOOPBENCH_TF_LOGS"
NOISE = re.compile(
    r"cudart_stub\.cc.*Could not find cuda drivers"
    r"|cuda_platform\.cc.*failed call to cuInit"
    r"|cuda_executor\.cc.*(?:could not find|no NVIDIA GPU)"
    r"|All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|port\.cc.*oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc.*This TensorFlow binary is optimized"
    r"|^To enable the following instructions:.*rebuild TensorFlow"
)


def nvidia_driver() -> bool:
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidiactl").exists()


def quiet_lines(text: str) -> list[str]:
    """The lines of ``text`` that are not TensorFlow's known CPU-only start-up lines."""
    return [line for line in text.splitlines() if line.strip() and not NOISE.search(line)]


def filtering() -> bool:
    """Whether the start-up lines are taken out here: not with ``LOOPBENCH_TF_LOGS=1`` nor on
    a machine with an NVIDIA driver."""
    return not os.environ.get(ENV_KEEP) and not nvidia_driver()


def shown(text: str) -> str:
    """A worker's stderr as a failure message shows it: without the known start-up lines
    (where ``filtering()``)."""
    return "\n".join(quiet_lines(text)) if filtering() else text.strip()


def import_tensorflow():
    """``import tensorflow`` (and its device initialisation), without the start-up lines
    above on a machine with no NVIDIA driver; every other line is written back to stderr."""
    if "tensorflow" in sys.modules or not filtering():
        import tensorflow as tf  # lazy: importing it is this function's work

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            import tensorflow as tf  # lazy: with file descriptor 2 caught, as above

            tf.config.list_physical_devices()  # cuInit runs here
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = quiet_lines(caught.read().decode("utf-8", "replace"))
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
    return tf
