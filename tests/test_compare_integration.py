"""``python -m bench compare`` in a fresh interpreter: it compares two result files and
never imports TensorFlow. The comparison itself: tests/test_compare.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_compare import FIXTURES

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.integration


def test_command_line_runs_without_tensorflow():
    script = (
        "import sys; from bench.__main__ import main; "
        f"code = main(['compare', {str(FIXTURES / 'compare_baseline.json')!r}, "
        f"{str(FIXTURES / 'compare_current.json')!r}]); "
        "assert 'tensorflow' not in sys.modules; sys.exit(code)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert "SLOWER" in proc.stdout and proc.stderr == ""
