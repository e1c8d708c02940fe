"""Would another estimator of a panel's ratios agree better from run to run? (docs/timing.md,
"How repeatable the numbers are"; issue "The comparison table, measured interleaved").

    python experiments/panel_estimators.py RUN.json RUN.json [RUN.json ...] [--out est.json]

Reads results files of default runs written with ``--benchmark-save-data`` (each round's
seconds per step and its block, ``extra_info.block_of_round``), and recomputes every speedup
over a panel's baseline with several estimators from the same rounds:

- ``hl``: the shipped one, the Hodges-Lehmann estimate of the within-block log-ratios (all
  rounds here, contended ones included, so that every estimator sees the same data);
- ``mean_log``: the mean of those log-ratios; ``trimmed``: the same with a fifth cut from each
  end; ``quiet_half_hl``: the HL of the half of the blocks where the two rounds took least;
- ``median``, ``q25``, ``q10``, ``min``: the ratio of the two members' quantiles, unpaired.

For every pair of files and every ratio both hold, how far apart the two runs' estimates are
(``|log(a/b)|`` in percent): per estimator the median, the 90th percentile and the largest.
The one that agrees best between runs is the one to ship; on this project's VM none beat the
shipped one by much (2026-12-02).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the suite's own modules from this tree

from bench.stats.paired import hodges_lehmann  # noqa: E402


def panel_rounds(path: Path) -> dict[str, dict]:
    """Per step benchmark of a panel: {block: seconds per step}, and its baseline's name."""
    out = {}
    for b in json.loads(Path(path).read_text())["benchmarks"]:
        e = b["extra_info"]
        data, blocks = b["stats"].get("data"), e.get("block_of_round")
        if not data or not blocks or len(data) != len(blocks):
            continue
        out[b["name"]] = {"rounds": dict(zip(blocks, data)), "base": e.get("speedup_vs_name")}
    return out


def estimates(base: dict[int, float], member: dict[int, float]) -> dict[str, float] | None:
    """The baseline's time over the member's (its speedup), by every estimator."""
    common = sorted(set(base) & set(member))
    if len(common) < 6:
        return None
    b = np.array([base[k] for k in common])
    m = np.array([member[k] for k in common])
    logs = np.log(b / m)
    quiet = (b + m) <= np.median(b + m)
    cut = len(logs) // 5
    trimmed = np.sort(logs)[cut : len(logs) - cut]
    return {
        "hl": hodges_lehmann(logs).ratio,
        "mean_log": math.exp(float(np.mean(logs))),
        "trimmed": math.exp(float(np.mean(trimmed))),
        "quiet_half_hl": hodges_lehmann(logs[quiet]).ratio,
        "median": float(np.median(b) / np.median(m)),
        "q25": float(np.quantile(b, 0.25) / np.quantile(m, 0.25)),
        "q10": float(np.quantile(b, 0.10) / np.quantile(m, 0.10)),
        "min": float(b.min() / m.min()),
    }


def run_estimates(path: Path) -> dict[str, dict[str, float]]:
    """ratio name -> estimator -> estimate, for every speedup over a panel's baseline."""
    panels = panel_rounds(path)
    out = {}
    for name, p in panels.items():
        base = p["base"]
        if base and base != name and base in panels:
            est = estimates(panels[base]["rounds"], p["rounds"])
            if est is not None:
                out[name] = est
    return out


def compare(paths: list[Path]) -> dict:
    runs = {str(p): run_estimates(p) for p in paths}
    apart: dict[str, list[float]] = {}
    for a, b in itertools.combinations(runs, 2):
        for name in sorted(set(runs[a]) & set(runs[b])):
            for est, value in runs[a][name].items():
                other = runs[b][name][est]
                apart.setdefault(est, []).append(100 * abs(math.log(value / other)))
    summary = {
        est: {
            "median_pct": float(np.median(v)),
            "p90_pct": float(np.quantile(v, 0.9)),
            "max_pct": float(max(v)),
            "pairs": len(v),
        }
        for est, v in apart.items()
    }
    return {"files": list(runs), "estimators": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out")
    args = parser.parse_args()
    if len(args.files) < 2:
        parser.error("give two results files or more")
    result = compare(args.files)
    for est, s in sorted(result["estimators"].items(), key=lambda kv: kv[1]["median_pct"]):
        print(
            f"{est:14s} apart: median {s['median_pct']:5.2f}%, 90th percentile "
            f"{s['p90_pct']:5.2f}%, max {s['max_pct']:5.2f}% ({s['pairs']} ratio pairs)"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
