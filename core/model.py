"""Records, enums and the frozen configuration a scenario file becomes.

Quantities are stored in base units: bytes, bytes per second, seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from livemig.core.expectations import Expectations


class VmState(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


class TaskState(StrEnum):
    """Nova's task_state; ``None`` (no task) is written as Python ``None``."""

    MIGRATING = "migrating"


class MigrationStatus(StrEnum):
    ACCEPTED = "accepted"
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    POSTCOPY = "running (post-copy)"
    COMPLETED = "completed"
    FAILED = "failed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset(
    {
        MigrationStatus.COMPLETED,
        MigrationStatus.FAILED,
        MigrationStatus.ERROR,
        MigrationStatus.CANCELLED,
    }
)


CPU_MODELS: tuple[str, ...] = (
    "Nehalem", "SandyBridge", "Haswell", "Skylake-Server", "Icelake-Server",
)  # fmt: skip
"""Known CPU models, oldest first: a guest runs on a destination of the same or a later model."""


class Storage(StrEnum):
    SHARED = "shared"
    LOCAL = "local"


class TimeoutAction(StrEnum):
    """Nova's ``live_migration_timeout_action``: what the completion timeout does."""

    ABORT = "abort"
    FORCE_COMPLETE = "force_complete"  # post-copy if permitted, else pause the guest


class MigrationModel(StrEnum):
    """How the simulator models pre-copy (``policy.migration.model``, drivers/precopy.py)."""

    QEMU = "qemu"  # QEMU's own behaviour: start-up cost, syncs at its checks, flush
    TEXTBOOK = "textbook"  # rounds, switchover test after each round (earlier releases)


class FaultKind(StrEnum):
    """What a fault event does to a host (see :class:`FaultEvent`)."""

    HOST_DOWN = "host_down"  # the machine stops: its guests die, its services stop
    HOST_UP = "host_up"  # it boots again: services up, no guest restarted
    LINK_DOWN = "link_down"  # its network link carries nothing (both directions)
    LINK_UP = "link_up"
    SERVICE_DOWN = "service_down"  # its libvirtd stops; guests keep running
    SERVICE_UP = "service_up"


class FaultTrigger(StrEnum):
    """When a fault fires, besides its time."""

    AT = "at"  # at the event's time
    CHECKS_PASSED = "checks_passed"  # when a migration to this host has passed its checks


class Heuristic(StrEnum):
    """How the scheduler orders the hosts that passed its filters."""

    WEIGHED = "weighed"  # Nova's RAM weigher (multiplier sign spreads or stacks)
    FIRST_FIT = "first_fit"  # first host in scenario order
    BEST_FIT = "best_fit"  # least free RAM that still fits
    WORST_FIT = "worst_fit"  # most free RAM
    RANDOM = "random"  # seeded uniform choice


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    name: str
    ram: int  # bytes
    vcpus: int
    disk: int  # bytes
    hypervisor_type: str = "QEMU"
    hypervisor_version: int = 10_000_002  # libvirt encoding: major*1e6 + minor*1e3 + micro
    cpu_model: str = "Skylake-Server"
    storage: Storage = Storage.SHARED
    rack: str | None = None
    service: bool = True  # has a compute service record at all


@dataclass(frozen=True, kw_only=True)
class VmSpec:
    name: str
    host: str
    ram: int  # bytes
    vcpus: int = 1
    disk: int = 0  # bytes: virtual size of the local disk (copied by block migration)
    disk_allocated: int | None = None  # bytes really allocated (qcow2); None = disk
    used_memory: int  # bytes of non-zero memory sent in round 0
    working_set: int  # bytes that the guest keeps dirtying
    dirty_rate: float  # bytes per second
    volume_backed: bool = False
    # share of its CPU the guest's writing needs (1: CPU-bound, dirtying slows in
    # proportion to an auto-converge throttle; small: paced by the clock, barely slows
    # until the throttle leaves less than that share); see policy.throttled_dirty_rate
    throttle_response: float = 1.0
    # where the non-zero memory lies: its share in each of N equal slices of the RAM, lowest
    # address first (QEMU's round 0 walks RAM in that order); () = spread evenly
    memory_layout: tuple[float, ...] = ()
    # CPU utilisation: percent of its vCPUs, one sample every cpu_trace_interval seconds,
    # linear between samples, the last holding (core/cpu_trace.py); () = none modelled
    cpu_trace: tuple[float, ...] = ()
    cpu_trace_interval: float = 300.0  # seconds
    # the simulator: dirty_rate is the rate at 100 % CPU, the rate now is dirty_rate x the
    # trace's utilisation now (a VM at 0 % dirties nothing); the lab guest ignores it
    dirty_rate_follows_cpu: bool = False
    # real hosts only (the simulator ignores both): boot from this disk image, a volume of
    # the host's instances pool; or adopt the existing domain of this name (never destroyed)
    image: str | None = None
    adopt: bool = False


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    host_link: float = 1.25e9  # bytes/s each direction (10 Gbit/s)
    hosts_per_rack: int | None = None  # None: every host on one switch
    uplink: float | None = None  # bytes/s each direction, rack switch <-> core


@dataclass(frozen=True, kw_only=True)
class SchedulerPolicy:
    filters: tuple[str, ...] = (
        "RetryFilter",
        "AvailabilityZoneFilter",
        "RamFilter",
        "ComputeFilter",
        "ComputeCapabilitiesFilter",
        "ImagePropertiesFilter",
    )
    ram_allocation_ratio: float = 1.5
    ram_weight_multiplier: float = 1.0
    heuristic: Heuristic = Heuristic.WEIGHED
    max_retries: int = -1  # -1: until no host is left


@dataclass(frozen=True, kw_only=True)
class MigrationPolicy:
    live_migration_flag: str = (
        "VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_LIVE"
    )
    block_migration_flag: str = (
        "VIR_MIGRATE_UNDEFINE_SOURCE, VIR_MIGRATE_PEER2PEER, VIR_MIGRATE_LIVE, "
        "VIR_MIGRATE_NON_SHARED_INC"
    )
    uri: str = "qemu+tcp://%s/system"
    bandwidth: float = 0.0  # bytes/s; 0 = unlimited (libvirt takes MiB/s)
    max_downtime: float = 0.5  # seconds
    poll_interval: float = 0.5  # seconds
    max_concurrent_per_host: int = 1
    # -- the pre-copy model of the simulator (drivers/precopy.py, core/profile.py) --
    model: MigrationModel = MigrationModel.QEMU
    profile: str | None = None  # the profile file the parameters below came from
    profile_name: str | None = None  # its name: key
    # None: the profile's value, else the model's default (core/profile.py)
    switchover_cost: float | None = None  # seconds added to each downtime
    startup_cost: float | None = None  # seconds before the first byte (qemu)
    startup_cost_per_gib: float | None = None  # more of them per GiB of the guest's RAM
    link_speed: float | None = None  # B/s of an uncapped transfer (qemu; None: the link)
    flush_speed: float | None = None  # B/s of the stop-and-copy flush (None: link_speed)
    bandwidth_window: float | None = None  # seconds the switchover's bandwidth is measured
    check_period: float | None = None  # seconds between uncapped switchover checks (qemu)
    completion_timeout: float = 800.0  # seconds per GiB of data (Nova); 0 disables
    reserved_host_disk_mb: int = 0
    reserved_host_memory_mb: int = 512
    service_down_time: float = 60.0  # seconds without heartbeat before a service is down
    report_interval: float = 10.0  # seconds between compute-service heartbeats
    # -- convergence (modern Nova; nova-flow.md section 4) --
    downtime_steps: int = 0  # live_migration_downtime_steps; 0: max_downtime from the start
    downtime_delay: float = 75.0  # seconds per GiB of data between two downtime steps
    timeout_action: TimeoutAction = TimeoutAction.ABORT  # live_migration_timeout_action
    permit_post_copy: bool = False  # adds VIR_MIGRATE_POSTCOPY to the flags
    permit_auto_converge: bool = False  # adds VIR_MIGRATE_AUTO_CONVERGE (unless post-copy)
    # libvirt's keepalive between the two libvirtds: a migration whose peer stays silent
    # for keepalive_interval * (keepalive_count + 1) seconds fails
    keepalive_interval: float = 5.0
    keepalive_count: int = 5


@dataclass(frozen=True, kw_only=True)
class Policy:
    scheduler: SchedulerPolicy = field(default_factory=SchedulerPolicy)
    migration: MigrationPolicy = field(default_factory=MigrationPolicy)


@dataclass(frozen=True, kw_only=True)
class LiveMigrateEvent:
    at: float  # seconds from the start of the run
    instance: str
    dest: str | None = None
    block_migration: bool = False
    disk_over_commit: bool = False


@dataclass(frozen=True, kw_only=True)
class DrainEvent:
    """Live-migrate every instance off ``host``; the scheduler picks destinations."""

    at: float
    host: str
    block_migration: bool = False
    disk_over_commit: bool = False


@dataclass(frozen=True, kw_only=True)
class AbortEvent:
    """Operator: abort the instance's live migration (Nova: status queued or running)."""

    at: float
    instance: str


@dataclass(frozen=True, kw_only=True)
class ForceCompleteEvent:
    """Operator: force the instance's running live migration to complete."""

    at: float
    instance: str


@dataclass(frozen=True, kw_only=True)
class FaultEvent:
    """A fault on ``host`` at ``at`` (or, with ``trigger: checks_passed``, at the first
    moment from ``at`` on when a migration to ``host`` has passed its checks)."""

    at: float
    kind: FaultKind
    host: str
    trigger: FaultTrigger = FaultTrigger.AT


@dataclass(frozen=True, kw_only=True)
class ControllerRestartEvent:
    """The controller (the livemig process) dies; a new one starts ``down_for`` seconds
    later and reconciles its records with the driver's truth."""

    at: float
    down_for: float = 0.0


Event = (
    LiveMigrateEvent | DrainEvent | AbortEvent | ForceCompleteEvent | FaultEvent
    | ControllerRestartEvent
)


DEFAULT_UNTIL = 86_400.0
"""The horizon of a run whose scenario sets no ``until``: 24 h (simulated, or real)."""


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    seed: int = 0
    hosts: tuple[HostSpec, ...]
    vms: tuple[VmSpec, ...]
    network: NetworkSpec = field(default_factory=NetworkSpec)
    policy: Policy = field(default_factory=Policy)
    events: tuple[Event, ...] = ()
    source: str = "<memory>"  # the file it came from
    until: float = DEFAULT_UNTIL  # the run's horizon, seconds from its start
    expect: Expectations | None = None  # the file's expect: section (core/expectations.py)
