"""The A/B check's budgets, measured (docs/regression.md; issue: A/A false alarms,
detection of planted 10% and 5% slowdowns, wall time).

    python experiments/ab_budget.py aa --runs 10 [--rev HEAD] [--out results/ab-budget/aa.json]
    python experiments/ab_budget.py planted --fraction 0.30 --runs 10 \\
        [-k "custom_graph and not linreg"] [--out results/ab-budget/planted-10.json]
    python experiments/ab_budget.py planted ... --first-seed 6 --runs 4 --out more.json
    python experiments/ab_budget.py merge planted-10.json more.json --out planted-10-all.json

Both modes export ``--rev`` (default HEAD) with ``git archive`` into a temporary directory and
run ``python -m bench ab`` from there, so editing the working tree while an experiment runs
does not change what is measured.

- ``aa``: BASE and HEAD are the same exported code; every SLOWER or FASTER verdict is a false
  alarm.
- ``planted``: HEAD is the same code with extra work inside the custom loop's step (a forward
  pass over the first ``fraction`` of the batch, the batch repeated where it is above 1, whose
  result joins the returned loss times 0.0, so it cannot be pruned and the numbers do not
  change). A forward pass is about a third of a step's FLOPs, so a fraction of 0.30 plants
  about 10% and 0.15 about 5%, but not on every benchmark alike (XLA's CNN forward pass is a
  smaller share of its step, linreg's step is mostly overhead): ``--fraction
  0.14,custom_xla-cnn=0.21`` gives benchmarks (``custom_<graph|xla>-<task>``) their own. Where
  a step is mostly dispatch (XLA's linreg: a forward pass over 24 batches added 3-5%), more
  data adds little: ``custom_xla-linreg=outer:N`` plants an N x N outer product of the batch's
  rows (repeated) instead, a cost that grows as N squared. The A/B check's own estimate over
  the runs says what was actually planted.

Each run's verdicts, ratios and intervals, and a summary, go to ``--out`` (JSON). ``merge``
joins files of the same mode and settings (more runs, other seeds) and sums them up again.
"""

from __future__ import annotations

import argparse
import json
import math
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

STEP_END = (
    "        optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
    "        return loss\n"
)
PLANTED = (
    "        optimizer.apply_gradients(zip(grads, model.trainable_variables))\n"
    "        # planted slowdown (experiments/ab_budget.py): extra work, result unused\n"
    "        if isinstance(planted_fraction, str):  # 'outer:N': an N x N outer product of rows\n"
    "            n = int(planted_fraction.split(':')[1])\n"
    "            flat = tf.reshape(x, [x.shape[0], -1])\n"
    "            xx = tf.concat([flat] * math.ceil(n / x.shape[0]), 0)[:n]\n"
    "            extra = tf.matmul(xx, xx, transpose_b=True)\n"
    "        else:  # a forward pass over a fraction of the batch\n"
    "            n = max(1, int(planted_fraction * x.shape[0]))\n"
    "            xx = tf.concat([x] * math.ceil(planted_fraction), 0)[:n]\n"
    "            extra = model(xx, training=False)\n"
    "        return loss + 0.0 * tf.reduce_sum(extra)\n"
)
BUILD = "        step = make_step(self.model, self.optimizer, task, micro_batches=micro_batches)\n"
KEYED = (
    "        global PLANT_KEY  # planted (experiments/ab_budget.py): the fraction to take\n"
    "        PLANT_KEY = f'custom_{mode}-{task.name}'\n" + BUILD
)
STEP_START = "    def forward_loss(x, y):\n"
FRACTION = (
    "    planted_fraction = {fractions!r}.get(PLANT_KEY, {default!r})  # planted\n" + STEP_START
)


def parse_fractions(text: str) -> tuple[float, dict[str, float]]:
    """``0.15`` or ``0.15,custom_xla-cnn=0.21,...``: the default fraction and per-benchmark
    ones (``custom_<graph|xla>-<task>``)."""
    default, per = None, {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" in part:
            name, value = (s.strip() for s in part.split("=", 1))
            per[name] = value if value.startswith("outer:") else float(value)
        else:
            default = float(part)
    if default is None:
        raise SystemExit(f"--fraction {text!r}: give a default fraction, e.g. 0.15,name=0.2")
    return default, per


def plant(tree: Path, fraction: str | float) -> None:
    """Extra forward work in the custom loops' step: ``fraction`` of the batch (above 1: the
    batch repeated), per benchmark where ``fraction`` names it (bisect_budget.py passes a
    plain number)."""
    default, per = parse_fractions(str(fraction))
    path = tree / "implementations" / "custom_loop.py"
    text = path.read_text()
    for needle in (STEP_END, BUILD, STEP_START):
        if text.count(needle) != 1:
            raise SystemExit(f"{path}: the lines planting relies on changed; update ab_budget.py")
    text = text.replace(STEP_END, PLANTED).replace(BUILD, KEYED)
    text = text.replace(STEP_START, FRACTION.format(fractions=per, default=default))
    future = "from __future__ import annotations\n"
    text = text.replace(future, future + "import math\n\nPLANT_KEY = ''\n", 1)
    path.write_text(text)


def one_run(tree: Path, base: Path, head: Path, select: str | None, seed: int, extra: list[str]):
    out = tree / f"run{seed}.json"
    cmd = [sys.executable, "-m", "bench", "ab", "--base", str(base), "--head", str(head)]
    cmd += ["--seed", str(seed), "--json", str(out), *extra]
    if select is not None:
        cmd += ["-k", select]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode not in (0, 1) or not out.exists():  # 1 is also a crash's exit code
        raise SystemExit(f"run {seed} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    return {
        "seed": seed,
        "exit_code": proc.returncode,
        "wall_s": wall,
        "steal_pct_session": doc["machine"].get("steal_pct_session"),
        # where the time went: workers' start, both passes, the confirmations
        "timing": {k: doc["summary"].get(k) for k in ("workers_s", "passes_s", "confirm_s")},
        "benchmarks": [
            {
                k: b.get(k)
                for k in (
                    "name",
                    "verdict",
                    "ratio",
                    "ci_low",
                    "ci_high",
                    "pairs",
                    "pairs_dropped_steal",
                    "seconds",
                    "steps_per_round",
                    "setup_s",
                    "first_verdict",
                    "process_pair_ratios",  # per process pair: the confirmation's are last
                )
            }
            | {"numbers_changed": (b.get("numerics") or {}).get("changed")}
            for b in doc["benchmarks"]
        ],
    }


def summarize(runs: list[dict], planted: bool) -> dict:
    names = [b["name"] for b in runs[0]["benchmarks"]]
    per = {}
    for name in names:
        rows = [b for r in runs for b in r["benchmarks"] if b["name"] == name]
        ratios = [b["ratio"] for b in rows if b["ratio"]]
        per[name] = {
            "SLOWER": sum(b["verdict"] == "SLOWER" for b in rows),
            "FASTER": sum(b["verdict"] == "FASTER" for b in rows),
            "runs": len(rows),
            "median_change_pct": 100 * (float(np.median(ratios)) - 1) if ratios else None,
            "change_pct_range": [100 * (min(ratios) - 1), 100 * (max(ratios) - 1)]
            if ratios
            else None,
            "median_halfwidth_pct": float(
                np.median(
                    [100 * (math.sqrt(b["ci_high"] / b["ci_low"]) - 1) for b in rows if b["ratio"]]
                )
            )
            if ratios
            else None,
        }
    walls = [r["wall_s"] for r in runs]
    out = {
        "runs": len(runs),
        "wall_s": [min(walls), float(np.median(walls)), max(walls)],
        "per_benchmark": per,
    }
    rows = [b for r in runs for b in r["benchmarks"] if b["ratio"]]
    out["intervals_excluding_1"] = sum(b["ci_low"] > 1 or b["ci_high"] < 1 for b in rows)
    out["comparisons"] = len(rows)
    if planted:
        # The plant is in the custom loops only: every other benchmark is an A/A comparison.
        same = {k: v for k, v in per.items() if not k.startswith("custom_")}
        out["unplanted_benchmarks"] = sorted(same)
        out["false_alarms_unplanted"] = sum(v["SLOWER"] + v["FASTER"] for v in same.values())
    else:
        out["false_alarms"] = sum(v["SLOWER"] + v["FASTER"] for v in per.values())
        out["runs_with_false_alarm"] = sum(
            r["exit_code"] != 0
            or any(b["verdict"] in ("SLOWER", "FASTER") for b in r["benchmarks"])
            for r in runs
        )
    return out


def merge(paths: list[str], out: str | None) -> int:
    docs = [json.loads(Path(f).read_text()) for f in paths]
    keys = ("mode", "rev", "fraction", "select", "ab_args")
    for d, f in zip(docs[1:], paths[1:]):
        differ = [k for k in keys if d.get(k) != docs[0].get(k)]
        if differ:
            raise SystemExit(f"{f}: not the same experiment as {paths[0]} ({', '.join(differ)})")
    runs = [r for d in docs for r in d["runs"]]
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"the files repeat seeds: {sorted(seeds)}")
    doc = {
        **{k: docs[0].get(k) for k in keys},
        "merged_from": [Path(f).name for f in paths],
        "summary": summarize(runs, docs[0]["mode"] == "planted"),
        "runs": runs,
    }
    print(json.dumps(doc["summary"], indent=1))
    if out:
        Path(out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


def main() -> int:
    if sys.argv[1:2] == ["merge"]:
        m = argparse.ArgumentParser(prog="ab_budget.py merge")
        m.add_argument("files", nargs="+")
        m.add_argument("--out")
        margs = m.parse_args(sys.argv[2:])
        return merge(margs.files, margs.out)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("aa", "planted"))
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0, help="the first run's --seed")
    p.add_argument("--rev", default="HEAD")
    p.add_argument(
        "--fraction",
        default="0.30",
        help="planted work: a fraction of the batch's forward pass (0.30 ~ 10%%, 0.15 ~ 5%%), "
        "with per-benchmark ones after it: 0.14,custom_xla-cnn=0.21,custom_xla-linreg=outer:512 "
        "(an N x N outer product of the batch's rows instead)",
    )
    p.add_argument("-k", dest="select", default=None)
    p.add_argument("--out")
    # anything else (after --) goes to bench ab: -- --budget-seconds 100
    args, rest = p.parse_known_args()
    args.ab_args = [a for a in rest if a != "--"]
    with tempfile.TemporaryDirectory(prefix="ab-budget-") as tmp:
        tree, other = Path(tmp) / "tree", Path(tmp) / "other"
        revision = resolve_revision(ROOT, args.rev)
        if revision is None:
            raise SystemExit(f"--rev {args.rev!r}: not a revision of {ROOT}")
        export_revision(ROOT, revision, tree)
        if args.mode == "planted":
            export_revision(ROOT, revision, other)
            plant(other, args.fraction)
        else:
            shutil.copytree(tree, other)
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.runs):
            run = one_run(tree, tree, other, args.select, seed, args.ab_args)
            runs.append(run)
            flags = [
                f"{b['name']} {b['verdict']} {100 * (b['ratio'] - 1):+.1f}%"
                for b in run["benchmarks"]
                if b["ratio"]
            ]
            print(
                f"run {seed}: exit {run['exit_code']}, {run['wall_s']:.0f} s; " + "; ".join(flags),
                flush=True,
            )
    doc = {
        "mode": args.mode,
        "rev": args.rev,
        "fraction": args.fraction if args.mode == "planted" else None,
        "select": args.select,
        "ab_args": args.ab_args,
        "summary": summarize(runs, args.mode == "planted"),
        "runs": runs,
    }
    print(json.dumps(doc["summary"], indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
