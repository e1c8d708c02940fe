"""The interleaved comparison's budgets, measured (docs/timing.md, "How repeatable the numbers are";
issue "The comparison table, measured interleaved").

    python experiments/panel_budget.py run --out quiet.json [--busy] [--rev REV] [-k EXPR]
    python experiments/panel_budget.py agree quiet.json busy.json [--out agree.json]
    python experiments/panel_budget.py honesty [--task mlp] [--repeats 12] [--out h.json]
    python experiments/panel_budget.py processes [--runs 5] [-k EXPR] [--out p.json]
    python experiments/panel_budget.py noise [--task mlp] [--seconds 240] [--out n.json]

- ``run``: ``pytest --benchmark-only`` (``-k`` default: every step benchmark of the quick
  profile, convergence left out: it yields no ratio) on ``--rev``'s code (exported with ``git
  archive``, so editing the tree meanwhile changes nothing; default: the working tree),
  optionally beside a **bursty busy loop on one core** (``--busy``: 3 s spinning, 4 s idle,
  what a shared CI runner's neighbour looks like), or with every core shared with a spinning
  process (``--halve``: a CPU at about half the speed, the stand-in for a slow one). Writes the
  results file and the wall time, and pytest's report (durations, skip reasons) beside it.
  A revision from before panels gives today's sequential figures.
- ``agree``: every ratio the report prints in both files (each step benchmark's speedup over
  the baseline; each knob variant against its twin), how far the two runs' estimates are
  apart (``|log(a/b)|`` in percent: median and max), and the coverage: in what share of the
  ratios each run's 95% interval holds the other run's estimate. Files without intervals
  (sequential) are compared on their medians. Each panel baseline's ms/step in both files is
  printed too (``baselines_ms``): far apart, the runs met the host in different states.
- ``honesty``: does interleaving change what is measured? In one process, every member of
  the task's quick step panel is built once; then, alternately, one panel block (a round of
  each, random order) and a solo stretch of one member (3 rounds back to back, as the old
  harness timed it), for ``--repeats`` cycles. Per member: the panel median against the solo
  median, in the same minutes.
- ``noise``: where a panel's interval width comes from. In one process, the task's headline
  members (``keras_fit``, ``custom_graph``, ``custom_xla``) in the panel's own blocks for
  ``--seconds``: each member's round-to-round spread, how much of it the members of a block
  share, and the baseline ratios estimated from ``--windows`` contiguous stretches of the run
  against as many stretches spread over all of it (every ``windows``-th block). If the
  contiguous ones spread no more than the spread ones, the ratio does not drift with time in
  the process, and what separates two runs is the blocks' own noise: the blocks it would take
  for +-2% are printed.
- ``processes``: is one process per panel enough? The same panel (``-k``; default the MLP's
  step table) in ``--runs`` fresh processes: the spread of each ratio's estimate between
  processes against the interval half-width each process claimed. A ratio of spread to claimed
  standard error near 1 means the within-process interval is honest; well above 1, each
  process carries a bias of its own and the intervals must widen (or the rounds spread over
  processes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the suite's own modules from this tree

from bench.ab.sides import export_revision, resolve_revision  # noqa: E402

STEP_SELECTION = "not convergence and not harness_overhead"


def busy_loop(on_s: float = 3.0, off_s: float = 4.0, core: int = 0) -> None:  # pragma: no cover
    """Spin core ``core`` for ``on_s``, rest ``off_s`` (0: never), until killed."""
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {core})
    while True:
        end = time.perf_counter() + on_s
        while time.perf_counter() < end:
            pass
        time.sleep(off_s)


@contextlib.contextmanager
def neighbour(busy: bool, halve: bool = False):
    """``busy``: the bursty loop on one core; ``halve``: a spinner on every core, never
    resting (each core shared half and half: a CPU at about half this one's speed)."""
    spawn = multiprocessing.get_context("spawn")
    procs = []
    if busy:
        procs.append(spawn.Process(target=busy_loop, daemon=True))
    if halve:
        cores = sorted(os.sched_getaffinity(0))
        procs += [spawn.Process(target=busy_loop, args=(3.0, 0.0, c), daemon=True) for c in cores]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)


@contextlib.contextmanager
def tree_of(rev: str | None):
    if rev is None:
        yield ROOT
        return
    revision = resolve_revision(ROOT, rev)
    if revision is None:
        raise SystemExit(f"unknown revision {rev!r}")
    tmp = Path(tempfile.mkdtemp(prefix="panel-budget-"))
    try:
        export_revision(ROOT, revision, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cmd_run(args) -> None:
    out = Path(args.out).resolve()
    with tree_of(args.rev) as tree, neighbour(args.busy, args.halve):
        cmd = [sys.executable, "-m", "pytest", "--benchmark-only", "-p", "no:cacheprovider"]
        cmd += ["-q", f"--benchmark-json={out}", "--benchmark-save-data", "--durations=0", "-rs"]
        cmd += ["-k", args.k] if args.k else []  # -k "": the whole default run
        cmd += ["--profile", args.profile]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    # pytest's report (each test's duration, each skip's reason) beside the results
    out.with_suffix(".log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    print(f"{out.name}: rc {proc.returncode}, {wall:.0f} s, busy={args.busy}: {tail[-1:]}")
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        raise SystemExit(1)
    data = json.loads(out.read_text())
    data.setdefault("machine_info", {})["panel_budget"] = {
        "busy": args.busy,
        "halve": args.halve,
        "rev": args.rev or "working tree",
        "wall_s": wall,
        "selection": args.k,
        "load_before": os.getloadavg(),
    }
    out.write_text(json.dumps(data, indent=1))


# --- the ratios of a results file ---------------------------------------------------------------


def _key(extra: dict) -> tuple:
    return (
        extra.get("backend", "tensorflow"),
        extra["implementation"],
        extra.get("precision") or "float32",
        int(extra.get("steps_per_call") or 1),
        int(extra.get("micro_batches") or 1),
        int(extra.get("batch_size") or 0),
        extra["task"],
    )


def ratios(path: Path) -> dict[str, tuple[float, float | None, float | None]]:
    """Every ratio the report prints: name -> (estimate, low, high); speedup over the baseline
    (``keras_fit``, or the panel's) of each step benchmark, and each knob variant's speedup
    over its twin. Without intervals (a sequential file): medians, no interval."""
    data = json.loads(Path(path).read_text())
    benches = [b for b in data["benchmarks"] if b["extra_info"].get("kind") == "step"]
    by_name = {b["name"]: b for b in benches}
    out: dict[str, tuple] = {}
    for b in benches:
        e = b["extra_info"]
        group = b.get("group") or ""
        if e.get("speedup_vs_name") and e["speedup_vs_name"] != b["name"]:
            out[f"speedup {b['name']}"] = (e["speedup"], e["speedup_low"], e["speedup_high"])
        elif "speedup_vs_name" not in e and not group.startswith("sweep"):
            base = [
                x
                for x in benches
                if x["extra_info"]["implementation"] == "keras_fit"
                and x.get("group") == e["task"]
                and x["extra_info"].get("precision", "float32") == "float32"
            ]
            if base and base[0] is not b and group == e["task"]:
                out[f"speedup {b['name']}"] = (
                    base[0]["stats"]["median"] / b["stats"]["median"],
                    None,
                    None,
                )
        # knob variants against their twin at the same batch size
        twin_impl = None
        if e.get("precision", "float32") != "float32":
            twin_impl = (e["implementation"], 1 if not e.get("one_step_twin") else None)
        elif e.get("micro_batch_twin"):
            twin_impl = (e["micro_batch_twin"], None)
        elif e.get("one_step_twin"):
            twin_impl = (e["one_step_twin"], 1)
        if twin_impl is None:
            continue
        twins = [
            x
            for x in benches
            if x["extra_info"]["implementation"] == twin_impl[0]
            and (x["extra_info"].get("precision") or "float32") == "float32"
            and x["extra_info"].get("batch_size") == e.get("batch_size")
            and x["extra_info"]["task"] == e["task"]
            and x.get("group") == e["task"]
        ]
        if not twins:
            continue
        twin = twins[0]
        pair = (e.get("paired") or {}).get(twin["name"])
        if pair and pair.get("speedup"):
            out[f"knob {b['name']}"] = (pair["speedup"], pair["low"], pair["high"])
        else:
            out[f"knob {b['name']}"] = (twin["stats"]["median"] / b["stats"]["median"], None, None)
    del by_name
    return out


def baselines_apart(a: Path, b: Path) -> dict[str, list[float]]:
    """Each panel baseline both files hold: [its median ms/step in a, in b]."""

    def baselines(path: Path) -> dict[str, float]:
        out = {}
        for bench in json.loads(path.read_text())["benchmarks"]:
            if bench["extra_info"].get("speedup_vs_name") == bench["name"]:
                out[bench["name"]] = 1000 * bench["stats"]["median"]
        return out

    ma, mb = baselines(a), baselines(b)
    return {name: [ma[name], mb[name]] for name in sorted(set(ma) & set(mb))}


def cmd_agree(args) -> None:
    a, b = ratios(Path(args.a)), ratios(Path(args.b))
    common = sorted(set(a) & set(b))
    rows, covered, checked = [], 0, 0
    for name in common:
        (ea, la, ha), (eb, lb, hb) = a[name], b[name]
        diff = 100 * abs(math.log(ea / eb))
        row = {"ratio": name, "a": ea, "b": eb, "diff_pct": diff}
        if la is not None and lb is not None:
            holds = (la <= eb <= ha) and (lb <= ea <= hb)
            row.update(a_interval=[la, ha], b_interval=[lb, hb], each_holds_other=holds)
            checked += 1
            covered += holds
        rows.append(row)
    diffs = [r["diff_pct"] for r in rows]
    states = baselines_apart(Path(args.a), Path(args.b))
    summary = {
        "files": [args.a, args.b],
        # each panel baseline's ms/step in a and b: far apart, the runs met the host in
        # different states, and the ratios can differ beyond their intervals (docs/timing.md)
        "baselines_ms": states,
        "ratios": len(rows),
        "median_diff_pct": float(np.median(diffs)) if diffs else None,
        "max_diff_pct": float(max(diffs)) if diffs else None,
        "coverage": covered / checked if checked else None,
        "coverage_checked": checked,
    }
    for r in sorted(rows, key=lambda r: -r["diff_pct"]):
        extra = ""
        if "each_holds_other" in r:
            extra = "" if r["each_holds_other"] else "  (intervals miss)"
        print(f"{r['diff_pct']:6.1f}%  {r['a']:.3f}x vs {r['b']:.3f}x  {r['ratio']}{extra}")
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


# --- honesty: the same trainers in the panel and alone, alternately -----------------------------


def cmd_honesty(args) -> None:
    from bench.tfimport import import_tensorflow

    import_tensorflow()  # without TensorFlow's CPU-only start-up lines
    import pytest

    import implementations
    from bench.benchmarks import bench_step
    from bench.tasks import get_task, load_for_task
    from bench.timing.members import TFMember
    from bench.timing.profiles import PROFILES

    profile = PROFILES["quick"]
    specs = []
    for impl in implementations.REGISTRY:  # the task's quick step panel, float32
        with contextlib.suppress(pytest.skip.Exception):
            params = {"impl": impl, "task_name": args.task}
            specs.append(
                bench_step.step_spec(f"test_step[{impl}-{args.task}]", params, profile, None)
            )
    data = load_for_task(get_task(args.task))
    members = [TFMember(s, data, 0.0) for s in specs]
    rng = random.Random(0)
    panel: dict[str, list[float]] = {m.name: [] for m in members}
    solo: dict[str, list[float]] = {m.name: [] for m in members}
    t0 = time.perf_counter()
    for cycle in range(args.repeats):
        order = list(members)
        rng.shuffle(order)
        for m in order:  # one block
            panel[m.name].append(m.run_round())
        for m in members if cycle % 2 == 0 else reversed(members):  # each member alone
            solo[m.name] += [m.run_round() for _ in range(3)]
        print(f"cycle {cycle + 1}/{args.repeats} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = []
    for m in members:
        p, s = float(np.median(panel[m.name])), float(np.median(solo[m.name]))
        rows.append(
            {
                "member": m.name,
                "panel_ms": 1e3 * p,
                "alone_ms": 1e3 * s,
                "panel_vs_alone_pct": 100 * (p / s - 1),
            }
        )
        print(
            f"{m.name:50s} panel {1e3 * p:8.3f} ms  alone {1e3 * s:8.3f} ms  "
            f"{100 * (p / s - 1):+5.1f}%"
        )
    diffs = [abs(r["panel_vs_alone_pct"]) for r in rows]
    summary = {
        "task": args.task,
        "repeats": args.repeats,
        "max_abs_pct": max(diffs),
        "median_abs_pct": float(np.median(diffs)),
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


# --- noise: is it drift or the blocks' own noise? -----------------------------------------------


def cmd_noise(args) -> None:
    from bench.tfimport import import_tensorflow

    import_tensorflow()  # without TensorFlow's CPU-only start-up lines
    from bench.benchmarks import bench_step
    from bench.stats.paired import hodges_lehmann
    from bench.tasks import get_task, load_for_task
    from bench.timing.blocks import PANEL_INTERVAL_SCALE, run_blocks
    from bench.timing.members import TFMember
    from bench.timing.profiles import PROFILES

    profile = PROFILES["quick"]
    impls = args.impls.split(",")
    specs = [
        bench_step.step_spec(
            f"test_step[{i}-{args.task}]", {"impl": i, "task_name": args.task}, profile, None
        )
        for i in impls
    ]
    data = load_for_task(get_task(args.task))
    members = [TFMember(s, data, 0.0) for s in specs]
    # the panel's own scheduler, sampling until the time is up (no target can stop it)
    result = run_blocks(
        members, [], min_blocks=10**9, max_blocks=10**9, time_cap_s=args.seconds, target_pct=0
    )
    for m in members:
        m.close()
    names = [m.name for m in members]
    # blocks every member ran, uncontended
    keep = [
        b
        for b in range(result.blocks)
        if all(not result.rounds[n].contended(b) for n in names)
        and all(result.rounds[n].block[b] == b for n in names)
    ]
    logs = {n: np.log(np.array(result.rounds[n].seconds)[keep]) for n in names}
    per_member = {
        n: {
            "round_sd_pct": 100 * float(np.std(v)),
            "lag1_autocorrelation": float(np.corrcoef(v[:-1], v[1:])[0, 1]),
        }
        for n, v in logs.items()
    }
    shared = float(
        np.mean([np.corrcoef(logs[a], logs[b])[0, 1] for a in names for b in names if a < b])
    )
    block_s = result.seconds / max(result.blocks, 1)
    rows = []
    base = names[0]
    for other in names[1:]:
        lr = logs[base] - logs[other]
        w = len(lr) // args.windows
        cont = [hodges_lehmann(lr[i * w : (i + 1) * w]) for i in range(args.windows)]
        spread = [hodges_lehmann(lr[i :: args.windows][:w]) for i in range(args.windows)]
        half = float(np.mean([e.detectable_pct for e in cont]))  # interval at w blocks, unscaled
        # blocks for +-2% with the panel's widening: the half-width shrinks as 1/sqrt(blocks)
        need = w * (PANEL_INTERVAL_SCALE * half / 2.0) ** 2
        rows.append(
            {
                "ratio": f"{base} / {other}",
                "block_log_ratio_sd_pct": 100 * float(np.std(lr)),
                "window_blocks": w,
                "contiguous_sd_pct": 100 * float(np.std(np.log([e.ratio for e in cont]), ddof=1)),
                "spread_sd_pct": 100 * float(np.std(np.log([e.ratio for e in spread]), ddof=1)),
                "window_half_width_pct": half,
                "blocks_for_2pct": need,
                "seconds_for_2pct_these_members": need * block_s,
            }
        )
        print(
            f"{rows[-1]['ratio']:60s} block sd {rows[-1]['block_log_ratio_sd_pct']:5.1f}%  "
            f"{args.windows} windows of {w}: contiguous sd {rows[-1]['contiguous_sd_pct']:.2f}%, "
            f"spread sd {rows[-1]['spread_sd_pct']:.2f}%, half-width {half:.2f}%; "
            f"+-2%: {need:.0f} blocks ({need * block_s:.0f} s)"
        )
    summary = {
        "task": args.task,
        "seconds": result.seconds,
        "blocks": result.blocks,
        "blocks_kept": len(keep),
        "block_s": block_s,
        "members": per_member,
        "mean_within_block_correlation": shared,
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


# --- processes: is one process per panel enough? -----------------------------------------------


def cmd_processes(args) -> None:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            cmd = [sys.executable, "-m", "pytest", "--benchmark-only", "-p", "no:cacheprovider"]
            cmd += ["-q", "-k", args.k, f"--benchmark-json={out}"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:])
                raise SystemExit(1)
            runs.append(ratios(out))
            print(f"process {i + 1}/{args.runs}: {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for name in sorted(set.intersection(*(set(r) for r in runs))):
        logs = np.log([r[name][0] for r in runs])
        halves = [math.log(r[name][2] / r[name][1]) / 2 for r in runs if r[name][1]]
        claimed_se = float(np.mean(halves)) / 1.96
        spread = float(np.std(logs, ddof=1))
        rows.append(
            {
                "ratio": name,
                "estimates": [r[name][0] for r in runs],
                "between_process_sd_pct": 100 * spread,
                "claimed_se_pct": 100 * claimed_se,
                "spread_over_claimed": spread / claimed_se if claimed_se else None,
            }
        )
        print(
            f"{name:55s} sd {100 * spread:5.2f}%  claimed se {100 * claimed_se:5.2f}%  "
            f"x{spread / claimed_se:4.2f}"
        )
    factors = [r["spread_over_claimed"] for r in rows if r["spread_over_claimed"]]
    # The pooled factor: root mean square of spread / claimed over the ratios.
    pooled = float(np.sqrt(np.mean(np.square(factors)))) if factors else None
    summary = {
        "runs": args.runs,
        "selection": args.k,
        "pooled_spread_over_claimed": pooled,
        "median_spread_over_claimed": float(np.median(factors)) if factors else None,
    }
    print(json.dumps(summary))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--out", required=True)
    run.add_argument("--busy", action="store_true")
    run.add_argument("--halve", action="store_true", help="a spinner on every core")
    run.add_argument("--rev", default=None)
    run.add_argument("-k", default=STEP_SELECTION)
    run.add_argument("--profile", default="quick")
    agree = sub.add_parser("agree")
    agree.add_argument("a")
    agree.add_argument("b")
    agree.add_argument("--out")
    honesty = sub.add_parser("honesty")
    honesty.add_argument("--task", default="mlp")
    honesty.add_argument("--repeats", type=int, default=12)
    honesty.add_argument("--out")
    noise = sub.add_parser("noise")
    noise.add_argument("--task", default="mlp")
    noise.add_argument("--impls", default="keras_fit,custom_graph,custom_xla")
    noise.add_argument("--seconds", type=float, default=240.0)
    noise.add_argument("--windows", type=int, default=8)
    noise.add_argument("--out")
    processes = sub.add_parser("processes")
    processes.add_argument("--runs", type=int, default=5)
    processes.add_argument("-k", default="test_step and mlp")
    processes.add_argument("--out")
    args = parser.parse_args()
    commands = {
        "run": cmd_run,
        "agree": cmd_agree,
        "honesty": cmd_honesty,
        "noise": cmd_noise,
        "processes": cmd_processes,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
