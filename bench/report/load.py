"""Reading and validating results files for ``python -m bench report`` (``compare`` reuses it).

Two kinds of file come in:

- pytest-benchmark JSON of this suite (``--benchmark-json``; docs/results-schema.md):
  ``read_results`` checks the format, ``load_run``/``load_runs`` keep the suite's benchmarks
  as a ``Run``, ``runs_frame``/``load_results`` flatten them into one row per benchmark.
- A/B comparisons from ``python -m bench ab --json`` (top-level ``"schema":
  "loopbench-ab/..."``): ``load_ab`` checks them into an ``ABRun``, ``ab_frame`` flattens them.

``load_inputs`` takes a mix of both, as the ``report`` command line does. Every problem is a
``ResultsError("<path>: <problem>")``. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SUITE_KINDS = ("step", "convergence", "distributed", "overhead")
AB_SCHEMA_PREFIX = "loopbench-ab/"
AB_VERDICTS = ("SLOWER", "FASTER", "no change", "skipped")


class ResultsError(ValueError):
    """A results file that cannot be reported on; the message starts with the file's path."""


@dataclass(frozen=True)
class Run:
    """One results file: its label, where it came from, and the suite's benchmarks in it."""

    label: str
    source: Path
    machine_info: dict[str, Any]
    benchmarks: list[dict[str, Any]]
    datetime: str | None

    @property
    def loopbench(self) -> dict[str, Any]:
        return self.machine_info.get("loopbench") or {}


@dataclass(frozen=True)
class ABRun:
    """One A/B file: BASE and HEAD measured interleaved on one machine, a verdict per benchmark.

    ``base``/``head`` are the file's ``sides`` entries; ``benchmarks`` keeps the file's order.
    """

    label: str
    source: Path
    schema: str
    datetime: str | None
    command: list[str] | None
    settings: dict[str, Any]
    machine: dict[str, Any]
    base: dict[str, Any]
    head: dict[str, Any]
    benchmarks: list[dict[str, Any]]
    summary: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Reading


def is_number(x: Any) -> bool:
    """A finite int or float; a bool is not a number here."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def extra_info(bench: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's ``extra_info``, or an empty dict where it has none (or not a dict)."""
    extra = bench.get("extra_info")
    return extra if isinstance(extra, dict) else {}


def is_ab(data: Any) -> bool:
    """Whether parsed JSON is an A/B file (``python -m bench ab --json``)."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("schema"), str)
        and data["schema"].startswith(AB_SCHEMA_PREFIX)
    )


def read_json(path: str | os.PathLike[str]) -> Any:
    """The parsed JSON of ``path``; ``ResultsError`` for a missing, unreadable or invalid file."""
    path = Path(path)

    def fail(problem: str) -> ResultsError:
        return ResultsError(f"{path}: {problem}")

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("no such file") from None
    except IsADirectoryError:
        raise fail("is a directory, not a results file") from None
    except UnicodeDecodeError:
        raise fail("not JSON (not UTF-8 text)") from None
    except OSError as e:
        raise fail(f"cannot read ({e.strerror or e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise fail(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def _check_results(path: Path, data: Any) -> dict[str, Any]:
    def fail(problem: str) -> ResultsError:
        return ResultsError(f"{path}: {problem}")

    not_ours = "not a pytest-benchmark results file"
    if is_ab(data):
        # Its "benchmarks" would otherwise fail below with a misleading "no 'stats'".
        raise fail(f"{not_ours} but an A/B file ({data['schema']}); `bench report` reads it")
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise fail(f"{not_ours} (no 'benchmarks' list; write one with --benchmark-json=FILE)")
    if not isinstance(data.get("machine_info", {}), dict):
        raise fail(f"{not_ours} ('machine_info' is not an object)")
    for i, bench in enumerate(data["benchmarks"]):
        if not (
            isinstance(bench, dict)
            and isinstance(bench.get("name"), str)
            and isinstance(bench.get("stats"), dict)
        ):
            raise fail(f"{not_ours} (benchmark #{i + 1} has no 'name' and 'stats')")
    if not data["benchmarks"]:
        raise fail("no benchmarks in the file")
    return data


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one pytest-benchmark JSON file (``report`` and ``compare`` both start here).

    Raises ``ResultsError("<path>: <problem>")`` for a missing or unreadable file, invalid
    JSON, or JSON that is not pytest-benchmark's (no ``benchmarks`` list of objects with a
    ``name`` and ``stats``, or an empty one)."""
    return _check_results(Path(path), read_json(path))


def _suite_run(path: Path, data: dict[str, Any], label: str | None) -> Run:
    machine_info = data.get("machine_info", {})

    def fail(problem: str) -> ResultsError:
        return ResultsError(f"{path}: {problem}")

    suite = [b for b in data["benchmarks"] if extra_info(b).get("kind") in SUITE_KINDS]
    if not suite:
        raise fail(
            "no tf-loop-bench benchmarks (no benchmark has extra_info.kind "
            + " or ".join(repr(k) for k in SUITE_KINDS)
            + ")"
        )
    for bench in suite:
        extra = bench["extra_info"]
        for key in ("implementation", "task"):
            if not isinstance(extra.get(key), str):
                raise fail(f"{bench['name']}: extra_info.{key} is missing")
        if extra["kind"] in ("step", "distributed") and not (
            is_number(bench["stats"].get("median")) and bench["stats"]["median"] > 0
        ):
            raise fail(f"{bench['name']}: stats.median is not a positive number")

    return Run(
        label=label if label is not None else path.stem,
        source=path,
        machine_info=machine_info,
        benchmarks=suite,
        datetime=data.get("datetime") if isinstance(data.get("datetime"), str) else None,
    )


def load_run(path: str | os.PathLike[str], label: str | None = None) -> Run:
    """Read and validate one pytest-benchmark JSON file of this suite.

    Keeps only the suite's benchmarks (``extra_info.kind`` in ``SUITE_KINDS``). Raises
    ``ResultsError("<path>: <problem>")`` as ``read_results`` does, and for a file with none
    of this suite's benchmarks.
    """
    return _suite_run(Path(path), read_results(path), label)


def _ab_run(path: Path, data: dict[str, Any], label: str | None) -> ABRun:
    def fail(problem: str) -> ResultsError:
        return ResultsError(f"{path}: A/B file ({data['schema']}): {problem}")

    sides = data.get("sides")
    if not isinstance(sides, dict):
        raise fail("no 'sides' object (BASE and HEAD)")
    for side in ("base", "head"):
        if not isinstance(sides.get(side), dict):
            raise fail(f"no 'sides.{side}' object")
    for key in ("settings", "machine", "summary"):
        if not isinstance(data.get(key, {}), dict):
            raise fail(f"'{key}' is not an object")
    benchmarks = data.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise fail("no 'benchmarks' list")
    if not benchmarks:
        raise fail("no benchmarks in the file")
    for i, bench in enumerate(benchmarks):
        if not isinstance(bench, dict) or not isinstance(bench.get("name"), str):
            raise fail(f"benchmark #{i + 1} has no 'name'")
        if not isinstance(bench.get("verdict"), str):
            raise fail(f"{bench['name']}: no 'verdict'")
        for side in ("base", "head", "numerics"):
            if bench.get(side) is not None and not isinstance(bench[side], dict):
                raise fail(f"{bench['name']}: '{side}' is not an object")
    command = data.get("command")
    return ABRun(
        label=label if label is not None else path.stem,
        source=path,
        schema=data["schema"],
        datetime=data.get("datetime") if isinstance(data.get("datetime"), str) else None,
        command=[str(c) for c in command] if isinstance(command, list) else None,
        settings=data.get("settings") or {},
        machine=data.get("machine") or {},
        base=sides["base"],
        head=sides["head"],
        benchmarks=benchmarks,
        summary=data.get("summary") or {},
    )


def load_ab(path: str | os.PathLike[str], label: str | None = None) -> ABRun:
    """Read and validate one A/B file (``python -m bench ab --json``).

    Raises ``ResultsError("<path>: <problem>")`` as ``read_json`` does, for a file that is
    not an A/B file, and for one without ``sides.base``/``sides.head`` or a non-empty
    ``benchmarks`` list whose entries each have a ``name`` and a ``verdict``.
    """
    path = Path(path)
    data = read_json(path)
    if not is_ab(data):
        raise ResultsError(f"{path}: not an A/B file (no 'schema': '{AB_SCHEMA_PREFIX}...')")
    return _ab_run(path, data, label)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels made unique by suffixing repeats: ``["a", "a", "b"] -> ["a", "a-2", "b"]``."""
    out: list[str] = []
    for label in labels:
        candidate, n = label, 1
        while candidate in out or (candidate != label and candidate in labels):
            n += 1
            candidate = f"{label}-{n}"
        out.append(candidate)
    return out


def load_runs(
    paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None
) -> list[Run]:
    """Load every file (all validated before anything is returned); labels made unique."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label(s) for {len(paths)} file(s)")
    runs = [load_run(p) for p in paths]
    names = unique_labels(list(labels) if labels is not None else [r.label for r in runs])
    return [dataclasses.replace(r, label=name) for name, r in zip(names, runs, strict=True)]


def load_inputs(
    paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None
) -> tuple[list[Run], list[ABRun]]:
    """Load pytest-benchmark and A/B files, told apart by the A/B file's ``schema``.

    Every file is validated before anything is returned; labels are made unique over all of
    them. Each list keeps the order the files were given in."""
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label(s) for {len(paths)} file(s)")
    loaded: list[Run | ABRun] = []
    for p in paths:
        data = read_json(p)
        if is_ab(data):
            loaded.append(_ab_run(Path(p), data, None))
        else:
            loaded.append(_suite_run(Path(p), _check_results(Path(p), data), None))
    names = unique_labels(list(labels) if labels is not None else [x.label for x in loaded])
    loaded = [dataclasses.replace(x, label=name) for name, x in zip(names, loaded, strict=True)]
    return (
        [x for x in loaded if isinstance(x, Run)],
        [x for x in loaded if isinstance(x, ABRun)],
    )


# ---------------------------------------------------------------------------------------------
# Tidy frames


def _flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}_"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ordered(frame: pd.DataFrame, prefixes: Sequence[str]) -> pd.DataFrame:
    """Columns without a prefix first, then one block per prefix; first-seen order inside."""
    rank = {c: next((i + 1 for i, p in enumerate(prefixes) if c.startswith(p)), 0) for c in frame}
    return frame[sorted(frame.columns, key=lambda c: rank[c])]  # stable: keeps first-seen order


# A step benchmark measured interleaved in a panel: its paired speedup over the panel's
# baseline, that baseline, the panel; every row has them (empty for older results).
PANEL_COLUMNS = ("speedup", "speedup_low", "speedup_high", "speedup_vs", "panel")


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per benchmark: identity, ``extra_info`` (unprefixed), ``ms_per_step``, the
    ``PANEL_COLUMNS`` with ``panel_blocks`` and ``panel_stopped_by`` (from ``panel_info``),
    ``stats_*``, ``params_*``, ``options_*`` and the run's ``machine_*`` fields. Lists and dicts
    stay Python objects."""
    rows = []
    for run in runs:
        machine = _flatten(run.loopbench, "machine_")
        for bench in run.benchmarks:
            row: dict[str, Any] = {
                "run": run.label,
                "source": str(run.source),
                "datetime": run.datetime,
                "group": bench.get("group"),
                "name": bench["name"],
                "fullname": bench.get("fullname"),
                "param": bench.get("param"),
            }
            for key, value in extra_info(bench).items():
                row[f"extra_{key}" if key in row else key] = value
            median = bench["stats"].get("median")
            if extra_info(bench)["kind"] == "step" and is_number(median):
                row["ms_per_step"] = median * 1e3
            for key in PANEL_COLUMNS:  # present (empty) for results without panels too
                row.setdefault(key, None)
            info = extra_info(bench).get("panel_info")
            info = info if isinstance(info, dict) else {}
            row["panel_blocks"] = info.get("blocks")
            row["panel_stopped_by"] = info.get("stopped_by")
            row.update({f"stats_{k}": v for k, v in bench["stats"].items()})
            row.update({f"params_{k}": v for k, v in (bench.get("params") or {}).items()})
            row.update({f"options_{k}": v for k, v in (bench.get("options") or {}).items()})
            row.update(machine)
            rows.append(row)
    return _ordered(pd.DataFrame(rows), ("stats_", "params_", "options_", "machine_"))


def load_results(
    paths: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """``runs_frame(load_runs(paths, labels))``: every benchmark of every file, one row each."""
    return runs_frame(load_runs(paths, labels))


def change_pct(ratio: Any) -> float | None:
    """HEAD/BASE time ratio as a change in %: 1.083 -> +8.3 (positive: HEAD slower)."""
    return 100 * (ratio - 1) if is_number(ratio) else None


def ab_frame(ab_runs: Iterable[ABRun]) -> pd.DataFrame:
    """One row per A/B benchmark: identity, the benchmark's fields (nested ones flattened:
    ``base_median_s``, ``numerics_changed``), ``change_pct``/``_low``/``_high``, then
    ``sides_*``, ``settings_*`` and ``machine_*`` of its file. Lists stay Python objects."""
    rows = []
    for ab in ab_runs:
        context = {
            **_flatten({"base": ab.base, "head": ab.head}, "sides_"),
            **_flatten(ab.settings, "settings_"),
            **_flatten(ab.machine, "machine_"),
        }
        for bench in ab.benchmarks:
            row: dict[str, Any] = {
                "run": ab.label,
                "source": str(ab.source),
                "datetime": ab.datetime,
            }
            row.update(_flatten(bench, ""))
            for suffix, key in (("", "ratio"), ("_low", "ci_low"), ("_high", "ci_high")):
                row[f"change_pct{suffix}"] = change_pct(bench.get(key))
            row.update(context)
            rows.append(row)
    return _ordered(pd.DataFrame(rows), ("sides_", "settings_", "machine_"))
