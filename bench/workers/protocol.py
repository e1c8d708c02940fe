"""The worker's side of the suite's process protocol (the coordinator's side:
``bench/workers/process.py``). Standard library only, and nothing of the suite's own: the A/B
worker loads this file by its path, then imports the code under test from another tree.

One JSON object per line: the coordinator writes requests to the worker's stdin; the worker
answers each with one line on the pipe that was its stdout when it started (file descriptor 1
is then pointed at stderr, so a library's stray ``print`` cannot corrupt the protocol). Every
answer has ``"ok"``; a failed request answers ``{"ok": false, "error": "...", "traceback":
"..."}`` and the worker keeps serving. End of input (the coordinator exited, however it
exited) ends the worker; ``{"op": "quit"}`` too.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def serve(root: str, ops: dict) -> int:
    """Serve requests until end of input: ``ops[request["op"]](request, trainers, root)``
    answers each. ``root``: the tree whose code the worker runs (put first on ``sys.path``)."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from TensorFlow/Keras go to stderr, not into the protocol
    sys.stdout = sys.stderr
    sys.path[0] = root  # the side's code, not the coordinator's (this file's directory)
    # An editable install of this project (pip install -e) resolves ``bench`` and
    # ``implementations`` to the installed tree through a meta-path finder: drop it, so a side
    # only ever runs its own code.
    sys.meta_path[:] = [
        f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
    ]
    trainers: dict[str, dict] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "quit":
                protocol.write(json.dumps({"ok": True}) + "\n")
                return 0
            answer = ops[op](request, trainers, root)
            answer["ok"] = True
        except Exception as e:  # answered, not fatal: the coordinator decides
            answer = {
                "ok": False,
                "error": f"{type(e).__name__}: {e}".strip(),
                "traceback": traceback.format_exc(),
            }
            if type(e).__name__ == "TaskError":  # bad input, already one clear line
                answer.update(error=str(e), traceback="")
        protocol.write(json.dumps(answer) + "\n")
    return 0


def op_crash(request: dict, trainers: dict, root: str) -> dict:
    """For the cleanup tests: die at once (``"how": "exit"``) or hang (``"sleep"``)."""
    if request.get("how") == "sleep":
        time.sleep(float(request.get("seconds", 3600)))
        return {}
    os._exit(int(request.get("code", 3)))
