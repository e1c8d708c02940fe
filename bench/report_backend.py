"""The backend tables of ``python -m bench report``: per task, each Keras-on-JAX implementation
(``bench/bench_jax.py``) next to the TensorFlow implementations that run the same model and
loop, from the same run: ``jax_fit`` against ``keras_fit`` and ``keras_fit_xla``,
``jax_custom`` against ``custom_graph`` and ``custom_xla``, and the multi-step variants. No
TensorFlow, no JAX: the twins are read from each JAX benchmark's ``tf_twins``.

Called from ``bench.report_tables.run_sections``; a run without JAX benchmarks adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.report_load import Run, _extra
from bench.report_tables import MISSING, StepRow, _table, _tasks, fmt, step_rows

# For results written before ``tf_twins`` was recorded (implementations/jax_backend.TF_TWINS).
TF_TWINS = {
    "jax_fit": ("keras_fit", "keras_fit_xla"),
    "jax_custom": ("custom_graph", "custom_xla"),
    "jax_fit_spe": ("keras_fit_spe", None),
    "jax_custom_loop": ("custom_graph_loop", "custom_xla_loop"),
}


def _is_jax(bench: dict) -> bool:
    return _extra(bench).get("backend") == "jax"


def _ratio(a: StepRow | None, b: StepRow | None) -> str:
    return MISSING if a is None or b is None else f"{a.ms_median / b.ms_median:.2f}"


def backend_section(run: Run, task: str) -> list[str]:
    """One task's table: a row per JAX implementation with its TensorFlow twins."""
    jax_benches = [b for b in run.benchmarks if _is_jax(b) and _extra(b).get("kind") == "step"]
    jax_benches = [b for b in jax_benches if _extra(b).get("task") == task]
    if not jax_benches:
        return []
    rows: dict[str, StepRow] = {}
    for row in step_rows(run, task):  # fastest first: one row per implementation
        rows.setdefault(row.implementation, row)
    extras = {_extra(b)["implementation"]: _extra(b) for b in jax_benches}
    table = []
    for impl in [name for name in TF_TWINS if name in extras] + sorted(set(extras) - set(TF_TWINS)):
        extra = extras[impl]
        graph, xla = extra.get("tf_twins") or TF_TWINS.get(impl, (None, None))
        mine, tf_graph, tf_xla = rows.get(impl), rows.get(graph), rows.get(xla)
        table.append(
            [
                impl,
                fmt(mine.ms_median if mine else None),
                graph or MISSING,
                fmt(tf_graph.ms_median if tf_graph else None),
                _ratio(mine, tf_graph),
                xla or MISSING,
                fmt(tf_xla.ms_median if tf_xla else None),
                _ratio(mine, tf_xla),
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
    first = _extra(jax_benches[0])
    note = (
        f"Keras {first.get('keras')} on jax {first.get('jax')} / jaxlib {first.get('jaxlib')}, "
        f"{first.get('device')} ({first.get('device_kind')}), in its own worker process; "
        "TensorFlow in the pytest process, the same run (not interleaved: read ratios within "
        "about 10% on a shared machine). Above 1: JAX slower. Compile: the first call (jit "
        "tracing, XLA compilation); cold start adds importing jax and Keras. "
        "A CPU is not a GPU: these ratios say nothing about an accelerator."
    )
    return [_table(table, headers, text=(0, 2, 5)), "", note]


def backend_sections(runs: Sequence[Run]) -> list[str]:
    """Every run's backend tables, as markdown lines (headings included)."""
    lines: list[str] = []
    for run in runs:
        for task in _tasks([run], "step"):
            section = backend_section(run, task)
            if section:
                label = f" ({run.label})" if len(runs) > 1 else ""
                lines += [f"## {task}: TensorFlow vs JAX{label}", "", *section, ""]
    return lines
