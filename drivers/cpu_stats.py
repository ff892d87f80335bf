"""A domain's CPU utilisation from two samples of libvirt's cumulative CPU statistics.

libvirt's domain statistics (``virDomainListGetStats`` with the ``VCPU`` and ``CPU_TOTAL``
groups) give, for each vCPU, the nanoseconds its host thread has run (``vcpu.N.time``) and
has waited for a host CPU while runnable (``vcpu.N.delay``, from the thread's schedstat:
the guest's steal time), and ``cpu.time`` for the whole QEMU process (vCPUs plus the
emulator's own threads). The counters count from the start of the domain's QEMU process: a
migrated domain starts again from zero on its destination, so a sample is only compared
with one of the same process (host and domain id).

Over the window between two samples of one process:

* utilisation = delta vCPU run time / (delta wall time x vCPUs): the share of its vCPUs the
  guest got (what Nova's, Ceilometer's and Watcher's ``cpu_util`` mean). ``cpu.time`` stands
  in when libvirt gives no per-vCPU times (it also counts QEMU's emulator threads);
* waiting = delta vCPU run-queue delay / (delta wall time x vCPUs): the share its vCPUs
  wanted but did not get because the host's CPUs were busy. A guest that keeps its vCPU
  busy for a share d of the time shows utilisation + waiting = d (measured in the lab:
  within 0.02 at d = 0.2, 0.8 and 1.0 while the host was contended, see the README).

Both are clamped to [0, 1]: the counters tick in 10 ms steps (``/proc``'s clock ticks), so
a short window can overshoot by a step.

Worked example: a 2-vCPU guest whose vCPU threads ran 12 s and waited 1 s in total over
a 10 s window used 12 / (10 x 2) = 60 % of its vCPUs and waited 1 / (10 x 2) = 5 %:

>>> a = CpuSample(at=100.0, run_ns=30_000_000_000, wait_ns=2_000_000_000, vcpus=2)
>>> b = CpuSample(at=110.0, run_ns=42_000_000_000, wait_ns=3_000_000_000, vcpus=2)
>>> usage(a, b)
CpuUsage(utilisation=0.6, waiting=0.05, window=10.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_VCPU_KEY = re.compile(r"vcpu\.(\d+)\.(time|delay)$")


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """One reading of a domain's cumulative CPU counters."""

    at: float  # seconds on the reader's monotonic clock
    run_ns: int  # vCPU threads' run time (or the QEMU process's, see module doc)
    wait_ns: int | None  # vCPU threads' run-queue delay; None when libvirt gives none
    vcpus: int
    process: tuple[str, int] = ("", 0)  # (host, libvirt domain id): which QEMU counted


@dataclass(frozen=True, kw_only=True)
class CpuUsage:
    """A domain's CPU over a window: the shares of its vCPUs it used and waited for."""

    utilisation: float
    waiting: float | None  # None when libvirt reports no run-queue delay
    window: float  # seconds


def sample_from_stats(
    stats: dict[str, Any], at: float, process: tuple[str, int] = ("", 0)
) -> CpuSample:
    """A sample from one domain's typed statistics (``domainListGetStats``).

    >>> s = sample_from_stats({"cpu.time": 9, "vcpu.current": 2, "vcpu.0.time": 5,
    ...     "vcpu.1.time": 3, "vcpu.0.delay": 1, "vcpu.1.delay": 2, "vcpu.0.wait": 0}, 7.0)
    >>> s.run_ns, s.wait_ns, s.vcpus
    (8, 3, 2)
    >>> s = sample_from_stats({"cpu.time": 9, "vcpu.current": 1}, 7.0)  # no per-vCPU times
    >>> s.run_ns, s.wait_ns, s.vcpus
    (9, None, 1)
    """
    run = wait = 0
    runs = waits = 0
    for key, value in stats.items():
        match = _VCPU_KEY.match(key)
        if match is None:
            continue
        if match.group(2) == "time":
            run, runs = run + int(value), runs + 1
        else:
            wait, waits = wait + int(value), waits + 1
    if not runs:
        run = int(stats.get("cpu.time", 0))
    vcpus = int(stats.get("vcpu.current", 0)) or max(runs, 1)
    return CpuSample(at=at, run_ns=run, wait_ns=wait if waits else None, vcpus=vcpus,
                     process=process)


def usage(earlier: CpuSample, later: CpuSample) -> CpuUsage:
    """The utilisation and waiting shares between two samples of one process (later
    taken after earlier)."""
    window = later.at - earlier.at
    if window <= 0:
        raise ValueError(f"samples {earlier.at} and {later.at}: the window must be > 0")
    capacity = window * 1e9 * later.vcpus
    waiting = None
    if earlier.wait_ns is not None and later.wait_ns is not None:
        waiting = _share(later.wait_ns - earlier.wait_ns, capacity)
    return CpuUsage(utilisation=_share(later.run_ns - earlier.run_ns, capacity),
                    waiting=waiting, window=window)


def _share(delta_ns: float, capacity_ns: float) -> float:
    return min(1.0, max(0.0, delta_ns / capacity_ns))
