"""TensorFlow's CPU-only start-up lines kept out of the suite's output (bench/tfimport.py),
every other line kept (in a fresh process and a worker's message:
tests/test_tfimport_integration.py)."""

from __future__ import annotations

from bench.tfimport import NOISE, quiet_lines

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
