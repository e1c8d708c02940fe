"""Fixtures of the report tests (``test_report*.py``, which use ``tables_only`` module-wide)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def tables_only(request, monkeypatch):
    """Drawing takes about a second per report: only tests asking for ``plots`` draw."""
    if "plots" not in request.fixturenames:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail


@pytest.fixture
def plots():
    pytest.importorskip("matplotlib")
