"""The external accuracy anchors, checked on full Fashion-MNIST (seed 0): keras_fit and
custom_graph trained on all 60,000 images for each built-in task's own epochs, as the full
profile's test_convergence does for three seeds, in a few minutes instead of an hour.

    python experiments/anchor_check.py        # writes results/anchors/seed0-<date>.json
"""

import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("dataset", "n_train", "epochs", "final_accuracy", "accuracy_target", "anchor_ok")


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.tfimport import import_tensorflow

    import_tensorflow()
    from bench.convergence import anchor, summarize, train
    from bench.tasks import TASKS, load_for_task

    out = {}
    for task_name in ("mlp", "cnn"):
        task = TASKS[task_name]
        data = load_for_task(task, quiet=True)
        for impl in ("keras_fit", "custom_graph"):
            t0 = time.time()
            run = train(impl, task, data, 0, task.epochs)
            info = summarize(task, data, [run], (0,), task.epochs)
            info.update(anchor(task, info, full_training=True))
            row = {k: info[k] for k in FIELDS} | {"wall_s": time.time() - t0}
            out[f"{impl}-{task_name}"] = row
            print(impl, task_name, row, flush=True)
    target = ROOT / "results" / "anchors"
    target.mkdir(parents=True, exist_ok=True)
    day = datetime.date.today().isoformat()
    (target / f"seed0-{day}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
