"""Markdown tables of ``python -m bench report`` for this suite's pytest-benchmark runs.

``run_sections`` is the body of report.md after the machine header (``machine_table``): per
task the step-time table (side by side when there are several runs), the batch-size sweep,
convergence, tf.distribute and the harness overhead. The numbers behind the step tables
(``step_rows``) are shared with the plots. Called by ``bench.report``; no TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime as _datetime
from typing import Any

from tabulate import tabulate

from bench.report_load import Run, _extra, _is_number
from bench.steal import STEAL_LIMIT

BASELINE = "keras_fit"
IMPLEMENTATION_ORDER = (
    "keras_fit",
    "keras_fit_xla",
    "custom_eager",
    "custom_graph",
    "custom_xla",
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


def _num(x: Any) -> float | None:
    return x if _is_number(x) else None


def _order(names: Iterable[str], known: Sequence[str]) -> list[str]:
    names = set(names)
    return [n for n in known if n in names] + sorted(names - set(known))


def _group_kind(bench: dict[str, Any]) -> str:
    """``step``, ``sweep``, ``convergence``, ``distributed`` or ``overhead``."""
    kind = _extra(bench)["kind"]
    if kind == "step" and str(bench.get("group") or "").startswith("sweep-"):
        return "sweep"
    return kind


def _benches(run: Run, kind: str, task: str | None = None) -> list[dict[str, Any]]:
    return [
        b
        for b in run.benchmarks
        if _group_kind(b) == kind and (task is None or _extra(b)["task"] == task)
    ]


def _tasks(runs: Sequence[Run], kind: str) -> list[str]:
    return _order({_extra(b)["task"] for r in runs for b in _benches(r, kind)}, TASK_ORDER)


def _row_names(benches: list[dict[str, Any]]) -> list[str]:
    """The implementation, or the benchmark's param where one implementation repeats."""
    impls = [_extra(b)["implementation"] for b in benches]
    return [
        i if impls.count(i) == 1 else str(b.get("param") or b["name"])
        for i, b in zip(impls, benches, strict=True)
    ]


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
    speedup: float | None  # keras_fit median / this median
    gflops: float | None
    pct_of_peak: float | None
    compile_s: float | None
    fit_overhead_ms: float | None
    fit_ms_per_step: float | None
    peak_memory_mb: float | None
    jit: str
    graph_ops: float | None


def step_rows(run: Run, task: str, kind: str = "step") -> list[StepRow]:
    """The task's step benchmarks, fastest first, with speedups against ``keras_fit``."""
    benches = _benches(run, kind, task)
    medians = {
        name: b["stats"]["median"] for name, b in zip(_row_names(benches), benches, strict=True)
    }
    base = medians.get(BASELINE)
    peak = _num(run.loopbench.get("calibration_gflops"))
    rows = []
    for name, bench in zip(_row_names(benches), benches, strict=True):
        extra, stats = _extra(bench), bench["stats"]
        median, q1, q3 = stats["median"], _num(stats.get("q1")), _num(stats.get("q3"))
        batch = _num(extra.get("batch_size"))
        sps = _num(extra.get("samples_per_s")) or (batch / median if batch else None)
        gflops = _num(extra.get("gflops_per_s"))
        # Against the run's calibration in the header (the best of the session's
        # measurements), so the column and the header agree.
        pct = _num(extra.get("pct_of_matmul_peak"))
        if gflops is not None and peak:
            pct = gflops / peak * 100
        overhead = _num(extra.get("fit_overhead_s"))
        fit_step = _num(extra.get("fit_s_per_step"))
        jit = extra.get("jit_compile")
        jit_text = MISSING if jit is None else str(jit)
        requested = extra.get("jit_compile_requested")
        if requested is not None and requested != jit:
            jit_text += f" (requested {requested})"
        rows.append(
            StepRow(
                name=name,
                implementation=extra["implementation"],
                ms_median=median * 1e3,
                ms_q1=None if q1 is None else q1 * 1e3,
                ms_q3=None if q3 is None else q3 * 1e3,
                batch_size=batch,
                samples_per_s=sps,
                samples_per_s_q1=batch / q3 if batch and q3 else None,
                samples_per_s_q3=batch / q1 if batch and q1 else None,
                speedup=base / median if base else None,
                gflops=gflops,
                pct_of_peak=pct,
                compile_s=_num(extra.get("compile_s")),
                fit_overhead_ms=None if overhead is None else overhead * 1e3,
                fit_ms_per_step=None if fit_step is None else fit_step * 1e3,
                peak_memory_mb=_num(extra.get("peak_memory_mb")),
                jit=jit_text,
                graph_ops=_num(extra.get("graph_ops")),
            )
        )
    return sorted(rows, key=lambda r: r.ms_median)


# ---------------------------------------------------------------------------------------------
# Markdown


def _table(rows: list[list[str]], headers: list[str], text: Sequence[int] = ()) -> str:
    """A GitHub table: the first column and the ``text`` columns left-aligned, numbers right."""
    align = ["left" if i == 0 or i in text else "right" for i in range(len(headers))]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True, colalign=align)


def _when(stamp: str | None) -> str:
    if not stamp:
        return MISSING
    try:
        when = _datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    zone = " UTC" if when.utcoffset() is not None and not when.utcoffset() else ""
    return when.strftime("%Y-%m-%d %H:%M:%S") + zone


def _device_summary(run: Run) -> str:
    lb = run.loopbench
    gpus = lb.get("gpus") or []
    if lb.get("device") == "GPU" and gpus:
        return f"GPU: {gpus[0].get('name', '?')}"
    cpu = lb.get("cpu_model") or (run.machine_info.get("cpu") or {}).get("brand_raw")
    return f"{lb.get('device') or 'CPU'}: {cpu or 'unknown CPU'}"


def machine_table(runs: Sequence[Run]) -> str:
    """One column per run: date, profile, CPU/GPU, versions, threads, steal, matmul rate."""

    def field(run: Run) -> dict[str, str]:
        lb = run.loopbench
        cpu = lb.get("cpu_model") or (run.machine_info.get("cpu") or {}).get("brand_raw")
        count = lb.get("cpu_count") or (run.machine_info.get("cpu") or {}).get("count")
        gpus = lb.get("gpus") or []
        onednn = lb.get("onednn") or {}
        threads = lb.get("threads") or {}
        xla = {k: v for k, v in (lb.get("xla_flags") or {}).items() if v}
        rate = _num(lb.get("calibration_gflops"))
        if onednn:
            env = onednn.get("env")
            state = "enabled" if onednn.get("enabled") else "disabled"
            env_text = "unset" if env is None else f"= {env}"
            onednn_text = f"{state} (TF_ENABLE_ONEDNN_OPTS {env_text})"
        else:
            onednn_text = MISSING
        if threads:
            thread_text = ", ".join(f"{k} {'default' if v == 0 else v}" for k, v in threads.items())
        else:
            thread_text = MISSING

        def joined(*parts: Any) -> str:
            return " / ".join(str(p) for p in parts if p) or MISSING

        return {
            "source": run.source.name,
            "date": _when(run.datetime),
            "profile": lb.get("profile") or MISSING,
            "device": lb.get("device") or MISSING,
            "CPU": f"{cpu or MISSING}" + (f" ({count} logical cores)" if count else ""),
            "GPU": ", ".join(
                f"{g.get('name', '?')} (cc {g.get('compute_capability', '?')}, "
                f"{fmt(_num(g.get('memory_mb')))} MB)"
                for g in gpus
            )
            or MISSING,
            "TensorFlow / Keras": joined(lb.get("tensorflow"), lb.get("keras")),
            "Python / NumPy": joined(lb.get("python"), lb.get("numpy")),
            "oneDNN": onednn_text,
            "threads": thread_text,
            "TF32": MISSING if lb.get("tf32") is None else str(lb["tf32"]),
            "XLA flags": ", ".join(f"{k}={v}" for k, v in xla.items()) or "none",
            "CPU steal during the run": MISSING
            if _num(lb.get("steal_pct_session")) is None
            else f"{fmt(lb['steal_pct_session'])}% of CPU time taken by the hypervisor",
            "matmul rate (GFLOP/s)": MISSING
            if rate is None
            else fmt(rate)
            + (f" (fp32, n={lb['calibration_n']})" if lb.get("calibration_n") else ""),
        }

    fields = [field(r) for r in runs]
    return _table([[k] + [f[k] for f in fields] for k in fields[0]], [""] + [r.label for r in runs])


def _step_section(run: Run, task: str) -> list[str]:
    rows = step_rows(run, task)
    has_base = any(r.name == BASELINE for r in rows)
    headers = [
        "implementation",
        "ms/step (median)",
        "ms/step (IQR)",
        "samples/s",
        f"speedup vs {BASELINE}",
        "GFLOP/s",
        "% of matmul rate",
        "compile (s)",
        "fit() setup (ms)",
        "fit() ms/step",
        "peak memory (MB)",
        "jit_compile",
    ]
    table = []
    for r in rows:
        if r.name == BASELINE:
            speedup = f"{fmt(1.0)}x (baseline)"
        else:
            speedup = MISSING if r.speedup is None else f"{fmt(r.speedup)}x"
        iqr = None if r.ms_q1 is None or r.ms_q3 is None else r.ms_q3 - r.ms_q1
        table.append(
            [
                r.name,
                fmt(r.ms_median),
                fmt(iqr),
                fmt(r.samples_per_s),
                speedup,
                fmt(r.gflops),
                fmt(r.pct_of_peak),
                fmt(r.compile_s),
                fmt(r.fit_overhead_ms),
                fmt(r.fit_ms_per_step),
                fmt(r.peak_memory_mb),
                r.jit,
            ]
        )
    first = _benches(run, "step", task)[0]
    extra = _extra(first)
    memory_kind = {_extra(b).get("peak_memory_kind") for b in _benches(run, "step", task)}
    memory_kind.discard(None)
    notes = [
        f"{extra.get('dataset', MISSING)}, batch {fmt(_num(extra.get('batch_size')))}, "
        f"{extra.get('rounds', first['stats'].get('rounds'))} rounds of "
        f"{extra.get('steps_per_round', first['stats'].get('iterations'))} steps; "
        "IQR = q3 - q1 of the per-round step times"
        + (f"; peak memory is {', '.join(sorted(memory_kind))}" if memory_kind else "")
        + "."
    ]
    if not has_base:
        notes.append(f"No {BASELINE} benchmark for this task, so no speedups.")
    contended = _contention_note(_benches(run, "step", task))
    if contended:
        notes.append(contended)
    eager = _eager_overhead(rows)
    if eager:
        notes.append(eager)
    return [_table(table, headers), "", "\n\n".join(notes)]  # one paragraph per note


def _contention_note(benches: list[dict[str, Any]]) -> str | None:
    """Which benchmarks had rounds replaced, or kept, despite the hypervisor's CPU steal."""
    replaced, still = [], []
    for b in benches:
        e = _extra(b)
        run, kept = _num(e.get("rounds_run")), _num(e.get("rounds"))
        if run is not None and kept is not None and run > kept:
            replaced.append(f"{e.get('implementation', b.get('name'))} {run - kept:.0f}")
        steal = _num(e.get("steal_pct"))
        if steal is not None and steal > STEAL_LIMIT_PCT:
            still.append(f"{e.get('implementation', b.get('name'))} {fmt(steal)}%")
    parts = []
    if replaced:
        parts.append("Rounds replaced because the hypervisor took CPU time: " + ", ".join(replaced))
    if still:
        parts.append(
            f"kept rounds still had steal above {STEAL_LIMIT_PCT:g}% (no quiet spell within the "
            "round cap), so these are slower than the machine can do: " + ", ".join(still)
        )
    return "; ".join(parts) + "." if parts else None


def _eager_overhead(rows: list[StepRow]) -> str | None:
    by_name = {r.name: r for r in rows}
    eager, graph = by_name.get("custom_eager"), by_name.get("custom_graph")
    if not eager or not graph:
        return None
    delta = eager.ms_median - graph.ms_median
    line = f"Eager overhead (custom_eager - custom_graph): {fmt(delta)} ms/step"
    if graph.graph_ops:
        per_op_us = delta * 1e3 / graph.graph_ops
        line += f", {fmt(per_op_us)} µs per op over {graph.graph_ops:.0f} graph ops"
    return line + "."


def _multi_step_section(runs: Sequence[Run], task: str) -> list[str]:
    per_run = [{r.name: r for r in step_rows(run, task)} for run in runs]
    first = runs[0].label
    impls = _order({name for rows in per_run for name in rows}, IMPLEMENTATION_ORDER)

    def sort_key(name: str) -> tuple[int, float]:
        for i, rows in enumerate(per_run):
            if name in rows:
                return (i, rows[name].ms_median)
        return (len(per_run), 0.0)

    headers = ["implementation"] + [f"ms/step {r.label}" for r in runs]
    headers += [f"{r.label} / {first}" for r in runs[1:]]
    headers += ["spread"]
    table = []
    for name in sorted(impls, key=sort_key):
        cells = [name] + [
            fmt(rows[name].ms_median) if name in rows else MISSING for rows in per_run
        ]
        for rows in per_run[1:]:
            if name in rows and name in per_run[0]:
                cells.append(f"{fmt(rows[name].ms_median / per_run[0][name].ms_median)}x")
            else:
                cells.append(MISSING)
        medians = [rows[name].ms_median for rows in per_run if name in rows]
        cells.append(
            f"{fmt(100 * (max(medians) / min(medians) - 1))}%" if len(medians) > 1 else MISSING
        )
        table.append(cells)
    note = (
        f"Median ms/step per run; ratios are ms/step relative to {first} (below 1 = faster); "
        "spread = slowest / fastest median - 1 over the runs that have the benchmark: for "
        "repeats of one configuration, how far the runs disagree."
    )
    return [_table(table, headers), "", note]


def _sweep_section(run: Run, task: str) -> list[str]:
    benches = _benches(run, "sweep", task)
    sizes = sorted({_num(_extra(b).get("batch_size")) for b in benches} - {None})
    cells: dict[str, dict[float, float | None]] = {}
    for row in step_rows(run, task, kind="sweep"):
        cells.setdefault(row.implementation, {})[row.batch_size] = row.samples_per_s
    headers = ["implementation"] + [f"samples/s @ batch {b:.0f}" for b in sizes]
    table = [
        [impl] + [fmt(cells[impl].get(b)) for b in sizes]
        for impl in _order(cells, IMPLEMENTATION_ORDER)
    ]
    return [_table(table, headers)]


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{x * 100:.2f}"


def _convergence_section(run: Run, task: str) -> list[str]:
    benches = _benches(run, "convergence", task)
    order = _order([_extra(b)["implementation"] for b in benches], IMPLEMENTATION_ORDER)
    benches.sort(key=lambda b: order.index(_extra(b)["implementation"]))
    is_regression = any(_extra(b).get("w") is not None for b in benches)
    tta_target = next(
        (_num(_extra(b).get("tta_target")) for b in benches if _extra(b).get("tta_target")), None
    )
    tta_header = f"time to {tta_target * 100:.0f}% (s)" if tta_target else "time to accuracy (s)"
    table = []
    for bench in benches:
        e = _extra(bench)
        impl = e["implementation"]
        name = f"{impl} (reference)" if impl == "sklearn_mlp" else impl
        seeds = e.get("seeds")
        if isinstance(seeds, list):
            seeds = len(seeds)
        elif seeds is None and isinstance(e.get("final_accuracies"), list):
            seeds = len(e["final_accuracies"])
        wall = fmt(_num(bench["stats"].get("median")))
        if is_regression:
            table.append(
                [
                    name,
                    fmt(_num(e.get("w")), 5),
                    fmt(_num(e.get("b")), 5),
                    fmt(_num(e.get("param_error"))),
                    fmt(_num(e.get("final_loss"))),
                    fmt(seeds),
                    wall,
                ]
            )
            continue
        acc, std = _num(e.get("final_accuracy")), _num(e.get("final_accuracy_std"))
        acc_text = _pct(acc) + ("" if std is None else f" ± {_pct(std)}")
        table.append(
            [
                name,
                acc_text,
                fmt(seeds),
                _parity(e),
                _anchor(e),
                fmt(_num(e.get("time_to_accuracy_s"))),
                fmt(_num(e.get("final_loss"))),
                wall,
            ]
        )
    if is_regression:
        headers = ["implementation", "w", "b", "max param error", "final loss", "seeds", "wall (s)"]
    else:
        headers = [
            "implementation",
            "final accuracy (%)",
            "seeds",
            f"parity vs {BASELINE} (pp)",
            "anchor",
            tta_header,
            "final loss",
            "wall (s)",
        ]
    note = (
        "Accuracy: test accuracy after the last epoch, mean ± std over seeds; parity passes "
        f"within 1 pp of {BASELINE}; wall: the whole benchmark, tracing and compilation included."
    )
    return [_table(table, headers), "", note if not is_regression else "wall: the whole benchmark."]


def _parity(e: dict[str, Any]) -> str:
    if e["implementation"] == BASELINE:
        return "baseline"
    delta = _num(e.get("parity_delta_pp"))
    if delta is None:
        return "n/a" if e.get("final_accuracy") is None else MISSING
    if e["implementation"] == "sklearn_mlp":
        return f"{delta:+.2f} (reference, not gated)"
    ok = e.get("parity_ok")
    ok = abs(delta) <= 1.0 if ok is None else ok
    return f"{delta:+.2f} {'PASS' if ok else 'FAIL'}"


def _anchor(e: dict[str, Any]) -> str:
    target, acc = _num(e.get("accuracy_target")), _num(e.get("final_accuracy"))
    if e.get("dataset") != "fashion-mnist" or target is None:
        return "n/a"
    ok = e.get("anchor_ok")
    if ok is None and "anchor_ok" in e:
        # The suite records null when the anchor does not apply (a subset or fewer epochs).
        return f">= {target * 100:.0f}% n/a (full profile)"
    ok = (acc is not None and acc >= target) if ok is None else ok
    return f">= {target * 100:.0f}% {'PASS' if ok else 'FAIL'}"


def _rank(implementation: str) -> int:
    known = list(IMPLEMENTATION_ORDER)
    return known.index(implementation) if implementation in known else len(known)


def _distributed_section(run: Run, task: str) -> list[str]:
    benches = sorted(
        _benches(run, "distributed", task),
        key=lambda b: (
            str(_extra(b).get("strategy")),
            _rank(_extra(b)["implementation"]),
            _num(_extra(b).get("replicas")) or 0,
        ),
    )
    rows = []
    for bench in benches:
        e = _extra(bench)
        eff = _num(e.get("scaling_efficiency"))
        rows.append(
            [
                e.get("strategy", MISSING),
                e["implementation"],
                fmt(e.get("replicas")),
                fmt(e.get("per_replica_batch")),
                fmt(e.get("global_batch")),
                fmt(_num(bench["stats"].get("median")) * 1e3),
                fmt(_num(e.get("samples_per_s"))),
                MISSING if eff is None else f"{eff:.2f}",
                fmt(_num(e.get("compile_s"))),
            ]
        )
    headers = [
        "strategy",
        "implementation",
        "replicas",
        "per-replica batch",
        "global batch",
        "ms/step",
        "global samples/s",
        "scaling efficiency",
        "compile (s)",
    ]
    note = (
        "Scaling efficiency: global samples/s on N replicas / (N x samples/s on one replica "
        "of the same strategy and implementation). On a CPU split into logical devices the "
        "replicas share the same cores, so this measures the strategy's overhead, not scaling."
    )
    return [_table(rows, headers), "", note]


def _overhead_section(run: Run) -> list[str]:
    rows = []
    for bench in _benches(run, "overhead"):
        e = _extra(bench)
        rows.append(
            [
                f"{e['implementation']}-{e['task']}",
                fmt(e.get("steps_per_round")),
                fmt(_num(e.get("harness_s_per_step")) * 1e3),
                fmt(_num(e.get("bare_loop_s_per_step")) * 1e3),
                f"{_num(e.get('harness_overhead_pct')):+.1f}",
            ]
        )
    headers = ["benchmark", "steps/round", "harness ms/step", "bare loop ms/step", "difference (%)"]
    note = "Bare-loop rounds interleave with the harness's rounds in the same process."
    return [_table(rows, headers), "", note]


def run_sections(runs: Sequence[Run]) -> list[str]:
    """Every per-task section of the runs, as markdown lines (headings included)."""
    lines: list[str] = []
    for task in _tasks(runs, "step"):
        lines += [f"## {task}: step time", ""]
        with_task = [r for r in runs if _benches(r, "step", task)]
        if len(with_task) > 1:
            lines += [*_multi_step_section(with_task, task), ""]
        for run in with_task:
            if len(runs) > 1:
                lines += [f"### {run.label}", ""]
            lines += [*_step_section(run, task), ""]
    sections = (
        ("sweep", "batch-size sweep (samples/s)", _sweep_section),
        ("convergence", "convergence", _convergence_section),
        ("distributed", "tf.distribute", _distributed_section),
    )
    for kind, title, section in sections:
        for task in _tasks(runs, kind):
            lines += [f"## {task}: {title}", ""]
            for run in (r for r in runs if _benches(r, kind, task)):
                if len(runs) > 1:
                    lines += [f"### {run.label}", ""]
                lines += [*section(run, task), ""]
    for run in (r for r in runs if _benches(r, "overhead")):
        lines += ["## Harness overhead" + (f" ({run.label})" if len(runs) > 1 else ""), ""]
        lines += [*_overhead_section(run), ""]
    from bench.report_backend import backend_sections  # it imports this module: not at the top

    lines += backend_sections(runs)
    return lines
