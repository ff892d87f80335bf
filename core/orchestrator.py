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
6. poll every ``poll_interval``; post-migration when the domain has left the
   source, rollback when the job failed.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Generator, Mapping
from typing import Any

import simpy

from livemig.core import checks
from livemig.core.errors import PRECHECK_FAILURES as HAVANA_PRECHECK_FAILURES
from livemig.core.errors import (
    BadRequest,
    ComputeServiceUnavailable,
    InstanceInvalidState,
    InstanceNotFound,
    InvalidCPUInfo,
    LiveMigrationFailed,
    MigrationPreCheckError,
    NovaException,
    NoValidHost,
    UnexpectedTaskStateError,
)
from livemig.core.flags import parse_flags
from livemig.core.model import MigrationStatus, Policy, TaskState, VmState
from livemig.core.policy import completion_timeout, data_gb, timed_out
from livemig.core.scheduler import find_destination, select_host
from livemig.core.state import InstanceRecord, MigrationRecord, StateStore
from livemig.core.units import MiB
from livemig.drivers.base import Driver, HostFacts, JobInfo, JobType

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


class Orchestrator:
    """Runs live migrations against one driver, recording them in a store."""

    def __init__(
        self,
        driver: Driver,
        store: StateStore,
        policy: Policy,
        rng: random.Random,
        on_finish: Callable[[MigrationRecord], None] | None = None,
    ) -> None:
        self.env = driver.env
        self.on_finish = on_finish
        self.driver = driver
        self.store = store
        self.policy = policy
        self.rng = rng
        mig = policy.migration
        self.live_flags = parse_flags(mig.live_migration_flag)
        self.block_flags = parse_flags(mig.block_migration_flag)
        self.bandwidth_mib = bandwidth_mib(mig.bandwidth)
        self._slots: dict[str, simpy.Resource] = {}
        self.disabled_hosts: set[str] = set()  # compute services disabled by an operator

    # -- API --------------------------------------------------------------
    def live_migrate(self, instance: str, body: Mapping[str, object]) -> simpy.Process:
        """Accept an ``os-migrateLive`` request; returns the process that carries it out."""
        return self.env.process(self._live_migrate(instance, body))

    def drain(
        self, host: str, block_migration: bool, disk_over_commit: bool
    ) -> list[simpy.Process]:
        """Disable ``host``'s compute service, then request a scheduler-chosen live
        migration of every instance on it (``nova service-disable`` + host-evacuate-live)."""
        self.disabled_hosts.add(host)
        body = {"host": None, "block_migration": block_migration,
                "disk_over_commit": disk_over_commit}
        return [self.live_migrate(i.name, body) for i in self.store.instances_on(host)]

    # -- the flow -----------------------------------------------------------
    def _live_migrate(self, name: str, body: Mapping[str, object]) -> Process:
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
            self._finish(mig.id, MigrationStatus.ERROR, exc)
            return
        source, vm_state = inst.host, inst.vm_state
        store.update_migration(mig.id, source=source)

        slot = self._slot(source).request()
        if not slot.triggered:
            store.update_migration(mig.id, status=MigrationStatus.QUEUED)
        yield slot
        try:
            yield from self._migrate(mig.id, inst, req, vm_state)
        finally:
            self._slot(source).release(slot)

    def _migrate(
        self, mig_id: int, inst: InstanceRecord, req: checks.LiveMigrateRequest, vm_state: VmState
    ) -> Process:
        store, driver, env = self.store, self.driver, self.env
        source = inst.host
        try:
            dest, rejected = self._choose_destination(inst, req)
        except PRECHECK_FAILURES as exc:
            store.update_instance(inst.name, vm_state=vm_state, task_state=None)
            self._finish(mig_id, MigrationStatus.ERROR, exc)
            return
        except Exception as exc:  # noqa: BLE001 - Nova: anything else is an ERROR
            store.update_instance(inst.name, vm_state=VmState.ERROR, task_state=None)
            self._finish(mig_id, MigrationStatus.FAILED, exc)
            return
        store.update_migration(
            mig_id, dest=dest, attempted_hosts=tuple(rejected), status=MigrationStatus.PREPARING
        )

        store.notify(inst.name, "compute.instance.live_migration.pre.start")
        try:
            driver.pre_live_migration(inst.name, dest, req.block_migration)
        except Exception as exc:  # noqa: BLE001 - any failure here rolls back
            self._rollback(mig_id, inst.name, source, dest, req, vm_state,
                           MigrationStatus.ERROR, exc)
            return
        store.notify(inst.name, "compute.instance.live_migration.pre.end")

        flags = self.block_flags if req.block_migration else self.live_flags
        try:
            driver.start_migration(
                inst.name, dest, uri=self.policy.migration.uri % dest, flags=flags,
                bandwidth_mib=self.bandwidth_mib,
            )
        except Exception as exc:  # noqa: BLE001 - migrateToURI raised at once
            self._rollback(mig_id, inst.name, source, dest, req, vm_state,
                           MigrationStatus.FAILED, exc)
            return
        store.update_migration(mig_id, status=MigrationStatus.RUNNING, started_at=env.now)

        poll = self.policy.migration.poll_interval
        disks = [inst.disk_allocated] if req.block_migration and not inst.volume_backed else []
        timeout = completion_timeout(
            self.policy.migration.completion_timeout, data_gb(inst.ram, disks)
        )
        aborted = False
        while True:
            yield env.timeout(poll)
            try:
                info = driver.job_info(inst.name)
                if (
                    not aborted
                    and info.type is JobType.UNBOUNDED
                    and timed_out(info.time_elapsed, timeout)
                ):
                    driver.abort_job(inst.name)  # live_migration_timeout_action = abort
                    aborted = True
                    continue
                if info.type in (JobType.FAILED, JobType.CANCELLED):
                    status = (MigrationStatus.CANCELLED if info.type is JobType.CANCELLED
                              else MigrationStatus.FAILED)
                    exc = LiveMigrationFailed(reason=info.error or info.type.value)
                    self._rollback(mig_id, inst.name, source, dest, req, vm_state, status,
                                   exc, info)
                    return
                done = info.type is JobType.COMPLETED or not driver.instance_running_on(
                    inst.name, source
                )
            except Exception as exc:  # noqa: BLE001 - the driver failed while watching
                self._monitoring_failed(mig_id, inst.name, source, dest, req, vm_state, exc)
                return
            if done:
                self._post(mig_id, inst.name, source, dest)
                return

    def _monitoring_failed(
        self,
        mig_id: int,
        name: str,
        source: str,
        dest: str,
        req: checks.LiveMigrateRequest,
        vm_state: VmState,
        exc: BaseException,
    ) -> None:
        """Stop the job if possible, then record the instance where it really runs."""
        with contextlib.suppress(Exception):
            self.driver.abort_job(name)
        try:
            where = self.driver.instance_host(name)
        except Exception:  # noqa: BLE001 - the driver cannot say: keep the source
            where = None
        if where == dest:
            self.store.update_instance(name, host=dest, vm_state=VmState.ACTIVE, task_state=None)
            self._finish(mig_id, MigrationStatus.ERROR, exc)
        else:
            self._rollback(mig_id, name, source, dest, req, vm_state, MigrationStatus.FAILED,
                           exc)

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

    # -- endings ------------------------------------------------------------
    def _post(self, mig_id: int, name: str, source: str, dest: str) -> None:
        """The domain left the source: the instance is on dest, whatever cleanup says."""
        store = self.store
        store.notify(name, "compute.instance.live_migration._post.start")
        failure: Exception | None = None
        try:
            self.driver.post_live_migration(name, source, dest)
        except Exception as exc:  # noqa: BLE001 - recorded; the guest runs on dest anyway
            failure = exc
        final = self.driver.job_info(name)
        store.update_instance(name, host=dest, vm_state=VmState.ACTIVE, task_state=None)
        store.notify(name, "compute.instance.live_migration._post.end")
        status = MigrationStatus.COMPLETED if failure is None else MigrationStatus.ERROR
        self._finish(mig_id, status, failure, final)

    def _rollback(
        self,
        mig_id: int,
        name: str,
        source: str,
        dest: str,
        req: checks.LiveMigrateRequest,
        vm_state: VmState,
        status: MigrationStatus,
        exc: BaseException,
        info: JobInfo | None = None,
    ) -> None:
        store = self.store
        store.notify(name, "compute.instance.live_migration._rollback.start")
        self.driver.rollback_live_migration(name, source, dest, req.block_migration)
        store.update_instance(name, host=source, vm_state=vm_state, task_state=None)
        store.notify(name, "compute.instance.live_migration._rollback.end")
        self._finish(mig_id, status, exc, info)

    def _finish(
        self,
        mig_id: int,
        status: MigrationStatus,
        exc: BaseException | None,
        info: JobInfo | None = None,
    ) -> None:
        changes: dict[str, Any] = {"status": status, "finished_at": self.env.now}
        if exc is not None:
            changes["error"] = exc.name if isinstance(exc, NovaException) else type(exc).__name__
            changes["error_message"] = str(exc)
        if info is not None and info.type is not JobType.NONE:
            changes.update(
                total_time=info.time_elapsed,
                downtime=info.downtime,
                iterations=info.memory_iteration,
                data_transferred=info.data_processed,
            )
        record = self.store.update_migration(mig_id, **changes)
        if self.on_finish is not None:
            self.on_finish(record)

    def _slot(self, host: str) -> simpy.Resource:
        slot = self._slots.get(host)
        if slot is None:
            slot = simpy.Resource(self.env, capacity=self.policy.migration.max_concurrent_per_host)
            self._slots[host] = slot
        return slot


def bandwidth_mib(bandwidth: float) -> int:
    """libvirt's migration bandwidth argument (MiB/s, 0 = unlimited) for bytes/s.

    Rounded to the nearest MiB/s, at least 1 for any positive limit.

    >>> bandwidth_mib(0), bandwidth_mib(1.25e8), bandwidth_mib(1000.0)
    (0, 119, 1)
    """
    if bandwidth <= 0:
        return 0
    return max(1, round(bandwidth / MiB))
