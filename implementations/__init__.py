"""The registry: implementation name -> factory ``(task, initial_weights) -> Trainer``.

Every factory returns an object meeting ``implementations.common.Trainer``. Importing this
package imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.tasks import Task
from implementations.common import Trainer
from implementations.custom_loop import custom_eager, custom_graph, custom_xla
from implementations.keras_fit import keras_fit, keras_fit_xla

REGISTRY: dict[str, Callable[[Task, list[np.ndarray]], Trainer]] = {
    "keras_fit": keras_fit,
    "keras_fit_xla": keras_fit_xla,
    "custom_eager": custom_eager,
    "custom_graph": custom_graph,
    "custom_xla": custom_xla,
}


def get(name: str) -> Callable[[Task, list[np.ndarray]], Trainer]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown implementation {name!r}; valid implementations: {', '.join(REGISTRY)}"
        ) from None
