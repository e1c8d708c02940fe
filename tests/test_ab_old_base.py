"""``bench ab`` measures a BASE from before ``bench/`` had packages (docs/regression.md, "Which
BASE revisions bench ab can measure"): the oldest one it supports, and a task file written as
task files were then (``from bench.user_tasks import UserTask``), loaded by both sides -- the
BASE's own module and this tree's shim. One benchmark each, for the fewest pairs and the
shortest time the command allows: about 12 s apiece on 2 cores.

Needs the repository's history (a shallow clone skips).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
OLDEST = "c9092b58ae2c359d0a5e72bc6128b62cf731a442"  # the first commit: the oldest BASE
LAST_FLAT = "e7c8f7efe04a545034ee4271d3c0731514f5859d"  # the last before bench/ had packages
SHORTEST = [
    *("--pairs", "1", "--min-pairs", "6", "--min-seconds", "0", "--max-seconds", "1"),
    *("--budget-seconds", "0", "--no-confirm"),
]

OLD_TASK_FILE = """
import keras

from bench.user_tasks import UserTask


def build():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])


TINY_OLD = UserTask(
    "tiny_old",
    build,
    input_shape=(8,),
    num_classes=3,
    n_train=64,
    batch_size=16,
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
"""


def measure(tmp_path: Path, base: str, *args: str) -> dict:
    """``bench ab --base BASE --head .`` on the shortest settings; its JSON."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{base}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    if known.returncode != 0:
        pytest.skip(f"{base[:7]} is not in this clone's history (a shallow clone?)")
    out = tmp_path / "ab.json"
    command = [sys.executable, "-m", "bench", "ab", "--base", base, "--head", ".", *SHORTEST]
    proc = subprocess.run(
        [*command, "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 1: a SLOWER verdict, which the two versions may well earn; 2 would be bad input
    assert proc.returncode in (0, 1), proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sides"]["base"]["revision"] == base
    return result


def test_the_oldest_base_is_measured(tmp_path):
    result = measure(tmp_path, OLDEST, "-k", "custom_graph-linreg")
    (bench,) = result["benchmarks"]
    assert bench["name"] == "custom_graph-linreg" and bench["skip_reason"] is None
    assert bench["pairs"] >= 6
    assert bench["base"]["median_s"] > 0 and bench["head"]["median_s"] > 0


def test_a_task_file_of_the_flat_layout_loads_on_both_sides(tmp_path):
    tasks = tmp_path / "old_tasks.py"
    tasks.write_text(OLD_TASK_FILE)
    result = measure(tmp_path, LAST_FLAT, "--tasks", str(tasks), "-k", "custom_graph-tiny_old")
    (bench,) = result["benchmarks"]
    assert bench["name"] == "custom_graph-tiny_old" and bench["skip_reason"] is None
    assert bench["pairs"] >= 6
    # the same file gives both sides the same model, weights and batch
    assert not bench["numerics"]["changed"], bench["numerics"]
