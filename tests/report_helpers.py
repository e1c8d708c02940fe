"""Helpers the report tests share (``test_report*.py``): write a results file, read a section
of a report. Their fixtures (``tables_only``, ``plots``) are in ``tests/conftest.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path


def write(tmp_path: Path, data: dict, name: str) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def section(md: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    start = md.index(heading + "\n") + len(heading) + 1
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", md[start:], re.M)]
    return md[start : start + ends[0]] if ends else md[start:]
