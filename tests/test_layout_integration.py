"""The report and compare commands start without TensorFlow, checked for real: in a fresh
interpreter where TensorFlow, Keras and JAX cannot be imported (the static check of the same
rule is in tests/test_layout.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("command", ["report", "compare"])
def test_the_report_and_compare_commands_start_without_tensorflow(command):
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'jax'): sys.modules[name] = None\n"
        "from bench.__main__ import main\n"
        "try:\n"
        f"    main(['{command}', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')\n"
        "          and sys.modules[m] is not None]\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
