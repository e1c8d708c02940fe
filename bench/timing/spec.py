"""A panel member, as its test would run it (``bench/timing/panel.py``). No TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

from bench.tasks import get_task
from bench.timing.profiles import Profile


@dataclass(frozen=True)
class Spec:
    """One benchmark of a panel, as its test would run it."""

    name: str  # the pytest item's name: test_step[keras_fit-mlp]
    panel: str  # the panel id: the task's name, or sweep-<task>-b<batch>
    kind: str  # the panel's kind: "step" or "sweep" (round counts and time cap)
    implementation: str
    task_name: str
    batch_size: int
    profile: Profile  # warm-up and round length
    precision: str = "float32"
    steps_per_call: int | None = None  # an override of a multi-step implementation's N
    micro_batches: int | None = None  # an override of a micro-batch implementation's M
    backend: str = "tensorflow"
    # The members this one is compared with in the knob and backend tables (Spec.key form).
    twins: tuple[tuple, ...] = ()

    @property
    def key(self) -> tuple:
        return (
            self.backend,
            self.implementation,
            self.precision,
            self.steps_per_call,
            self.micro_batches,
        )


def in_step_panel(name: str, impl: str, task_name: str, profile: Profile, **fields) -> Spec:
    """A member of the task's step panel, at the task's batch size: ``fields`` are the
    variant's (precision, N, M, backend) and its twins."""
    return Spec(
        name=name,
        panel=task_name,
        kind="step",
        implementation=impl,
        task_name=task_name,
        batch_size=get_task(task_name).batch_size,
        profile=profile,
        **fields,
    )


def twin_key(implementation: str | None, backend: str = "tensorflow") -> tuple | None:
    """The key of ``implementation``'s plain float32 benchmark at the task's batch size."""
    return None if implementation is None else (backend, implementation, "float32", None, None)
