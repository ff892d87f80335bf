"""``live_migrate()``: request -> schedule -> check -> driver -> monitor -> post | rollback.

Written as SimPy processes, so the same code runs in simulated time
(``simpy.Environment``) and in real time (``simpy.rt.RealtimeEnvironment``):
the 0.5 s poll is ``yield env.timeout(poll_interval)`` in both.

Order of a request (modern Nova's, with the source's concurrency gate placed
before the checks so that the checks see the hosts as they are when the
transfer really starts, and the destination's claim follows them at once):

1. validate the request, check the instance's state, set task_state
   MIGRATING with ``expected_task_state=None`` (compare-and-swap);
2. wait for one of the source host's ``max_concurrent_per_host`` slots
   (migration status ``queued`` while waiting);
3. source check; explicit destination: destination, common and driver checks;
   no destination: the scheduler loop with ``ignore_hosts``;
4. ``pre_live_migration`` on the destination (status ``preparing``);
5. start the job with the flag bitmask, URI and bandwidth (status ``running``);
6. poll every ``poll_interval`` (:mod:`livemig.core.monitor`): downtime steps,
   operator actions, completion timeout; post-migration when the domain has
   left the source, rollback when the job failed.

A drain disables the host's compute service and requests a scheduler-chosen
migration of every instance on it; an instance whose migration (requested before
the drain began) completes into the drained host later is migrated away too.

Operator actions follow Nova's API: ``abort`` for a queued, preparing or
running migration (not in post-copy), ``force_complete`` for a running one;
anything else is refused with ``InvalidMigrationState``.

A controller restart: :meth:`Orchestrator.stop` abandons every process on the
spot (a dead process cleans nothing up), and a new orchestrator's
:meth:`Orchestrator.recover` resolves every unfinished migration record by
asking the driver: a job still running is watched again, one that ended is
post-migrated or rolled back according to where the domain runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any

import simpy

from livemig.core import checks
from livemig.core.errors import PRECHECK_FAILURES as HAVANA_PRECHECK_FAILURES
from livemig.core.errors import (
    BadRequest,
    ComputeServiceUnavailable,
    ControllerRestarted,
    HorizonReached,
    InstanceInvalidState,
    InstanceNotFound,
    InvalidCPUInfo,
    InvalidMigrationState,
    MigrationAborted,
    MigrationNotFoundForInstance,
    MigrationPreCheckError,
    NoValidHost,
    UnexpectedTaskStateError,
)
from livemig.core.flags import parse_flags
from livemig.core.model import MigrationStatus, Policy, TaskState, VmState
from livemig.core.monitor import Job, Monitor
from livemig.core.policy import data_gb, migration_flags
from livemig.core.scheduler import find_destination, select_host
from livemig.core.state import InstanceRecord, MigrationRecord, StateStore
from livemig.core.units import MiB
from livemig.drivers.base import Driver, HostFacts

REQUEST_REJECTIONS = (BadRequest, InstanceNotFound, InstanceInvalidState, UnexpectedTaskStateError)
"""Refused before the instance is touched: the instance's records stay as they are."""

PRECHECK_FAILURES = (
    *HAVANA_PRECHECK_FAILURES,
    InvalidCPUInfo,
    MigrationPreCheckError,
    NoValidHost,
)
"""Modern Nova's conductor list: vm_state restored, task_state None, status error.

Havana's narrower list sent NoValidHost and the memory/disk shortfalls to ERROR."""

Process = Generator[simpy.Event, Any, None]


class _Died:
    """The interrupt cause of :meth:`Orchestrator.stop`: the controller process died."""


class _Abort:
    """The interrupt cause of an abort request for a queued migration."""


class _Halt:
    """The interrupt cause of :meth:`Orchestrator.halt` for a queued migration."""


DIED = _Died()
ABORT = _Abort()
HALT = _Halt()

ABORTABLE = (MigrationStatus.QUEUED, MigrationStatus.PREPARING, MigrationStatus.RUNNING)
FORCEABLE = (MigrationStatus.RUNNING,)

ChecksPassedHook = Callable[[str, str, str], None]  # (instance, source, dest)


class Orchestrator:
    """Runs live migrations against one driver, recording them in a store."""

    def __init__(
        self,
        driver: Driver,
        store: StateStore,
        policy: Policy,
        rng: random.Random,
        on_finish: Callable[[MigrationRecord], None] | None = None,
        disabled_hosts: Iterable[str] = (),
        failed_hosts: Iterable[str] = (),
        drains: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.env = driver.env
        self.driver = driver
        self.store = store
        self.policy = policy
        self.rng = rng
        self.monitor = Monitor(driver, store, policy, on_finish)
        self.monitor.failed_hosts.update(failed_hosts)
        mig = policy.migration
        self.live_flags = migration_flags(parse_flags(mig.live_migration_flag), mig)
        self.block_flags = migration_flags(parse_flags(mig.block_migration_flag), mig)
        self.bandwidth_mib = bandwidth_mib(mig.bandwidth)
        self._slots: dict[str, simpy.Resource] = {}
        self._jobs: dict[str, Job] = {}  # instance -> its migration under way
        self.disabled_hosts: set[str] = set(disabled_hosts)  # disabled by an operator
        # host -> its drain's request: {"at": s, "block_migration": b, "disk_over_commit": b}
        self.drains: dict[str, dict[str, Any]] = {h: dict(d) for h, d in (drains or {}).items()}
        self.monitor.on_arrival = self._arrived
        self.spawn_hooks: list[Callable[[simpy.Process], None]] = []  # follow-up migrations
        self.checks_passed_hooks: list[ChecksPassedHook] = []
        self.alive = True
        self.halted = False  # the run reached its horizon: nothing new starts

    # -- API --------------------------------------------------------------
    def live_migrate(self, instance: str, body: Mapping[str, object]) -> simpy.Process:
        """Accept an ``os-migrateLive`` request; returns the process that carries it out.

        As Nova's API does, the request is checked and the instance's task_state set
        at once (the migration record is written then); the rest is the process's. A
        controller that dies before the process runs leaves the record ``accepted``
        for the next controller's :meth:`recover`, and the process does nothing.
        """
        job = self._accept(instance, body)
        return self.env.process(self._live_migrate(job, body))

    def _accept(self, name: str, body: Mapping[str, object]) -> Job | None:
        """Steps 1 of the module doc; ``None`` when the request is refused (recorded)."""
        store, env = self.store, self.env
        requested_host = body.get("host")
        mig = store.add_migration(
            instance=name,
            source=None,
            dest=requested_host if isinstance(requested_host, str) else None,
            block_migration=body.get("block_migration") is True,
            disk_over_commit=body.get("disk_over_commit") is True,
            requested_at=env.now,
        )
        try:
            req = checks.validate_request(body)
            inst = store.instance(name)
            checks.check_instance_state(inst)
            inst = store.update_instance(
                name, task_state=TaskState.MIGRATING, expected_task_state=None
            )
        except REQUEST_REJECTIONS as exc:
            self.monitor.finish(mig.id, MigrationStatus.ERROR, exc)
            return None
        store.update_migration(mig.id, source=inst.host)
        job = Job(mig_id=mig.id, instance=name, source=inst.host,
                  block_migration=req.block_migration, vm_state=inst.vm_state)
        self._jobs[name] = job
        return job

    def drain(
        self, host: str, block_migration: bool, disk_over_commit: bool
    ) -> list[simpy.Process]:
        """Disable ``host``'s compute service, then request a scheduler-chosen live
        migration of every instance on it (``nova service-disable`` + host-evacuate-live)."""
        self.disabled_hosts.add(host)
        self.drains[host] = {"at": self.env.now, "block_migration": block_migration,
                             "disk_over_commit": disk_over_commit}
        body = {"host": None, "block_migration": block_migration,
                "disk_over_commit": disk_over_commit}
        return [self.live_migrate(i.name, body) for i in self.store.instances_on(host)]

    def _arrived(self, record: MigrationRecord) -> None:
        """A drain also moves what arrives while it runs: an instance whose migration,
        requested before the host's drain began, completed into the drained host is
        live-migrated away (scheduler's choice) by a follow-up migration."""
        drain = self.drains.get(record.dest or "")
        if (drain is None or record.status is not MigrationStatus.COMPLETED
                or record.requested_at > drain["at"] or not self.alive or self.halted):
            return
        inst = self.store.instance(record.instance)
        if inst.host != record.dest or inst.vm_state is VmState.ERROR:
            return
        body = {"host": None, "block_migration": drain["block_migration"],
                "disk_over_commit": drain["disk_over_commit"]}
        process = self.live_migrate(record.instance, body)
        for hook in list(self.spawn_hooks):
            hook(process)

    def abort(self, instance: str) -> None:
        """``DELETE /servers/{id}/migrations/{id}``: abort a queued, preparing or running
        migration. Raises ``MigrationNotFoundForInstance`` or ``InvalidMigrationState``."""
        job, record = self._job_in(instance, ABORTABLE, "abort live migration")
        if record.status is MigrationStatus.QUEUED:
            assert job.process is not None
            job.process.interrupt(ABORT)
        else:
            job.abort_requested = True

    def force_complete(self, instance: str) -> None:
        """``POST .../migrations/{id}/action {"force_complete": null}``: a running one only."""
        job, _ = self._job_in(instance, FORCEABLE, "force complete")
        job.force_requested = True

    def _job_in(
        self, instance: str, allowed: tuple[MigrationStatus, ...], method: str
    ) -> tuple[Job, MigrationRecord]:
        job = self._jobs.get(instance)
        if job is None:
            raise MigrationNotFoundForInstance(instance_id=instance)
        record = self.store.migration(job.mig_id)
        if record.status not in allowed:
            raise InvalidMigrationState(migration_id=job.mig_id, instance_uuid=instance,
                                        state=record.status.value, method=method)
        return job, record

    def host_failed(self, host: str) -> list[str]:
        """After ``host`` went down: its instances that run nowhere now go to ERROR
        (host kept). Instances being migrated are left to their migration's monitor,
        which learns that the host died. Returns the names put in ERROR."""
        self.monitor.failed_hosts.add(host)
        return self._reconcile_idle(host)

    def host_recovered(self, host: str) -> list[str]:
        """After ``host`` came back (nova-compute's start-up sync): instances recorded
        there that run nowhere go to ERROR. Returns the names put in ERROR."""
        self.monitor.failed_hosts.discard(host)
        return self._reconcile_idle(host)

    @property
    def failed_hosts(self) -> set[str]:
        return self.monitor.failed_hosts

    def _reconcile_idle(self, host: str) -> list[str]:
        lost = []
        for inst in self.store.instances_on(host):
            if inst.task_state is not None or inst.vm_state is VmState.ERROR:
                continue
            if self.driver.instance_host(inst.name) is None:
                self.store.update_instance(inst.name, vm_state=VmState.ERROR)
                lost.append(inst.name)
        return lost

    def halt(self, until: float) -> None:
        """The run reached its horizon ``until``: queued migrations are cancelled now,
        running pre-copy jobs aborted at their next poll (``HorizonReached``), and no new
        migration starts; a job in post-copy (which cannot be aborted) finishes."""
        self.halted = True
        self.monitor.horizon = until
        for job in list(self._jobs.values()):
            record = self.store.migration(job.mig_id)
            if record.status is MigrationStatus.QUEUED and job.process is not None:
                job.process.interrupt(HALT)
            else:
                job.halted = True

    def stop(self) -> None:
        """The controller dies: every process stops where it is, cleaning nothing up."""
        self.alive = False
        for job in list(self._jobs.values()):
            if job.process is not None and job.process.is_alive:
                job.process.interrupt(DIED)
        self._jobs.clear()

    def recover(self) -> list[simpy.Process]:
        """A new controller resolves every unfinished migration record (see module doc)."""
        return [self.env.process(self._recover(record))
                for record in self.store.migrations() if not record.status.finished]

    # -- the flow -----------------------------------------------------------
    def _live_migrate(self, job: Job | None, body: Mapping[str, object]) -> Process:
        if job is None:  # refused by the API
            return
        if not self.alive or self._jobs.get(job.instance) is not job:
            return  # the controller died before it could start: recover() resolves it
        store, env, name, source = self.store, self.env, job.instance, job.source
        job.process = env.active_process
        req = checks.validate_request(body)
        slot = self._slot(source).request()
        try:
            if not slot.triggered:
                store.update_migration(job.mig_id, status=MigrationStatus.QUEUED)
            try:
                if self.halted or job.halted:
                    raise simpy.Interrupt(HALT)  # accepted in the instant of the horizon
                yield slot
            except simpy.Interrupt as stop:
                if stop.cause is DIED:
                    return
                self.monitor.give_back(job)
                exc: Exception = MigrationAborted(migration_id=job.mig_id, state="queued")
                if stop.cause is HALT:
                    exc = HorizonReached(until=f"{self.monitor.horizon:g}", state="queued",
                                         resolution="cancelled")
                self.monitor.finish(job.mig_id, MigrationStatus.CANCELLED, exc)
                return
            yield from self._migrate(job, store.instance(name), req)
        except simpy.Interrupt as stop:
            if stop.cause is not DIED:
                raise
        finally:
            self._release(source, slot)
            if self._jobs.get(name) is job:
                del self._jobs[name]

    def _migrate(
        self, job: Job, inst: InstanceRecord, req: checks.LiveMigrateRequest
    ) -> Process:
        store, driver, env, monitor = self.store, self.driver, self.env, self.monitor
        mig_id, source = job.mig_id, job.source
        try:
            dest, rejected = self._choose_destination(inst, req)
        except PRECHECK_FAILURES as exc:
            monitor.give_back(job)  # as it was, unless its host died meanwhile
            monitor.finish(mig_id, MigrationStatus.ERROR, exc)
            return
        except Exception as exc:  # noqa: BLE001 - Nova: anything else is an ERROR
            store.update_instance(inst.name, vm_state=VmState.ERROR, task_state=None)
            monitor.finish(mig_id, MigrationStatus.FAILED, exc)
            return
        job.dest = dest
        store.update_migration(
            mig_id, dest=dest, attempted_hosts=tuple(rejected), status=MigrationStatus.PREPARING
        )
        for hook in list(self.checks_passed_hooks):
            hook(inst.name, source, dest)

        store.notify(inst.name, "compute.instance.live_migration.pre.start")
        try:
            driver.pre_live_migration(inst.name, dest, req.block_migration)
        except Exception as exc:  # noqa: BLE001 - any failure here rolls back
            monitor.rollback(job, MigrationStatus.ERROR, exc)
            return
        store.notify(inst.name, "compute.instance.live_migration.pre.end")

        job.flags = self.block_flags if req.block_migration else self.live_flags
        disks = [inst.disk_allocated] if req.block_migration and not inst.volume_backed else []
        job.data_gb = data_gb(inst.ram, disks)
        try:
            driver.start_migration(
                inst.name, dest, uri=self.policy.migration.uri % dest, flags=job.flags,
                bandwidth_mib=self.bandwidth_mib,
            )
        except Exception as exc:  # noqa: BLE001 - migrateToURI raised at once
            monitor.rollback(job, MigrationStatus.FAILED, exc)
            return
        store.update_migration(mig_id, status=MigrationStatus.RUNNING, started_at=env.now,
                               flags=job.flags)
        yield from monitor.watch(job)

    # -- recovery after a controller restart ----------------------------------
    def _recover(self, record: MigrationRecord) -> Process:
        if not self.alive:
            return  # this controller died too before it could start
        store, driver, monitor = self.store, self.driver, self.monitor
        name = record.instance
        inst = store.instance(name)
        vm_state = inst.vm_state if inst.vm_state is not VmState.ERROR else VmState.ACTIVE
        job = Job(mig_id=record.id, instance=name, source=record.source or inst.host,
                  dest=record.dest, block_migration=record.block_migration, vm_state=vm_state,
                  flags=record.flags, process=self.env.active_process, halted=self.halted)
        status = record.status
        if status in (MigrationStatus.RUNNING, MigrationStatus.POSTCOPY) and job.dest:
            disks = ([inst.disk_allocated]
                     if record.block_migration and not inst.volume_backed else [])
            job.data_gb = data_gb(inst.ram, disks)
            self._jobs[name] = job
            slot = self._slot(job.source).request()  # it holds a slot, granted or not
            try:
                driver.attach_job(name, job.source, job.dest)
                yield from monitor.watch(job)
            except simpy.Interrupt as stop:
                if stop.cause is not DIED:
                    raise
            except Exception as exc:  # noqa: BLE001 - could not even adopt the job
                monitor.monitoring_failed(job, exc)
            finally:
                self._release(job.source, slot)
                if self._jobs.get(name) is job:
                    del self._jobs[name]
            return
        # Never started on the driver (accepted, queued), or stopped while preparing the
        # destination: nothing is running; clean the destination and give the instance back.
        exc = ControllerRestarted(state=status.value, resolution="nothing started; cleaned up")
        if status is MigrationStatus.PREPARING and job.dest:
            monitor.rollback(job, MigrationStatus.ERROR, exc)
        else:
            monitor.give_back(job)  # where it runs; ERROR if its host died meanwhile
            monitor.finish(record.id, MigrationStatus.ERROR, exc)

    def _choose_destination(
        self, inst: InstanceRecord, req: checks.LiveMigrateRequest
    ) -> tuple[str, list[str]]:
        mig = self.policy.migration
        now = self.env.now
        source = inst.host
        checks.check_source(source, self._facts(source), now, mig.service_down_time)
        if req.host is not None:
            checks.check_destination(
                inst, req.host, self._facts(req.host), now, mig.service_down_time
            )
            self._verify(inst, req.host, req)
            return req.host, []

        def select(ignore_hosts: list[str]) -> str:
            return select_host(
                self.driver.host_table(), inst, ignore_hosts, self.policy.scheduler, now=now,
                service_down_time=mig.service_down_time, rng=self.rng,
                disabled_hosts=self.disabled_hosts,
            )

        return find_destination(
            source, select, lambda host: self._verify(inst, host, req),
            self.policy.scheduler.max_retries,
        )

    def _verify(self, inst: InstanceRecord, dest: str, req: checks.LiveMigrateRequest) -> None:
        """Common checks, then the driver's destination and source checks."""
        driver = self.driver
        src_facts, dest_facts = self._facts(inst.host), self._facts(dest)
        assert src_facts is not None  # the source check passed
        if dest_facts is None:
            raise ComputeServiceUnavailable(host=dest)
        checks.check_common(src_facts, dest_facts)
        available_mb = (
            checks.disk_available_mb(dest_facts, self.policy.migration.reserved_host_disk_mb)
            if req.block_migration
            else None
        )
        checks.check_cpu(driver.compare_cpu(inst.host, dest), src_facts, dest_facts)
        marker = driver.create_shared_storage_test_file(dest)
        try:
            shared = driver.check_shared_storage_test_file(inst.host, marker)
            checks.check_source_storage(
                inst, block_migration=req.block_migration, shared=shared,
                available_mb=available_mb, disk_over_commit=req.disk_over_commit,
            )
        finally:
            driver.cleanup_shared_storage_test_file(dest, marker)

    def _facts(self, host: str) -> HostFacts | None:
        try:
            return self.driver.host_facts(host)
        except KeyError:
            return None

    def _slot(self, host: str) -> simpy.Resource:
        slot = self._slots.get(host)
        if slot is None:
            slot = simpy.Resource(self.env, capacity=self.policy.migration.max_concurrent_per_host)
            self._slots[host] = slot
        return slot

    def _release(self, host: str, slot: simpy.resources.resource.Request) -> None:
        if slot.triggered:
            self._slot(host).release(slot)
        else:
            slot.cancel()


def bandwidth_mib(bandwidth: float) -> int:
    """libvirt's migration bandwidth argument (MiB/s, 0 = unlimited) for bytes/s.

    Rounded to the nearest MiB/s, at least 1 for any positive limit.

    >>> bandwidth_mib(0), bandwidth_mib(1.25e8), bandwidth_mib(1000.0)
    (0, 119, 1)
    """
    if bandwidth <= 0:
        return 0
    return max(1, round(bandwidth / MiB))
