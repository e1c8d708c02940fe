"""Where ``UserTask`` lived before ``bench/`` had packages: kept so task files written as
``from bench.user_tasks import UserTask`` still load (``UserTask`` is ``bench.tasks.Task``).
New files: ``from bench.tasks import Task``."""

from bench.tasks.user import *  # noqa: F403
from bench.tasks.user import Tolerance, UserTask  # noqa: F401
