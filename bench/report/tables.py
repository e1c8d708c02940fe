"""Markdown tables of ``python -m bench report`` for this suite's pytest-benchmark runs.

``run_sections`` is the body of report.md after the machine header (``machine_table``): per
task the step-time table (side by side when there are several runs), what each knob buys
(``report_knobs``), the batch-size sweep, convergence, tf.distribute and the harness
overhead. The numbers behind the tables (``step_rows``) are in ``report_rows``, shared with
the plots. Called by ``bench.report.cli``; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime as _datetime
from typing import Any

from bench.report.backend import backend_sections
from bench.report.knobs import knob_section, knob_tasks
from bench.report.load import Run, _extra
from bench.report.ratios import panel_notes, ratio_text, speedup_note
from bench.report.rows import (
    BASELINE,
    IMPLEMENTATION_ORDER,
    MISSING,
    STEAL_LIMIT_PCT,
    TASK_ORDER,
    UNKNOWN_GROUP,
    StepRow,
    _benches,
    _num,
    _order,
    _rank,
    _table,
    _tasks,
    fmt,
    step_rows,
)

# Importable from here as before report_rows was split off (report_ab, report_plots, report).
__all__ = [
    "BASELINE",
    "IMPLEMENTATION_ORDER",
    "MISSING",
    "STEAL_LIMIT_PCT",
    "TASK_ORDER",
    "StepRow",
    "_benches",
    "_device_summary",
    "_num",
    "_order",
    "_table",
    "_tasks",
    "_when",
    "fmt",
    "machine_table",
    "run_sections",
    "step_rows",
]


# ---------------------------------------------------------------------------------------------
# Markdown


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
            + (
                f" ({lb.get('calibration_precision') or 'fp32'}, n={lb['calibration_n']})"
                if lb.get("calibration_n")
                else ""
            ),
        }

    fields = [field(r) for r in runs]
    return _table([[k] + [f[k] for f in fields] for k in fields[0]], [""] + [r.label for r in runs])


def _step_section(run: Run, task: str) -> list[str]:
    rows = step_rows(run, task)
    benches = _benches(run, "step", task)
    has_base = any(r.is_baseline for r in rows)
    headers = [
        "implementation",
        "ms/step (median)",
        "ms/step (IQR)",
        "samples/s",
        f"speedup vs {rows[0].speedup_vs}",
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
        if r.is_baseline:
            speedup = f"{fmt(1.0)}x (baseline)"
        elif r.speedup_ratio is not None:
            speedup = ratio_text(r.speedup_ratio)
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
    first = benches[0]
    extra = _extra(first)
    memory_kind = {_extra(b).get("peak_memory_kind") for b in benches}
    memory_kind.discard(None)
    notes = [
        f"{extra.get('dataset', MISSING)}, batch {fmt(_num(extra.get('batch_size')))}, "
        f"{extra.get('rounds', first['stats'].get('rounds'))} rounds of "
        f"{extra.get('steps_per_round', first['stats'].get('iterations'))} steps; "
        "IQR = q3 - q1 of the per-round step times"
        + (f"; peak memory is {', '.join(sorted(memory_kind))}" if memory_kind else "")
        + "."
    ]
    paired = speedup_note(rows, benches)
    if paired:
        notes.append(paired)
    elif not has_base:
        notes.append(f"No {BASELINE} benchmark for this task, so no speedups.")
    contended = _contention_note(benches)
    if contended:
        notes.append(contended)
    notes += panel_notes(benches)
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
    notes = panel_notes(benches)
    return [_table(table, headers)] + (["", "\n\n".join(notes)] if notes else [])


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{x * 100:.2f}"


def _convergence_section(run: Run, task: str) -> list[str]:
    benches = _benches(run, "convergence", task)
    order = _order([_extra(b)["implementation"] for b in benches], IMPLEMENTATION_ORDER)
    benches.sort(key=lambda b: (_is_mixed(_extra(b)), order.index(_extra(b)["implementation"])))
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
        if _is_mixed(e):
            name = f"{impl} ({e['precision']})"
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
    if any(_is_mixed(_extra(b)) for b in benches):
        note += (
            " A mixed-precision row's parity is against the same implementation in float32 "
            "(same seeds, same batches)."
        )
    return [_table(table, headers), "", note if not is_regression else "wall: the whole benchmark."]


def _is_mixed(e: dict[str, Any]) -> bool:
    return e.get("precision", "float32") != "float32"


def _parity(e: dict[str, Any]) -> str:
    if e["implementation"] == BASELINE and not _is_mixed(e):
        return "baseline"
    delta = _num(e.get("parity_delta_pp"))
    if delta is None:
        return "n/a" if e.get("final_accuracy") is None else MISSING
    if e["implementation"] == "sklearn_mlp":
        return f"{delta:+.2f} (reference, not gated)"
    ok = e.get("parity_ok")
    ok = abs(delta) <= 1.0 if ok is None else ok
    versus = f" vs {e['implementation']} float32" if _is_mixed(e) else ""
    return f"{delta:+.2f} {'PASS' if ok else 'FAIL'}{versus}"


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
    for task in knob_tasks(runs):
        lines += [f"## {task}: what each knob buys", ""]
        for run in runs:
            section = knob_section(run, task)
            if section:
                if len(runs) > 1:
                    lines += [f"### {run.label}", ""]
                lines += [*section, ""]
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
    lines += backend_sections(runs)
    unknown = _unknown_groups_note(runs)
    if unknown:
        lines += ["## Not in any table", "", unknown, ""]
    return lines


def _unknown_groups_note(runs: Sequence[Run]) -> str | None:
    """Step benchmarks in a group the report has no table for: named, not silently mixed in."""
    names = [
        (f"{run.label}: " if len(runs) > 1 else "") + f"{b['name']} (group {b.get('group')!r})"
        for run in runs
        for b in _benches(run, UNKNOWN_GROUP)
    ]
    if not names:
        return None
    return (
        "Step benchmarks in groups other than `<task>`, `sweep-<task>`, "
        "`steps-per-call-<task>`, `precision-<task>` and `micro-batches-<task>`, left out of "
        "the tables (they are "
        "in results.csv): " + ", ".join(names) + "."
    )
