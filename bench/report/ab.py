"""Markdown for A/B files (``python -m bench ab --json``) in ``python -m bench report``.

``ab_sections`` renders, per A/B file, "A/B: HEAD vs BASE": the two sides (spec, revision,
versions, and whether the versions differ), the threshold and confidence, and one row per
benchmark in the file's order: BASE and HEAD ms/step, the change with its interval, the
verdict, the smallest change the run could detect, the pairs kept and dropped, and notes
(why it was skipped, numbers changed, an interval still across the threshold).
``ab_machine_table`` is the machine header for A/B files.
Called by ``bench.report.cli``; no TensorFlow.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from bench.report.load import AB_VERDICTS, ABRun, change_pct
from bench.report.rows import MISSING, fmt, markdown_table, number_or_none, timestamp_text
from bench.stats import paired as ab_stats

SIDES = (("base", "BASE"), ("head", "HEAD"))
VERSION_NAMES = {"python": "Python", "tensorflow": "TensorFlow", "keras": "Keras", "numpy": "NumPy"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a literal pipe would end the table cell


def ab_machine_table(ab_runs: Sequence[ABRun]) -> str:
    """One column per A/B file: where and when it ran, and how much CPU the hypervisor took."""

    def field(ab: ABRun) -> dict[str, str]:
        m = ab.machine
        steal = number_or_none(m.get("steal_pct_session"))
        count = m.get("cpu_count")
        return {
            "source": ab.source.name,
            "date": timestamp_text(ab.datetime),
            "command": MISSING
            if ab.command is None
            else _cell(f"`{' '.join(shlex.quote(c) for c in ab.command)}`"),
            "CPU": f"{m.get('cpu_model') or MISSING}"
            + (f" ({count} logical cores)" if count else ""),
            "platform": m.get("platform") or MISSING,
            "CPU steal during the run": MISSING
            if steal is None
            else f"{fmt(steal)}% of CPU time taken by the hypervisor",
        }

    fields = [field(ab) for ab in ab_runs]
    return markdown_table(
        [[k] + [f[k] for f in fields] for k in fields[0]], [""] + [ab.label for ab in ab_runs]
    )


def _versions(side: dict[str, Any]) -> dict[str, Any]:
    versions = side.get("versions")
    return versions if isinstance(versions, dict) else {}


def _revision(side: dict[str, Any]) -> str:
    """The short sha; for a directory or the working tree, also which one (its files may
    differ from that commit: uncommitted changes are what such a side is usually for)."""
    rev = side.get("revision")
    short = rev[:7] if isinstance(rev, str) and len(rev) == 40 else rev or None
    if side.get("kind") == "revision":
        return str(short or MISSING)
    where = " ".join(str(x) for x in (side.get("kind"), side.get("root")) if x)
    if not where:
        return str(short or MISSING)
    return f"{short} ({where})" if short else f"none ({where})"


def _device(v: dict[str, Any]) -> str:
    parts = [str(v.get("device") or MISSING)]
    gpus = v.get("gpus") or []
    if gpus:
        parts.append(", ".join(str(g.get("name", g) if isinstance(g, dict) else g) for g in gpus))
    if v.get("onednn") is not None:
        parts.append(f"oneDNN {'on' if v['onednn'] else 'off'}")
    threads = [v.get("intra_op_threads"), v.get("inter_op_threads")]
    if any(t is not None for t in threads):
        parts.append(
            "intra/inter-op threads "
            + "/".join(
                "default" if t == 0 else str(t if t is not None else MISSING) for t in threads
            )
        )
    return ", ".join(parts)


def _sides_table(ab: ABRun) -> str:
    sides = [(name, getattr(ab, key)) for key, name in SIDES]
    rows = [
        ["spec"] + [str(side.get("spec") or MISSING) for _, side in sides],
        ["revision"] + [_revision(side) for _, side in sides],
        [" / ".join(VERSION_NAMES.values())]
        + [
            " / ".join(str(_versions(side).get(k) or MISSING) for k in VERSION_NAMES)
            for _, side in sides
        ],
        ["device"] + [_device(_versions(side)) for _, side in sides],
    ]
    interpreters = [side.get("python") for _, side in sides]
    if interpreters[0] != interpreters[1]:  # --base-python / --head-python
        rows.append(["interpreter"] + [str(p or MISSING) for p in interpreters])
    return markdown_table(rows, [""] + [name for name, _ in sides], text=(1, 2))


def _versions_line(ab: ABRun) -> str:
    base, head = _versions(ab.base), _versions(ab.head)
    unknown = [name for key, name in SIDES if not _versions(getattr(ab, key))]
    if unknown:
        return f"Versions not recorded for {' and '.join(unknown)}: they may differ."
    differ = [
        f"{VERSION_NAMES.get(k, k)} {fmt(base.get(k))} (BASE) vs {fmt(head.get(k))} (HEAD)"
        for k in dict.fromkeys([*base, *head])
        if k != "executable" and base.get(k) != head.get(k)  # a path, not a version: own row
    ]
    if not differ:
        return "Both sides ran the same versions and device settings."
    return (
        "**The sides ran different versions**: "
        + "; ".join(differ)
        + ". Part of a change may come from them, not from the code."
    )


def _settings_line(ab: ABRun) -> str:
    s = ab.settings
    threshold, confidence = (
        number_or_none(s.get("threshold_pct")),
        number_or_none(s.get("confidence")),
    )
    parts = [
        "threshold " + (MISSING if threshold is None else f"±{threshold:g}%"),
        "confidence " + (MISSING if confidence is None else f"{confidence * 100:g}%"),
    ]
    rest = [
        f"{k} `{v}`"
        if k == "select"
        else f"{k} {v:g}"
        if number_or_none(v) is not None
        else f"{k} {v}"
        for k, v in s.items()
        if k not in ("threshold_pct", "confidence") and v is not None
    ]
    return "Settings: " + ", ".join(parts) + ("; " + ", ".join(rest) if rest else "") + "."


def change_text(bench: dict[str, Any]) -> str:
    """``+8.3% [+5.1, +11.2]``: the change and its interval in % (positive: HEAD slower)."""
    change = change_pct(bench.get("ratio"))
    if change is None:
        return MISSING
    low, high = change_pct(bench.get("ci_low")), change_pct(bench.get("ci_high"))
    interval = f" [{low:+.1f}, {high:+.1f}]" if low is not None and high is not None else ""
    return f"{change:+.1f}%{interval}"


def _ms(side: Any) -> str:
    median = number_or_none(side.get("median_s")) if isinstance(side, dict) else None
    return fmt(None if median is None else median * 1e3)


def _notes(bench: dict[str, Any], threshold: float | None) -> str:
    notes = []
    if bench["verdict"] == "skipped":
        notes.append(str(bench.get("skip_reason") or "skipped"))
    numerics = bench.get("numerics") or {}
    if numerics.get("changed"):
        rel, tol = (
            number_or_none(numerics.get("rel_diff")),
            number_or_none(numerics.get("tolerance")),
        )
        detail = "loss after warm-up differs"
        if rel is not None:
            detail += f" by {rel:.1e}" + (f" > tolerance {tol:.0e}" if tol is not None else "")
        notes.append(f"numbers changed ({detail})")
    first = bench.get("first_verdict")
    if first:
        pairs = bench.get("process_pairs")
        checked = f"checked by fresh worker processes ({pairs} process pairs in all)"
        notes.append(checked if first == bench["verdict"] else f"{first} at first; {checked}")
    ratio, low, high = (number_or_none(bench.get(k)) for k in ("ratio", "ci_low", "ci_high"))
    if None not in (ratio, low, high, threshold) and bench["verdict"] != "skipped":
        # bench ab samples until this is decided or --max-seconds run out: a verdict from an
        # interval still straddling the threshold is the best the time allowed, not a finding
        estimate = ab_stats.Estimate(ratio, low, high, n=0)
        if not ab_stats.decided(estimate, threshold / 100):
            notes.append(f"undecided: the interval crosses the ±{threshold:g}% threshold")
    return "; ".join(notes)


def _benchmark_table(ab: ABRun) -> str:
    threshold = number_or_none(ab.settings.get("threshold_pct"))
    confidence = number_or_none(ab.settings.get("confidence"))
    rows = []
    for bench in ab.benchmarks:
        detectable = number_or_none(bench.get("detectable_pct"))
        pairs, dropped = (
            number_or_none(bench.get("pairs")),
            number_or_none(bench.get("pairs_dropped_steal")),
        )
        rows.append(
            [
                bench["name"],
                _ms(bench.get("base")),
                _ms(bench.get("head")),
                change_text(bench),
                bench["verdict"],
                MISSING if detectable is None else f"±{detectable:.1f}%",
                MISSING if pairs is None else f"{fmt(pairs)} / {fmt(dropped)}",
                _cell(_notes(bench, threshold)),
            ]
        )
    ci = "interval" if confidence is None else f"{confidence * 100:g}% interval"
    headers = [
        "benchmark",
        "BASE ms/step",
        "HEAD ms/step",
        f"change ({ci})",
        "verdict",
        "detectable",
        "pairs (kept / dropped)",
        "notes",
    ]
    return markdown_table(rows, headers, text=(4, 7))


def _summary_line(ab: ABRun) -> str:
    by_verdict: dict[str, list[str]] = {v: [] for v in AB_VERDICTS}
    for bench in ab.benchmarks:
        by_verdict.setdefault(bench["verdict"], []).append(bench["name"])
    parts = [
        f"{verdict}: {', '.join(names) or 'none'}"
        if verdict in ("SLOWER", "FASTER")
        else f"{verdict}: {len(names)}"
        for verdict, names in by_verdict.items()
    ]
    line = "; ".join(parts) + "."
    highs = [number_or_none(b.get("ci_high")) for b in ab.benchmarks if b["verdict"] == "no change"]
    threshold = number_or_none(ab.settings.get("threshold_pct"))
    if not by_verdict["SLOWER"] and highs and None not in highs and threshold is not None:
        # what "no change" could still hide: the largest slowdown inside any interval
        worst = max(threshold, *(change_pct(h) for h in highs))
        line += f" No regression detected: a slowdown above +{worst:.1f}% is ruled out."
    exit_code, wall = ab.summary.get("exit_code"), number_or_none(ab.summary.get("wall_s"))
    if exit_code is not None or wall is not None:
        took = "" if wall is None else f" took {fmt(wall / 60)} min"
        exited = "" if exit_code is None else f" exited {exit_code}"
        line += f" `bench ab`{took}{' and' if took and exited else ''}{exited}."
    return line


def ab_sections(ab_runs: Sequence[ABRun]) -> list[str]:
    """One "A/B: HEAD vs BASE" section per A/B file, as markdown lines (headings included)."""
    lines: list[str] = []
    for ab in ab_runs:
        lines += ["## A/B: HEAD vs BASE" + (f" ({ab.label})" if len(ab_runs) > 1 else ""), ""]
        lines += [_sides_table(ab), "", _versions_line(ab), "", _settings_line(ab), ""]
        lines += [_benchmark_table(ab), "", _summary_line(ab), ""]
        threshold = number_or_none(ab.settings.get("threshold_pct"))
        band = "the threshold" if threshold is None else f"±{threshold:g}%"
        scale = number_or_none(ab.settings.get("interval_scale"))
        widened = (
            f" (the signed-rank interval widened {scale:g}x for the worker processes' own biases)"
            if scale and scale != 1
            else ""
        )
        lines += [
            "Change: HEAD time / BASE time per step - 1 (positive: HEAD slower), from rounds of "
            "BASE and HEAD run back to back on one machine (Hodges-Lehmann estimate of the "
            f"paired ratios), with its interval{widened}. SLOWER / FASTER: the change is "
            f"beyond {band} and its interval excludes 0. Detectable: the interval's "
            "half-width, about the smallest change this run could tell from noise. Pairs: "
            "round pairs kept, and dropped because the hypervisor took CPU time during them. "
            "Numbers changed: the loss after the warm-up steps differs between the sides "
            "beyond the tolerance, so HEAD no longer computes the same thing.",
            "",
        ]
    return lines
