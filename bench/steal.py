"""Facts about the host that need no TensorFlow: CPU time the hypervisor took away from this
machine (``steal`` in /proc/stat), and the CPU model.

The harness, the A/B coordinator (``bench/ab.py``) and the report all use it.
"""

from __future__ import annotations

import platform
from pathlib import Path

STEAL_LIMIT = 0.02
"""A round is *contended* when the hypervisor took more than this fraction of the machine's
CPU time while it ran. On a shared VM, step time tracks steal closely: here a round's time
correlated with it at r = 0.83, and rounds with steal ran up to twice as long, so contended
rounds are replaced (README, "How a step is timed")."""


def cpu_steal_counters() -> tuple[int, int] | None:
    """(steal, total) CPU time over all CPUs, in clock ticks, from /proc/stat; None where the
    kernel does not report steal (not Linux, or no hypervisor accounting)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    ticks = [int(v) for v in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_fraction(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The fraction of CPU time stolen between two ``cpu_steal_counters()`` readings: None if
    either is missing, 0.0 if no clock tick passed."""
    if start is None or end is None:
        return None
    if end[1] <= start[1]:
        return 0.0
    return (end[0] - start[0]) / (end[1] - start[1])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
