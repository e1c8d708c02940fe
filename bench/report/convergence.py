"""The convergence tables of ``python -m bench report``: per task, each implementation's final
accuracy over seeds, its parity with ``keras_fit`` (or, for a mixed-precision row, with the same
implementation in float32), the Fashion-MNIST anchor, time to accuracy and wall time; for a
regression task (linreg), the fitted ``w`` and ``b`` and the largest parameter error instead.

Called from ``bench.report.tables.run_sections``; no TensorFlow.
"""

from __future__ import annotations

from typing import Any

from bench.report.load import Run, extra_info
from bench.report.rows import (
    BASELINE,
    IMPLEMENTATION_ORDER,
    MISSING,
    benches_of,
    fmt,
    in_order,
    markdown_table,
    number_or_none,
)


def convergence_section(run: Run, task: str) -> list[str]:
    """The task's convergence table and its note: float32 rows first, in the report's order of
    implementations, then the mixed-precision ones."""
    benches = benches_of(run, "convergence", task)
    order = in_order([extra_info(b)["implementation"] for b in benches], IMPLEMENTATION_ORDER)
    benches.sort(
        key=lambda b: (_is_mixed(extra_info(b)), order.index(extra_info(b)["implementation"]))
    )
    if any(extra_info(b).get("w") is not None for b in benches):
        return _regression_section(benches)
    return _accuracy_section(benches)


def _regression_section(benches: list[dict[str, Any]]) -> list[str]:
    table = []
    for bench in benches:
        e = extra_info(bench)
        table.append(
            [
                _row_name(e),
                fmt(number_or_none(e.get("w")), 5),
                fmt(number_or_none(e.get("b")), 5),
                fmt(number_or_none(e.get("param_error"))),
                fmt(number_or_none(e.get("final_loss"))),
                fmt(_seeds(e)),
                _wall(bench),
            ]
        )
    headers = ["implementation", "w", "b", "max param error", "final loss", "seeds", "wall (s)"]
    return [markdown_table(table, headers), "", "wall: the whole benchmark."]


def _accuracy_section(benches: list[dict[str, Any]]) -> list[str]:
    tta_target = next(
        (
            number_or_none(extra_info(b).get("tta_target"))
            for b in benches
            if extra_info(b).get("tta_target")
        ),
        None,
    )
    table = []
    for bench in benches:
        e = extra_info(bench)
        acc = number_or_none(e.get("final_accuracy"))
        std = number_or_none(e.get("final_accuracy_std"))
        table.append(
            [
                _row_name(e),
                _pct(acc) + ("" if std is None else f" ± {_pct(std)}"),
                fmt(_seeds(e)),
                _parity(e),
                _anchor(e),
                fmt(number_or_none(e.get("time_to_accuracy_s"))),
                fmt(number_or_none(e.get("final_loss"))),
                _wall(bench),
            ]
        )
    headers = [
        "implementation",
        "final accuracy (%)",
        "seeds",
        f"parity vs {BASELINE} (pp)",
        "anchor",
        f"time to {tta_target * 100:.0f}% (s)" if tta_target else "time to accuracy (s)",
        "final loss",
        "wall (s)",
    ]
    note = (
        "Accuracy: test accuracy after the last epoch, mean ± std over seeds; parity passes "
        f"within 1 pp of {BASELINE}; wall: the whole benchmark, tracing and compilation included."
    )
    if any(_is_mixed(extra_info(b)) for b in benches):
        note += (
            " A mixed-precision row's parity is against the same implementation in float32 "
            "(same seeds, same batches)."
        )
    return [markdown_table(table, headers), "", note]


def _row_name(e: dict[str, Any]) -> str:
    impl = e["implementation"]
    if _is_mixed(e):
        return f"{impl} ({e['precision']})"
    return f"{impl} (reference)" if impl == "sklearn_mlp" else impl


def _seeds(e: dict[str, Any]) -> Any:
    """How many seeds: ``seeds`` (a count, or the list of them), else the final accuracies'."""
    seeds = e.get("seeds")
    if isinstance(seeds, list):
        return len(seeds)
    if seeds is None and isinstance(e.get("final_accuracies"), list):
        return len(e["final_accuracies"])
    return seeds


def _wall(bench: dict[str, Any]) -> str:
    return fmt(number_or_none(bench["stats"].get("median")))


def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{x * 100:.2f}"


def _is_mixed(e: dict[str, Any]) -> bool:
    return e.get("precision", "float32") != "float32"


def _parity(e: dict[str, Any]) -> str:
    if e["implementation"] == BASELINE and not _is_mixed(e):
        return "baseline"
    delta = number_or_none(e.get("parity_delta_pp"))
    if delta is None:
        return "n/a" if e.get("final_accuracy") is None else MISSING
    if e["implementation"] == "sklearn_mlp":
        return f"{delta:+.2f} (reference, not gated)"
    ok = e.get("parity_ok")
    ok = abs(delta) <= 1.0 if ok is None else ok
    versus = f" vs {e['implementation']} float32" if _is_mixed(e) else ""
    return f"{delta:+.2f} {'PASS' if ok else 'FAIL'}{versus}"


def _anchor(e: dict[str, Any]) -> str:
    target = number_or_none(e.get("accuracy_target"))
    acc = number_or_none(e.get("final_accuracy"))
    if e.get("dataset") != "fashion-mnist" or target is None:
        return "n/a"
    ok = e.get("anchor_ok")
    if ok is None and "anchor_ok" in e:
        # The suite records null when the anchor does not apply (a subset or fewer epochs).
        return f">= {target * 100:.0f}% n/a (full profile)"
    ok = (acc is not None and acc >= target) if ok is None else ok
    return f">= {target * 100:.0f}% {'PASS' if ok else 'FAIL'}"
