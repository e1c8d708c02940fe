"""Facts about the host that need no TensorFlow: CPU time the hypervisor took away from this
machine (``steal`` in /proc/stat), and the CPU model.

The harness, the A/B coordinator (``bench/ab/cli.py``) and the report all use it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

STEAL_LIMIT = 0.02
"""A round is *contended* when the hypervisor took more than this fraction of the machine's
CPU time while it ran. On a shared VM, step time tracks steal closely: here a round's time
correlated with it at r = 0.83, and rounds with steal ran up to twice as long, so contended
rounds are replaced (docs/timing.md)."""


def _cpu_ticks() -> list[int] | None:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal, in clock ticks
    over all CPUs (guest time is already inside user); None where it cannot be read."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    return [int(v) for v in fields[1:9]]


def cpu_steal_counters() -> tuple[int, int] | None:
    """(steal, total) CPU time over all CPUs, in clock ticks, from /proc/stat; None where the
    kernel does not report steal (not Linux, or no hypervisor accounting)."""
    ticks = _cpu_ticks()
    return None if ticks is None else (ticks[7], sum(ticks))


def steal_fraction(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The fraction of CPU time stolen between two ``cpu_steal_counters()`` readings: None if
    either is missing, 0.0 if no clock tick passed."""
    if start is None or end is None:
        return None
    if end[1] <= start[1]:
        return 0.0
    return (end[0] - start[0]) / (end[1] - start[1])


FOREIGN_LIMIT = 0.05
"""A round is also contended when *other processes in this machine* took more than this
fraction of its CPU time (a neighbour in the VM, which the hypervisor's steal does not show).
Beside a busy loop on one of 2 cores, 3 s on and 4 s off, the suite's speedups moved by up to
26% between a quiet and a loaded run, because a neighbour slows a two-threaded XLA step more
than a one-threaded eager one: interleaving cannot cancel that, leaving such rounds out can.
5% is one clock tick of a 0.1 s round on 2 cores; recomputed from the same rounds, the quiet
and loaded runs' speedups agreed to a median of 3.0% (max 8.5% on the step tables) at 5%,
against 3.5% (9.6%) at 15% and without this filter (results/panel-budget/, docs/timing.md)."""


def cpu_counters(pids: tuple[int, ...] = ()) -> tuple[int, int, int, int] | None:
    """(steal, total, busy, own) CPU time in clock ticks: the machine's steal, total and
    non-idle time over all CPUs (/proc/stat), and the CPU time of the processes ``pids``
    (this process by default, and the workers it times rounds in; /proc/PID/stat). None
    where /proc/stat cannot be read."""
    ticks = _cpu_ticks()
    if ticks is None:
        return None
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    own = 0
    for pid in pids or (os.getpid(),):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            # after the command name in parentheses: state is field 3, utime 14, stime 15
            rest = stat[stat.rindex(")") + 2 :].split()
            own += int(rest[11]) + int(rest[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks[7], sum(ticks), busy, own


def foreign_fraction(start, end) -> float | None:
    """The fraction of the machine's CPU time that processes other than the counted ones
    took between two ``cpu_counters()`` readings (None if either is missing)."""
    if start is None or end is None:
        return None
    total = end[1] - start[1]
    if total <= 0:
        return 0.0
    return max(0, (end[2] - start[2]) - (end[3] - start[3])) / total


def process_age_s() -> float | None:
    """How long ago this process started, in seconds (/proc/self/stat against /proc/uptime);
    None where Linux's /proc cannot tell."""
    try:
        stat = Path("/proc/self/stat").read_text()
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])  # field 22: starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BF16_EMULATED = (
    "mixed_bfloat16 on a CPU without bf16 units (no avx512_bf16 or amx_bf16 flag): emulated, "
    "slower than float32, and it would take the quick run past its 5 minutes (9 min on a Zen 3); "
    "--profile full runs it"
)


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX): where it does not,
    oneDNN emulates it and a bf16 step is slower than float32. Unknown (no /proc/cpuinfo,
    not x86): assumed yes, so nothing is skipped on a guess."""
    flags = cpu_flags()
    if not flags or not ({"avx", "sse2"} & flags):
        return True
    return bool({"avx512_bf16", "amx_bf16"} & flags)
