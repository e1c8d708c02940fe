"""The numbers behind ``python -m bench report``: which benchmark is which, in the report's units.

``benches_of`` and ``tasks_of`` pick a run's benchmarks by the table they belong in, sorted by
their group (the task's step table, the batch-size sweep, the steps-per-call sweep, the
precision variants, the micro-batch sweep, or a group the report does not know);
``step_rows`` turns a task's benchmarks of one kind into ``StepRow``s (ms/step, samples/s,
speedup, % of the matmul rate ...), shared by the tables, the knob section and the plots;
``Ratio``, ``own_speedup`` and ``paired_ratios`` read the paired estimates of a benchmark
measured interleaved in a panel (``extra_info.speedup*`` and ``paired``; absent in older
files, whose speedups are the ratio of medians);
``fmt``, ``timestamp_text`` and ``markdown_table`` format every number, date and markdown
table of the report. No TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tabulate import tabulate

from bench.host import STEAL_LIMIT
from bench.report.load import Run, extra_info, is_number

BASELINE = "keras_fit"
IMPLEMENTATION_ORDER = (
    "keras_fit",
    "keras_fit_xla",
    "custom_eager",
    "custom_graph",
    "custom_xla",
    "keras_fit_spe",
    "custom_graph_loop",
    "custom_xla_loop",
    "custom_xla_split",
    "sklearn_mlp",
)
TASK_ORDER = ("linreg", "mlp", "cnn")
MISSING = "—"
STEAL_LIMIT_PCT = 100 * STEAL_LIMIT


# ---------------------------------------------------------------------------------------------
# Numbers


def fmt(x: Any, sig: int = 3) -> str:
    """A number to ``sig`` significant digits, without exponent, thousands separated."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if isinstance(x, bool) or not isinstance(x, int | float):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x == 0:
        return "0"
    x = float(f"{x:.{sig}g}")
    decimals = max(0, sig - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def timestamp_text(stamp: str | None) -> str:
    """An ISO timestamp as ``2026-12-01 14:03:07`` (`` UTC`` where its offset is zero)."""
    if not stamp:
        return MISSING
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    zone = " UTC" if when.utcoffset() is not None and not when.utcoffset() else ""
    return when.strftime("%Y-%m-%d %H:%M:%S") + zone


def number_or_none(x: Any) -> float | None:
    """``x`` where it is a finite number (not a bool), else None."""
    return x if is_number(x) else None


def in_order(names: Iterable[str], known: Sequence[str]) -> list[str]:
    """``names`` in the order of ``known``, then those it does not list, sorted."""
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


# A step benchmark's group says which table it belongs in: ``<task>`` is the task's step
# table, these prefixes (followed by the task) the others.
STEP_GROUP_KINDS = {
    "sweep-": "sweep",
    "steps-per-call-": "steps_per_call",
    "precision-": "precision",
    "micro-batches-": "micro_batches",
}
UNKNOWN_GROUP = "unknown"


def _group_kind(bench: dict[str, Any]) -> str:
    """``step``, ``sweep``, ``steps_per_call``, ``precision``, ``micro_batches``,
    ``convergence``, ``distributed`` or ``overhead``; ``unknown`` for a step benchmark whose
    group is none of ``<task>`` and the prefixes of ``STEP_GROUP_KINDS`` followed by the task,
    so it lands in no table instead of the task's step table."""
    extra = extra_info(bench)
    kind = extra["kind"]
    group = bench.get("group")
    if kind != "step" or group is None or group == extra["task"]:
        return kind
    for prefix, group_kind in STEP_GROUP_KINDS.items():
        if str(group).startswith(prefix):
            return group_kind
    return UNKNOWN_GROUP


def benches_of(run: Run, kind: str, task: str | None = None) -> list[dict[str, Any]]:
    """The run's benchmarks of ``kind`` (a kind of benchmark or of step group), of ``task``."""
    return [
        b
        for b in run.benchmarks
        if _group_kind(b) == kind and (task is None or extra_info(b)["task"] == task)
    ]


def tasks_of(runs: Sequence[Run], kind: str) -> list[str]:
    """The tasks with a benchmark of ``kind`` in any run, in the report's task order."""
    return in_order({extra_info(b)["task"] for r in runs for b in benches_of(r, kind)}, TASK_ORDER)


def _row_names(benches: list[dict[str, Any]]) -> list[str]:
    """The implementation, or the benchmark's param where one implementation repeats."""
    impls = [extra_info(b)["implementation"] for b in benches]
    return [
        i if impls.count(i) == 1 else str(b.get("param") or b["name"])
        for i, b in zip(impls, benches, strict=True)
    ]


@dataclass(frozen=True)
class Ratio:
    """A paired estimate of one step time over another (a speedup), with its interval."""

    value: float
    low: float
    high: float
    pairs: int | None = None

    @property
    def includes_one(self) -> bool:
        """Whether the interval includes 1: no difference detected."""
        return self.low <= 1.0 <= self.high

    def inverted(self) -> Ratio:
        """The reciprocal ratio: the interval's ends swap."""
        return Ratio(1 / self.value, 1 / self.high, 1 / self.low, self.pairs)


def _ratio(value: Any, low: Any, high: Any, pairs: Any = None) -> Ratio | None:
    if not all(is_number(x) and x > 0 for x in (value, low, high)):
        return None
    return Ratio(float(value), float(low), float(high), int(pairs) if is_number(pairs) else None)


def own_speedup(extra: dict[str, Any]) -> Ratio | None:
    """The benchmark's paired speedup over its panel's baseline (``speedup``, ``speedup_low``,
    ``speedup_high``); None in files from before panels, or without an estimate."""
    return _ratio(extra.get("speedup"), extra.get("speedup_low"), extra.get("speedup_high"))


def paired_ratios(extra: dict[str, Any]) -> dict[str, Ratio]:
    """``extra_info.paired``: per other member's benchmark name, its s/step / this s/step."""
    paired = extra.get("paired")
    if not isinstance(paired, dict):
        return {}
    out = {}
    for name, entry in paired.items():
        if isinstance(entry, dict):
            r = _ratio(
                entry.get("speedup"), entry.get("low"), entry.get("high"), entry.get("pairs")
            )
            if r is not None:
                out[name] = r
    return out


@dataclass(frozen=True)
class StepRow:
    """One implementation's step timing for a task, in the units the report shows."""

    name: str  # the implementation, or the benchmark's param where an implementation repeats
    implementation: str
    ms_median: float
    ms_q1: float | None
    ms_q3: float | None
    batch_size: float | None
    samples_per_s: float | None
    samples_per_s_q1: float | None  # throughput at the slow (q3) and fast (q1) step times
    samples_per_s_q3: float | None
    speedup: float | None  # the baseline's step time / this one's (paired, or of the medians)
    gflops: float | None
    pct_of_peak: float | None
    compile_s: float | None
    fit_overhead_ms: float | None
    fit_ms_per_step: float | None
    peak_memory_mb: float | None
    jit: str
    graph_ops: float | None
    group: str | None = None
    steps_per_call: int = 1  # files from before multi-step implementations: 1
    precision: str = "float32"  # files from before mixed precision: float32
    one_step_twin: str | None = None  # a multi-step implementation's one-step twin, if recorded
    micro_batches: int = 1  # parts each batch is cut into (custom_xla_split); older files: 1
    micro_batch_twin: str | None = None  # the same loop on whole batches, if recorded
    bench_name: str = ""  # pytest-benchmark's name, e.g. test_step[keras_fit-mlp]
    speedup_vs: str = BASELINE  # the implementation ``speedup`` is against
    is_baseline: bool = False  # this row is that baseline
    speedup_ratio: Ratio | None = None  # the paired estimate behind ``speedup``, if measured so
    panel: str | None = None  # the panel it was measured interleaved in (newer files)
    # the paired estimates against the panel's other members, by their benchmark names
    paired: Mapping[str, Ratio] = field(default_factory=dict, compare=False)


def _paired_baseline(benches: list[dict[str, Any]]) -> tuple[str, set[str]]:
    """The implementation the speedups are against, and the baseline's benchmark names: the
    panel's ``speedup_vs`` where the paired rows agree on one, else ``keras_fit``."""
    paired = [extra_info(b) for b in benches if own_speedup(extra_info(b))]
    vs = {e.get("speedup_vs") for e in paired if isinstance(e.get("speedup_vs"), str)}
    if len(vs) != 1:
        return BASELINE, set()
    baseline = vs.pop()
    names = {e.get("speedup_vs_name") for e in paired if e.get("speedup_vs") == baseline}
    return baseline, {n for n in names if isinstance(n, str)}


def step_rows(run: Run, task: str, kind: str = "step") -> list[StepRow]:
    """The task's step benchmarks, fastest first, with speedups against ``keras_fit`` (or the
    baseline their panel names): the paired estimate where the results have one, else the
    ratio of medians."""
    benches = benches_of(run, kind, task)
    names = _row_names(benches)
    medians = {name: b["stats"]["median"] for name, b in zip(names, benches, strict=True)}
    baseline, baseline_names = _paired_baseline(benches)
    peak = number_or_none(run.loopbench.get("calibration_gflops"))
    rows = [
        _step_row(
            name,
            bench,
            baseline=baseline,
            is_baseline=bench["name"] in baseline_names
            or (not baseline_names and name == baseline),
            base=medians.get(baseline),
            peak=peak,
        )
        for name, bench in zip(names, benches, strict=True)
    ]
    return sorted(rows, key=lambda r: r.ms_median)


def _step_row(
    name: str,
    bench: dict[str, Any],
    *,
    baseline: str,
    is_baseline: bool,
    base: float | None,
    peak: float | None,
) -> StepRow:
    """One benchmark in the report's units; ``base`` is the baseline's median (s/step),
    ``peak`` the run's matmul rate (GFLOP/s)."""
    extra, stats = extra_info(bench), bench["stats"]
    median = stats["median"]
    q1, q3 = number_or_none(stats.get("q1")), number_or_none(stats.get("q3"))
    batch = number_or_none(extra.get("batch_size"))
    gflops = number_or_none(extra.get("gflops_per_s"))
    # Against the run's calibration in the header (the best of the session's
    # measurements), so the column and the header agree.
    pct = number_or_none(extra.get("pct_of_matmul_peak"))
    if gflops is not None and peak:
        pct = gflops / peak * 100
    estimate = own_speedup(extra) if extra.get("speedup_vs") == baseline else None
    if estimate is not None:
        speedup: float | None = estimate.value
    else:
        speedup = base / median if base else None
    panel = extra.get("panel")
    return StepRow(
        name=name,
        implementation=extra["implementation"],
        ms_median=median * 1e3,
        ms_q1=_ms(q1),
        ms_q3=_ms(q3),
        batch_size=batch,
        samples_per_s=number_or_none(extra.get("samples_per_s"))
        or (batch / median if batch else None),
        samples_per_s_q1=batch / q3 if batch and q3 else None,
        samples_per_s_q3=batch / q1 if batch and q1 else None,
        speedup=speedup,
        gflops=gflops,
        pct_of_peak=pct,
        compile_s=number_or_none(extra.get("compile_s")),
        fit_overhead_ms=_ms(number_or_none(extra.get("fit_overhead_s"))),
        fit_ms_per_step=_ms(number_or_none(extra.get("fit_s_per_step"))),
        peak_memory_mb=number_or_none(extra.get("peak_memory_mb")),
        jit=_jit_text(extra),
        graph_ops=number_or_none(extra.get("graph_ops")),
        group=bench.get("group"),
        steps_per_call=int(number_or_none(extra.get("steps_per_call")) or 1),
        precision=str(extra.get("precision") or "float32"),
        one_step_twin=extra.get("one_step_twin") or None,
        micro_batches=int(number_or_none(extra.get("micro_batches")) or 1),
        micro_batch_twin=extra.get("micro_batch_twin") or None,
        bench_name=bench["name"],
        speedup_vs=baseline,
        is_baseline=is_baseline,
        speedup_ratio=estimate,
        panel=panel if isinstance(panel, str) else None,
        paired=paired_ratios(extra),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _jit_text(extra: dict[str, Any]) -> str:
    """``jit_compile`` as recorded, and what was asked for where that differs."""
    jit = extra.get("jit_compile")
    text = MISSING if jit is None else str(jit)
    requested = extra.get("jit_compile_requested")
    if requested is not None and requested != jit:
        text += f" (requested {requested})"
    return text


def markdown_table(rows: list[list[str]], headers: list[str], text: Sequence[int] = ()) -> str:
    """A GitHub table: the first column and the ``text`` columns left-aligned, numbers right."""
    align = ["left" if i == 0 or i in text else "right" for i in range(len(headers))]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True, colalign=align)


def implementation_rank(implementation: str) -> int:
    """Where ``IMPLEMENTATION_ORDER`` puts the implementation (unknown ones last)."""
    known = list(IMPLEMENTATION_ORDER)
    return known.index(implementation) if implementation in known else len(known)
