"""Where task files imported ``UserTask`` from before ``bench/`` had packages (2026-11-24 to
2026-12-01). Kept only so that one task file loads on both sides of ``bench ab`` against a
BASE of that time (docs/regression.md, "Which BASE revisions bench ab can measure"): such a
file writes ``from bench.user_tasks import UserTask`` (and ``Tolerance``), which every layout
since has. ``UserTask`` is ``bench.tasks.Task``; new files: ``from bench.tasks import Task``.
"""

from bench.tasks.task import Task, Tolerance

UserTask = Task

__all__ = ["Tolerance", "UserTask"]
