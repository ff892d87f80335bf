"""Monitoring decisions as pure functions (Nova's live-migration policies).

>>> data_gb(ram=4 * GiB, disks=[])
4.0
>>> data_gb(ram=512 * MiB, disks=[1 * GiB])  # each part counts at least 2 GiB
4.0
>>> completion_timeout(800.0, data_gb(ram=4 * GiB, disks=[]))
3200.0
"""

from __future__ import annotations

from collections.abc import Iterable

from livemig.core.units import GiB

MIN_PART_GB = 2.0


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
