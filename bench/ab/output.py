"""What ``python -m bench ab`` prints and records about its results and sides: the terminal
table, the progress and summary lines, the github-action-benchmark entries, and the JSON's
side and machine records. Called by ``bench.ab.run`` and ``bench.ab.cli``; no TensorFlow."""

from __future__ import annotations

import os
import platform
import sys
from typing import TextIO

from tabulate import tabulate

from bench.host import cpu_model
from bench.stats import paired as S
from bench.workers.process import Side


def pct(ratio: float | None) -> str:
    return "—" if ratio is None else f"{100 * (ratio - 1):+.1f}%"


def undecided(r: dict, threshold: float) -> bool:
    """A "no change" whose interval still reaches past the threshold on one side or the
    other: the time ran out before more pairs could tell (a slow CPU, a noisy spell, too
    many benchmarks for the budget). Not a regression, and not ruled out either."""
    if r["verdict"] != S.NO_CHANGE or r.get("ci_low") is None:
        return False
    return not S.decided(S.Estimate(r["ratio"], r["ci_low"], r["ci_high"], n=0), threshold)


def format_table(results: list[dict], threshold: float | None = None) -> str:
    rows = []
    for r in results:
        if r["verdict"] == S.SKIPPED:
            rows.append([r["name"], "", "", "", f"skipped: {r['skip_reason']}", "", ""])
            continue
        verdict = r["verdict"]
        if threshold is not None and undecided(r, threshold):
            verdict = "undecided"
        if r["numerics"]["changed"]:
            verdict += ", but the numbers changed"
        rows.append(
            [
                r["name"],
                f"{1e3 * r['base']['median_s']:.3f}",
                f"{1e3 * r['head']['median_s']:.3f}",
                f"{pct(r['ratio'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
                verdict,
                f"±{r['detectable_pct']:.1f}%",
                f"{r['pairs']} (+{r['pairs_dropped_steal']} contended)",
            ]
        )
    headers = [
        "benchmark",
        "BASE ms/step",
        "HEAD ms/step",
        "HEAD vs BASE [CI]",
        "verdict",
        "resolution",
        "pairs",
    ]
    return tabulate(rows, headers=headers, disable_numparse=True)


def format_sides(sides: list[Side]) -> str:
    lines = []
    for s in sides:
        v = s.versions
        lines.append(
            f"{s.label.upper()}: {s.describe()} ({s.kind}) -- Python {v.get('python')}, "
            f"TensorFlow {v.get('tensorflow')}, Keras {v.get('keras')}, {v.get('device')}, "
            f"oneDNN {'on' if v.get('onednn') else 'off'}"
        )
    keys = ("python", "tensorflow", "keras", "numpy", "device", "gpus", "onednn")
    differ = [k for k in keys if sides[0].versions.get(k) != sides[1].versions.get(k)]
    if differ:
        lines.append("the sides differ in: " + ", ".join(differ))
    return "\n".join(lines)


def chart_name(r: dict) -> str:
    """A benchmark's stable, unique name in a chart: the A/B check, the benchmark and its
    batch size (``custom_graph-mlp`` at batch 256 and at 64 are two lines)."""
    return f"ab {r['implementation']}-{r['task']} batch={r['batch_size']}: HEAD/BASE"


def github_entries(results: list[dict], threshold: float) -> list[dict]:
    """For github-action-benchmark's ``customSmallerIsBetter``: each benchmark's A/B ratio,
    HEAD/BASE step time, as the value -- so a slowdown raises it, and runners that differ from
    commit to commit do not -- its interval as the range, the verdict and both sides' medians
    in ``extra``."""
    out = []
    for r in results:
        if r["verdict"] == S.SKIPPED or r.get("ratio") is None:
            continue
        out.append(
            {
                "name": chart_name(r),
                "unit": "HEAD/BASE",
                "value": round(r["ratio"], 6),
                "range": f"{r['ci_low']:.4f}..{r['ci_high']:.4f}",
                "extra": (
                    f"{r['verdict']} (threshold {100 * threshold:g}%); BASE "
                    f"{1e3 * r['base']['median_s']:.4g} ms/step, HEAD "
                    f"{1e3 * r['head']['median_s']:.4g} ms/step; {r['pairs']} round pairs"
                ),
            }
        )
    return out


def markdown_verdict(results: list[dict], threshold: float, sides: list[Side]) -> str:
    """The verdict as markdown for a pull request comment or a job summary: the summary line,
    a table of the benchmarks that changed (slower or faster), the rest collapsed."""
    measured = [r for r in results if r["verdict"] != S.SKIPPED]
    slower = [r for r in measured if r["verdict"] == S.SLOWER]
    faster = [r for r in measured if r["verdict"] == S.FASTER]
    open_ = [r for r in measured if undecided(r, threshold)]
    same = [r for r in measured if r not in slower and r not in faster and r not in open_]
    skipped = [r for r in results if r["verdict"] == S.SKIPPED]
    head, base = (next(s for s in sides if s.label == k) for k in ("head", "base"))
    mark = ":red_circle:" if slower else ":white_check_mark:"
    counts = f"**{len(slower)} slower**, {len(faster)} faster, {len(same)} unchanged"
    if open_:
        counts += f", {len(open_)} undecided"
    if skipped:
        counts += f", {len(skipped)} skipped"
    lines = [
        f"{mark} `bench ab`: {counts} (threshold {100 * threshold:g}%; HEAD "
        f"`{head.describe()}` vs BASE `{base.describe()}`)",
        "",
    ]
    if slower or faster:
        lines += [_markdown_table(slower + faster), ""]
    if open_:
        lines += [
            f"<details><summary>{len(open_)} undecided when the time ran out (the interval "
            f"still reaches past ±{100 * threshold:g}%){_ruled_out(open_)}</summary>",
            "",
            "Neither a regression nor ruled out: more time (`--budget-seconds`) or fewer "
            "benchmarks (`-k`) would decide them.",
            "",
            _markdown_table(open_, "undecided"),
            "",
            "</details>",
            "",
        ]
    if same:
        lines += [
            f"<details><summary>{len(same)} unchanged{_ruled_out(same)}</summary>",
            "",
            _markdown_table(same),
            "",
            "</details>",
            "",
        ]
    if skipped:
        lines += [f"- `{r['name']}` skipped: {r['skip_reason']}" for r in skipped] + [""]
    lines.append(
        "HEAD/BASE: the Hodges-Lehmann estimate of paired round ratios, both sides measured "
        "in turn on the same runner; [95% interval]."
    )
    return "\n".join(lines) + "\n"


def _ruled_out(rows: list[dict]) -> str:
    """What the intervals of ``rows`` rule out: the largest slowdown still inside any."""
    missed = [r["missed_pct"] for r in rows if r.get("missed_pct") is not None]
    return f"; slowdowns above +{max(missed):.1f}% ruled out" if missed else ""


def _markdown_table(rows: list[dict], verdict: str | None = None) -> str:
    table = [
        [
            f"`{r['name']}`",
            f"{1e3 * r['base']['median_s']:.3f}",
            f"{1e3 * r['head']['median_s']:.3f}",
            f"{pct(r['ratio'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
            (verdict or r["verdict"]) + (", numbers changed" if r["numerics"]["changed"] else ""),
        ]
        for r in rows
    ]
    headers = ["benchmark", "BASE ms/step", "HEAD ms/step", "change [95% CI]", "verdict"]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def side_record(s: Side) -> dict:
    return {
        "spec": s.spec,
        "kind": s.kind,
        "revision": s.revision,
        "root": str(s.root),
        "python": s.python,
        "versions": s.versions,
        "implementations": s.implementations,
    }


def machine() -> dict:
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform()}


def progress(r: dict) -> None:
    again = f", first {r['first_verdict']}" if r.get("first_verdict") else ""
    print(
        f"  {r['name']}: {pct(r['ratio'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}] "
        f"{r['verdict']}{again} ({r['pairs']} pairs, {r['process_pairs']} process pairs, "
        f"{r['seconds']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )


def print_verdicts(
    results: list[dict], threshold: float, wall_s: float, file: TextIO | None = None
) -> None:
    """The table and the summary line, each after a blank line (to ``file``; None: stdout)."""
    file = file or sys.stdout
    print(file=file)
    print(format_table(results, threshold), file=file)
    print(file=file)
    print(summary_line(results, threshold, wall_s), file=file)


def summary_line(results: list[dict], threshold: float, wall_s: float) -> str:
    measured = [r for r in results if r["verdict"] != S.SKIPPED]
    slower = [r["name"] for r in measured if r["verdict"] == S.SLOWER]
    faster = [r["name"] for r in measured if r["verdict"] == S.FASTER]
    changed = [r["name"] for r in measured if r["numerics"]["changed"]]
    parts = [f"ab: {len(measured)} benchmark(s) in {wall_s:.0f} s, threshold {100 * threshold:g}%"]
    if slower:
        parts.append(f"SLOWER: {', '.join(slower)}")
    if faster:
        parts.append(f"faster: {', '.join(faster)}")
    unflagged = [r["missed_pct"] for r in measured if r["verdict"] == S.NO_CHANGE]
    if not slower and unflagged:
        worst = max(max(unflagged), 100 * threshold)
        parts.append(f"no regression detected (a slowdown above +{worst:.1f}% is ruled out)")
    open_ = [r for r in measured if undecided(r, threshold)]
    if open_:
        names = ", ".join(f"{r['name']} (±{r['detectable_pct']:.1f}%)" for r in open_)
        parts.append(
            f"undecided when the time ran out: {names}; more time (--budget-seconds) or "
            "fewer benchmarks (-k) would decide them"
        )
    if changed:
        parts.append(f"numbers changed (loss after warm-up beyond tolerance): {', '.join(changed)}")
    return "; ".join(parts)
