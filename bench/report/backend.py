"""The backend tables of ``python -m bench report``: per task, each Keras-on-JAX implementation
(``bench/benchmarks/bench_jax.py``) next to the TensorFlow implementations that run the same
model and loop, from the same run: ``jax_fit`` against ``keras_fit`` and ``keras_fit_xla``,
``jax_custom`` against ``custom_graph`` and ``custom_xla``, and the multi-step variants. No
TensorFlow, no JAX: the twins are read from each JAX benchmark's ``tf_twins``. Where a JAX
benchmark was measured interleaved with its twin (both members of one panel), the ratio is the
inverse of its paired speedup over the twin (``extra_info.paired``), with its 95% interval;
otherwise (older files) the ratio of the two medians. Each result records its ``device``; a JAX
row whose twin ran on another kind of device (JAX on the CPU, TensorFlow on the GPU: jax without
its CUDA extra) gets no ratio, and the note says which ran where: that would compare two devices,
not two backends.

Called from ``bench.report.tables.run_sections``; a run without JAX benchmarks adds nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bench.report.load import Run, extra_info
from bench.report.ratios import PAIRED_NOTE, ratio_text
from bench.report.rows import MISSING, Ratio, StepRow, fmt, markdown_table, step_rows, tasks_of

# For results written before ``tf_twins`` was recorded (implementations/jax_backend.TF_TWINS).
TF_TWINS = {
    "jax_fit": ("keras_fit", "keras_fit_xla"),
    "jax_custom": ("custom_graph", "custom_xla"),
    "jax_fit_spe": ("keras_fit_spe", None),
    "jax_custom_loop": ("custom_graph_loop", "custom_xla_loop"),
}


def _is_jax(bench: dict) -> bool:
    return extra_info(bench).get("backend") == "jax"


def _paired(jax: StepRow | None, tf: StepRow | None) -> Ratio | None:
    """JAX's step time / TensorFlow's, paired within blocks: the inverse of the JAX result's
    speedup over its twin; None when the two were not measured in one panel."""
    if jax is None or tf is None:
        return None
    speedup = jax.paired.get(tf.bench_name)
    return None if speedup is None else speedup.inverted()


DIFFERENT_DEVICES = "other device"


def device_kind(device: object) -> str | None:
    """``"CPU"``, ``"GPU"`` or ``"TPU"`` from a recorded ``device`` (``/GPU:0``,
    ``/job:localhost/replica:0/task:0/device:CPU:0``); None where it was not recorded."""
    found = re.findall(r"(CPU|GPU|TPU)", str(device or "").upper())
    return found[-1] if found else None


def _ratio(a: StepRow | None, b: StepRow | None, devices: dict[str, str | None]) -> str:
    if a is None or b is None:
        return MISSING
    kinds = devices.get(a.bench_name), devices.get(b.bench_name)
    if None not in kinds and kinds[0] != kinds[1]:
        return DIFFERENT_DEVICES
    paired = _paired(a, b)
    if paired is not None:
        return ratio_text(paired, number=lambda x: f"{x:.2f}", suffix="")
    return f"{a.ms_median / b.ms_median:.2f}"


def backend_section(run: Run, task: str) -> list[str]:
    """One task's table: a row per JAX implementation with its TensorFlow twins."""
    jax_benches = [b for b in run.benchmarks if _is_jax(b) and extra_info(b).get("kind") == "step"]
    jax_benches = [b for b in jax_benches if extra_info(b).get("task") == task]
    if not jax_benches:
        return []
    rows: dict[str, StepRow] = {}
    for row in step_rows(run, task):  # fastest first: one row per implementation
        rows.setdefault(row.implementation, row)
    extras = {extra_info(b)["implementation"]: extra_info(b) for b in jax_benches}
    devices = {b.get("name", ""): device_kind(extra_info(b).get("device")) for b in run.benchmarks}
    table, paired, apart = [], [], set()
    for impl in [name for name in TF_TWINS if name in extras] + sorted(set(extras) - set(TF_TWINS)):
        extra = extras[impl]
        graph, xla = extra.get("tf_twins") or TF_TWINS.get(impl, (None, None))
        mine, tf_graph, tf_xla = rows.get(impl), rows.get(graph), rows.get(xla)
        paired += [_paired(mine, tf) is not None for tf in (tf_graph, tf_xla) if mine and tf]
        for tf in (tf_graph, tf_xla):
            if mine and tf and _ratio(mine, tf, devices) == DIFFERENT_DEVICES:
                apart.add((devices[mine.bench_name], devices[tf.bench_name]))
        table.append(
            [
                impl,
                fmt(mine.ms_median if mine else None),
                graph or MISSING,
                fmt(tf_graph.ms_median if tf_graph else None),
                _ratio(mine, tf_graph, devices),
                xla or MISSING,
                fmt(tf_xla.ms_median if tf_xla else None),
                _ratio(mine, tf_xla, devices),
                fmt(extra.get("compile_s")),
                fmt(tf_xla.compile_s if tf_xla else None),
                fmt(extra.get("cold_start_s")),
            ]
        )
    headers = [
        "JAX",
        "ms/step",
        "TF twin",
        "ms/step",
        "JAX / TF",
        "TF XLA twin",
        "ms/step",
        "JAX / TF XLA",
        "JAX compile (s)",
        "TF XLA compile (s)",
        "JAX cold start (s)",
    ]
    jax_kinds = {devices.get(b.get("name", "")) for b in jax_benches}
    note = _backend_note(jax_benches, paired, apart, jax_kinds)
    return [markdown_table(table, headers, text=(0, 2, 5)), "", note]


def _backend_note(
    jax_benches: list[dict[str, Any]],
    paired: list[bool],
    apart: set[tuple[str, str]],
    jax_kinds: set[str | None],
) -> str:
    """Where each side ran, how the ratios were measured (``paired``: per ratio shown, whether
    it is a paired estimate) and what they can say."""
    first = extra_info(jax_benches[0])
    if any(paired):
        panels = sorted(
            {p for b in jax_benches if isinstance(p := extra_info(b).get("panel"), str)}
        )
        where = f" (panel {', '.join(panels)})" if panels else ""
        tf_side = (
            "TensorFlow in the pytest process; the rows were measured interleaved in the same "
            f"blocks{where}, so each ratio is the paired estimate of the within-block ratios "
            "(the inverse of the JAX result's speedup over its twin)"
            + ("; a ratio without an interval is of the medians" if not all(paired) else "")
            + ". Above 1: JAX slower. "
            + PAIRED_NOTE
        )
    else:
        tf_side = (
            "TensorFlow in the pytest process, the same run (not interleaved: read ratios within "
            "about 10% on a shared machine). Above 1: JAX slower."
        )
    return (
        f"Keras {first.get('keras')} on jax {first.get('jax')} / jaxlib {first.get('jaxlib')}, "
        f"{first.get('device')} ({first.get('device_kind')}), in its own worker process; "
        + tf_side
        + " Compile: the first call (jit tracing, XLA compilation); cold start adds importing "
        "jax and Keras. " + devices_note(apart, jax_kinds)
    )


def devices_note(apart: set[tuple[str, str]], jax_kinds: set[str | None]) -> str:
    """What the ratios can say, given where each side ran."""
    if apart:
        where = "; ".join(f"JAX on the {j}, TensorFlow on the {t}" for j, t in sorted(apart))
        return (
            f"**Different devices** ({where}): those rows have no ratio ({DIFFERENT_DEVICES!r}), "
            "as it would compare two devices, not two backends (on a GPU host, install jax's "
            "CUDA wheels: pip install -e '.[jax-cuda]')."
        )
    kinds = sorted(k for k in jax_kinds if k)
    if kinds and kinds != ["CPU"]:
        return f"Both sides on the {', '.join(kinds)}."
    return "A CPU is not a GPU: these ratios say nothing about an accelerator."


def backend_sections(runs: Sequence[Run]) -> list[str]:
    """Every run's backend tables, as markdown lines (headings included)."""
    lines: list[str] = []
    for run in runs:
        for task in tasks_of([run], "step"):
            section = backend_section(run, task)
            if section:
                label = f" ({run.label})" if len(runs) > 1 else ""
                lines += [f"## {task}: TensorFlow vs JAX{label}", "", *section, ""]
    return lines
