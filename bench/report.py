"""Comparison report: pytest-benchmark JSON in, markdown and CSV tables and PNG plots out.

    python -m bench report results/cpu.json [results/gpu.json ...] --out report/ [--label cpu ...]

Reads standard pytest-benchmark JSON (``--benchmark-json`` or ``--benchmark-autosave`` files;
the suite's additions are described in RESULTS_SCHEMA.md) and writes into ``--out``:

- ``report.md``: the machine(s), then per task the step-time table, the eager overhead, the
  batch-size sweep and the convergence results. The same text is printed to stdout.
- ``results.csv``: one tidy row per benchmark, every recorded field (lists JSON-encoded).
- ``*.png``: throughput per implementation, the sweep, and learning curves (needs matplotlib;
  without it the tables are still written and the report says the plots were skipped).

With several files the runs sit side by side (labelled by ``--label`` or the file stem), and
each task gets a table of ms/step per run with the ratio to the first run.

Nothing here imports TensorFlow. Others reuse the loading and validation: ``load_run``,
``load_runs``, ``load_results`` (a pandas DataFrame) and ``ResultsError``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime as _datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

SUITE_KINDS = ("step", "convergence", "distributed", "overhead")
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
REPORT_MD, RESULTS_CSV = "report.md", "results.csv"
# Everything matching these in --out belongs to the report and is replaced on each run.
PLOT_PREFIXES = ("step_", "sweep_", "curves_")
PLOTS_SKIPPED = "plots skipped: matplotlib not installed"
MISSING = "—"
STEAL_LIMIT_PCT = 2.0  # bench.harness.STEAL_LIMIT in percent (not imported: it imports TensorFlow)


class ResultsError(ValueError):
    """A results file that cannot be reported on; the message starts with the file's path."""


@dataclass(frozen=True)
class Run:
    """One results file: its label, where it came from, and the suite's benchmarks in it."""

    label: str
    source: Path
    machine_info: dict[str, Any]
    benchmarks: list[dict[str, Any]]
    datetime: str | None

    @property
    def loopbench(self) -> dict[str, Any]:
        return self.machine_info.get("loopbench") or {}


# ---------------------------------------------------------------------------------------------
# Loading and validation


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one pytest-benchmark JSON file (``report`` and ``compare`` both start here).

    Raises ``ResultsError("<path>: <problem>")`` for a missing or unreadable file, invalid
    JSON, or JSON that is not pytest-benchmark's (no ``benchmarks`` list of objects with a
    ``name`` and ``stats``, or an empty one)."""
    path = Path(path)

    def fail(problem: str) -> ResultsError:
        return ResultsError(f"{path}: {problem}")

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("no such file") from None
    except IsADirectoryError:
        raise fail("is a directory, not a results file") from None
    except UnicodeDecodeError:
        raise fail("not JSON (not UTF-8 text)") from None
    except OSError as e:
        raise fail(f"cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None

    not_ours = "not a pytest-benchmark results file"
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise fail(f"{not_ours} (no 'benchmarks' list; write one with --benchmark-json=FILE)")
    if not isinstance(data.get("machine_info", {}), dict):
        raise fail(f"{not_ours} ('machine_info' is not an object)")
    for i, bench in enumerate(data["benchmarks"]):
        if not (
            isinstance(bench, dict)
            and isinstance(bench.get("name"), str)
            and isinstance(bench.get("stats"), dict)
        ):
            raise fail(f"{not_ours} (benchmark #{i + 1} has no 'name' and 'stats')")
    if not data["benchmarks"]:
        raise fail("no benchmarks in the file")
    return data


def load_run(path: str | os.PathLike[str], label: str | None = None) -> Run:
    """Read and validate one pytest-benchmark JSON file of this suite.

    Keeps only the suite's benchmarks (``extra_info.kind`` in ``SUITE_KINDS``). Raises
    ``ResultsError("<path>: <problem>")`` as ``read_results`` does, and for a file with none
    of this suite's benchmarks.
    """
    path = Path(path)
    data = read_results(path)
    machine_info = data.get("machine_info", {})

    def fail(problem: str) -> ResultsError:
        return ResultsError(f"{path}: {problem}")

    suite = [b for b in data["benchmarks"] if _extra(b).get("kind") in SUITE_KINDS]
    if not suite:
        raise fail(
            "no tf-loop-bench benchmarks (no benchmark has extra_info.kind "
            + " or ".join(repr(k) for k in SUITE_KINDS)
            + ")"
        )
    for bench in suite:
        extra = bench["extra_info"]
        for key in ("implementation", "task"):
            if not isinstance(extra.get(key), str):
                raise fail(f"{bench['name']}: extra_info.{key} is missing")
        if extra["kind"] in ("step", "distributed") and not (
            _is_number(bench["stats"].get("median")) and bench["stats"]["median"] > 0
        ):
            raise fail(f"{bench['name']}: stats.median is not a positive number")

    return Run(
        label=label if label is not None else path.stem,
        source=path,
        machine_info=machine_info,
        benchmarks=suite,
        datetime=data.get("datetime") if isinstance(data.get("datetime"), str) else None,
    )


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels made unique by suffixing repeats: ``["a", "a", "b"] -> ["a", "a-2", "b"]``."""
    out: list[str] = []
    for label in labels:
        candidate, n = label, 1
        while candidate in out or (candidate != label and candidate in labels):
            n += 1
            candidate = f"{label}-{n}"
        out.append(candidate)
    return out


def load_runs(
    paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None
) -> list[Run]:
    """Load every file (all validated before anything is returned); labels made unique."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label(s) for {len(paths)} file(s)")
    runs = [load_run(p) for p in paths]
    names = unique_labels(list(labels) if labels is not None else [r.label for r in runs])
    return [dataclasses.replace(r, label=name) for name, r in zip(names, runs, strict=True)]


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per benchmark: identity, ``extra_info`` (unprefixed), ``stats_*``, ``params_*``,
    ``options_*`` and the run's ``machine_*`` fields. Lists and dicts stay Python objects."""
    rows = []
    for run in runs:
        machine = _flatten(run.loopbench, "machine_")
        for bench in run.benchmarks:
            row: dict[str, Any] = {
                "run": run.label,
                "source": str(run.source),
                "datetime": run.datetime,
                "group": bench.get("group"),
                "name": bench["name"],
                "fullname": bench.get("fullname"),
                "param": bench.get("param"),
            }
            for key, value in _extra(bench).items():
                row[f"extra_{key}" if key in row else key] = value
            median = bench["stats"].get("median")
            if _extra(bench)["kind"] == "step" and _is_number(median):
                row["ms_per_step"] = median * 1e3
            row.update({f"stats_{k}": v for k, v in bench["stats"].items()})
            row.update({f"params_{k}": v for k, v in (bench.get("params") or {}).items()})
            row.update({f"options_{k}": v for k, v in (bench.get("options") or {}).items()})
            row.update(machine)
            rows.append(row)
    frame = pd.DataFrame(rows)
    prefixes = ("stats_", "params_", "options_", "machine_")
    rank = {c: next((i + 1 for i, p in enumerate(prefixes) if c.startswith(p)), 0) for c in frame}
    return frame[sorted(frame.columns, key=lambda c: rank[c])]  # stable: keeps first-seen order


def load_results(
    paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """``runs_frame(load_runs(paths, labels))``: every benchmark of every file, one row each."""
    return runs_frame(load_runs(paths, labels))


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


def _extra(bench: dict[str, Any]) -> dict[str, Any]:
    extra = bench.get("extra_info")
    return extra if isinstance(extra, dict) else {}


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


def _table(rows: list[list[str]], headers: list[str]) -> str:
    align = ["left"] + ["right"] * (len(headers) - 1)
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


def _machine_table(runs: Sequence[Run]) -> str:
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


def render_markdown(runs: Sequence[Run], plots: Sequence[str] | None) -> str:
    """The whole report; ``plots`` are the written PNG names, ``None`` when plots were skipped."""
    lines = ["# tf-loop-bench report", "", "## Machine" + ("s" if len(runs) > 1 else ""), ""]
    lines += [_machine_table(runs), ""]
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
    lines += ["## Plots", ""]
    if plots is None:
        lines += [PLOTS_SKIPPED, ""]
    else:
        lines += [f"![{Path(p).stem}]({p})" for p in plots] or ["no data to plot"]
        lines += [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Plots


def _colors(names: Iterable[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    known = {n: palette[i] for i, n in enumerate(IMPLEMENTATION_ORDER)}
    extra = [n for n in _order(set(names), IMPLEMENTATION_ORDER) if n not in known]
    known.update({n: palette[(len(IMPLEMENTATION_ORDER) + i) % 10] for i, n in enumerate(extra)})
    return known


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _subtitle(runs: Sequence[Run], extra: str) -> str:
    if len(runs) == 1:
        return f"{extra} · {_device_summary(runs[0])}"
    return "\n".join([extra] + [f"{r.label}: {_device_summary(r)}" for r in runs])


def _thousands(axis: Any) -> None:
    from matplotlib.ticker import StrMethodFormatter

    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def _plot_step(runs: Sequence[Run], task: str, out: Path) -> str:
    from matplotlib.figure import Figure

    per_run = [(run, step_rows(run, task)) for run in runs if _benches(run, "step", task)]
    order = [r.name for r in per_run[0][1]]
    for _, rows in per_run[1:]:
        order += [r.name for r in rows if r.name not in order]
    order = order[::-1]  # barh draws bottom-up: fastest on top
    height = 0.8 / len(per_run)
    fig = Figure(
        figsize=(9, 1.6 + 0.55 * len(order) * max(1, len(per_run) * 0.7)), layout="constrained"
    )
    ax = fig.add_subplot()
    impl_colors = _colors(order)
    for k, (run, rows) in enumerate(per_run):
        by_name = {r.name: r for r in rows}
        ys, xs, lo, hi, colors = [], [], [], [], []
        for y, name in enumerate(order):
            r = by_name.get(name)
            if r is None or r.samples_per_s is None:
                continue
            colors.append(impl_colors[name] if len(per_run) == 1 else f"C{k}")
            ys.append(y + (k - (len(per_run) - 1) / 2) * height)
            xs.append(r.samples_per_s)
            lo.append(r.samples_per_s - (r.samples_per_s_q1 or r.samples_per_s))
            hi.append((r.samples_per_s_q3 or r.samples_per_s) - r.samples_per_s)
        bars = ax.barh(
            ys,
            xs,
            height=height * 0.9,
            xerr=[lo, hi],
            capsize=3,
            label=run.label if len(per_run) > 1 else None,
            color=colors,
        )
        ax.bar_label(bars, labels=[fmt(x) for x in xs], padding=4, fontsize=9)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel("throughput (samples/s, median); error bars: IQR of step time (q1–q3)")
    ax.margins(x=0.15)
    _thousands(ax.xaxis)
    first = _extra(_benches(per_run[0][0], "step", task)[0])
    batch = fmt(_num(first.get("batch_size")))
    ax.set_title(
        f"{task}: training-step throughput\n"
        + _subtitle([r for r, _ in per_run], f"{first.get('dataset')}, batch {batch}"),
        fontsize=10,
    )
    if len(per_run) > 1:
        ax.legend(title="run")
    ax.grid(axis="x", alpha=0.3)
    name = f"step_{task}.png"
    _save(fig, out / name)
    return name


def _plot_sweep(runs: Sequence[Run], task: str, out: Path) -> str:
    from matplotlib.figure import Figure

    with_task = [run for run in runs if _benches(run, "sweep", task)]
    styles = ["-", "--", ":", "-."]
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.add_subplot()
    sizes: set[float] = set()
    series: dict[tuple[int, str], list[StepRow]] = {}
    for k, run in enumerate(with_task):
        for row in step_rows(run, task, kind="sweep"):
            series.setdefault((k, row.implementation), []).append(row)
    colors = _colors(impl for _, impl in series)
    impl_order = _order({impl for _, impl in series}, IMPLEMENTATION_ORDER)
    for (k, impl), rows in sorted(
        series.items(), key=lambda kv: (kv[0][0], impl_order.index(kv[0][1]))
    ):
        rows = sorted(
            (r for r in rows if r.batch_size and r.samples_per_s), key=lambda r: r.batch_size
        )
        xs = [r.batch_size for r in rows]
        sizes.update(xs)
        ys = [r.samples_per_s for r in rows]
        lo = [r.samples_per_s - (r.samples_per_s_q1 or r.samples_per_s) for r in rows]
        hi = [(r.samples_per_s_q3 or r.samples_per_s) - r.samples_per_s for r in rows]
        label = impl + (f" ({with_task[k].label})" if len(with_task) > 1 else "")
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            marker="o",
            capsize=3,
            linestyle=styles[k % len(styles)],
            color=colors[impl],
            label=label,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sizes), [f"{s:.0f}" for s in sorted(sizes)])
    ax.set_xlabel("batch size (log2 scale)")
    ax.set_ylabel("throughput (samples/s, median)")
    dataset = _extra(_benches(with_task[0], "sweep", task)[0]).get("dataset")
    ax.set_title(
        f"{task}: throughput vs batch size\n"
        + _subtitle(with_task, f"{dataset}; error bars: IQR of step time (q1–q3)"),
        fontsize=10,
    )
    values = [r.samples_per_s for rows in series.values() for r in rows if r.samples_per_s]
    if (
        values and max(values) / min(values) > 20
    ):  # e.g. CPU next to GPU: linear would flatten the CPU
        ax.set_yscale("log")
        ax.set_ylabel("throughput (samples/s, median, log scale)")
    else:
        ax.set_ylim(bottom=0)
    _thousands(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(title="implementation")
    name = f"sweep_{task}.png"
    _save(fig, out / name)
    return name


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _plot_curves(run: Run, task: str, out: Path, suffix: str) -> str | None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = {
        _extra(b)["implementation"]: _extra(b)["curves"]
        for b in _benches(run, "convergence", task)
        if isinstance(_extra(b).get("curves"), dict) and _extra(b)["curves"].get("epoch")
    }
    if not curves:
        return None
    has_acc = any(c.get("test_accuracy") for c in curves.values())
    fig = Figure(figsize=(12 if has_acc else 7, 5), layout="constrained")
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    colors = _colors(curves)
    losses = []
    for impl in _order(curves, IMPLEMENTATION_ORDER):
        c = curves[impl]
        for key, style in (("train_loss", "--"), ("test_loss", "-")):
            if c.get(key):
                label = impl if key == "test_loss" else None
                axes[0].plot(c["epoch"], c[key], style, color=colors[impl], label=label)
                losses += [v for v in c[key] if _is_number(v)]
        if has_acc and c.get("test_accuracy"):
            acc = [None if v is None else v * 100 for v in c["test_accuracy"]]
            axes[1].plot(c["epoch"], acc, "-o", color=colors[impl], markersize=3, label=impl)
    if losses and min(losses) > 0 and max(losses) / min(losses) > 100:
        axes[0].set_yscale("log")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss (dashed: train, solid: test)")
    axes[0].set_title("loss")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    if has_acc:
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("test accuracy (%)")
        axes[1].set_title("test accuracy")
        target = next(
            (_num(_extra(b).get("accuracy_target")) for b in _benches(run, "convergence", task)),
            None,
        )
        if target:
            axes[1].axhline(target * 100, color="grey", linestyle=":", label=f"anchor {target:.0%}")
        axes[1].legend(fontsize=8)
        axes[1].grid(alpha=0.3)
    dataset = _extra(_benches(run, "convergence", task)[0]).get("dataset")
    fig.suptitle(
        f"{task}: learning curves (first seed)\n{_subtitle([run], str(dataset))}", fontsize=11
    )
    name = f"curves_{task}{suffix}.png"
    _save(fig, out / name)
    return name


def write_plots(runs: Sequence[Run], out: Path) -> list[str] | None:
    """Write the PNGs into ``out``; their names, or ``None`` when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    names: list[str | None] = []
    with matplotlib.rc_context({"font.size": 11, "axes.titlesize": 11}):
        names += [_plot_step(runs, task, out) for task in _tasks(runs, "step")]
        names += [_plot_sweep(runs, task, out) for task in _tasks(runs, "sweep")]
        for task in _tasks(runs, "convergence"):
            for run in runs:
                if _benches(run, "convergence", task):
                    suffix = f"_{_slug(run.label)}" if len(runs) > 1 else ""
                    names.append(_plot_curves(run, task, out, suffix))
    return [n for n in names if n]


# ---------------------------------------------------------------------------------------------
# Writing


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _is_report_file(name: str) -> bool:
    return name in (REPORT_MD, RESULTS_CSV) or (
        name.endswith(".png") and name.startswith(PLOT_PREFIXES)
    )


def write_report(runs: Sequence[Run], out: str | os.PathLike[str]) -> tuple[str, list[str] | None]:
    """Write report.md, results.csv and the plots into ``out``; returns (markdown, plot names).

    Everything is written into a temporary directory next to ``out`` first and moved into
    place only when complete, so a failure leaves no partial report behind. Earlier report
    files in an existing ``out`` are replaced; other files there are left alone.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ResultsError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would otherwise become the report's mode
        plots = write_plots(runs, tmp)
        text = render_markdown(runs, plots)
        (tmp / REPORT_MD).write_text(text + "\n", encoding="utf-8")
        runs_frame(runs).map(_csv_cell).to_csv(tmp / RESULTS_CSV, index=False)
        if not out.exists():
            tmp.rename(out)
        else:
            new = set(os.listdir(tmp))
            for name in os.listdir(out):
                if _is_report_file(name) and name not in new:
                    (out / name).unlink()
            for name in new:
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return text, plots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Tables (markdown, CSV) and plots from pytest-benchmark JSON results.",
    )
    parser.add_argument("results", nargs="+", metavar="RESULTS.json", help="results file(s)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="a name for each results file, in order (default: the file stem)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return int(e.code or 0)
    if args.label is not None and len(args.label) != len(args.results):
        print(
            f"error: --label given {len(args.label)} time(s) for {len(args.results)} file(s)",
            file=sys.stderr,
        )
        return 2
    try:
        runs = load_runs(args.results, args.label)
        text, plots = write_report(runs, args.out)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.out}: cannot write the report ({e.strerror or e})", file=sys.stderr)
        return 1
    print(text)
    written = [REPORT_MD, RESULTS_CSV, *(plots or [])]
    print(f"wrote {', '.join(written)} to {args.out}")
    return 0
