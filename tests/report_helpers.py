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


def panelize(
    benches: list[dict],
    panel: str,
    baseline: str = "keras_fit",
    speedups: dict[str, tuple[float, float, float]] | None = None,
    spread: float = 1.03,
    **info,
) -> dict[str, str]:
    """Give ``benches`` the fields of one panel measured interleaved (docs/results-schema.md,
    ``kind == "step"``), as the suite records them: each member's speedup over the first
    member of implementation ``baseline`` (``speedups[implementation]`` where given, else the
    ratio of the medians, its interval x/÷ ``spread``; the baseline 1, 1, 1) and ``paired``
    against every other member (this speedup / the other's). ``info`` overrides
    ``panel_info``. Returns implementation -> the name of its first member."""
    names: dict[str, str] = {}
    for b in benches:
        names.setdefault(b["extra_info"]["implementation"], b["name"])
    base_name = names[baseline]
    medians = {b["name"]: b["stats"]["median"] for b in benches}
    estimates = {}
    for b in benches:
        given = (speedups or {}).get(b["extra_info"]["implementation"])
        value = medians[base_name] / medians[b["name"]]
        estimates[b["name"]] = given or (value, value / spread, value * spread)
    estimates[base_name] = (1.0, 1.0, 1.0)
    panel_info = {
        "members": list(medians),
        "blocks": 25,
        "stopped_by": "target",
        "target_pct": 2.0,
        "time_cap_s": 40.0,
        "seconds": 31.2,
        "interval_scale": 1.0,
        "order_seed": 0,
        **info,
    }
    by_name = {b["name"]: b for b in benches}
    for b in benches:
        value, low, high = estimates[b["name"]]
        paired = {}
        for other, (other_value, _, _) in estimates.items():
            if other != b["name"]:
                ratio = value / other_value
                paired[other] = {
                    "implementation": by_name[other]["extra_info"]["implementation"],
                    "speedup": ratio,
                    "low": ratio / spread,
                    "high": ratio * spread,
                    "pairs": panel_info["blocks"],
                }
        b["extra_info"].update(
            panel=panel,
            panel_info=dict(panel_info),
            speedup_vs=baseline,
            speedup_vs_name=base_name,
            speedup=value,
            speedup_low=low,
            speedup_high=high,
            paired=paired,
        )
    return names
