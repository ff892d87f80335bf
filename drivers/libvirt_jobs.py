"""A migration job of the real driver: what it remembers and how libvirt's readings
become :class:`~livemig.drivers.base.JobInfo`.

Where a job's truth lives, by phase (libvirt 11.3, QEMU 10.0, checked in the lab):

* pre-copy: ``jobStats()`` on the source (``type`` BOUNDED/UNBOUNDED);
* post-copy: the source domain is PAUSED with reason POSTCOPY and its ``jobStats()``
  fails ("domain is not running"); the destination runs with reason POSTCOPY and has
  no job statistics ("only on the source host");
* ended: the destination's completed-job statistics (``VIR_DOMAIN_JOB_STATS_COMPLETED``,
  read with ``KEEP_COMPLETED`` so nobody's reading erases them) after a pre-copy
  migration; after a post-copy one only the source's ``JOB_COMPLETED`` event carries
  them (operation MIGRATION_OUT), the destination answers ``type`` NONE.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

import libvirt

from livemig.drivers.base import DomainState, JobInfo, JobType

ACTIVE_JOB_TYPES = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
COMPLETED_STATS = (
    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
)
MIGRATION_OUT = libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT

#: libvirt (state, reason) pairs of the two sides of a post-copy migration.
SOURCE_POSTCOPY = {
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED),
}
DEST_POSTCOPY = {(libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY)}
#: A domain in one of these states is the other half of a migration, not the guest's home:
#: the paused incoming side of a pre-copy, the paused source of a post-copy.
MIGRATION_SHADOWS = SOURCE_POSTCOPY | {
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION),
}

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,  # shutting down: still running
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.SHUTOFF,
}


def domain_state(state: int) -> DomainState:
    """libvirt's ``virDomainState`` as a :class:`DomainState`.

    >>> domain_state(libvirt.VIR_DOMAIN_PAUSED).value
    'paused'
    """
    return _STATES.get(state, DomainState.RUNNING)


@dataclass(kw_only=True)
class Job:
    """One migration job the driver watches: started here, or adopted (``attached``)."""

    source: str
    dest: str
    started: float  # monotonic seconds
    attached: bool = False  # started by an earlier controller: no migrateToURI thread here
    flags: int | None = None  # migrateToURI's flags (unknown for an attached job)
    postcopy_requested: bool = False  # start_postcopy came before QEMU's migration began
    thread: threading.Thread | None = None
    error: str | None = None
    returned: bool = False
    postcopy: bool = False
    ambiguous_since: float | None = None  # on both hosts with no job since (monotonic)
    last: JobInfo = field(default_factory=lambda: JobInfo(type=JobType.UNBOUNDED))
    final: JobInfo | None = None

    @property
    def call_pending(self) -> bool:
        """Our ``migrateToURI`` has not returned yet (it returns 1-2 s after the job)."""
        return self.thread is not None and not self.returned


def job_info(stats: dict[str, Any], kind: JobType, *, postcopy: bool = False) -> JobInfo:
    """libvirt's typed job parameters (ms, bytes, pages/s, percent) in base units.

    >>> info = job_info({"time_elapsed": 1500, "memory_dirty_rate": 256, "downtime": 40,
    ...                  "auto_converge_throttle": 30}, JobType.UNBOUNDED)
    >>> info.time_elapsed, info.memory_dirty_rate, info.downtime, info.auto_converge_throttle
    (1.5, 1048576, 0.04, 30)
    """
    page = stats.get("memory_page_size", 4096)
    downtime = stats.get("downtime")
    return JobInfo(
        type=kind,
        time_elapsed=stats.get("time_elapsed", 0) / 1000.0,
        data_total=stats.get("data_total", 0),
        data_processed=stats.get("data_processed", 0),
        data_remaining=stats.get("data_remaining", 0),
        memory_total=stats.get("memory_total", 0),
        memory_processed=stats.get("memory_processed", 0),
        memory_remaining=stats.get("memory_remaining", 0),
        disk_total=stats.get("disk_total", 0),
        disk_processed=stats.get("disk_processed", 0),
        disk_remaining=stats.get("disk_remaining", 0),
        memory_iteration=stats.get("memory_iteration", 0),
        memory_dirty_rate=stats.get("memory_dirty_rate", 0) * page,
        downtime=None if downtime is None else downtime / 1000.0,
        postcopy=postcopy,
        auto_converge_throttle=int(stats.get("auto_converge_throttle", 0)),
    )


def with_(info: JobInfo, **changes: Any) -> JobInfo:
    return dataclasses.replace(info, **changes)


def ended_reading(job: Job, kind: JobType, error: str | None) -> JobInfo:
    """A job that ended without statistics of its own: the last reading, relabelled.

    A running job's ``downtime`` is libvirt's estimate; an unfinished job paused nothing.
    """
    downtime = job.last.downtime if kind is JobType.COMPLETED else None
    return with_(job.last, type=kind, error=error, downtime=downtime, postcopy=job.postcopy)
