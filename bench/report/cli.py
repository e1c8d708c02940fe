"""Comparison report: pytest-benchmark and A/B JSON in, markdown and CSV tables and PNG plots out.

    python -m bench report results/cpu.json [results/gpu.json ab.json ...] --out report/

Reads standard pytest-benchmark JSON (``--benchmark-json`` or ``--benchmark-autosave`` files;
the suite's additions are described in docs/results-schema.md) and A/B files of
``python -m bench ab --json`` (told apart by their ``"schema": "loopbench-ab/..."``), and
writes into ``--out``:

- ``report.md``: the machine(s), one "A/B: HEAD vs BASE" section per A/B file, then per task
  the step-time table, the eager overhead, what each knob buys (steps per call, precision:
  each variant against its twin), the batch-size sweep and the convergence results.
  The same text is printed to stdout.
- ``results.csv``: one tidy row per pytest-benchmark benchmark, every recorded field (lists
  JSON-encoded); ``ab.csv``: the same for A/B benchmarks (a comparison of two versions is
  not a measurement of one, so it gets its own columns); ``knobs.csv``: the rows of the knob
  tables (only when there are any).
- ``*.png``: throughput per implementation, the sweep, step time against steps per call,
  learning curves and the A/B changes (needs matplotlib; without it the tables are still
  written and the report says the plots were skipped).

With several files the runs sit side by side (labelled by ``--label`` or the file stem), and
each task gets a table of ms/step per run with the ratio to the first run.

This module is the entry point; the work is in ``load`` (reading and validating files),
``rows`` (which benchmark is which, and its numbers in the report's units), ``ratios`` (the
paired ratios and their intervals), ``tables`` (markdown for pytest-benchmark runs),
``convergence`` (accuracy and parity), ``knobs`` (variants against their twins), ``backend``
(TensorFlow vs JAX), ``ab`` (markdown for A/B files) and ``plots``, all in ``bench/report/``.
Nothing imports TensorFlow. Others reuse the loading and validation from
``bench.report.load``: ``load_run``, ``load_runs``, ``load_results`` (a pandas DataFrame),
``read_results`` and ``ResultsError``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.report.ab import ab_machine_table, ab_sections
from bench.report.knobs import knobs_frame
from bench.report.load import ABRun, ResultsError, Run, ab_frame, load_inputs, runs_frame
from bench.report.plots import write_plots
from bench.report.tables import machine_table, run_sections

REPORT_MD, RESULTS_CSV, AB_CSV, KNOBS_CSV = "report.md", "results.csv", "ab.csv", "knobs.csv"
# Everything matching these in --out belongs to the report and is replaced on each run.
PLOT_PREFIXES = ("step_", "sweep_", "curves_", "ab_", "steps_per_call_")
PLOTS_SKIPPED = "plots skipped: matplotlib not installed"


def render_markdown(
    runs: Sequence[Run], plots: Sequence[str] | None, ab_runs: Sequence[ABRun] = ()
) -> str:
    """The whole report; ``plots`` are the written PNG names, ``None`` when plots were skipped."""
    plural = "s" if len(runs) + len(ab_runs) > 1 else ""
    lines = ["# tf-loop-bench report", "", f"## Machine{plural}", ""]
    if runs:
        lines += [machine_table(runs), ""]
    if runs and ab_runs:
        lines += ["A/B comparisons:", ""]
    if ab_runs:
        lines += [ab_machine_table(ab_runs), ""]
    lines += ab_sections(ab_runs)  # first: a regression verdict is what an A/B file is for
    lines += run_sections(runs)
    lines += ["## Plots", ""]
    if plots is None:
        lines += [PLOTS_SKIPPED, ""]
    else:
        lines += [f"![{Path(p).stem}]({p})" for p in plots] or ["no data to plot"]
        lines += [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Writing


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def _is_report_file(name: str) -> bool:
    return name in (REPORT_MD, RESULTS_CSV, AB_CSV, KNOBS_CSV) or (
        name.endswith(".png") and name.startswith(PLOT_PREFIXES)
    )


def written_files(
    runs: Sequence[Run], ab_runs: Sequence[ABRun], plots: Sequence[str] | None
) -> list[str]:
    """The names ``write_report`` writes: no CSV for a kind of input or rows that are absent."""
    knobs = bool(runs) and not knobs_frame(runs).empty
    csvs = [RESULTS_CSV] * bool(runs) + [KNOBS_CSV] * knobs + [AB_CSV] * bool(ab_runs)
    return [REPORT_MD, *csvs, *(plots or [])]


def write_report(
    runs: Sequence[Run], out: str | os.PathLike[str], ab_runs: Sequence[ABRun] = ()
) -> tuple[str, list[str] | None]:
    """Write report.md, results.csv, knobs.csv, ab.csv and the plots into ``out``; returns
    (markdown, plot names). results.csv needs a pytest-benchmark run, knobs.csv a variant with
    its twin in one, ab.csv an A/B file.

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
        plots = write_plots(runs, tmp, ab_runs)
        text = render_markdown(runs, plots, ab_runs)
        (tmp / REPORT_MD).write_text(text + "\n", encoding="utf-8")
        if runs:
            runs_frame(runs).map(_csv_cell).to_csv(tmp / RESULTS_CSV, index=False)
            knobs = knobs_frame(runs)
            if not knobs.empty:
                knobs.to_csv(tmp / KNOBS_CSV, index=False)
        if ab_runs:
            ab_frame(ab_runs).map(_csv_cell).to_csv(tmp / AB_CSV, index=False)
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
        description="Tables (markdown, CSV) and plots from pytest-benchmark JSON results and "
        "A/B files of 'python -m bench ab --json'.",
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
        runs, ab_runs = load_inputs(args.results, args.label)
        text, plots = write_report(runs, args.out, ab_runs)
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {args.out}: cannot write the report ({e.strerror or e})", file=sys.stderr)
        return 1
    print(text)
    print(f"wrote {', '.join(written_files(runs, ab_runs, plots))} to {args.out}")
    return 0
