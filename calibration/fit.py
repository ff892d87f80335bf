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

Where the destination preallocates the guest's RAM (the lab's guests on huge pages) the
start-up grows with the RAM: the start-up is a line in the RAM (:func:`startup_line`),
whose slope is ``startup_cost_per_gib``; a line that does not rise is flat.

**Link speed** (an uncapped transfer and the final flush): ``memory_bps`` of uncapped cases.

**Switchover cost and flush speed** (a downtime is the fixed cost of stopping the guest,
device state and resuming, plus the remainder flushed at the flush speed). In a capped
case the remainder is the switchover threshold, ``cap x limit``: QEMU's own figures say
so (``memory_bps`` is the bytes over the transfer time, so ``bytes - cap x (bytes /
memory_bps - downtime)`` is what went during the downtime; it came within 0.9 MiB of
``cap x limit`` in every capped dirtying case of the lab's trust calibration). So a
straight line through the capped cases' ``(model remainder, downtime)``
(:func:`flush_line`) gives both: its intercept is the switchover cost, its slope one over
the flush speed. The lab's capped flushes ran at about 1.5 GiB/s, five times the uncapped
pass speed; the model flushes every page sent before at that speed, capped or not
(:func:`livemig.drivers.precopy.flush_speeds_for`). With fewer than two capped cases (or a
line that does not rise) the switchover cost is the smallest downtime, an upper bound, and
the flush runs at link speed.

Start-up cost and link speed are medians over the cases that measure them
(:func:`fit_profile`), robust to one case disturbed by the machine's load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median

from livemig.core.profile import startup_seconds
from livemig.drivers.precopy import check_period_for, flush_speeds_for, plan_qemu

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
    ram: float = 0.0  # bytes (0: not known, no zero pages counted)
    working_set: float = 0.0  # bytes
    dirty_rate: float = 0.0  # bytes/s, the guest's real write rate
    layout: tuple[float, ...] = ()  # where its non-zero memory lies (() = evenly)


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A profile's fitted parameters (the file :func:`profile_document` writes)."""

    startup_cost: float  # seconds
    switchover_cost: float  # seconds
    link_speed: float  # bytes/s
    bandwidth_window: float = 0.1  # seconds: QEMU's bandwidth measurement window
    flush_speed: float | None = None  # bytes/s of a capped migration's flush (None: link)
    check_period: float = 0.05  # seconds between QEMU's checks of an uncapped pass
    startup_cost_per_gib: float = 0.0  # more start-up seconds per GiB of the guest's RAM

    def startup_for(self, ram: float | None) -> float:
        """Seconds before the first byte for a guest of ``ram`` bytes (None: not known;
        :func:`~livemig.core.profile.startup_seconds`)."""
        return startup_seconds(self.startup_cost, self.startup_cost_per_gib, ram)

    def summary(self) -> str:
        """One line of the fitted figures, as ``livemig calibrate`` prints them.

        >>> Profile(startup_cost=0.19, startup_cost_per_gib=0.2, switchover_cost=0.014,
        ...         link_speed=984 * MiB, flush_speed=839 * MiB).summary()
        'startup_cost 190.0 ms + 200.0 ms per GiB of RAM, switchover_cost 14.0 ms, \
link_speed 984.0 MiB/s, flush_speed 839.0 MiB/s'
        """
        per_gib = (f" + {self.startup_cost_per_gib * 1000:.1f} ms per GiB of RAM"
                   if self.startup_cost_per_gib else "")
        flush = (f"{self.flush_speed / MiB:.1f} MiB/s" if self.flush_speed
                 else "link speed (fewer than two capped cases)")
        return (f"startup_cost {self.startup_cost * 1000:.1f} ms{per_gib}, switchover_cost "
                f"{self.switchover_cost * 1000:.1f} ms, link_speed "
                f"{self.link_speed / MiB:.1f} MiB/s, flush_speed {flush}")


def startup_cost(time_elapsed: float, memory_processed: float, memory_bps: float) -> float:
    """Seconds of ``time_elapsed`` before the transfer (see the module's docstring)."""
    if memory_bps <= 0:
        raise ValueError("memory_bps must be > 0")
    return max(0.0, time_elapsed - memory_processed / memory_bps)


def startup_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The start-up as a line in the guest's RAM through ``(RAM bytes, start-up s)`` points,
    ``(seconds at no RAM, seconds per GiB)``, robust to a case disturbed by the machine's
    load (Theil-Sen: the median of the slopes between every two points of different RAM,
    then the median intercept). A slope that is not above 0, or points of one RAM size,
    give the flat line at the median.

    >>> MiB = 2**20
    >>> base, per_gib = startup_line([(128 * MiB, 0.22), (128 * MiB, 0.34), (256 * MiB, 0.23),
    ...                               (384 * MiB, 0.27), (512 * MiB, 0.30), (512 * MiB, 0.31)])
    >>> round(base, 4), round(per_gib, 4)
    (0.1933, 0.2133)
    >>> startup_line([(128 * MiB, 0.21), (512 * MiB, 0.19), (256 * MiB, 0.20)])
    (0.2, 0.0)
    """
    slopes = [(y2 - y1) / (x2 - x1) for i, (x1, y1) in enumerate(points)
              for x2, y2 in points[i + 1:] if x2 != x1]
    slope = median(slopes) if slopes else 0.0
    if slope <= 0:
        return median(y for _, y in points), 0.0
    return median(y - slope * x for x, y in points), slope * GiB


def flush_line(points: Sequence[tuple[float, float]]) -> tuple[float, float | None] | None:
    """The least-squares line ``downtime = cost + remainder / flush`` through ``(remainder
    bytes, downtime s)`` points: ``(cost, flush B/s)``; None when the points cannot fix a
    line (fewer than two remainders) or it does not rise. A negative intercept becomes 0
    (the line through the origin).

    >>> MiB = 2**20
    >>> cost, flush = flush_line([(1 * MiB, 0.012), (3 * MiB, 0.014), (5 * MiB, 0.016)])
    >>> round(cost, 6), round(flush / MiB)
    (0.011, 1000)
    >>> flush_line([(1 * MiB, 0.02), (5 * MiB, 0.012)]) is None, flush_line([(MiB, 0.02)])
    (True, None)
    """
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = math.fsum(x for x, _ in points) / n
    my = math.fsum(y for _, y in points) / n
    sxx = math.fsum((x - mx) ** 2 for x, _ in points)
    slope = math.fsum((x - mx) * (y - my) for x, y in points) / sxx
    cost = my - slope * mx
    if cost < 0:
        cost = 0.0
        slope = math.fsum(x * y for x, y in points) / math.fsum(x * x for x, _ in points)
    if slope <= 0:
        return None
    return cost, 1.0 / slope


def model_remainder(case: CaseMeasurement, link_speed: float, window: float = 0.1) -> float:
    """The bytes the qemu model leaves for the flush of ``case`` (its cap, limit, memory and
    write rate; :func:`livemig.drivers.precopy.plan_qemu`); 0 when it does not converge."""
    bw = case.bandwidth if case.capped else link_speed
    period = check_period_for(bw if case.capped else None, link_speed, Profile.check_period)
    plan = plan_qemu(case.non_zero, case.working_set, case.dirty_rate, bw, case.max_downtime,
                     flush_speed=link_speed, bandwidth_window=window, max_rounds=MAX_PASSES,
                     ram=case.ram or None, layout=case.layout, check_period=period)
    return plan.remaining if plan.converged else 0.0


def fit_profile(cases: Sequence[CaseMeasurement]) -> Profile:
    """Estimates over the completed cases (link speed: the uncapped ones; switchover cost
    and flush speed: the capped ones, :func:`flush_line`, else the smallest downtime).

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
    startup, per_gib = startup_line([
        (c.ram, startup_cost(c.time_elapsed, c.memory_processed, c.memory_bps))
        for c in done])
    line = flush_line([(model_remainder(c, link), c.downtime) for c in done if c.capped])
    if line is None:
        return Profile(startup_cost=startup, switchover_cost=min(c.downtime for c in done),
                       link_speed=link, startup_cost_per_gib=per_gib)
    switchover, flush = line
    return Profile(startup_cost=startup, switchover_cost=switchover, link_speed=link,
                   flush_speed=flush, startup_cost_per_gib=per_gib)


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
    ram: float | None = None,
    layout: tuple[float, ...] = (),
) -> Prediction:
    """The qemu model (:func:`livemig.drivers.precopy.plan_qemu`, the simulator's closed
    form) for one case: sent at ``bandwidth`` (the cap; 0: the link), QEMU's syncs and
    switchover (round 0 counting the zero pages of ``ram`` when given, laid out as
    ``layout`` says), the remainder
    flushed at :func:`~livemig.drivers.precopy.flush_speeds_for`; time elapsed = start-up +
    transfer + downtime. A case that has not completed by ``timeout`` is aborted then.

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
    capped = 0 < bandwidth < link
    bw = bandwidth if capped else link
    flush = flush_speeds_for(bw if capped else None, link, profile.flush_speed)
    period = check_period_for(bw if capped else None, link, profile.check_period)
    plan = plan_qemu(non_zero, working_set, dirty_rate, bw, max_downtime,
                     flush_speed=flush.resend or link, first_copy_speed=flush.first_copy,
                     startup_cost=profile.startup_for(ram),
                     switchover_cost=profile.switchover_cost,
                     bandwidth_window=profile.bandwidth_window, max_rounds=MAX_PASSES, ram=ram,
                     layout=layout, check_period=period)
    if plan.converged and plan.total_time <= timeout:
        return Prediction(converges=True, total_time=plan.total_time,
                          downtime=plan.downtime or 0.0, transferred=plan.data_transferred,
                          passes=len(plan.rounds))
    # QEMU never gives up: it sends at ``bw`` until the timeout aborts it
    if math.isfinite(timeout):
        sent = bw * max(0.0, timeout - profile.startup_for(ram))
        sent = min(sent, plan.data_transferred) if plan.converged else sent
    else:
        sent = plan.data_transferred
    return Prediction(converges=False, total_time=timeout, downtime=0.0, transferred=sent,
                      passes=len(plan.rounds))
