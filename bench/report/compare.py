"""Regression check between two pytest-benchmark JSON files.

Run::

    python -m bench compare BASELINE.json CURRENT.json [--threshold 10%] [--alpha 0.05]
                            [--normalize] [--github-json FILE]

Benchmarks are matched on ``fullname`` (then on ``name`` for those left over, so moving a
benchmark file does not lose its history). Only benchmarks with ``extra_info.kind`` "step" or
"convergence" count (see docs/results-schema.md).

Rules:

- **Step time** (``kind == "step"`` only; a convergence benchmark's time includes tracing and
  evaluation, so only its accuracy is compared): the change is the ratio of ``stats.median``.
  A benchmark is SLOWER when its median grew by more than ``--threshold`` percent *and* the
  slowdown is statistically significant.
- **Significance**: when both runs recorded the per-round timings (``stats.data``, written by
  ``--benchmark-save-data``), a one-sided Mann-Whitney U test at ``--alpha`` (current slower
  than baseline, or faster for the "faster" verdict). The table also shows a 95% bootstrap
  confidence interval of the ratio of medians; it is informational, the test decides. Without
  ``stats.data`` on either side the rule is conservative: a slowdown is significant only when
  the interquartile ranges do not overlap (current q1 > baseline q3); the output says so.
- **Accuracy**: when both runs recorded ``extra_info.final_accuracy`` (a fraction), a drop of
  more than ``ACCURACY_DROP_PP`` percentage points is an ACCURACY DROP, whatever the timing.
- **Machines**: results from a different device, CPU model, GPU model or TensorFlow version
  are refused unless ``--normalize``. With ``--normalize`` every time (median, quartiles and
  each data point) is divided by its own run's ``calibration_matmul_s``, so a runner that is
  uniformly 2x slower compares equal; the verdict uses these normalized times. It also prints,
  for information, each implementation's median over the ``custom_graph`` median of the same
  group, task and batch size in the same run, where the runner's speed cancels exactly.

Exit codes: 0 no regression, 1 a SLOWER or ACCURACY DROP verdict, 2 bad input (one line on
stderr). ``--github-json FILE`` writes CURRENT's step benchmarks in the format
``benchmark-action/github-action-benchmark`` reads for ``tool: customSmallerIsBetter``.

Reads JSON only: no TensorFlow import.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu
from tabulate import tabulate

from bench.report.cli import ResultsError, _extra, _is_number, read_results
from bench.report.files import write_json_atomic

COUNTED_KINDS = ("step", "convergence")
ACCURACY_DROP_PP = 1.0
REFERENCE_IMPLEMENTATION = "custom_graph"
BOOTSTRAP_RESAMPLES = 2000


class InputError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


@dataclass(frozen=True)
class Timing:
    median: float
    q1: float | None
    q3: float | None
    data: np.ndarray | None  # per-round seconds per step (or normalized units)


@dataclass(frozen=True)
class Comparison:
    """One benchmark present in both files."""

    name: str
    kind: str
    baseline: Timing | None  # None for convergence benchmarks: their time is not compared
    current: Timing | None
    change_pct: float | None
    ci_pct: tuple[float, float] | None  # 95% bootstrap CI of the change, when data exist
    p_value: float | None  # one-sided, in the direction of the change; None for the IQR rule
    significant: bool
    accuracy_delta_pp: float | None
    verdict: str
    failed: bool


# --- input ---------------------------------------------------------------------------------


def load(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON file (``report.read_results``), or raise InputError saying
    what is wrong with it; every benchmark must have a numeric ``stats.median``."""
    try:
        results = read_results(path)
    except ResultsError as e:
        raise InputError(str(e)) from None
    for i, bench in enumerate(results["benchmarks"]):
        if not _is_number(bench["stats"].get("median")):
            raise InputError(f"{path}: benchmarks[{i}] has no numeric stats.median")
    return results


def _kind(bench: dict[str, Any]) -> str | None:
    return _extra(bench).get("kind")


def counted(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in results["benchmarks"] if _kind(b) in COUNTED_KINDS]


def match(
    baseline: list[dict[str, Any]], current: list[dict[str, Any]]
) -> tuple[list[tuple[dict, dict]], list[dict], list[dict]]:
    """Pairs matched on fullname, then on a name unique among the leftovers of both sides."""
    base_full = {b.get("fullname") or b["name"]: b for b in baseline}
    cur_full = {b.get("fullname") or b["name"]: b for b in current}
    pairs = [(base_full[k], cur_full[k]) for k in base_full if k in cur_full]
    base_left = [b for k, b in base_full.items() if k not in cur_full]
    cur_left = [b for k, b in cur_full.items() if k not in base_full]

    def unique_names(benches: list[dict]) -> dict[str, dict]:
        names = [b["name"] for b in benches]
        return {b["name"]: b for b in benches if names.count(b["name"]) == 1}

    base_names, cur_names = unique_names(base_left), unique_names(cur_left)
    by_name = [(base_names[n], cur_names[n]) for n in base_names if n in cur_names]
    paired = {id(b) for pair in by_name for b in pair}
    pairs += by_name
    return (
        pairs,
        [b for b in base_left if id(b) not in paired],
        [b for b in cur_left if id(b) not in paired],
    )


def _loopbench(results: dict[str, Any]) -> dict[str, Any]:
    info = results.get("machine_info")
    lb = info.get("loopbench") if isinstance(info, dict) else None
    return lb if isinstance(lb, dict) else {}


def machine(results: dict[str, Any]) -> dict[str, object]:
    """The fields that must agree for raw times to be comparable."""
    lb = _loopbench(results)
    info = results.get("machine_info") if isinstance(results.get("machine_info"), dict) else {}
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    gpus = lb.get("gpus") if isinstance(lb.get("gpus"), list) else []
    return {
        "device": lb.get("device"),
        "cpu_model": lb.get("cpu_model") or cpu.get("brand_raw"),
        "gpus": ", ".join(str(g.get("name")) for g in gpus if isinstance(g, dict)) or None,
        "tensorflow": lb.get("tensorflow"),
        # GPU facts that change raw times (null on CPU, and in files older than them)
        "tf32": lb.get("tf32") if lb.get("device") == "GPU" else None,
        "gpu_driver": lb.get("gpu_driver"),
        "cuda_version": lb.get("cuda_version"),
        "cudnn_version": lb.get("cudnn_version"),
    }


def machine_differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    b, c = machine(baseline), machine(current)
    return [f"{k}: {b[k]!r} vs {c[k]!r}" for k in b if b[k] != c[k]]


def calibration_s(results: dict[str, Any], path: str) -> float:
    value = _loopbench(results).get("calibration_matmul_s")
    if not _is_number(value) or value <= 0:
        raise InputError(
            f"{path}: --normalize needs a positive machine_info.loopbench.calibration_matmul_s"
        )
    return float(value)


def timing(bench: dict[str, Any], scale: float = 1.0) -> Timing:
    """The benchmark's step-time statistics, multiplied by ``scale``."""
    stats = bench["stats"]
    if stats["median"] <= 0:
        raise InputError(f"benchmark {bench['name']!r} has a non-positive stats.median")
    q1, q3, data = stats.get("q1"), stats.get("q3"), stats.get("data")
    quartiles_ok = _is_number(q1) and _is_number(q3)
    data_ok = isinstance(data, list) and len(data) > 0 and all(_is_number(x) for x in data)
    return Timing(
        median=stats["median"] * scale,
        q1=q1 * scale if quartiles_ok else None,
        q3=q3 * scale if quartiles_ok else None,
        data=np.asarray(data, dtype=float) * scale if data_ok else None,
    )


# --- statistics ----------------------------------------------------------------------------


def significance(base: Timing, cur: Timing, alpha: float) -> tuple[bool, float | None]:
    """(significant, one-sided p or None) for a change in the direction of the medians."""
    slower = cur.median > base.median
    if base.data is not None and cur.data is not None:
        p = float(
            mannwhitneyu(cur.data, base.data, alternative="greater" if slower else "less").pvalue
        )
        return (not math.isnan(p) and p < alpha), p
    if None in (base.q1, base.q3, cur.q1, cur.q3):
        return False, None
    apart = cur.q1 > base.q3 if slower else cur.q3 < base.q1
    return apart, None


def bootstrap_ci_pct(base: Timing, cur: Timing) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of (current median / baseline median - 1) in percent."""
    if base.data is None or cur.data is None:
        return None
    rng = np.random.default_rng(0)  # fixed: the same files always print the same table

    def medians(data: np.ndarray) -> np.ndarray:
        idx = rng.integers(0, len(data), size=(BOOTSTRAP_RESAMPLES, len(data)))
        return np.median(data[idx], axis=1)

    ratios = medians(cur.data) / medians(base.data)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return (float(lo) - 1) * 100, (float(hi) - 1) * 100


def accuracy_delta_pp(base: dict[str, Any], cur: dict[str, Any]) -> float | None:
    a = _extra(base).get("final_accuracy")
    b = _extra(cur).get("final_accuracy")
    if not (_is_number(a) and _is_number(b)):
        return None
    # rounded so that a drop of exactly 1.00 pp (0.90 -> 0.89) is not 1.0000000000000009
    return round((b - a) * 100, 9)


# --- comparison ----------------------------------------------------------------------------


def compare_pair(
    base: dict[str, Any],
    cur: dict[str, Any],
    *,
    threshold_pct: float,
    alpha: float,
    base_scale: float = 1.0,
    cur_scale: float = 1.0,
    name: str | None = None,
) -> Comparison:
    kind = _kind(cur)
    verdicts: list[str] = []
    failed = False
    b_t = c_t = change = ci = p = None
    significant = False
    if kind == "step":
        b_t, c_t = timing(base, base_scale), timing(cur, cur_scale)
        change = (c_t.median / b_t.median - 1) * 100
        significant, p = significance(b_t, c_t, alpha)
        ci = bootstrap_ci_pct(b_t, c_t)
        if change > threshold_pct:
            failed = significant
            verdicts.append("SLOWER" if significant else "slower, not significant")
        elif change < -threshold_pct:
            verdicts.append("faster" if significant else "faster, not significant")
    acc = accuracy_delta_pp(base, cur)
    if acc is not None and -acc > ACCURACY_DROP_PP:
        failed = True
        verdicts.append("ACCURACY DROP")
    return Comparison(
        name=name or cur["name"],
        kind=kind or "",
        baseline=b_t,
        current=c_t,
        change_pct=change,
        ci_pct=ci,
        p_value=p,
        significant=significant,
        accuracy_delta_pp=acc,
        verdict=", ".join(verdicts) or "ok",
        failed=failed,
    )


def _display_names(benches: list[dict[str, Any]]) -> list[str]:
    """``name`` (short, with the parameters), or ``fullname`` where names repeat."""
    names = [b["name"] for b in benches]
    return [
        b["name"] if names.count(b["name"]) == 1 else b.get("fullname") or b["name"]
        for b in benches
    ]


def compare(
    baseline: dict[str, Any],
    current: dict[str, Any],
    *,
    threshold_pct: float = 10.0,
    alpha: float = 0.05,
    normalize: bool = False,
    paths: tuple[str, str] = ("baseline", "current"),
) -> list[Comparison]:
    """Compare two loaded results files; raises InputError where ``main`` exits with 2."""
    if not normalize and (diffs := machine_differences(baseline, current)):
        raise InputError(
            "baseline and current ran on different machines ("
            + "; ".join(diffs)
            + "); pass --normalize to compare calibration-normalized times"
        )
    if normalize:
        precisions = [
            _loopbench(r).get("calibration_precision") or "fp32" for r in (baseline, current)
        ]
        if precisions[0] != precisions[1]:
            raise InputError(
                f"--normalize: the calibration matmuls ran {precisions[0]} and {precisions[1]}; "
                "times normalized by them are not comparable"
            )
    base_scale = 1 / calibration_s(baseline, paths[0]) if normalize else 1.0
    cur_scale = 1 / calibration_s(current, paths[1]) if normalize else 1.0
    base_list, cur_list = counted(baseline), counted(current)
    pairs, _, _ = match(base_list, cur_list)
    if not pairs:
        raise InputError(
            f"no common benchmarks: {paths[0]} has {len(base_list)} and {paths[1]} has "
            f"{len(cur_list)} with extra_info.kind in {'/'.join(COUNTED_KINDS)}, "
            "and none share a fullname or name"
        )
    return [
        compare_pair(
            b,
            c,
            threshold_pct=threshold_pct,
            alpha=alpha,
            base_scale=base_scale,
            cur_scale=cur_scale,
            name=name,
        )
        for (b, c), name in zip(pairs, _display_names([c for _, c in pairs]), strict=True)
    ]


def reference_ratios(results: dict[str, Any]) -> dict[str, float]:
    """fullname -> median / the same run's custom_graph median (same group, task, batch)."""

    def key(b: dict[str, Any]) -> tuple:
        e = b["extra_info"]
        return b.get("group"), e.get("task"), e.get("batch_size")

    steps = [b for b in results["benchmarks"] if _kind(b) == "step"]
    reference = {
        key(b): b["stats"]["median"]
        for b in steps
        if b["extra_info"].get("implementation") == REFERENCE_IMPLEMENTATION
    }
    return {
        b.get("fullname") or b["name"]: b["stats"]["median"] / reference[key(b)]
        for b in steps
        if reference.get(key(b), 0) > 0
    }


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
    steps = [b for b in current["benchmarks"] if _kind(b) == "step"]
    calibration = _loopbench(current).get("calibration_matmul_s")
    profile = _loopbench(current).get("profile") or "?"
    entries = []
    for bench, short in zip(steps, _display_names(steps), strict=True):
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
        if _is_number(calibration) and calibration > 0:
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
        calibration = _loopbench(results).get("calibration_matmul_s")
        if _is_number(calibration):
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
