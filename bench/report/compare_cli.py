"""``python -m bench compare``'s command line and output: the table, the ratios to the
reference implementation with ``--normalize``, and ``--github-json``'s entries. The rules
and the comparison itself are ``bench/report/compare.py``'s (its docstring: usage, rules,
exit codes). Reads JSON only: no TensorFlow import.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from tabulate import tabulate

from bench.report.compare import (
    ACCURACY_DROP_PP,
    REFERENCE_IMPLEMENTATION,
    Comparison,
    InputError,
    Timing,
    bench_kind,
    compare,
    counted,
    display_names,
    load,
    loopbench_of,
    machine,
    machine_differences,
    match,
    reference_ratios,
    timing,
)
from bench.report.files import write_json_atomic
from bench.report.load import is_number

# --- output --------------------------------------------------------------------------------


def _fmt_time(t: Timing | None, normalize: bool) -> str:
    if t is None:
        return ""
    return f"{t.median:.4g}" if normalize else f"{t.median * 1e3:.4g}"


def _fmt_significance(c: Comparison) -> str:
    if c.kind != "step":
        return ""
    answer = "yes" if c.significant else "no"
    if c.p_value is not None:
        return f"{answer} (p={c.p_value:.2g})"
    if c.baseline.q1 is None or c.current.q1 is None:
        return "no (no spread)"
    return f"{answer} (IQRs {'apart' if c.significant else 'overlap'})"


def format_table(comparisons: list[Comparison], normalize: bool) -> str:
    unit = "(× matmul)" if normalize else "(ms)"
    rows = [
        [
            c.name,
            _fmt_time(c.baseline, normalize),
            _fmt_time(c.current, normalize),
            "" if c.change_pct is None else f"{c.change_pct:+.1f}%",
            "" if c.ci_pct is None else f"[{c.ci_pct[0]:+.1f}%, {c.ci_pct[1]:+.1f}%]",
            _fmt_significance(c),
            "" if c.accuracy_delta_pp is None else f"{c.accuracy_delta_pp:+.2f}",
            c.verdict,
        ]
        for c in comparisons
    ]
    headers = [
        "benchmark",
        f"baseline {unit}",
        f"current {unit}",
        "change",
        "95% CI",
        "significant",
        "accuracy Δ pp",
        "verdict",
    ]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def format_ratios(baseline: dict[str, Any], current: dict[str, Any]) -> str | None:
    base, cur = reference_ratios(baseline), reference_ratios(current)
    rows = []
    for b, c in match(counted(baseline), counted(current))[0]:
        b_key, c_key = b.get("fullname") or b["name"], c.get("fullname") or c["name"]
        impl = c["extra_info"].get("implementation")
        if b_key in base and c_key in cur and impl != REFERENCE_IMPLEMENTATION:
            change = (cur[c_key] / base[b_key] - 1) * 100
            rows.append([c["name"], f"{base[b_key]:.3f}", f"{cur[c_key]:.3f}", f"{change:+.1f}%"])
    if not rows:
        return None
    headers = ["benchmark", "baseline ratio", "current ratio", "change"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def github_benchmark_entries(current: dict[str, Any]) -> list[dict[str, str | float]]:
    """CURRENT's step benchmarks for github-action-benchmark's customSmallerIsBetter tool, each
    named with its profile and batch size."""
    steps = [b for b in current["benchmarks"] if bench_kind(b) == "step"]
    calibration = loopbench_of(current).get("calibration_matmul_s")
    profile = loopbench_of(current).get("profile") or "?"
    entries = []
    for bench, short in zip(steps, display_names(steps), strict=True):
        t, extra = timing(bench), bench["extra_info"]
        # Stable and unique across runs: a quick and a full run's benchmark of one name are
        # not the same measurement (round length, rounds), nor are two batch sizes.
        name = f"{short} [{profile}, batch={extra.get('batch_size')}]"
        spread = f"IQR {t.q1 * 1e3:.4g}..{t.q3 * 1e3:.4g} ms" if t.q1 is not None else ""
        details = [
            f"{bench['stats'].get('rounds', '?')} rounds of "
            f"{bench['stats'].get('iterations', '?')} steps",
            f"batch {extra.get('batch_size')}",
            f"device {extra.get('device') or machine(current)['device']}",
        ]
        if is_number(calibration) and calibration > 0:
            details.append(f"{t.median / calibration:.4g} x calibration matmul")
        entries.append(
            {
                "name": name,
                "unit": "ms/step",
                "value": round(t.median * 1e3, 6),
                "range": spread,
                "extra": "; ".join(details),
            }
        )
    return entries


# --- command line --------------------------------------------------------------------------


def parse_threshold(text: str) -> float:
    """ "10%" or "10" -> 10.0 (percent). "0.1" is refused as ambiguous: write "10%" or "0.1%"."""
    number = text.strip().removesuffix("%")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"threshold must be a non-negative percentage: {text!r}")
    if 0 < value < 1 and not text.strip().endswith("%"):
        raise argparse.ArgumentTypeError(
            f"ambiguous threshold {text!r}: the unit is percent; write {value * 100:g}% "
            f"or {value:g}%"
        )
    return value


def parse_alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"alpha must be between 0 and 1: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench compare",
        description="Regression check of CURRENT against BASELINE (pytest-benchmark JSON). "
        "Exit 0: no regression; 1: a significant slowdown beyond the threshold or an "
        f"accuracy drop of more than {ACCURACY_DROP_PP:g} pp; 2: bad input.",
    )
    parser.add_argument("baseline", metavar="BASELINE.json")
    parser.add_argument("current", metavar="CURRENT.json")
    parser.add_argument(
        "--threshold",
        type=parse_threshold,
        default=10.0,
        help="slowdown of the median step time that fails, in percent: 10%% or 10 (default 10%%)",
    )
    parser.add_argument(
        "--alpha",
        type=parse_alpha,
        default=0.05,
        help="significance level of the one-sided Mann-Whitney U test (default 0.05)",
    )
    parser.add_argument(
        "--normalize",
        action="store_true",
        help="divide every time by its run's calibration matmul time; allows different machines",
    )
    parser.add_argument(
        "--github-json",
        metavar="FILE",
        help="also write CURRENT's step times for github-action-benchmark (customSmallerIsBetter)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): return it, as main promises
        return e.code if isinstance(e.code, int) else 2
    try:
        baseline, current = load(args.baseline), load(args.current)
        comparisons = compare(
            baseline,
            current,
            threshold_pct=args.threshold,
            alpha=args.alpha,
            normalize=args.normalize,
            paths=(args.baseline, args.current),
        )
        if args.github_json:
            try:
                write_json_atomic(args.github_json, github_benchmark_entries(current))
            except OSError as e:
                raise InputError(f"{args.github_json}: cannot write ({e.strerror or e})") from None
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.normalize and machine(baseline)["device"] != machine(current)["device"]:
        print(
            "warning: one run is on CPU and the other on GPU; a matmul calibration does not "
            "make their step times comparable",
            file=sys.stderr,
        )
    print(_header(baseline, current, args))
    print()
    print(format_table(comparisons, args.normalize))
    if args.normalize and (ratios := format_ratios(baseline, current)):
        print()
        print(
            f"Median / {REFERENCE_IMPLEMENTATION} median of the same task and batch in the "
            "same run (the runner's speed cancels; informational, not part of the verdict):"
        )
        print()
        print(ratios)
    _, only_base, only_cur = match(counted(baseline), counted(current))
    print()
    if no_data := [c.name for c in comparisons if c.kind == "step" and c.p_value is None]:
        print(
            f"note: {len(no_data)} benchmark(s) lack stats.data (run pytest with "
            "--benchmark-save-data); their significance uses the conservative rule: "
            "significant only if the interquartile ranges do not overlap"
        )
    if only_base:
        print(f"only in baseline (not compared): {', '.join(b['name'] for b in only_base)}")
    if only_cur:
        print(f"only in current (not compared): {', '.join(b['name'] for b in only_cur)}")
    failed = [c for c in comparisons if c.failed]
    if failed:
        print(f"FAIL: {', '.join(f'{c.name} ({c.verdict})' for c in failed)}")
        return 1
    print(f"ok: {len(comparisons)} benchmarks compared, no regression")
    return 0


def _header(baseline: dict[str, Any], current: dict[str, Any], args: argparse.Namespace) -> str:
    def describe(results: dict[str, Any], path: str) -> str:
        m = machine(results)
        fields = [m["device"], m["gpus"] or m["cpu_model"]]
        fields.append(f"TF {m['tensorflow']}" if m["tensorflow"] else None)
        calibration = loopbench_of(results).get("calibration_matmul_s")
        if is_number(calibration):
            fields.append(f"calibration matmul {calibration * 1e3:.4g} ms")
        return f"{path} ({', '.join(str(f) for f in fields if f) or 'no machine info'})"

    lines = [
        f"baseline: {describe(baseline, args.baseline)}",
        f"current:  {describe(current, args.current)}",
    ]
    if args.normalize:
        diffs = machine_differences(baseline, current)
        lines.append(
            "times: median step time / the same run's calibration matmul time (--normalize)"
            + (f"; machines differ: {'; '.join(diffs)}" if diffs else "")
        )
    else:
        lines.append("times: median seconds per step, in ms")
    lines.append(
        f"fails on: a median step time more than {args.threshold:g}% slower, significantly "
        f"(one-sided Mann-Whitney U on stats.data, alpha {args.alpha:g}); or a final "
        f"accuracy down more than {ACCURACY_DROP_PP:g} pp"
    )
    return "\n".join(lines)
