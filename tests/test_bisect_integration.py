"""``python -m bench bisect`` end to end: a planted history on linreg (a commit that does
not build, its fix, a slower step), bisected with real A/B measurements in worker
processes. The search and the command on fake measurements: tests/test_bisect.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bisect import load_experiment

from bench.ab import bisect as B
from bench.ab import bisect_cli as C

pytestmark = pytest.mark.integration


STEP = "        return self._step(x, y)\n"
# a millisecond of sleep on a step of a quarter of one: a slowdown CPU contention cannot hide
SLEEP = "        __import__('time').sleep(0.001)  # planted slowdown\n"


def slept_step(tree: Path) -> str:
    path = tree / "implementations" / "custom_loop.py"
    text = path.read_text()
    assert STEP in text, "the patched line changed: update the test"
    path.write_text(text.replace(STEP, SLEEP + STEP, 1))
    return "sleep a millisecond per step"


def broken_registry(tree: Path) -> str:
    with open(tree / "implementations" / "__init__.py", "a") as f:
        f.write("\nraise ImportError('planted: this commit does not build')\n")
    return "break the registry"


def fixed_registry(tree: Path) -> str:
    path = tree / "implementations" / "__init__.py"
    path.write_text(path.read_text().split("\nraise ImportError")[0])
    return "fix the registry"


def test_end_to_end_a_planted_history_skipping_a_broken_commit(tmp_path, capsys):
    """GOOD, a commit that does not build, its fix, a slower step: the broken commit (the
    first middle) is skipped, its neighbour measured not slower, the last commit found and
    confirmed against its parent, in four A/B measurements (5-15 s each here, most of it the
    workers importing TensorFlow)."""
    edits = [broken_registry, fixed_registry, slept_step]
    repo = tmp_path / "repo"
    commits = load_experiment().make_history(repo, edits, keep=("bench", "implementations"))
    out = tmp_path / "bisect.json"
    argv = [commits[0], commits[-1], "--repo", str(repo), "--json", str(out)]
    argv += ["-k", "custom_graph-linreg", "--pairs", "1", "--min-pairs", "10"]
    argv += ["--max-seconds", "3", "--round-seconds", "0.02", "--no-confirm"]
    argv += ["--threshold", "25%"]  # a step several times slower; no false alarm from 3 s
    assert C.main(argv) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    steps = [
        (commits.index(m["base"]), commits.index(m["head"]), m["outcome"])
        for m in doc["measurements"]
    ]
    assert steps == [(0, 3, B.SLOW), (0, 1, B.FAILED), (0, 2, B.SAME), (2, 3, B.SLOW)], printed
    assert [c["position"] for c in doc["culprits"]] == [3] and doc["culprits"][0]["confirmed"]
    assert doc["culprits"][0]["measurement"]["benchmarks"][0]["ratio"] > 1.5
    assert list(doc["skipped"]) == [commits[1]]
    assert "planted: this commit does not build" in doc["skipped"][commits[1]]
    assert f'skipped {commits[1][:10]} "commit 1: break the registry"' in printed
    assert f'slower commit: {commits[3][:10]} "commit 3: sleep' in printed
