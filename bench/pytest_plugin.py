"""The suite's pytest options, as a plugin pytest loads before it picks its root directory
(``[project.entry-points.pytest11]`` in pyproject.toml; ``conftest.py`` adds the same options
where the package is not installed). No TensorFlow.

Why a plugin and not only ``conftest.py``: pytest picks its root directory, and with it the
configuration file, from the command line's paths before it reads any conftest. In
``pytest --benchmark-only --tasks ~/my-project/my_tasks.py`` it cannot know that the file is
``--tasks``'s value, so it takes the user's folder as the root, misses this project's
pyproject.toml (its test paths, ``bench_*.py`` files and options) and fails with
"unrecognized arguments". Loaded from the entry point, this plugin knows ``--tasks``; where
it finds the run rooted outside this project because of a ``--tasks`` path, it runs the same
command again with ``--tasks=PATH`` (which pytest does not mistake for a path), or, where it
cannot (pytest called from Python), stops with one line saying what to type.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
REEXEC = "LOOPBENCH_PYTEST_REEXEC"  # set on the re-run, so it can happen only once


def add_options(parser: pytest.Parser) -> None:
    parser.addoption(
        "--profile",
        choices=("smoke", "quick", "full"),
        default=os.environ.get("LOOPBENCH_PROFILE", "quick"),
        help="benchmark profile: quick (default, a few minutes on 2 cores), full, or smoke "
        "(seconds; checks the harness, numbers not meaningful)",
    )
    parser.addoption(
        "--run-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the run's wall time, from pytest's start, that the panels fit their sampling "
        "into; 0: none, each panel samples to its cap (default: the profile's, 270 s for "
        "quick). docs/timing.md",
    )
    parser.addoption(
        "--tasks",
        action="append",
        metavar="FILE",
        help="a task file of your own (bench/tasks/user.py); repeatable; 'builtin' names the "
        "built-in tasks (default: the built-in tasks; also $LOOPBENCH_TASKS)",
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def joined(args: list[str]) -> list[str]:
    """``args`` with every ``--tasks PATH`` written ``--tasks=PATH``."""
    out, i = [], 0
    while i < len(args):
        if args[i] == "--tasks" and i + 1 < len(args):
            out.append(f"--tasks={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def misrooted(config: pytest.Config, args: list[str]) -> bool:
    """Whether pytest took a ``--tasks`` path for a test path and rooted the run outside this
    project while it was started inside it."""
    if joined(args) == args:
        return False
    invoked = Path(config.invocation_params.dir).resolve()
    root = Path(config.rootpath).resolve()
    inside = invoked == PROJECT or PROJECT in invoked.parents
    return inside and root != PROJECT and PROJECT not in root.parents


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser, args: list[str]) -> None:
    if not misrooted(early_config, list(args)):
        return
    fixed = joined(list(args))
    command_line = list(args) == sys.argv[1:]
    if command_line and not os.environ.get(REEXEC):
        os.environ[REEXEC] = "1"
        capture = early_config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # give the terminal back (fds 1 and 2) to the new process
            capture.stop_global_capturing()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "pytest", *fixed])
    raise pytest.UsageError(
        "--tasks PATH: pytest took the task file's folder for its root and missed this "
        f"project's settings; write it with '=': pytest {' '.join(fixed)}"
    )
