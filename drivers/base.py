"""The driver contract: a driver reports facts and carries out actions; core decides.

Every driver runs inside a SimPy environment (``simpy.Environment`` for the
simulator, ``simpy.rt.RealtimeEnvironment`` for real hosts). Calls return at
once; long work (the migration job) runs in the background and is watched by
the core through :meth:`Driver.job_info`, polled every ``poll_interval``.
Native handles (libvirt domains, SimPy processes) never leave the driver.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from livemig.core.model import FaultKind

if TYPE_CHECKING:  # imported where used: loading a scenario needs neither
    import numpy as np
    import simpy


class DriverSetupError(RuntimeError):
    """The scenario cannot run on this driver's hosts: an unreadable inventory, a host
    the inventory does not have, a guest that will not boot. Raised by a driver's
    constructor; the command line reports it as one line."""


class JobType(StrEnum):
    """libvirt's ``VIR_DOMAIN_JOB_*`` types, as the poll sees them."""

    NONE = "none"  # no job on the domain
    UNBOUNDED = "unbounded"  # running
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, kw_only=True)
class JobInfo:
    """One reading of a migration job (libvirt's ``jobStats()``), in base units."""

    type: JobType
    time_elapsed: float = 0.0  # seconds since the job started
    data_total: int = 0  # bytes: memory + disk
    data_processed: int = 0
    data_remaining: int = 0
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    memory_iteration: int = 0  # pre-copy rounds begun (round 0 counts as 1)
    memory_dirty_rate: float = 0.0  # bytes/s
    downtime: float | None = None  # seconds the guest was paused at switchover
    error: str | None = None  # why a FAILED/CANCELLED job ended
    postcopy: bool = False  # switched to post-copy: the guest runs on the destination
    auto_converge_throttle: int = 0  # percent of the guest's CPU taken by auto-converge


class DomainState(StrEnum):
    """What a host's hypervisor says about one domain."""

    RUNNING = "running"
    PAUSED = "paused"  # suspended (by force-complete, a non-live migration, an operator)
    SHUTOFF = "shutoff"  # defined but not running


@dataclass(frozen=True, kw_only=True)
class DomainFact:
    """One domain of a scenario instance, as one host's hypervisor reports it."""

    instance: str
    host: str
    state: DomainState


@dataclass(frozen=True, kw_only=True)
class WorldFacts:
    """Everything the invariants compare the records with, read from the driver at once.

    ``unreachable`` hosts could not be asked (their libvirtd is down): their domains
    and their capacity are unknown, and the invariants that need them are reported
    as unverifiable rather than guessed. ``powered_off`` hosts are known to be down
    (the simulator knows, a fault injector may): no domain runs there, so a record
    placing a live instance on one is a violation, not unverifiable.
    """

    domains: tuple[DomainFact, ...]  # every scenario domain on every reachable host
    claims: dict[str, str]  # instance -> host holding an incoming reservation for it
    unreachable: tuple[str, ...] = ()
    overcommitted: tuple[str, ...] = ()  # hosts whose usage + claims exceed capacity
    powered_off: tuple[str, ...] = ()  # hosts known to be down: they run nothing


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """What a compute node reports (Nova's compute_nodes record + service)."""

    name: str
    hypervisor_type: str
    hypervisor_version: int
    cpu_model: str
    memory_mb: int  # total
    free_ram_mb: int  # total - used - claims (reservations)
    vcpus: int
    vcpus_used: int
    local_gb: int
    disk_available_least: int  # GB
    last_heartbeat: float | None  # env time of the compute service's last report


class HostTable:
    """Every host's scheduling facts as columns (numpy arrays), one row per host.

    The scheduler filters and weighs whole columns at once, so a decision over
    10,000 hosts costs a few array operations. ``last_heartbeat`` is NaN for a
    host that never reported. Built by a driver in :meth:`Driver.host_table`,
    or from a list of :class:`HostFacts` with :meth:`from_facts`.
    """

    __slots__ = (
        "names", "index", "memory_mb", "free_ram_mb", "vcpus", "vcpus_used",
        "disk_available_least", "last_heartbeat",
    )

    def __init__(
        self,
        names: tuple[str, ...],
        *,
        memory_mb: np.ndarray,
        free_ram_mb: np.ndarray,
        vcpus: np.ndarray,
        vcpus_used: np.ndarray,
        disk_available_least: np.ndarray,
        last_heartbeat: np.ndarray,
        index: dict[str, int] | None = None,
    ) -> None:
        self.names = names
        self.index = index if index is not None else {n: i for i, n in enumerate(names)}
        self.memory_mb = memory_mb
        self.free_ram_mb = free_ram_mb
        self.vcpus = vcpus
        self.vcpus_used = vcpus_used
        self.disk_available_least = disk_available_least
        self.last_heartbeat = last_heartbeat

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_facts(cls, facts: list[HostFacts]) -> HostTable:
        """Columns from per-host facts (for drivers with few hosts, and tests)."""
        import numpy as np

        def column(attr: str, dtype: type) -> np.ndarray:
            return np.array([getattr(f, attr) for f in facts], dtype=dtype)

        return cls(
            tuple(f.name for f in facts),
            memory_mb=column("memory_mb", np.int64),
            free_ram_mb=column("free_ram_mb", np.int64),
            vcpus=column("vcpus", np.int64),
            vcpus_used=column("vcpus_used", np.int64),
            disk_available_least=column("disk_available_least", np.int64),
            last_heartbeat=np.array(
                [np.nan if f.last_heartbeat is None else f.last_heartbeat for f in facts],
                dtype=np.float64,
            ),
        )


@runtime_checkable
class Driver(Protocol):
    """What every driver provides to the core. Names follow Nova's virt driver."""

    env: simpy.Environment

    # -- facts ------------------------------------------------------------
    def host_names(self) -> list[str]:
        """Every host that has a compute service record, in a stable order."""

    def host_facts(self, host: str) -> HostFacts:
        """Facts of one host; ``KeyError`` if the host has no service record."""

    def host_table(self) -> HostTable:
        """The facts of every host of :meth:`host_names`, as columns, now."""

    def instance_host(self, instance: str) -> str | None:
        """Where the instance's domain runs now (the driver's truth), or None."""

    def instance_running_on(self, instance: str, host: str) -> bool:
        """Is the domain defined and active on ``host``? (the 0.5 s poll's question)."""

    def cpu_utilisation(self, instance: str) -> float:
        """The fraction (0-1) of the instance's vCPUs it used over the last sample window
        (the real driver: libvirt's vCPU time since the previous call, see
        :mod:`livemig.drivers.cpu_stats`; the simulator: the scenario's trace now). 0 for
        a guest that is paused or runs nowhere; ``KeyError`` if it is no scenario VM."""

    def compare_cpu(self, source: str, dest: str) -> bool:
        """Can the source host's CPU model run on ``dest`` (libvirt compareCPU)?"""

    def create_shared_storage_test_file(self, dest: str) -> str:
        """Create a marker in dest's instances path; returns its name."""

    def check_shared_storage_test_file(self, source: str, name: str) -> bool:
        """Is the marker visible from ``source``? (True means shared storage)."""

    def cleanup_shared_storage_test_file(self, dest: str, name: str) -> None:
        """Remove the marker; called in every case."""

    # -- actions ----------------------------------------------------------
    def pre_live_migration(self, instance: str, dest: str, block_migration: bool) -> None:
        """Prepare dest (claim resources, create the disk for block migration).

        Raises ``MigrationError`` when dest cannot take the instance now.
        """

    def start_migration(
        self, instance: str, dest: str, *, uri: str, flags: int, bandwidth_mib: int
    ) -> None:
        """Start the migration job in the background (``migrateToURI``)."""

    def set_max_downtime(self, instance: str, seconds: float) -> None:
        """Change the job's switchover downtime limit (``migrateSetMaxDowntime``)."""

    def job_info(self, instance: str) -> JobInfo:
        """The job's current reading; COMPLETED/FAILED/CANCELLED once it ended."""

    def abort_job(self, instance: str) -> None:
        """Cancel the running job (``abortJob``); the guest stays on its source."""

    def start_postcopy(self, instance: str) -> None:
        """Switch a job started with ``VIR_MIGRATE_POSTCOPY`` to post-copy
        (``migrateStartPostCopy``): the guest runs on dest from now on, pulling the
        pages it still lacks; the job then reports ``postcopy=True``."""

    def suspend(self, instance: str) -> None:
        """Pause the guest where it runs now (``virDomainSuspend``)."""

    def resume(self, instance: str) -> None:
        """Resume a paused guest where it runs now (``virDomainResume``); no-op if running."""

    def attach_job(self, instance: str, source: str, dest: str) -> None:
        """Adopt a migration job started by an earlier controller (after a restart):
        :meth:`job_info` and :meth:`abort_job` then work on it as on one's own. A job
        that already ended reads COMPLETED if the domain runs on dest and not on
        source, FAILED if it runs on source only."""

    def inject_fault(self, kind: FaultKind, host: str) -> None:
        """Make a fault happen (the lab does it for real: kill, ip link, stop libvirtd)."""

    def world(self) -> WorldFacts:
        """The driver's truth for the invariants: domains, claims, unreachable hosts."""

    def post_live_migration(self, instance: str, source: str, dest: str) -> None:
        """After success: clean the source up and release its resources."""

    def rollback_live_migration(
        self, instance: str, source: str, dest: str, block_migration: bool
    ) -> None:
        """After failure: clean the destination up and release its claim."""

    def close(self) -> None:
        """Release connections and background work."""
