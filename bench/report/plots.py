"""PNG plots of ``python -m bench report`` (matplotlib, optional).

``write_plots`` draws, for pytest-benchmark runs, throughput per implementation
(``step_<task>.png``), throughput against batch size (``sweep_<task>.png``), time per step
against steps per call N, with each one-step twin's time as a dashed line
(``steps_per_call_<task>.png``), and learning curves (``curves_<task>.png``); for each A/B
file, the change per benchmark with its interval against the threshold (``ab_ratios.png``).
Without matplotlib it returns ``None`` and the report says the plots were skipped. Called by
``bench.report.cli``; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.report.knobs import STEPS_PER_CALL, twin_of
from bench.report.load import ABRun, Run, change_pct, extra_info, is_number
from bench.report.rows import (
    IMPLEMENTATION_ORDER,
    StepRow,
    benches_of,
    fmt,
    in_order,
    number_or_none,
    step_rows,
    tasks_of,
)
from bench.report.tables import device_summary

# Red for a regression, green for a speed-up; grey for "no change" so the two stand out.
VERDICT_COLORS = {"SLOWER": "tab:red", "FASTER": "tab:green", "no change": "0.35"}
THOUSANDS = "{x:,.0f}"


def _colors(names: Iterable[str]) -> dict[str, Any]:
    from matplotlib import colormaps  # lazy: matplotlib is optional and slow to import

    palette = colormaps["tab10"].colors
    known = {n: palette[i] for i, n in enumerate(IMPLEMENTATION_ORDER)}
    extra = [n for n in in_order(set(names), IMPLEMENTATION_ORDER) if n not in known]
    known.update({n: palette[(len(IMPLEMENTATION_ORDER) + i) % 10] for i, n in enumerate(extra)})
    return known


def _figure(**kwargs: Any) -> Any:
    """A figure with constrained layout, drawn without pyplot (no global state, no GUI)."""
    from matplotlib.figure import Figure  # lazy: matplotlib is optional and slow to import

    return Figure(layout="constrained", **kwargs)


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is optional

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)


def _subtitle(runs: Sequence[Run], extra: str) -> str:
    if len(runs) == 1:
        return f"{extra} · {device_summary(runs[0])}"
    return "\n".join([extra] + [f"{r.label}: {device_summary(r)}" for r in runs])


def _tick_format(axis: Any, template: str) -> None:
    """Label the axis's ticks with ``template`` (``str.format`` of ``x``)."""
    from matplotlib.ticker import StrMethodFormatter  # lazy: matplotlib is optional

    axis.set_major_formatter(StrMethodFormatter(template))


def _plot_step(runs: Sequence[Run], task: str, out: Path) -> str:
    per_run = [(run, step_rows(run, task)) for run in runs if benches_of(run, "step", task)]
    order = [r.name for r in per_run[0][1]]
    for _, rows in per_run[1:]:
        order += [r.name for r in rows if r.name not in order]
    order = order[::-1]  # barh draws bottom-up: fastest on top
    height = 0.8 / len(per_run)
    fig = _figure(figsize=(9, 1.6 + 0.55 * len(order) * max(1, len(per_run) * 0.7)))
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
    _tick_format(ax.xaxis, THOUSANDS)
    first = extra_info(benches_of(per_run[0][0], "step", task)[0])
    batch = fmt(number_or_none(first.get("batch_size")))
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
    with_task = [run for run in runs if benches_of(run, "sweep", task)]
    styles = ["-", "--", ":", "-."]
    fig = _figure(figsize=(9, 5.5))
    ax = fig.add_subplot()
    sizes: set[float] = set()
    series: dict[tuple[int, str], list[StepRow]] = {}
    for k, run in enumerate(with_task):
        for row in step_rows(run, task, kind="sweep"):
            series.setdefault((k, row.implementation), []).append(row)
    colors = _colors(impl for _, impl in series)
    impl_order = in_order({impl for _, impl in series}, IMPLEMENTATION_ORDER)
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
    dataset = extra_info(benches_of(with_task[0], "sweep", task)[0]).get("dataset")
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
    _tick_format(ax.yaxis, THOUSANDS)
    ax.grid(alpha=0.3)
    ax.legend(title="implementation")
    name = f"sweep_{task}.png"
    _save(fig, out / name)
    return name


def _plot_steps_per_call(runs: Sequence[Run], task: str, out: Path) -> str:
    """ms/step against N, one line per multi-step implementation, and its one-step twin's
    ms/step from the same run's step table as a dashed line in its colour; a panel per run."""
    with_task = [run for run in runs if benches_of(run, "steps_per_call", task)]
    fig = _figure(figsize=(9 * min(len(with_task), 2), 5.5))
    axes = fig.subplots(1, len(with_task), squeeze=False, sharey=True)[0]
    per_run = [step_rows(run, task, kind="steps_per_call") for run in with_task]
    colors = _colors(r.implementation for rows in per_run for r in rows)
    values: list[float] = []
    for ax, run, rows in zip(axes, with_task, per_run, strict=True):
        values += _steps_per_call_axes(ax, rows, step_rows(run, task), colors)
        if len(with_task) > 1:
            ax.set_title(run.label, fontsize=10)
    if values and min(values) > 0 and max(values) / min(values) > 20:
        axes[0].set_yscale("log")
        axes[0].set_ylabel("ms per training step (median, log scale)")
    else:
        axes[0].set_ylim(bottom=0)
        axes[0].set_ylabel("ms per training step (median)")
    dataset = extra_info(benches_of(with_task[0], "steps_per_call", task)[0]).get("dataset")
    fig.suptitle(
        f"{task}: time per training step vs steps per call\n"
        + _subtitle(with_task, f"{dataset}; error bars: IQR; dashed: the one-step twin"),
        fontsize=10,
    )
    name = f"steps_per_call_{task}.png"
    _save(fig, out / name)
    return name


def _steps_per_call_axes(
    ax: Any, rows: list[StepRow], one_step: list[StepRow], colors: dict[str, Any]
) -> list[float]:
    """One run's panel: a line per implementation over N, its twin dashed; the ms/step drawn."""
    values: list[float] = []
    ns: set[int] = set()
    handles: list[Any] = []  # each line, then its twin's
    for impl in in_order({r.implementation for r in rows}, IMPLEMENTATION_ORDER):
        line = sorted((r for r in rows if r.implementation == impl), key=lambda r: r.steps_per_call)
        xs = [r.steps_per_call for r in line]
        ys = [r.ms_median for r in line]
        lo = [r.ms_median - (r.ms_q1 or r.ms_median) for r in line]
        hi = [(r.ms_q3 or r.ms_median) - r.ms_median for r in line]
        ns.update(xs)
        values += ys
        handles.append(
            ax.errorbar(
                xs, ys, yerr=[lo, hi], marker="o", capsize=3, color=colors[impl], label=impl
            )
        )
        twin = next((t for r in line if (t := twin_of(r, STEPS_PER_CALL, one_step))), None)
        if twin is not None:
            values.append(twin.ms_median)
            handles.append(
                ax.axhline(
                    twin.ms_median,
                    linestyle="--",
                    color=colors[impl],
                    label=f"{twin.implementation} (one step per call)",
                )
            )
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ns), [str(n) for n in sorted(ns)])
    ax.set_xlabel("steps per call N (log2 scale)")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, title="implementation")
    return values


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _plot_curves(run: Run, task: str, out: Path, suffix: str) -> str | None:
    from matplotlib.ticker import MaxNLocator  # lazy: matplotlib is optional

    curves = {
        extra_info(b)["implementation"]: extra_info(b)["curves"]
        for b in benches_of(run, "convergence", task)
        if isinstance(extra_info(b).get("curves"), dict) and extra_info(b)["curves"].get("epoch")
    }
    if not curves:
        return None
    has_acc = any(c.get("test_accuracy") for c in curves.values())
    fig = _figure(figsize=(12 if has_acc else 7, 5))
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    colors = _colors(curves)
    losses = []
    for impl in in_order(curves, IMPLEMENTATION_ORDER):
        c = curves[impl]
        for key, style in (("train_loss", "--"), ("test_loss", "-")):
            if c.get(key):
                label = impl if key == "test_loss" else None
                axes[0].plot(c["epoch"], c[key], style, color=colors[impl], label=label)
                losses += [v for v in c[key] if is_number(v)]
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
            (
                number_or_none(extra_info(b).get("accuracy_target"))
                for b in benches_of(run, "convergence", task)
            ),
            None,
        )
        if target:
            axes[1].axhline(target * 100, color="grey", linestyle=":", label=f"anchor {target:.0%}")
        axes[1].legend(fontsize=8)
        axes[1].grid(alpha=0.3)
    dataset = extra_info(benches_of(run, "convergence", task)[0]).get("dataset")
    fig.suptitle(
        f"{task}: learning curves (first seed)\n{_subtitle([run], str(dataset))}", fontsize=11
    )
    name = f"curves_{task}{suffix}.png"
    _save(fig, out / name)
    return name


def _side_text(side: dict[str, Any]) -> str:
    spec, rev = side.get("spec") or "?", side.get("revision")
    if isinstance(rev, str) and rev and not str(spec).startswith(rev[:7]):
        return f"{spec} @ {rev[:7]}"
    return str(spec)


def _plot_ab(ab: ABRun, out: Path, suffix: str) -> str:
    """Each benchmark's change with its interval, in its verdict's colour, against the
    threshold band; a skipped benchmark's row says why, in the file's order top to bottom."""
    benches = ab.benchmarks
    threshold = number_or_none(ab.settings.get("threshold_pct"))
    confidence = number_or_none(ab.settings.get("confidence"))
    fig = _figure(figsize=(9, 2.2 + 0.5 * len(benches)))
    ax = fig.add_subplot()
    measured = _ab_changes(benches)
    # 0 and the threshold band always in view; otherwise only as wide as the data needs, so
    # one large change does not leave half of the axes empty
    band = threshold or 1.0
    left = 1.3 * min([-band, *(low for _, low, _ in measured.values())])
    right = 1.3 * max([band, *(high for _, _, high in measured.values())])
    ax.set_xlim(left, right)
    if threshold:
        ax.axvspan(-threshold, threshold, color="0.9", zorder=0)
    ax.axvline(0, color="0.5", linewidth=1, zorder=1)
    for y, bench in enumerate(benches):
        if y in measured:
            _ab_change_row(ax, y, bench, measured[y], middle=(left + right) / 2)
        else:
            _ab_skipped_row(ax, y, bench)
    ax.set_ylim(len(benches) - 0.4, -0.75)  # top to bottom in the file's order; room for labels
    ax.set_yticks(range(len(benches)), [b["name"] for b in benches])
    _tick_format(ax.xaxis, "{x:+.0f}%")
    ci = "interval" if confidence is None else f"{confidence * 100:g}% interval"
    ax.set_xlabel(f"HEAD time / BASE time per step - 1, with its {ci} (positive: HEAD slower)")
    ax.grid(axis="x", alpha=0.3)
    _ab_legend(fig, [bench for y, bench in enumerate(benches) if y in measured], threshold)
    cpu = ab.machine.get("cpu_model")
    ax.set_title(
        f"A/B: HEAD ({_side_text(ab.head)}) vs BASE ({_side_text(ab.base)})\n"
        f"change in time per step, interleaved on one machine" + (f" · {cpu}" if cpu else ""),
        fontsize=10,
    )
    name = f"ab_ratios{suffix}.png"
    _save(fig, out / name)
    return name


def _ab_changes(benches: list[dict[str, Any]]) -> dict[int, tuple[float, float, float]]:
    """Row -> (change, low, high) in %, for the benchmarks that were measured (not skipped)."""
    measured = {}
    for y, bench in enumerate(benches):
        change = change_pct(bench.get("ratio"))
        if change is not None:
            low, high = change_pct(bench.get("ci_low")), change_pct(bench.get("ci_high"))
            measured[y] = (change, change if low is None else low, change if high is None else high)
    return measured


def _numerics_changed(bench: dict[str, Any]) -> bool:
    return bool((bench.get("numerics") or {}).get("changed"))


def _ab_change_row(
    ax: Any, y: int, bench: dict[str, Any], measured: tuple[float, float, float], middle: float
) -> None:
    """The change as a dot (hollow where the numbers changed) with its interval, labelled."""
    change, low, high = measured
    verdict = bench["verdict"]
    color = VERDICT_COLORS.get(verdict, "tab:purple")
    changed = _numerics_changed(bench)
    ax.errorbar(
        change,
        y,
        xerr=[[max(0.0, change - low)], [max(0.0, high - change)]],
        fmt="o",
        color=color,
        markerfacecolor="white" if changed else color,
        markeredgewidth=1.8,
        markersize=8,
        capsize=5,
        elinewidth=2,
        zorder=3,
    )
    label = f"{change:+.1f}%  {verdict}" + ("  (numbers changed)" if changed else "")
    # text runs towards the middle of the axes, so it stays inside them
    toward_right = change < middle
    ax.annotate(
        label,
        (change, y),
        xytext=(-6 if toward_right else 6, 9),
        textcoords="offset points",
        ha="left" if toward_right else "right",
        va="bottom",
        fontsize=9,
        color=color,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
    )


def _ab_skipped_row(ax: Any, y: int, bench: dict[str, Any]) -> None:
    reason = bench.get("skip_reason")
    text = bench["verdict"] + (f": {reason}" if reason else "")
    # x in axes fraction: the row's text starts at the left edge whatever the scale
    ax.text(
        0.01,
        y,
        text,
        transform=ax.get_yaxis_transform(),
        va="center",
        color="0.4",
        style="italic",
        fontsize=9,
    )


def _ab_legend(fig: Any, measured: list[dict[str, Any]], threshold: float | None) -> None:
    """The verdicts drawn, in the order they first appear, and the threshold band."""
    from matplotlib.lines import Line2D  # lazy: matplotlib is optional
    from matplotlib.patches import Patch  # lazy: matplotlib is optional

    verdicts = list(dict.fromkeys(bench["verdict"] for bench in measured))
    dot = {"marker": "o", "linestyle": ""}
    handles: list[Any] = [
        Line2D([], [], color=VERDICT_COLORS.get(v, "tab:purple"), label=v, **dot) for v in verdicts
    ]
    if any(_numerics_changed(bench) for bench in measured):
        handles.append(
            Line2D([], [], color="0.35", markerfacecolor="white", label="numbers changed", **dot)
        )
    if threshold:
        handles.append(Patch(color="0.9", label=f"±{threshold:g}% threshold"))
    if handles:  # below the axes: inside, it would cover whichever row sits in its corner
        fig.legend(handles=handles, fontsize=9, loc="outside lower center", ncols=len(handles))


def write_plots(runs: Sequence[Run], out: Path, ab_runs: Sequence[ABRun] = ()) -> list[str] | None:
    """Write the PNGs into ``out``; their names, or ``None`` when matplotlib is missing."""
    try:
        import matplotlib  # lazy: optional; without it the report says the plots were skipped
    except ImportError:
        return None
    names: list[str | None] = []
    with matplotlib.rc_context({"font.size": 11, "axes.titlesize": 11}):
        for ab in ab_runs:
            names.append(_plot_ab(ab, out, f"_{_slug(ab.label)}" if len(ab_runs) > 1 else ""))
        names += [_plot_step(runs, task, out) for task in tasks_of(runs, "step")]
        names += [_plot_sweep(runs, task, out) for task in tasks_of(runs, "sweep")]
        names += [
            _plot_steps_per_call(runs, task, out) for task in tasks_of(runs, "steps_per_call")
        ]
        for task in tasks_of(runs, "convergence"):
            for run in runs:
                if benches_of(run, "convergence", task):
                    suffix = f"_{_slug(run.label)}" if len(runs) > 1 else ""
                    names.append(_plot_curves(run, task, out, suffix))
    return [n for n in names if n]
