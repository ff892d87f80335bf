"""Estimators of a profile's parameters from real migrations, and a closed form of their
predictions (pure: numbers in, numbers out; SI units: seconds, bytes, bytes/s).

Each estimator uses direct measurements of one case, independent of the simulator's model:
libvirt's completed-job statistics on the destination and the guest's own truth.

**Start-up cost** (before the first memory byte: libvirt's begin/prepare, the destination
QEMU starting). QEMU computes its completed ``memory_bps`` as the bytes sent over its own
transfer time (its total time minus its setup time), so libvirt's ``time_elapsed`` minus
``memory_processed / memory_bps`` is exactly what came before the transfer. libvirt's
``setup_time`` is QEMU's own setup phase only (2 ms measured here, while the start-up cost
was 0.5 s): recorded, but not the estimator.

>>> round(startup_cost(1.826, 145_550_829, 111_533_202), 3)   # a lab case: 1.826 s in all
0.521

**Link speed** (an uncapped transfer and the final flush): ``memory_bps`` of uncapped cases.

**Switchover cost** (the fixed part of a downtime: stopping the guest, device state, the
destination resuming): the smallest downtime of the cases. A downtime is this cost plus the
remainder flushed at link speed; libvirt does not report the remainder, and subtracting
the most it can be (``bandwidth x limit``) went negative in 6 of 11 lab cases (the real
remainder is far below the threshold). So the smallest downtime, the case that flushed
least, is the estimate: an upper bound, exact when that case flushed nothing.

Start-up cost and link speed are medians over the cases that measure them
(:func:`fit_profile`), robust to one case disturbed by the machine's load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

MiB = 2**20
GiB = 2**30
MIN_PART_GB = 2.0  # Nova: each part of the data counts at least 2 GiB (completion timeout)
MAX_PASSES = 1000


@dataclass(frozen=True, kw_only=True)
class CaseMeasurement:
    """What one real case measured (completed job) and what it asked for."""

    name: str
    capped: bool  # a bandwidth cap was set
    bandwidth: float  # the cap, bytes/s (0: none)
    max_downtime: float  # seconds
    completed: bool
    time_elapsed: float  # seconds (libvirt's time_elapsed)
    downtime: float  # seconds
    memory_processed: float  # bytes
    memory_bps: float  # bytes/s (QEMU's average over its transfer time)
    non_zero: float  # bytes, the guest's non-zero memory (its truth)


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A profile's fitted parameters (the file :func:`profile_document` writes)."""

    startup_cost: float  # seconds
    switchover_cost: float  # seconds
    link_speed: float  # bytes/s
    bandwidth_window: float = 0.1  # seconds: QEMU's bandwidth measurement window


def startup_cost(time_elapsed: float, memory_processed: float, memory_bps: float) -> float:
    """Seconds of ``time_elapsed`` before the transfer (see the module's docstring)."""
    if memory_bps <= 0:
        raise ValueError("memory_bps must be > 0")
    return max(0.0, time_elapsed - memory_processed / memory_bps)


def fit_profile(cases: Sequence[CaseMeasurement]) -> Profile:
    """Estimates over the completed cases (link speed: the uncapped ones).

    >>> a = CaseMeasurement(name="a", capped=False, bandwidth=0, max_downtime=0.1,
    ...     completed=True, time_elapsed=1.3, downtime=0.12, memory_processed=100 * MiB,
    ...     memory_bps=100 * MiB, non_zero=90 * MiB)
    >>> b = CaseMeasurement(name="b", capped=True, bandwidth=10 * MiB, max_downtime=0.3,
    ...     completed=True, time_elapsed=9.3, downtime=0.05, memory_processed=90 * MiB,
    ...     memory_bps=10 * MiB, non_zero=90 * MiB)
    >>> p = fit_profile([a, b])
    >>> round(p.startup_cost, 3), round(p.link_speed / MiB), round(p.switchover_cost, 3)
    (0.3, 100, 0.05)

    >>> fit_profile([b])
    Traceback (most recent call last):
    ...
    ValueError: no completed uncapped case: the link speed cannot be measured
    """
    done = [c for c in cases if c.completed and c.memory_bps > 0]
    uncapped = [c for c in done if not c.capped]
    if not uncapped:
        raise ValueError("no completed uncapped case: the link speed cannot be measured")
    link = median(c.memory_bps for c in uncapped)
    startup = median(startup_cost(c.time_elapsed, c.memory_processed, c.memory_bps)
                     for c in done)
    switchover = min(c.downtime for c in done)
    return Profile(startup_cost=startup, switchover_cost=switchover, link_speed=link)


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """The closed form's answer for one case."""

    converges: bool
    total_time: float  # seconds (as libvirt's time_elapsed); the timeout when not converging
    downtime: float  # seconds (0 when it does not converge)
    transferred: float  # bytes
    passes: int  # pre-copy passes (textbook rounds), the last one cut short


def completion_timeout(per_gib: float, ram: float) -> float:
    """Nova's completion timeout, seconds (0: none): ``per_gib`` x max(RAM in GiB, 2).

    >>> completion_timeout(4.0, 256 * MiB)
    8.0
    """
    return per_gib * max(ram / GiB, MIN_PART_GB) if per_gib > 0 else math.inf


def predict(
    profile: Profile,
    *,
    non_zero: float,
    working_set: float,
    dirty_rate: float,
    bandwidth: float,
    max_downtime: float,
    timeout: float = math.inf,
) -> Prediction:
    """Pre-copy with QEMU's continuous switchover check, in closed form per pass.

    A pass sends its pending bytes at ``bw`` (the cap, else the link). At time ``tau`` into
    a pass, QEMU's exact pending is the unsent part of the pass plus what the guest dirtied
    since the pass began, ``pending - bw tau + min(ws, rate tau)``; it switches as soon as
    that is <= ``bw x max_downtime``. The remainder (the threshold, or all pending if less)
    is flushed at link speed; ``downtime = remainder / link + switchover_cost``; time
    elapsed = start-up + transfer + downtime. The pages a pass dirtied are the next pass.

    A 90 MiB idle guest over an uncapped 100 MiB/s link, 100 ms limit: round 0 stops at
    10 MiB pending (0.8 s), the flush takes 0.1 s.

    >>> p = Profile(startup_cost=0.3, switchover_cost=0.02, link_speed=100 * MiB)
    >>> r = predict(p, non_zero=90 * MiB, working_set=16 * MiB, dirty_rate=0.0,
    ...             bandwidth=0.0, max_downtime=0.1)
    >>> r.converges, round(r.total_time, 3), round(r.downtime, 3), r.transferred / MiB, r.passes
    (True, 1.22, 0.12, 90.0, 1)

    Capped at 10 MiB/s, a guest rewriting 16 MiB at 24 MiB/s never gets below 3 MiB:
    the completion timeout ends it.

    >>> r = predict(p, non_zero=90 * MiB, working_set=16 * MiB, dirty_rate=24 * MiB,
    ...             bandwidth=10 * MiB, max_downtime=0.3, timeout=8.0)
    >>> r.converges, r.total_time
    (False, 8.0)
    """
    link = profile.link_speed
    bw = bandwidth if bandwidth > 0 else link
    threshold = bw * max_downtime
    pending = non_zero
    elapsed = profile.startup_cost
    sent = 0.0
    for passes in range(1, MAX_PASSES + 1):
        tau = _switch_time(pending, threshold, bw, dirty_rate, working_set)
        if tau is not None:
            remainder = pending - bw * tau + min(working_set, dirty_rate * tau)
            remainder = max(0.0, min(remainder, threshold, non_zero))
            downtime = remainder / link + profile.switchover_cost
            elapsed += tau + downtime
            sent += bw * tau + remainder
            if elapsed > timeout:
                break
            return Prediction(converges=True, total_time=elapsed, downtime=downtime,
                              transferred=sent, passes=passes)
        elapsed += pending / bw
        sent += pending
        if elapsed > timeout:
            break
        pending = min(working_set, dirty_rate * pending / bw)
    return Prediction(converges=False, total_time=timeout, downtime=0.0, transferred=sent,
                      passes=passes)


def _switch_time(
    pending: float, threshold: float, bw: float, rate: float, ws: float
) -> float | None:
    """Earliest ``tau`` in [0, pending/bw] with ``pending - bw tau + min(ws, rate tau)
    <= threshold``, or None (the pass ends first).

    >>> _switch_time(90.0, 10.0, 100.0, 0.0, 16.0)
    0.8
    >>> _switch_time(16.0, 3.0, 10.0, 24.0, 16.0) is None
    True
    """
    if pending <= threshold:
        return 0.0
    end = pending / bw
    candidates = []
    if rate < bw:  # before the working set is all dirty: falls at bw - rate
        tau = (pending - threshold) / (bw - rate)
        if rate * tau <= ws:
            candidates.append(tau)
    tau = (pending + ws - threshold) / bw  # once the whole working set is dirty
    if rate * tau >= ws:
        candidates.append(tau)
    best = min((t for t in candidates if t <= end), default=None)
    return best
