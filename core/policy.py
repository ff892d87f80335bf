"""Monitoring decisions as pure functions (Nova's live-migration policies, QEMU's throttle).

>>> data_gb(ram=4 * GiB, disks=[])
4.0
>>> data_gb(ram=512 * 2**20, disks=[1 * GiB])  # each part counts at least 2 GiB
4.0
>>> completion_timeout(800.0, data_gb(ram=4 * GiB, disks=[]))
3200.0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from livemig.core.flags import AUTO_CONVERGE, POSTCOPY
from livemig.core.model import MigrationPolicy
from livemig.core.units import GiB

MIN_PART_GB = 2.0

# QEMU's auto-converge defaults (migration parameters cpu-throttle-*)
THROTTLE_INITIAL = 20  # percent
THROTTLE_INCREMENT = 10  # percent per round that still did not converge
THROTTLE_MAX = 99  # percent
THROTTLE_TRIGGER = 50  # percent: throttle-trigger-threshold (dirtied vs sent in a period)
THROTTLE_PERIOD = 1.0  # seconds: QEMU judges the dirty rate at most once a second
CLOCK_PACED_SHARE = 0.1  # throttle_response: clock_paced (the writing needs 10 % of a CPU)


def data_gb(ram: int, disks: Iterable[int]) -> float:
    """Nova's ``_live_migration_data_gb``: RAM plus each copied disk, each at least 2 GiB."""
    total = max(ram / GiB, MIN_PART_GB)
    for disk in disks:
        total += max(disk / GiB, MIN_PART_GB)
    return total


def completion_timeout(per_gib: float, gb: float) -> float | None:
    """Seconds a migration may run before the timeout action; None when disabled (0)."""
    if per_gib <= 0:
        return None
    return per_gib * gb


def timed_out(elapsed: float, timeout: float | None) -> bool:
    """Has a running job exceeded its completion timeout?

    >>> timed_out(3200.5, 3200.0), timed_out(10.0, None)
    (True, False)
    """
    return timeout is not None and elapsed > timeout


def downtime_steps(
    max_downtime: float, steps: int, delay_per_gib: float, gb: float
) -> list[tuple[float, float]]:
    """Nova's ``downtime_steps``: (elapsed seconds, max downtime seconds) pairs.

    ``steps + 1`` pairs: the delay between steps is ``int(delay_per_gib * gb)``
    seconds (Nova truncates it to whole seconds); step ``i`` sets
    ``base + offset * i`` milliseconds, truncated, where ``base = target / steps``
    and ``offset = (target - base) / steps``. ``steps == 0`` gives no schedule
    (the downtime stays at ``max_downtime`` from the start).

    Nova's defaults, 500 ms in 10 steps, 75 s per GiB, for 4 GiB of data: a step
    every 300 s, from 50 ms to 500 ms by 45 ms.

    >>> s = downtime_steps(0.5, 10, 75.0, 4.0)
    >>> len(s), s[0], s[1], s[-1]
    (11, (0.0, 0.05), (300.0, 0.095), (3000.0, 0.5))
    >>> downtime_steps(0.5, 0, 75.0, 4.0)
    []
    >>> downtime_steps(0.3, 3, 75.0, 2.5)  # base 100 ms, offset 66.6 ms: truncated
    [(0.0, 0.1), (187.0, 0.166), (374.0, 0.233), (561.0, 0.3)]
    """
    if steps <= 0:
        return []
    target_ms = max_downtime * 1000.0
    delay = int(delay_per_gib * gb)
    base = target_ms / steps
    offset = (target_ms - base) / steps
    return [(float(delay * i), int(round(base + offset * i, 9)) / 1000.0)
            for i in range(steps + 1)]


def downtime_at(schedule: list[tuple[float, float]], elapsed: float) -> float | None:
    """The step of ``schedule`` in force after ``elapsed`` seconds (None before any).

    >>> s = downtime_steps(0.5, 10, 75.0, 4.0)
    >>> downtime_at(s, 0.5), downtime_at(s, 299.9), downtime_at(s, 300.0), downtime_at(s, 1e6)
    (0.05, 0.05, 0.095, 0.5)
    >>> downtime_at([], 10.0) is None
    True
    """
    current = None
    for at, value in schedule:
        if elapsed >= at:
            current = value
    return current


def throttle_after(rounds_not_converged: int) -> int:
    """QEMU's auto-converge CPU throttle (percent) after that many pre-copy rounds that
    did not converge: 20 % after the first, +10 % per further one, at most 99 %.

    >>> [throttle_after(n) for n in (0, 1, 2, 3, 8, 9, 20)]
    [0, 20, 30, 40, 90, 99, 99]
    """
    if rounds_not_converged <= 0:
        return 0
    return min(THROTTLE_MAX, THROTTLE_INITIAL + THROTTLE_INCREMENT * (rounds_not_converged - 1))


def throttled_dirty_rate(dirty_rate: float, throttle_percent: int) -> float:
    """A CPU-bound guest dirties memory in proportion to the CPU it is left with.

    >>> throttled_dirty_rate(100e6, 30)
    70000000.0
    """
    return dirty_rate * (100 - throttle_percent) / 100.0


def responsive_dirty_rate(dirty_rate: float, throttle_percent: int, share: float) -> float:
    """The dirty rate of a guest whose writing needs ``share`` of its CPU, when
    auto-converge leaves it ``100 - throttle`` percent: unchanged while that is enough,
    else in proportion, ``D * min(1, (1 - throttle) / share)``. ``share`` 1 is a
    CPU-bound writer (:func:`throttled_dirty_rate`), 0.1 one paced by the clock that
    works 10 % of the time; 0 never slows.

    >>> [responsive_dirty_rate(100e6, p, 1.0) for p in (0, 20, 90)]
    [100000000.0, 80000000.0, 10000000.0]
    >>> [round(responsive_dirty_rate(100e6, p, 0.1)) for p in (0, 50, 90, 95, 99)]
    [100000000, 100000000, 100000000, 50000000, 10000000]
    >>> responsive_dirty_rate(100e6, 99, 0.0)
    100000000.0
    """
    left = (100 - throttle_percent) / 100.0
    if left >= share:
        return float(dirty_rate)
    return dirty_rate * left / share


def throttle_step(throttle_percent: int) -> int:
    """QEMU's ``mig_throttle_guest_down``: the first throttle is 20 %, each further one
    adds 10 %, at most 99 %.

    >>> [throttle_step(p) for p in (0, 20, 30, 90, 99)]
    [20, 30, 40, 99, 99]
    """
    if throttle_percent <= 0:
        return THROTTLE_INITIAL
    return min(THROTTLE_MAX, throttle_percent + THROTTLE_INCREMENT)


@dataclass(kw_only=True)
class ThrottleJudge:
    """QEMU's auto-converge judgement at its dirty-bitmap syncs (migration/ram.c): at a
    sync more than :data:`THROTTLE_PERIOD` after the period began, if the bytes dirtied in
    the period exceed :data:`THROTTLE_TRIGGER` percent of those sent, a counter goes up;
    at 2 the throttle steps (:func:`throttle_step`) and the counter restarts. Every such
    sync starts a new period.

    Syncs every 0.6 s, each sending 30 MiB while 20 MiB are dirtied (67 % > 50 %): judged at
    1.2 s (trigger 1), 2.4 s (trigger 2: 20 %), 3.6 s, 4.8 s (30 %).

    >>> judge, throttle, seen = ThrottleJudge(), 0, []
    >>> for k in range(1, 9):
    ...     throttle = judge.at_sync(0.6 * k, dirtied=20.0, sent=30.0, throttle=throttle)
    ...     seen.append(throttle)
    >>> seen
    [0, 0, 0, 20, 20, 20, 20, 30]
    """

    period_start: float = 0.0
    dirtied: float = 0.0
    sent: float = 0.0
    high: int = 0

    def at_sync(self, now: float, *, dirtied: float, sent: float, throttle: int) -> int:
        """Count a sync at ``now`` (seconds) after ``dirtied`` and ``sent`` bytes since
        the last one; returns the throttle (percent) in force after it."""
        self.dirtied += dirtied
        self.sent += sent
        if now - self.period_start <= THROTTLE_PERIOD:
            return throttle
        if self.dirtied > self.sent * THROTTLE_TRIGGER / 100:
            self.high += 1
            if self.high >= 2:
                self.high = 0
                throttle = throttle_step(throttle)
        self.period_start, self.dirtied, self.sent = now, 0.0, 0.0
        return throttle


def migration_flags(configured: int, policy: MigrationPolicy) -> int:
    """The flags a migration starts with: the configured ones, plus POSTCOPY when
    ``permit_post_copy``, plus AUTO_CONVERGE when ``permit_auto_converge`` and post-copy
    is not permitted (Nova: post-copy takes precedence).

    >>> from livemig.core.model import MigrationPolicy
    >>> migration_flags(0, MigrationPolicy(permit_post_copy=True,
    ...                                    permit_auto_converge=True)) == POSTCOPY
    True
    >>> migration_flags(1, MigrationPolicy(permit_auto_converge=True)) == 1 | AUTO_CONVERGE
    True
    """
    flags = configured
    if policy.permit_post_copy:
        flags |= POSTCOPY
    elif policy.permit_auto_converge:
        flags |= AUTO_CONVERGE
    return flags


def progress(memory_total: int, memory_remaining: int) -> float:
    """Nova's progress: ``100 - memory_remaining * 100 / memory_total`` (0 with no total).

    >>> progress(4 * GiB, 1 * GiB), progress(0, 0)
    (75.0, 0.0)
    """
    if memory_total <= 0:
        return 0.0
    return 100.0 - memory_remaining * 100.0 / memory_total


def keepalive_timeout(policy: MigrationPolicy) -> float:
    """Seconds of silence after which libvirt declares the migration's peer dead.

    >>> keepalive_timeout(MigrationPolicy())
    30.0
    """
    return policy.keepalive_interval * (policy.keepalive_count + 1)
