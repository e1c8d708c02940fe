"""Paired ratios in ``python -m bench report``: text for an estimate with its interval, and the
notes of the panels the estimates come from.

A step benchmark measured interleaved in a panel (blocks of one round per member, in random
order; ``bench/timing/blocks.py``) records its speedup over the panel's baseline and over every
other member as a paired estimate with its interval (docs/results-schema.md,
``kind == "step"``); ``bench.report.rows`` reads them into ``Ratio``s. Here: ``ratio_text``
(``1.73x [1.65, 1.83]``, and ``~ no difference`` after an interval that includes 1), the notes
that explain them (``speedup_note``, ``PAIRED_NOTE``) and ``panel_notes`` for a panel that
stopped before its target. Results without these fields get none of this: their tables read as
before. No TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench.report.load import extra_info, is_number
from bench.report.rows import BASELINE, Ratio, StepRow, fmt

NO_DIFFERENCE = "~ no difference"
PAIRED_NOTE = (
    "[low, high]: the paired estimate's interval, widened to where another run's estimate on "
    "this machine falls 95% of the time (results before 2026-12-02: widened for process bias "
    "only); "
    f"{NO_DIFFERENCE}: the interval includes 1, so this run cannot tell the two apart."
)


def ratio_text(r: Ratio, number: Callable[[float], str] = fmt, suffix: str = "x") -> str:
    """``1.73x [1.65, 1.83]``; with ``~ no difference`` after it when the interval includes 1."""
    text = f"{number(r.value)}{suffix} [{number(r.low)}, {number(r.high)}]"
    return f"{text} {NO_DIFFERENCE}" if r.includes_one else text


def _panels(benches: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Panel id -> its ``panel_info`` (empty when not recorded), in the benchmarks' order."""
    panels: dict[str, dict[str, Any]] = {}
    for b in benches:
        e = extra_info(b)
        panel, info = e.get("panel"), e.get("panel_info")
        if isinstance(panel, str):
            known = panels.setdefault(panel, {})
            if not known and isinstance(info, dict):
                panels[panel] = info
    return panels


def _blocks(info: dict[str, Any]) -> str:
    blocks = info.get("blocks")
    return f"{blocks:g} blocks" if is_number(blocks) else "its blocks"


def speedup_note(rows: Sequence[StepRow], benches: Iterable[dict[str, Any]]) -> str | None:
    """How a step table's paired speedups were measured and read; None without any."""
    if not any(r.speedup_ratio for r in rows):
        return None
    vs = rows[0].speedup_vs
    panels = _panels(benches)
    each = "one round of every implementation in random order"
    if len(panels) == 1:
        (panel, info), *_ = panels.items()
        how = f"panel {panel}, {_blocks(info)} of {each}"
    elif panels:
        listed = ", ".join(f"{p} ({_blocks(info)})" for p, info in panels.items())
        how = f"panels {listed}; each block {each}"
    else:
        how = f"in blocks of {each}"
    note = (
        f"Speedup: {vs}'s step time / this one's, measured interleaved ({how}): the "
        "Hodges-Lehmann estimate of the within-block ratios. " + PAIRED_NOTE
    )
    if vs != BASELINE:
        note += f" {BASELINE} is not in the panel, so the speedups are against {vs}."
    if not all(r.speedup_ratio or r.is_baseline for r in rows if r.speedup is not None):
        note += " A speedup without an interval is the ratio of the medians."
    return note


def panel_notes(benches: Iterable[dict[str, Any]]) -> list[str]:
    """One line per panel that stopped (time cap, most blocks) before its intervals reached
    their target width, and one per member capped to a few rounds (``round_cap``)."""
    benches = list(benches)
    lines = []
    for panel, info in _panels(benches).items():
        stopped, cap = info.get("stopped_by"), info.get("time_cap_s")
        if stopped == "time_cap":
            cap_text = f"its {cap:.3g} s cap" if is_number(cap) else "its time cap"
            own, budget = info.get("profile_cap_s"), info.get("run_budget_s")
            if is_number(cap) and is_number(own) and cap < own:
                of = f" {budget:g} s" if is_number(budget) else ""
                cap_text += f" (its share of the run's{of} budget; {own:g} s without it)"
            where = f"at {cap_text} after {_blocks(info)}"
        elif stopped == "max_blocks":
            where = f"at its limit of {_blocks(info)}"
        else:
            continue
        target = info.get("target_pct")
        before = (
            f", before every interval was within ±{target:g}%"
            if is_number(target)
            else ", before every interval reached its target"
        )
        lines.append(f"Panel {panel} stopped {where}{before}.")
    for b in benches:  # members too slow for their panel's pace, capped to a few rounds
        cap = extra_info(b).get("round_cap")
        if isinstance(cap, dict) and isinstance(cap.get("reason"), str):
            compile_s = cap.get("compile_s")
            first = f" (first call {compile_s:.1f} s)" if is_number(compile_s) else ""
            lines.append(f"{b.get('name', '?')}: {cap['reason']}{first}.")
    return lines
