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

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from bench.report.load import ResultsError, extra_info, is_number, read_results

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
        if not is_number(bench["stats"].get("median")):
            raise InputError(f"{path}: benchmarks[{i}] has no numeric stats.median")
    return results


def bench_kind(bench: dict[str, Any]) -> str | None:
    """``extra_info.kind``: "step", "convergence" ...; None where it is not recorded."""
    return extra_info(bench).get("kind")


def counted(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in results["benchmarks"] if bench_kind(b) in COUNTED_KINDS]


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


def loopbench_of(results: dict[str, Any]) -> dict[str, Any]:
    """``machine_info.loopbench`` of a results file (the suite's machine fields), or {}."""
    info = results.get("machine_info")
    lb = info.get("loopbench") if isinstance(info, dict) else None
    return lb if isinstance(lb, dict) else {}


def machine(results: dict[str, Any]) -> dict[str, object]:
    """The fields that must agree for raw times to be comparable."""
    lb = loopbench_of(results)
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
    value = loopbench_of(results).get("calibration_matmul_s")
    if not is_number(value) or value <= 0:
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
    quartiles_ok = is_number(q1) and is_number(q3)
    data_ok = isinstance(data, list) and len(data) > 0 and all(is_number(x) for x in data)
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
    a = extra_info(base).get("final_accuracy")
    b = extra_info(cur).get("final_accuracy")
    if not (is_number(a) and is_number(b)):
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
    kind = bench_kind(cur)
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


def display_names(benches: list[dict[str, Any]]) -> list[str]:
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
            loopbench_of(r).get("calibration_precision") or "fp32" for r in (baseline, current)
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
        for (b, c), name in zip(pairs, display_names([c for _, c in pairs]), strict=True)
    ]


def reference_ratios(results: dict[str, Any]) -> dict[str, float]:
    """fullname -> median / the same run's custom_graph median (same group, task, batch)."""

    def key(b: dict[str, Any]) -> tuple:
        e = b["extra_info"]
        return b.get("group"), e.get("task"), e.get("batch_size")

    steps = [b for b in results["benchmarks"] if bench_kind(b) == "step"]
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
