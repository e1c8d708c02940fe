""" "What each knob buys": each variant's step time against its twin's, in the same run.

A variant is one knob turned from a one-step float32 implementation:

- steps per call: a multi-step implementation at N steps per call (the task's step group, at
  its default N, and the ``steps-per-call-<task>`` group, at each N of the sweep). Its twin is
  the one-step implementation its result names in ``extra_info.one_step_twin``; results from
  before that field have no twin (the report keeps no map of names of its own).
- precision: an implementation under a mixed-precision policy (``precision-<task>`` group).
  Its twin is the same implementation, at the same N, at float32.
- micro-batches: an implementation that cuts each batch into parts run side by side
  (``custom_xla_split``, in the task's step group at its default M, and the
  ``micro-batches-<task>`` group, at each M of the sweep). Its twin is the implementation its result
  names in ``extra_info.micro_batch_twin`` (the same loop on whole batches), at the same N and
  precision.

The twin is looked up in the task's step group of the same run, at the same batch size. Where
the variant was measured interleaved with its twin (the twin is a member of the variant's
panel), the speedup is the paired estimate the variant records against it
(``extra_info.paired[<twin's name>]``), with its 95% interval; otherwise (older files, a twin
in another panel) the ratio of the two medians, measured minutes apart on the same machine.
``knob_rows`` pairs them up, ``knob_section`` is the markdown, ``knobs_frame`` the rows of
knobs.csv. Called by ``bench.report.tables``, ``bench.report.cli`` and ``bench.report.plots``; no
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.report.load import Run, extra_info
from bench.report.ratios import PAIRED_NOTE, panel_notes, ratio_text
from bench.report.rows import (
    MISSING,
    TASK_ORDER,
    Ratio,
    StepRow,
    benches_of,
    fmt,
    implementation_rank,
    in_order,
    markdown_table,
    step_rows,
    tasks_of,
)

STEPS_PER_CALL, PRECISION, MICRO_BATCHES = "steps per call", "precision", "micro-batches"
KNOB_ORDER = (STEPS_PER_CALL, MICRO_BATCHES, PRECISION)
FLOAT32 = "float32"


@dataclass(frozen=True)
class KnobRow:
    """A variant and, where the run has it, its twin (``None`` otherwise)."""

    knob: str  # STEPS_PER_CALL, MICRO_BATCHES or PRECISION
    variant: StepRow
    twin: StepRow | None
    twin_name: str | None  # the twin's implementation; None when the result does not name one

    @property
    def paired(self) -> Ratio | None:
        """The twin's step time over the variant's, paired within the blocks of the panel both
        were measured in; None when they were not measured together."""
        return None if self.twin is None else self.variant.paired.get(self.twin.bench_name)

    @property
    def speedup(self) -> float | None:
        """The twin's step time over the variant's (above 1, the knob made steps faster): the
        paired estimate where there is one, else the ratio of the medians."""
        if self.twin is None:
            return None
        paired = self.paired
        return paired.value if paired else self.twin.ms_median / self.variant.ms_median


def twin_of(variant: StepRow, knob: str, one_step: Sequence[StepRow]) -> StepRow | None:
    """The variant's twin among the task's step-group rows ``one_step``: the only row with the
    twin's implementation, N and precision at the variant's batch size (``None`` if there is
    none, or several, which would make the comparison a guess)."""
    if knob == PRECISION:
        want = (variant.implementation, variant.steps_per_call, FLOAT32)
    elif knob == MICRO_BATCHES:
        want = (variant.micro_batch_twin, variant.steps_per_call, variant.precision)
    elif variant.one_step_twin:
        want = (variant.one_step_twin, 1, variant.precision)
    else:
        return None
    found = [
        r
        for r in one_step
        if (r.implementation, r.steps_per_call, r.precision) == want
        and r.batch_size == variant.batch_size
    ]
    return found[0] if len(found) == 1 else None


def knob_rows(run: Run, task: str) -> list[KnobRow]:
    """Every variant of ``task`` in ``run``, with or without a twin: steps per call first (by
    implementation, N, step group before the sweep), then micro-batches, then precision."""
    one_step = step_rows(run, task)
    variants = [(MICRO_BATCHES, r) for r in one_step if r.micro_batch_twin]
    variants += [
        (MICRO_BATCHES, r) for r in step_rows(run, task, kind="micro_batches") if r.micro_batch_twin
    ]
    variants += [
        (STEPS_PER_CALL, r) for r in one_step if r.one_step_twin and not r.micro_batch_twin
    ]
    variants += [
        (STEPS_PER_CALL, r)
        for r in step_rows(run, task, kind="steps_per_call")
        if not r.micro_batch_twin
    ]
    variants += [
        (PRECISION, r) for r in step_rows(run, task, kind="precision") if r.precision != FLOAT32
    ]

    def key(item: tuple[str, StepRow]) -> tuple:
        knob, r = item
        return (
            KNOB_ORDER.index(knob),
            implementation_rank(r.one_step_twin or r.implementation),
            r.implementation,
            r.steps_per_call,
            r.precision,
            r.group != task,
            r.micro_batches,
        )

    rows = []
    for knob, r in sorted(variants, key=key):
        twin_name = {PRECISION: r.implementation, MICRO_BATCHES: r.micro_batch_twin}.get(
            knob, r.one_step_twin
        )
        rows.append(KnobRow(knob, r, twin_of(r, knob, one_step), twin_name))
    return rows


def knob_tasks(runs: Sequence[Run]) -> list[str]:
    """The tasks with a variant in any run, in the report's task order."""
    tasks = set()
    for kind in ("step", "steps_per_call", "precision", "micro_batches"):
        tasks.update(t for t in tasks_of(runs, kind) if any(knob_rows(r, t) for r in runs))
    return in_order(tasks, TASK_ORDER)


def _twin_text(row: KnobRow) -> str:
    t = row.twin
    return MISSING if t is None else f"{t.implementation} (N={t.steps_per_call}, {t.precision})"


def _variant_text(row: KnobRow) -> str:
    v = row.variant
    parts = f", {v.micro_batches} micro-batches" if v.micro_batches > 1 else ""
    return f"{v.implementation} (N={v.steps_per_call}, {v.precision}{parts})"


def _knob_text(row: KnobRow) -> str:
    return f"{row.knob} ({row.variant.micro_batches})" if row.knob == MICRO_BATCHES else row.knob


def knob_section(run: Run, task: str) -> list[str]:
    """The table of ``task``'s variants that have their twin in ``run``, and its notes; empty
    when the run has no variant of the task."""
    rows = knob_rows(run, task)
    if not rows:
        return []
    with_twin = [r for r in rows if r.twin is not None]
    notes = [_speedup_note(with_twin)] if with_twin else []
    # A panel of the variant groups, unless the step table's notes already name it.
    in_step_table = {extra_info(b).get("panel") for b in benches_of(run, "step", task)}
    notes += panel_notes(
        b
        for kind in ("steps_per_call", "precision", "micro_batches")
        for b in benches_of(run, kind, task)
        if extra_info(b).get("panel") not in in_step_table
    )
    notes += _lonely_notes([r for r in rows if r.twin is None])
    out = [_knob_table(with_twin), ""] if with_twin else []
    return out + ["\n\n".join(notes)]


def _knob_table(rows: list[KnobRow]) -> str:
    """A row per variant with its twin (every row here has one)."""
    headers = [
        "knob",
        "variant",
        "N",
        "precision",
        "ms/step",
        "twin",
        "twin ms/step",
        "speedup",
        "% of matmul rate",
        "measured in (group)",
    ]
    table = [
        [
            _knob_text(r),
            r.variant.implementation,
            str(r.variant.steps_per_call),
            r.variant.precision,
            fmt(r.variant.ms_median),
            _twin_text(r),
            fmt(r.twin.ms_median),
            ratio_text(r.paired) if r.paired else f"{fmt(r.speedup)}x",
            fmt(r.variant.pct_of_peak),
            str(r.variant.group),
        ]
        for r in rows
    ]
    return markdown_table(table, headers, text=(1, 3, 5, 9))


def _speedup_note(rows: list[KnobRow]) -> str:
    """How the speedups of ``rows`` (each with its twin) were measured and read."""
    note = (
        "Speedup = the twin's median ms/step / the variant's (above 1: the knob makes a "
        "training step faster). Each variant is compared with its twin from the same run "
        "(the task's step table, same batch size), never across runs; the twin differs in "
        "that one knob: one step per call instead of N, float32 instead of mixed "
        "precision, or whole batches instead of micro-batches. % of matmul rate: the "
        "variant's GFLOP/s against the run's fp32 matmul rate."
    )
    paired = [r.paired is not None for r in rows]
    if any(paired):
        sentence = (
            " Where the twin was measured interleaved with the variant (in the blocks of one "
            "panel), the speedup is the paired estimate of their within-block ratios"
        )
        if not all(paired):
            sentence += "; without an interval, the ratio of the medians"
        note += sentence + ". " + PAIRED_NOTE
    return note


def _lonely_notes(lonely: list[KnobRow]) -> list[str]:
    """The variants without a twin in the run: the twin named but absent, or never named."""
    named = [f"{_variant_text(r)} in {r.variant.group}" for r in lonely if r.twin_name]
    unnamed = [f"{_variant_text(r)} in {r.variant.group}" for r in lonely if not r.twin_name]
    notes = []
    if named:
        notes.append("No twin in this run's step table for: " + ", ".join(named) + ".")
    if unnamed:
        notes.append(
            "No `one_step_twin` recorded (results from before it was), so not compared: "
            + ", ".join(unnamed)
            + "."
        )
    return notes


def knobs_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """knobs.csv: one row per variant with its twin, every run and task; empty without any."""
    records = []
    for run in runs:
        for task in knob_tasks([run]):
            for r in knob_rows(run, task):
                v, t = r.variant, r.twin
                if t is None:
                    continue
                records.append(
                    {
                        "run": run.label,
                        "task": task,
                        "knob": r.knob,
                        "group": v.group,
                        "implementation": v.implementation,
                        "steps_per_call": v.steps_per_call,
                        "precision": v.precision,
                        "micro_batches": v.micro_batches,
                        "batch_size": v.batch_size,
                        "ms_per_step": v.ms_median,
                        "pct_of_matmul_peak": v.pct_of_peak,
                        "twin_implementation": t.implementation,
                        "twin_steps_per_call": t.steps_per_call,
                        "twin_precision": t.precision,
                        "twin_ms_per_step": t.ms_median,
                        "twin_pct_of_matmul_peak": t.pct_of_peak,
                        "speedup": r.speedup,
                        "speedup_low": r.paired.low if r.paired else None,
                        "speedup_high": r.paired.high if r.paired else None,
                    }
                )
    return pd.DataFrame(records)
