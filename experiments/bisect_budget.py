"""The bisection's budget, measured (docs/regression.md; issue #23): over a planted history of
16 commits with one ~10% slowdown in the middle, does ``python -m bench bisect`` find the
commit, in how many A/B measurements, in how long?

    python experiments/bisect_budget.py [--commits 16] [--at 8] [--fraction 0.4] \\
        [-k custom_graph-mlp] [--runs 1] [--out bisect-budget.json] [-- more bisect options]

The history is a temporary git repository: ``--rev``'s tracked files (default HEAD, exported
with ``git archive``) as its first commit, GOOD, then ``--commits`` commits that each add a
line to a note, except commit ``--at``, which plants ``experiments/ab_budget.py``'s slowdown
(extra forward work in the custom loop's step: ``--fraction 0.4`` read +11.6% on
``custom_graph-mlp`` in ``ab_budget.py``'s runs). The bisection runs from this working tree
(the coordinator) over that repository (``--repo``), so the measured commits are the planted
ones. Each run's culprit(s), measurements and times, and a summary, go to ``--out`` (JSON).

``make_history`` is also how tests/test_bisect.py builds its small histories.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the suite's own modules from this tree
sys.path.insert(0, str(ROOT / "experiments"))

from ab_budget import plant  # noqa: E402

from bench.ab.sides import export_revision, resolve_revision  # noqa: E402

# An edit changes the tree and returns the commit's subject; None adds a line to a note.
Edit = Callable[[Path], str] | None
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bisect budget",
    "GIT_AUTHOR_EMAIL": "bisect@example.invalid",
    "GIT_COMMITTER_NAME": "bisect budget",
    "GIT_COMMITTER_EMAIL": "bisect@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True
    )
    return out.stdout.strip()


def make_history(
    repo: Path, edits: list[Edit], rev: str = "HEAD", keep: tuple[str, ...] | None = None
) -> list[str]:
    """A git repository at ``repo``: ``rev``'s tracked files (only the top-level ``keep``
    entries, if given) committed as GOOD, then one commit per edit. Returns the commits'
    hashes, GOOD first."""
    revision = resolve_revision(ROOT, rev)
    if revision is None:
        raise SystemExit(f"--rev {rev!r}: not a revision of {ROOT}")
    repo.mkdir(parents=True)
    export_revision(ROOT, revision, repo)
    if keep is not None:
        for entry in repo.iterdir():
            if entry.name not in keep:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    git(repo, "init", "--quiet")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", f"GOOD: {revision[:10]} exported")
    commits = [git(repo, "rev-parse", "HEAD")]
    for i, edit in enumerate(edits, 1):
        if edit is None:
            with open(repo / "HISTORY.txt", "a") as note:
                note.write(f"commit {i}\n")
            subject = f"commit {i}: a note"
        else:
            subject = f"commit {i}: {edit(repo)}"
        git(repo, "add", "--all")
        git(repo, "commit", "--quiet", "-m", subject)
        commits.append(git(repo, "rev-parse", "HEAD"))
    return commits


def planted(fraction: float) -> Callable[[Path], str]:
    def edit(tree: Path) -> str:
        plant(tree, fraction)
        return f"plant a slowdown (forward pass over {fraction:g} of the batch)"

    return edit


def one_run(commits: list[str], repo: Path, select: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench", "bisect", commits[0], commits[-1], "-k", select]
    cmd += ["--repo", str(repo), "--json", str(out), *extra]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)  # progress: stderr
    wall = time.monotonic() - t0
    print(proc.stdout, flush=True)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"bisect failed (exit {proc.returncode}); its stderr is above")
    doc = json.loads(out.read_text())
    return {
        "exit_code": proc.returncode,
        "wall_s": wall,
        "status": doc["status"],
        "measurements": len(doc["measurements"]),
        "culprits": [
            {
                "position": c["position"],
                "confirmed": c["confirmed"],
                "found_after_measurements": c["found_after_measurements"],
                "found_after_s": c["found_after_s"],
                "ratios": {b["name"]: b["ratio"] for b in c["measurement"]["benchmarks"]},
            }
            for c in doc["culprits"]
        ],
        "steps": [
            {
                "head": commits.index(m["head"]),
                "against": commits.index(m["base"]),
                "outcome": m["outcome"],
                "seconds": m["seconds"],
                "ratios": {b["name"]: b["ratio"] for b in m["benchmarks"]},
            }
            for m in doc["measurements"]
        ],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--commits", type=int, default=16)
    p.add_argument("--at", type=int, default=8, help="the commit that plants the slowdown")
    p.add_argument("--fraction", type=float, default=0.4)
    p.add_argument("-k", dest="select", default="custom_graph-mlp")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--rev", default="HEAD")
    p.add_argument("--out")
    p.add_argument("bisect_args", nargs="*", help="more arguments for bench bisect (after --)")
    args = p.parse_args()
    if not 1 <= args.at <= args.commits:
        raise SystemExit("--at must be one of the commits, 1 .. --commits")
    edits: list[Edit] = [None] * args.commits
    edits[args.at - 1] = planted(args.fraction)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bisect-budget-") as tmp:
        commits = make_history(Path(tmp) / "repo", edits, args.rev)
        for r in range(args.runs):
            out, extra = Path(tmp) / f"run{r}.json", ["--seed", str(r), *args.bisect_args]
            run = one_run(commits, Path(tmp) / "repo", args.select, out, extra)
            culprits = [(c["position"], c["confirmed"]) for c in run["culprits"]]
            run["found"] = [c for c in culprits if c[1]] == [(args.at, True)]
            runs.append(run)
            first = run["culprits"][0] if run["culprits"] else {}
            print(
                f"run {r}: {run['status']}, culprit(s) {[c['position'] for c in run['culprits']]}"
                f" (planted {args.at}); {run['measurements']} A/B measurements, "
                f"{run['wall_s']:.0f} s; found after {first.get('found_after_measurements')} "
                f"measurements, {first.get('found_after_s', 0):.0f} s",
                flush=True,
            )
    walls = sorted(r["wall_s"] for r in runs)
    summary = {
        "runs": len(runs),
        "found": sum(r["found"] for r in runs),
        "measurements": sorted(r["measurements"] for r in runs),
        "wall_s": [walls[0], walls[len(walls) // 2], walls[-1]],
    }
    doc = {"settings": vars(args), "commits": args.commits, "summary": summary, "runs": runs}
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
