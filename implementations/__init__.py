"""The registry: implementation name -> factory ``(task, initial_weights) -> Trainer``.

Every factory returns an object meeting ``implementations.common.Trainer``. The factories in
``MULTI_STEP`` run several training steps per call (``steps_per_call`` N, default
``keras_parts.STEPS_PER_CALL``) and also take ``steps_per_call=N``; those in ``MICRO_BATCH`` also
split each batch into parts run side by side (``micro_batches=M``). Importing this package imports
TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.tasks import Task
from implementations.common import Trainer
from implementations.custom_loop import (
    custom_eager,
    custom_graph,
    custom_graph_loop,
    custom_xla,
    custom_xla_loop,
    custom_xla_split,
)
from implementations.keras_fit import keras_fit, keras_fit_spe, keras_fit_xla

REGISTRY: dict[str, Callable[[Task, list[np.ndarray]], Trainer]] = {
    "keras_fit": keras_fit,
    "keras_fit_xla": keras_fit_xla,
    "custom_eager": custom_eager,
    "custom_graph": custom_graph,
    "custom_xla": custom_xla,
    "keras_fit_spe": keras_fit_spe,
    "custom_graph_loop": custom_graph_loop,
    "custom_xla_loop": custom_xla_loop,
    "custom_xla_split": custom_xla_split,
}

# N steps per call, each with its one-step twin (the same loop, one step per call).
MULTI_STEP: dict[str, str] = {
    "keras_fit_spe": "keras_fit",
    "custom_graph_loop": "custom_graph",
    "custom_xla_loop": "custom_xla",
    "custom_xla_split": "custom_xla",
}

# Each batch split into micro-batches whose passes can run side by side on different cores
# (``micro_batches`` M, default ``custom_loop.MICRO_BATCHES``; the factories also take
# ``micro_batches=M``), with its twin: the same loop, at the same N, on whole batches.
MICRO_BATCH: dict[str, str] = {"custom_xla_split": "custom_xla_loop"}


def get(name: str) -> Callable[[Task, list[np.ndarray]], Trainer]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown implementation {name!r}; valid implementations: {', '.join(REGISTRY)}"
        ) from None
