"""Input files for ``check_action.js``: what ``python -m bench ab --github-json`` and
``python -m bench compare --github-json`` write, made by the suite's own functions from fake
results, as a previous (``*_prev.json``) and a current (``*_cur.json``) chart point per scenario.

    python experiments/github_action_check/make_inputs.py OUT_DIR

- s1_regression: every benchmark at ~1.00, then custom_graph-mlp at 1.08 (SLOWER) in the next.
- s2_aa: two A/A runs, every ratio within 0.98..1.03 (incl. the worst pair: 0.98 then 1.03).
- s3_old_absolute: the committed (git HEAD) ``github_entries``, which charted HEAD's absolute
  ms/step: the same code (every ratio ~1.00) measured on a runner 12% slower than the last one.
- s4_after_speedup: a commit that made custom_xla-cnn 8% faster (0.92), then an unchanged
  commit (1.00) -- what the action's point-to-point ratio makes of it.
- s5_compare: ``bench compare --github-json`` (absolute step times) for two runs on the same
  runner, custom_graph-mlp 10% slower in the second.

The result dicts follow ``tests/test_ab.py::_fake``; the compare inputs are built with
``tests/test_compare.py``'s ``step_bench``/``results`` and go through
``bench.report.compare_cli.main``.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: the suite's own modules from this tree

from bench.ab.output import github_entries  # noqa: E402
from bench.report.compare_cli import main as compare_main  # noqa: E402
from bench.stats import paired as S  # noqa: E402
from tests.test_compare import results as compare_results  # noqa: E402
from tests.test_compare import step_bench  # noqa: E402

THRESHOLD = 0.04  # bench ab's default --threshold
IMPLS = ("keras_fit", "keras_fit_xla", "custom_graph", "custom_xla")  # ab's HEADLINE
TASKS = {"linreg": 32, "mlp": 256, "cnn": 256}  # the built-in tasks' batch sizes
BASE_MS = {"linreg": 0.9, "mlp": 2.1, "cnn": 14.0}  # a plausible BASE step time


def fake(impl, task, ratio, half_width=0.02, base_ms=None, verdict=None):
    """One ``bench ab`` result, as tests/test_ab.py::_fake builds it."""
    base_ms = BASE_MS[task] if base_ms is None else base_ms
    low, high = ratio * (1 - half_width), ratio * (1 + half_width)
    if verdict is None:
        verdict = S.verdict(S.Estimate(ratio, low, high, 40), THRESHOLD)
    return {
        "name": f"{impl}-{task}",
        "implementation": impl,
        "task": task,
        "batch_size": TASKS[task],
        "verdict": verdict,
        "ratio": ratio,
        "ci_low": low,
        "ci_high": high,
        "missed_pct": 100 * (high - 1),
        "pairs": 40,
        "skip_reason": None,
        "base": {"median_s": base_ms / 1e3},
        "head": {"median_s": ratio * base_ms / 1e3},
        "numerics": {"changed": False},
    }


def run(ratios: dict[str, float], **kw) -> list[dict]:
    """Every headline benchmark; ``ratios`` maps "impl-task" to its ratio (default 1.0)."""
    return [fake(i, t, ratios.get(f"{i}-{t}", 1.0), **kw) for i in IMPLS for t in TASKS]


def jitter(seed: int, low: float, high: float) -> dict[str, float]:
    """A/A-like ratios, spread evenly over [low, high] in a seed-dependent order."""
    names = [f"{i}-{t}" for i in IMPLS for t in TASKS]
    n = len(names)
    values = [round(low + (high - low) * k / (n - 1), 4) for k in range(n)]
    shift = seed % n
    return dict(zip(names, values[shift:] + values[:shift]))


def old_github_entries():
    """``github_entries`` as committed at git HEAD (before the HEAD/BASE change)."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", "HEAD:bench/ab/output.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    mod = types.ModuleType("old_output")
    exec(compile(src, "HEAD:bench/ab/output.py", "exec"), mod.__dict__)
    return mod.github_entries


def write(path: Path, entries: list[dict]) -> None:
    path.write_text(json.dumps(entries, indent=2) + "\n")
    print(f"wrote {path} ({len(entries)} entries)")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    # s1: all ~1.00, then custom_graph-mlp 1.08 SLOWER
    write(out / "s1_regression_prev.json", github_entries(run(jitter(0, 0.995, 1.006)), THRESHOLD))
    cur = jitter(1, 0.995, 1.006) | {"custom_graph-mlp": 1.08}
    write(out / "s1_regression_cur.json", github_entries(run(cur), THRESHOLD))

    # s2: two A/A runs within 0.98..1.03; keras_fit-mlp goes from 0.98 to 1.03 (worst case)
    prev = jitter(2, 0.98, 1.03) | {"keras_fit-mlp": 0.98}
    cur = jitter(7, 0.98, 1.03) | {"keras_fit-mlp": 1.03}
    write(out / "s2_aa_prev.json", github_entries(run(prev), THRESHOLD))
    write(out / "s2_aa_cur.json", github_entries(run(cur), THRESHOLD))

    # s3: the old format (HEAD's absolute ms/step) from two runners; the code did not change
    old = old_github_entries()
    write(out / "s3_old_absolute_prev.json", old(run(jitter(3, 0.99, 1.01))))
    slower_runner = {t: 1.12 * ms for t, ms in BASE_MS.items()}
    cur_old = [
        fake(i, t, r, base_ms=slower_runner[t])
        for (i, t), r in zip(((i, t) for i in IMPLS for t in TASKS), jitter(4, 0.99, 1.01).values())
    ]
    write(out / "s3_old_absolute_cur.json", old(cur_old))
    # ... and the new format for the very same two runs
    write(out / "s3_new_ratio_prev.json", github_entries(run(jitter(3, 0.99, 1.01)), THRESHOLD))
    write(out / "s3_new_ratio_cur.json", github_entries(cur_old, THRESHOLD))

    # s4: custom_xla-cnn 8% faster in one commit, then an unchanged commit
    write(
        out / "s4_after_speedup_prev.json", github_entries(run({"custom_xla-cnn": 0.92}), THRESHOLD)
    )
    write(out / "s4_after_speedup_cur.json", github_entries(run({}), THRESHOLD))

    # s5: bench compare --github-json, same runner, custom_graph-mlp 10% slower in the second
    def compare_run(slow: dict[str, float], seed: int) -> dict:
        return compare_results(
            [
                step_bench(
                    i,
                    t,
                    TASKS[t],
                    median_s=BASE_MS[t] / 1e3 * slow.get(f"{i}-{t}", 1.0),
                    seed=seed + k,
                )
                for k, (i, t) in enumerate((i, t) for i in IMPLS for t in TASKS)
            ]
        )

    with tempfile.TemporaryDirectory() as tmp:
        runs = {"prev": compare_run({}, 0), "cur": compare_run({"custom_graph-mlp": 1.10}, 100)}
        base = Path(tmp) / "base.json"
        base.write_text(json.dumps(runs["prev"]))
        for label, doc in runs.items():
            cur_path = Path(tmp) / f"{label}.json"
            cur_path.write_text(json.dumps(doc))
            target = out / f"s5_compare_{label}.json"
            with contextlib.redirect_stdout(io.StringIO()):  # its table: not needed here
                rc = compare_main([str(base), str(cur_path), "--github-json", str(target)])
            print(f"bench compare ({label}) exit {rc}; wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gab-check/inputs"))
