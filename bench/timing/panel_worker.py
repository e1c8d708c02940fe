"""A second process for a panel's TensorFlow members (``bench/timing/panel.py``), started by the
pytest
process, not by hand:

    python /path/to/bench/timing/panel_worker.py ROOT

Why: a panel's ratios carry a bias of the process they were measured in. Measured on this
project's 2-core VM (``experiments/panel_budget.py processes``), the MLP panel's ratios spread
between fresh processes 1.8 times as widely as each process's own interval claimed, while
rebuilding the trainers inside one process moved them no more than the interval. So a panel
spreads its blocks over two processes: block b runs in process b mod 2, every member built in
both from the same spec, seeded weights and fixed batch.

The protocol is the suite's (``bench/workers/``: one JSON line per request and per answer;
the worker leads its own process group and is killed on every exit path). Requests:

- ``{"op": "hello", "tasks": [...]}``: versions; ``tasks``: the session's ``--tasks`` values.
- ``{"op": "build", "id", "spec": {...}}``: a ``panel.TFMember`` from ``panel.spec_to_json``'s
  form: built, compiled, warmed up. Answers ``compile_s`` and ``steps_per_round``.
- ``{"op": "round", "id"}``: one timed round; ``seconds`` per training step.
- ``{"op": "finish", "id"}``: the retrace check and the member's fields; ``{"op": "drop", "id"}``.
"""

from __future__ import annotations

import os
import sys


def main(root: str) -> int:
    from bench.workers import protocol  # PYTHONPATH: this tree

    members: dict = {}
    cache: dict = {}

    def task_data(task, n_train=None):
        from bench.tasks import load_for_task

        if task.name not in cache:
            cache[task.name] = load_for_task(task)
        return cache[task.name]

    def op_hello(request, trainers, root):
        import tensorflow as tf

        from bench.tasks import user as user_tasks

        specs = user_tasks.specs_from(request.get("tasks") or None)
        if specs:
            user_tasks.select(specs)
        return {"tensorflow": tf.__version__, "pid": os.getpid()}

    def op_build(request, trainers, root):
        from bench.tasks import get_task
        from bench.timing.members import TFMember, resident_mb
        from bench.timing.spec import spec_from_json

        spec = spec_from_json(request["spec"])
        start = request.get("start_mb")
        member = TFMember(spec, task_data(get_task(spec.task_name)), start or resident_mb())
        members[request["id"]] = member
        return {"compile_s": member.compile_s, "steps_per_round": member.k * member.n}

    def op_round(request, trainers, root):
        return {"seconds": members[request["id"]].run_round()}

    def op_finish(request, trainers, root):
        return {"info": members[request["id"]].finish()}

    def op_retrace_for_test(request, trainers, root):
        """A step on a batch of another shape: a retrace (tests/test_panel.py)."""
        member = members[request["id"]]
        member.trainer.step(member.x[:5], member.y[:5])
        return {}

    def op_drop(request, trainers, root):
        member = members.pop(request["id"], None)
        if member is not None:
            member.close()
        return {}

    ops = {
        "hello": op_hello,
        "build": op_build,
        "round": op_round,
        "finish": op_finish,
        "drop": op_drop,
        "crash": protocol.op_crash,
        "retrace_for_test": op_retrace_for_test,
    }
    return protocol.serve(root, ops)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(os.path.abspath(sys.argv[1])))
