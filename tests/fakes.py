"""Test helpers: small builders of scenario data, and a scripted fake driver.

* Builders (:func:`host`, :func:`vm`, :func:`scenario`, :func:`migrate`,
  :func:`facts`) keep the tests short; every size is in bytes (``GiB``, ``MiB``).
* :class:`ScriptedDriver` is a :class:`~livemig.drivers.base.Driver` whose
  migration job replays a script of :class:`~livemig.drivers.base.JobInfo`
  readings (or exceptions to raise) and which records every call with the
  simulated time it was made. It exists only for the orchestrator's
  error-handling unit tests (a driver misbehaving on purpose); every other test
  runs the real simulated driver.

Imported by the tests as ``fakes`` (``tests/conftest.py`` puts this folder on
``sys.path``).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import simpy

from livemig.core.model import (
    DrainEvent,
    FaultKind,
    HostSpec,
    LiveMigrateEvent,
    MigrationModel,
    MigrationPolicy,
    NetworkSpec,
    Policy,
    Scenario,
    SchedulerPolicy,
    VmSpec,
)
from livemig.core.orchestrator import Orchestrator
from livemig.core.state import InstanceRecord, StateStore
from livemig.drivers.base import (
    DomainFact,
    DomainState,
    HostFacts,
    HostTable,
    JobInfo,
    JobType,
    WorldFacts,
)

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# -- builders ---------------------------------------------------------------------


def host(name: str, *, ram: int = 16 * GiB, vcpus: int = 16, disk: int = 200 * GiB,
         **fields: Any) -> HostSpec:
    """A host with roomy defaults; ``fields`` override any other HostSpec field."""
    return HostSpec(name=name, ram=ram, vcpus=vcpus, disk=disk, **fields)


def vm(name: str, on: str, *, ram: int = 2 * GiB, used_memory: int | None = None,
       working_set: int = 256 * MiB, dirty_rate: float = 0.0, **fields: Any) -> VmSpec:
    """A VM on host ``on``; used memory defaults to half its RAM, idle (no dirtying)."""
    return VmSpec(
        name=name, host=on, ram=ram,
        used_memory=ram // 2 if used_memory is None else used_memory,
        working_set=working_set, dirty_rate=dirty_rate, **fields,
    )


def migrate(instance: str, dest: str | None = None, *, at: float = 0.0, block: bool = False,
            over_commit: bool = False) -> LiveMigrateEvent:
    return LiveMigrateEvent(at=at, instance=instance, dest=dest, block_migration=block,
                            disk_over_commit=over_commit)


def drain(host_name: str, *, at: float = 0.0, block: bool = False) -> DrainEvent:
    return DrainEvent(at=at, host=host_name, block_migration=block)


def scenario(
    hosts: Iterable[HostSpec],
    vms: Iterable[VmSpec],
    events: Iterable[LiveMigrateEvent | DrainEvent] = (),
    *,
    scheduler: SchedulerPolicy | None = None,
    migration: MigrationPolicy | None = None,
    network: NetworkSpec | None = None,
    seed: int = 0,
    name: str = "test",
    model: MigrationModel | None = MigrationModel.TEXTBOOK,
) -> Scenario:
    """A scenario; its pre-copy model is the textbook one unless ``model`` says otherwise
    (None: the policy's own). The unit tests pin the textbook's arithmetic, which is
    simple to compute by hand; tests/test_qemu_model.py covers the qemu model."""
    migration = migration or MigrationPolicy()
    if model is not None:
        migration = dataclasses.replace(migration, model=model)
    policy = Policy(scheduler=scheduler or SchedulerPolicy(), migration=migration)
    return Scenario(name=name, seed=seed, hosts=tuple(hosts), vms=tuple(vms),
                    events=tuple(events), policy=policy, network=network or NetworkSpec())


def facts(name: str, **fields: Any) -> HostFacts:
    """Host facts of a healthy 8 GiB / 8 vCPU / 100 GB QEMU host, heartbeat at t=0."""
    values: dict[str, Any] = dict(
        name=name, hypervisor_type="QEMU", hypervisor_version=10_000_002,
        cpu_model="Skylake-Server", memory_mb=8192, free_ram_mb=4096, vcpus=8, vcpus_used=0,
        local_gb=100, disk_available_least=100, last_heartbeat=0.0,
    )
    values.update(fields)
    return HostFacts(**values)


def instance(name: str = "vm1", on: str = "h1", **fields: Any) -> InstanceRecord:
    """An instance record: 2 GiB, 1 vCPU, 10 GiB disk (allocated 10 GiB)."""
    values: dict[str, Any] = dict(name=name, host=on, ram=2 * GiB, vcpus=1, disk=10 * GiB,
                                  disk_allocated=10 * GiB)
    values.update(fields)
    return InstanceRecord(**values)


# -- the scripted driver ----------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One call made on a :class:`ScriptedDriver`, at simulated time ``time``."""

    name: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    time: float


def running(count: int, *, step: float = 0.5) -> list[JobInfo]:
    """``count`` readings of a job in progress (time_elapsed 0.5, 1.0, ...)."""
    return [JobInfo(type=JobType.UNBOUNDED, time_elapsed=step * (i + 1), data_total=GiB,
                    data_processed=GiB * i // (count + 1), memory_iteration=1)
            for i in range(count)]


def ended(kind: JobType, *, elapsed: float = 9.0, error: str | None = None) -> JobInfo:
    """The reading of an ended job (COMPLETED / FAILED / CANCELLED)."""
    done = kind is JobType.COMPLETED
    return JobInfo(type=kind, time_elapsed=elapsed, data_total=GiB,
                   data_processed=GiB if done else GiB // 2, memory_iteration=3,
                   downtime=0.125 if done else None, error=error)


class ScriptedDriver:
    """A fake driver: facts from :class:`HostFacts`, a migration job from a script.

    Parameters:

    * ``hosts``: the host facts (each host has a compute service record);
    * ``instances``: instance name -> the host its domain runs on;
    * ``script``: what successive :meth:`job_info` calls return once a job was
      started; an ``Exception`` item is raised instead. The last item repeats.
      A COMPLETED reading moves the domain to the destination;
    * ``gone_after``: after that many :meth:`job_info` calls the domain has left
      the source although the readings still say UNBOUNDED (libvirt's domain
      vanishing before the job reports completion);
    * ``pre_error`` / ``start_error`` / ``post_error``: raised by
      :meth:`pre_live_migration` / :meth:`start_migration` /
      :meth:`post_live_migration`;
    * ``shared``: every host sees the same instances path; ``cpu_compatible``:
      the answer of :meth:`compare_cpu`;
    * ``after_abort``: the reading after :meth:`abort_job` (default CANCELLED; libvirt
      under load may report the aborted job FAILED with a generic error).

    After :meth:`abort_job` every reading is ``after_abort``. ``calls`` records every
    call; :meth:`calls_to` filters them by method name.
    """

    def __init__(
        self,
        env: simpy.Environment,
        *,
        hosts: Sequence[HostFacts] = (),
        instances: Mapping[str, str] | None = None,
        script: Sequence[JobInfo | BaseException] = (),
        gone_after: int | None = None,
        pre_error: BaseException | None = None,
        start_error: BaseException | None = None,
        post_error: BaseException | None = None,
        shared: bool = True,
        cpu_compatible: bool = True,
        after_abort: JobInfo | None = None,
    ) -> None:
        self.env = env
        self.hosts = {f.name: f for f in (hosts or [facts("h1"), facts("h2"), facts("h3")])}
        self.instances = dict(instances or {"vm1": "h1"})
        self.script = list(script or [*running(3), ended(JobType.COMPLETED)])
        self.gone_after = gone_after
        self.pre_error = pre_error
        self.start_error = start_error
        self.post_error = post_error
        self.shared = shared
        self.cpu_compatible = cpu_compatible
        self.after_abort = after_abort or ended(JobType.CANCELLED, error="canceled by client")
        self.calls: list[Call] = []
        self._jobs: dict[str, str] = {}  # instance -> dest of its job
        self._polls: dict[str, int] = {}
        self._aborted: set[str] = set()
        self._markers: dict[str, str] = {}  # marker -> host it was created on
        self.paused: set[str] = set()
        self.cpu: dict[str, float] = {}  # instance -> what cpu_utilisation answers (else 0)

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, args, kwargs, self.env.now))

    def calls_to(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    # -- facts ------------------------------------------------------------
    def host_names(self) -> list[str]:
        return list(self.hosts)

    def host_facts(self, host: str) -> HostFacts:
        self._record("host_facts", host)
        return self.hosts[host]

    def host_table(self) -> HostTable:
        self._record("host_table")
        return HostTable.from_facts(list(self.hosts.values()))

    def instance_host(self, instance: str) -> str | None:
        return self.instances.get(instance)

    def instance_running_on(self, instance: str, host: str) -> bool:
        self._record("instance_running_on", instance, host)
        return self.instances.get(instance) == host

    def cpu_utilisation(self, instance: str) -> float:
        self._record("cpu_utilisation", instance)
        if instance not in self.instances:
            raise KeyError(instance)
        return self.cpu.get(instance, 0.0)

    def compare_cpu(self, source: str, dest: str) -> bool:
        self._record("compare_cpu", source, dest)
        return self.cpu_compatible

    def create_shared_storage_test_file(self, dest: str) -> str:
        name = f"marker-{len(self._markers) + 1}"
        self._record("create_shared_storage_test_file", dest)
        self._markers[name] = dest
        return name

    def check_shared_storage_test_file(self, source: str, name: str) -> bool:
        self._record("check_shared_storage_test_file", source, name)
        return name in self._markers and (self.shared or self._markers[name] == source)

    def cleanup_shared_storage_test_file(self, dest: str, name: str) -> None:
        self._record("cleanup_shared_storage_test_file", dest, name)
        self._markers.pop(name, None)

    # -- actions ----------------------------------------------------------
    def pre_live_migration(self, instance: str, dest: str, block_migration: bool) -> None:
        self._record("pre_live_migration", instance, dest, block_migration)
        if self.pre_error is not None:
            raise self.pre_error

    def start_migration(self, instance: str, dest: str, *, uri: str, flags: int,
                        bandwidth_mib: int) -> None:
        self._record("start_migration", instance, dest, uri=uri, flags=flags,
                     bandwidth_mib=bandwidth_mib)
        if self.start_error is not None:
            raise self.start_error
        self._jobs[instance] = dest
        self._polls[instance] = 0

    def set_max_downtime(self, instance: str, seconds: float) -> None:
        self._record("set_max_downtime", instance, seconds)

    def job_info(self, instance: str) -> JobInfo:
        self._record("job_info", instance)
        if instance not in self._jobs:
            return JobInfo(type=JobType.NONE)
        if instance in self._aborted:
            return self.after_abort
        count = self._polls[instance]
        self._polls[instance] = count + 1
        item = self.script[min(count, len(self.script) - 1)]
        if (self.gone_after is not None and count + 1 >= self.gone_after) or (
            isinstance(item, JobInfo) and item.type is JobType.COMPLETED
        ):
            self.instances[instance] = self._jobs[instance]
        if isinstance(item, BaseException):
            raise item
        return item

    def abort_job(self, instance: str) -> None:
        self._record("abort_job", instance)
        self._aborted.add(instance)

    def post_live_migration(self, instance: str, source: str, dest: str) -> None:
        self._record("post_live_migration", instance, source, dest)
        if self.post_error is not None:
            raise self.post_error

    def rollback_live_migration(self, instance: str, source: str, dest: str,
                                block_migration: bool) -> None:
        self._record("rollback_live_migration", instance, source, dest, block_migration)

    def start_postcopy(self, instance: str) -> None:
        self._record("start_postcopy", instance)

    def suspend(self, instance: str) -> None:
        self._record("suspend", instance)
        self.paused.add(instance)

    def resume(self, instance: str) -> None:
        self._record("resume", instance)
        self.paused.discard(instance)

    def attach_job(self, instance: str, source: str, dest: str) -> None:
        self._record("attach_job", instance, source, dest)

    def inject_fault(self, kind: FaultKind, host: str) -> None:
        self._record("inject_fault", kind, host)

    def world(self) -> WorldFacts:
        domains = tuple(
            DomainFact(instance=name, host=host,
                       state=DomainState.PAUSED if name in self.paused else DomainState.RUNNING)
            for name, host in self.instances.items()
        )
        return WorldFacts(domains=domains, claims={})

    def close(self) -> None:
        self._record("close")


def orchestrate(
    driver: Any,
    vms: Iterable[VmSpec],
    *,
    migration: MigrationPolicy | None = None,
    scheduler: SchedulerPolicy | None = None,
    seed: int = 0,
) -> tuple[Orchestrator, StateStore]:
    """An orchestrator over ``driver`` whose store holds ``vms``."""
    store = StateStore(lambda: driver.env.now)
    store.add_instances(vms)
    policy = Policy(scheduler=scheduler or SchedulerPolicy(),
                    migration=migration or MigrationPolicy())
    return Orchestrator(driver, store, policy, random.Random(seed)), store


def body(dest: str | None = None, *, block: bool = False, over_commit: bool = False
         ) -> dict[str, object]:
    """An ``os-migrateLive`` request body."""
    return {"host": dest, "block_migration": block, "disk_over_commit": over_commit}


def replace(obj: Any, **changes: Any) -> Any:
    return dataclasses.replace(obj, **changes)


def poll_job(drv: Any, vm: str, until: Callable[[JobInfo], bool], *, timeout: float,
             step: float) -> list[JobInfo]:
    """A real-time driver's ``job_info(vm)`` every ``step`` seconds until ``until(reading)``;
    every reading, in order. Fails the test after ``timeout`` seconds."""
    seen: list[JobInfo] = []
    deadline = time.monotonic() + timeout
    while True:
        info = drv.job_info(vm)
        seen.append(info)
        if until(info):
            return seen
        assert time.monotonic() < deadline, f"{vm}: still {info} after {timeout} s"
        time.sleep(step)
