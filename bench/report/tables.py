"""Markdown tables of ``python -m bench report`` for this suite's pytest-benchmark runs.

``run_sections`` is the body of report.md after the machine header (``machine_table``): per
task the step-time table (side by side when there are several runs), what each knob buys
(``bench.report.knobs``), the batch-size sweep, convergence (``bench.report.convergence``),
tf.distribute, the harness overhead and TensorFlow vs JAX (``bench.report.backend``). The
numbers behind the tables (``step_rows``) are in ``bench.report.rows``, shared with the plots.
Called by ``bench.report.cli``; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.report.backend import backend_sections
from bench.report.convergence import convergence_section
from bench.report.knobs import knob_section, knob_tasks
from bench.report.load import Run, extra_info
from bench.report.ratios import panel_notes, ratio_text, speedup_note
from bench.report.rows import (
    BASELINE,
    IMPLEMENTATION_ORDER,
    MISSING,
    STEAL_LIMIT_PCT,
    UNKNOWN_GROUP,
    StepRow,
    benches_of,
    fmt,
    implementation_rank,
    in_order,
    markdown_table,
    number_or_none,
    step_rows,
    tasks_of,
    timestamp_text,
)

# ---------------------------------------------------------------------------------------------
# Markdown


def device_summary(run: Run) -> str:
    """``GPU: <its name>`` or ``CPU: <the CPU model>``: the run's device in a few words."""
    lb = run.loopbench
    gpus = lb.get("gpus") or []
    if lb.get("device") == "GPU" and gpus:
        return f"GPU: {gpus[0].get('name', '?')}"
    cpu = lb.get("cpu_model") or (run.machine_info.get("cpu") or {}).get("brand_raw")
    return f"{lb.get('device') or 'CPU'}: {cpu or 'unknown CPU'}"


def machine_table(runs: Sequence[Run]) -> str:
    """One column per run: date, profile, CPU/GPU, versions, threads, steal, matmul rate."""
    fields = [_machine_fields(r) for r in runs]
    return markdown_table(
        [[k] + [f[k] for f in fields] for k in fields[0]], [""] + [r.label for r in runs]
    )


def _machine_fields(run: Run) -> dict[str, str]:
    lb = run.loopbench
    cpu = lb.get("cpu_model") or (run.machine_info.get("cpu") or {}).get("brand_raw")
    count = lb.get("cpu_count") or (run.machine_info.get("cpu") or {}).get("count")
    gpus = lb.get("gpus") or []
    threads = lb.get("threads") or {}
    xla = {k: v for k, v in (lb.get("xla_flags") or {}).items() if v}
    rate = number_or_none(lb.get("calibration_gflops"))
    if threads:
        thread_text = ", ".join(f"{k} {'default' if v == 0 else v}" for k, v in threads.items())
    else:
        thread_text = MISSING

    def joined(*parts: Any) -> str:
        return " / ".join(str(p) for p in parts if p) or MISSING

    return {
        "source": run.source.name,
        "date": timestamp_text(run.datetime),
        "profile": lb.get("profile") or MISSING,
        "device": lb.get("device") or MISSING,
        "CPU": f"{cpu or MISSING}" + (f" ({count} logical cores)" if count else ""),
        "GPU": ", ".join(
            f"{g.get('name', '?')} (cc {g.get('compute_capability', '?')}, "
            f"{fmt(number_or_none(g.get('memory_mb')))} MB)"
            for g in gpus
        )
        or MISSING,
        "TensorFlow / Keras": joined(lb.get("tensorflow"), lb.get("keras")),
        "Python / NumPy": joined(lb.get("python"), lb.get("numpy")),
        "oneDNN": _onednn_text(lb.get("onednn") or {}),
        "threads": thread_text,
        "TF32": MISSING if lb.get("tf32") is None else str(lb["tf32"]),
        "XLA flags": ", ".join(f"{k}={v}" for k, v in xla.items()) or "none",
        "CPU steal during the run": MISSING
        if number_or_none(lb.get("steal_pct_session")) is None
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


def _onednn_text(onednn: dict[str, Any]) -> str:
    if not onednn:
        return MISSING
    env = onednn.get("env")
    state = "enabled" if onednn.get("enabled") else "disabled"
    env_text = "unset" if env is None else f"= {env}"
    return f"{state} (TF_ENABLE_ONEDNN_OPTS {env_text})"


def _step_section(run: Run, task: str) -> list[str]:
    rows = step_rows(run, task)
    benches = benches_of(run, "step", task)
    notes = "\n\n".join(_step_notes(rows, benches))  # one paragraph per note
    return [_step_table(rows), "", notes]


def _step_table(rows: list[StepRow]) -> str:
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
    return markdown_table(table, headers)


def _step_notes(rows: list[StepRow], benches: list[dict[str, Any]]) -> list[str]:
    """What the step table measured, how its speedups read, and what got in the way."""
    first = benches[0]
    extra = extra_info(first)
    memory_kind = {extra_info(b).get("peak_memory_kind") for b in benches}
    memory_kind.discard(None)
    notes = [
        f"{extra.get('dataset', MISSING)}, batch {fmt(number_or_none(extra.get('batch_size')))}, "
        f"{extra.get('rounds', first['stats'].get('rounds'))} rounds of "
        f"{extra.get('steps_per_round', first['stats'].get('iterations'))} steps; "
        "IQR = q3 - q1 of the per-round step times"
        + (f"; peak memory is {', '.join(sorted(memory_kind))}" if memory_kind else "")
        + "."
    ]
    paired = speedup_note(rows, benches)
    if paired:
        notes.append(paired)
    elif not any(r.is_baseline for r in rows):
        notes.append(f"No {BASELINE} benchmark for this task, so no speedups.")
    contended = _contention_note(benches)
    if contended:
        notes.append(contended)
    notes += panel_notes(benches)
    eager = _eager_overhead(rows)
    if eager:
        notes.append(eager)
    return notes


def _contention_note(benches: list[dict[str, Any]]) -> str | None:
    """Which benchmarks had rounds replaced, or kept, despite the hypervisor's CPU steal."""
    replaced, still = [], []
    for b in benches:
        e = extra_info(b)
        run, kept = number_or_none(e.get("rounds_run")), number_or_none(e.get("rounds"))
        if run is not None and kept is not None and run > kept:
            replaced.append(f"{e.get('implementation', b.get('name'))} {run - kept:.0f}")
        steal = number_or_none(e.get("steal_pct"))
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
    impls = in_order({name for rows in per_run for name in rows}, IMPLEMENTATION_ORDER)

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
    return [markdown_table(table, headers), "", note]


def _sweep_section(run: Run, task: str) -> list[str]:
    benches = benches_of(run, "sweep", task)
    sizes = sorted({number_or_none(extra_info(b).get("batch_size")) for b in benches} - {None})
    cells: dict[str, dict[float, float | None]] = {}
    for row in step_rows(run, task, kind="sweep"):
        cells.setdefault(row.implementation, {})[row.batch_size] = row.samples_per_s
    headers = ["implementation"] + [f"samples/s @ batch {b:.0f}" for b in sizes]
    table = [
        [impl] + [fmt(cells[impl].get(b)) for b in sizes]
        for impl in in_order(cells, IMPLEMENTATION_ORDER)
    ]
    notes = panel_notes(benches)
    return [markdown_table(table, headers)] + (["", "\n\n".join(notes)] if notes else [])


def _distributed_section(run: Run, task: str) -> list[str]:
    benches = sorted(
        benches_of(run, "distributed", task),
        key=lambda b: (
            str(extra_info(b).get("strategy")),
            implementation_rank(extra_info(b)["implementation"]),
            number_or_none(extra_info(b).get("replicas")) or 0,
        ),
    )
    rows = []
    for bench in benches:
        e = extra_info(bench)
        eff = number_or_none(e.get("scaling_efficiency"))
        rows.append(
            [
                e.get("strategy", MISSING),
                e["implementation"],
                fmt(e.get("replicas")),
                fmt(e.get("per_replica_batch")),
                fmt(e.get("global_batch")),
                fmt(number_or_none(bench["stats"].get("median")) * 1e3),
                fmt(number_or_none(e.get("samples_per_s"))),
                MISSING if eff is None else f"{eff:.2f}",
                fmt(number_or_none(e.get("compile_s"))),
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
    return [markdown_table(rows, headers), "", note]


def _overhead_section(run: Run) -> list[str]:
    rows = []
    for bench in benches_of(run, "overhead"):
        e = extra_info(bench)
        rows.append(
            [
                f"{e['implementation']}-{e['task']}",
                fmt(e.get("steps_per_round")),
                fmt(number_or_none(e.get("harness_s_per_step")) * 1e3),
                fmt(number_or_none(e.get("bare_loop_s_per_step")) * 1e3),
                f"{number_or_none(e.get('harness_overhead_pct')):+.1f}",
            ]
        )
    headers = ["benchmark", "steps/round", "harness ms/step", "bare loop ms/step", "difference (%)"]
    note = "Bare-loop rounds interleave with the harness's rounds in the same process."
    return [markdown_table(rows, headers), "", note]


def run_sections(runs: Sequence[Run]) -> list[str]:
    """Every per-task section of the runs, as markdown lines (headings included)."""
    lines: list[str] = []
    for task in tasks_of(runs, "step"):
        lines += [f"## {task}: step time", ""]
        with_task = [r for r in runs if benches_of(r, "step", task)]
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
        ("convergence", "convergence", convergence_section),
        ("distributed", "tf.distribute", _distributed_section),
    )
    for kind, title, section in sections:
        for task in tasks_of(runs, kind):
            lines += [f"## {task}: {title}", ""]
            for run in (r for r in runs if benches_of(r, kind, task)):
                if len(runs) > 1:
                    lines += [f"### {run.label}", ""]
                lines += [*section(run, task), ""]
    for run in (r for r in runs if benches_of(r, "overhead")):
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
        for b in benches_of(run, UNKNOWN_GROUP)
    ]
    if not names:
        return None
    return (
        "Step benchmarks in groups other than `<task>`, `sweep-<task>`, "
        "`steps-per-call-<task>`, `precision-<task>` and `micro-batches-<task>`, left out of "
        "the tables (they are "
        "in results.csv): " + ", ".join(names) + "."
    )
