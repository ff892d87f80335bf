"""Watching a running migration job, and the two ways it ends: post-migration or rollback.

The poll (Nova's ``_live_migration_monitor``), every ``poll_interval``:

1. read the job (``job_info``); a job that switched to post-copy moves the
   record to ``running (post-copy)``;
2. while it runs: apply the downtime step in force (``migrateSetMaxDowntime``),
   carry out an operator's abort or force-complete, the run's horizon (an
   abort, recorded as ``HorizonReached``) and the completion timeout's action
   (abort, or force-complete);
3. a failed or cancelled job rolls back (``cancelled`` when the controller had
   aborted it, whatever libvirt calls its end); a completed one (or, outside
   post-copy, a domain that left its source) is post-migrated.

Force-complete switches to post-copy when the job was started with
``VIR_MIGRATE_POSTCOPY``, else pauses the guest so that the next round
converges; a guest the testbed paused is resumed on whichever host it ends on.

Every ending asks the driver where the guest really runs and records that,
never what the flow expected: a guest that runs nowhere any more (its host
died, even after the switchover or while the migration was queued) is recorded
in ERROR on the host it ran on last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import simpy

from livemig.core.errors import HorizonReached, LiveMigrationFailed, NovaException
from livemig.core.flags import POSTCOPY
from livemig.core.model import MigrationStatus, Policy, TimeoutAction, VmState
from livemig.core.policy import (
    completion_timeout,
    downtime_at,
    downtime_steps,
    progress,
    timed_out,
)
from livemig.core.state import MigrationRecord, StateStore
from livemig.drivers.base import Driver, JobInfo, JobType

Process = Generator[simpy.Event, Any, None]


@dataclass(kw_only=True)
class Job:
    """One migration as this controller carries it out (in memory only).

    The durable facts are in the migration record; these are the requests an
    operator made since the last poll, and the process doing the work.
    """

    mig_id: int
    instance: str
    source: str
    dest: str | None = None
    block_migration: bool = False
    vm_state: VmState = VmState.ACTIVE  # to restore if the guest stays on its source
    flags: int = 0
    data_gb: float = 0.0
    process: simpy.Process | None = None
    abort_requested: bool = False
    force_requested: bool = False
    halted: bool = False  # the run reached its horizon: abort at the next poll
    throttle: int = 0  # the highest auto-converge throttle seen, percent


class Monitor:
    """Polls jobs and ends migrations; shared by the orchestrator and its recovery."""

    def __init__(
        self,
        driver: Driver,
        store: StateStore,
        policy: Policy,
        on_finish: Callable[[MigrationRecord], None] | None = None,
    ) -> None:
        self.driver = driver
        self.store = store
        self.policy = policy
        self.env = driver.env
        self.on_finish = on_finish
        self.failed_hosts: set[str] = set()  # hosts known to have gone down (faults)
        self.horizon = float("inf")  # the run's until: (for HorizonReached's message)
        self.on_arrival: Callable[[MigrationRecord], None] | None = None  # after a post

    # -- the poll -------------------------------------------------------------
    def watch(self, job: Job) -> Process:
        """Poll ``job`` until it ends; then post-migrate or roll back."""
        env, driver, store, mig = self.env, self.driver, self.store, self.policy.migration
        assert job.dest is not None
        name, source = job.instance, job.source
        timeout = completion_timeout(mig.completion_timeout, job.data_gb)
        schedule = downtime_steps(mig.max_downtime, mig.downtime_steps, mig.downtime_delay,
                                  job.data_gb)
        record = store.migration(job.mig_id)
        status = record.status
        downtime = record.max_downtime
        acting = False  # an abort or a force-complete has been sent to the driver
        timeout_fired = record.timeout_action is not None
        # an abort was sent (here, or by the controller before a restart): the job's end
        # is ours even when libvirt then calls it failed (it may, under load)
        aborted = record.timeout_action == TimeoutAction.ABORT.value
        while True:
            yield env.timeout(mig.poll_interval)
            try:
                info = driver.job_info(name)
                if info.auto_converge_throttle > job.throttle:
                    job.throttle = info.auto_converge_throttle  # completed stats lack it
                if info.postcopy and status is not MigrationStatus.POSTCOPY:
                    status = MigrationStatus.POSTCOPY
                    store.update_migration(job.mig_id, status=status, postcopy_at=env.now)
                if info.type is JobType.UNBOUNDED and not info.postcopy:
                    step = downtime_at(schedule, info.time_elapsed)
                    if step is not None and step != downtime:
                        driver.set_max_downtime(name, step)
                        downtime = step
                        store.update_migration(job.mig_id, max_downtime=step)
                    if not acting and (job.abort_requested or job.halted):
                        driver.abort_job(name)
                        acting = aborted = True
                    elif not acting and job.force_requested:
                        self._force_complete(job)
                        acting = True
                    elif not acting and not timeout_fired and timed_out(info.time_elapsed,
                                                                        timeout):
                        timeout_fired = True
                        store.update_migration(job.mig_id,
                                               timeout_action=mig.timeout_action.value)
                        if mig.timeout_action is TimeoutAction.ABORT:
                            driver.abort_job(name)
                            aborted = True
                        else:
                            self._force_complete(job)
                        acting = True
                if info.type in (JobType.FAILED, JobType.CANCELLED):
                    ended = (MigrationStatus.CANCELLED
                             if info.type is JobType.CANCELLED or aborted
                             else MigrationStatus.FAILED)
                    exc: NovaException = LiveMigrationFailed(
                        reason=info.error or info.type.value)
                    if job.halted and ended is MigrationStatus.CANCELLED:
                        exc = HorizonReached(until=f"{self.horizon:g}", state=status.value,
                                             resolution="aborted; the guest stays on "
                                             "its source")
                    self.rollback(job, ended, exc, info)
                    return
                done = info.type is JobType.COMPLETED or (
                    not info.postcopy and not driver.instance_running_on(name, source)
                )
            except Exception as exc:  # noqa: BLE001 - the driver failed while watching
                self.monitoring_failed(job, exc)
                return
            if done:
                self.post(job)
                return

    def _force_complete(self, job: Job) -> None:
        """Post-copy if the job permits it, else pause the guest (it then converges)."""
        if job.flags & POSTCOPY:
            self.driver.start_postcopy(job.instance)
        else:
            self.driver.suspend(job.instance)
            self.store.update_migration(job.mig_id, paused_guest=True)

    # -- endings --------------------------------------------------------------
    def post(self, job: Job) -> None:
        """The domain left the source: the instance is on dest, whatever cleanup says."""
        store, driver, name = self.store, self.driver, job.instance
        assert job.dest is not None
        store.notify(name, "compute.instance.live_migration._post.start")
        failure: Exception | None = None
        try:
            driver.post_live_migration(name, job.source, job.dest)
        except Exception as exc:  # noqa: BLE001 - recorded; the guest runs on dest anyway
            failure = exc
        final = _reading(driver, name)
        if self._lost_on(name, job.dest):  # dest died after the switchover
            store.update_instance(name, host=job.dest, vm_state=VmState.ERROR, task_state=None)
        else:
            store.update_instance(name, host=job.dest, vm_state=VmState.ACTIVE,
                                  task_state=None)
        self._resume_guest(job)
        store.notify(name, "compute.instance.live_migration._post.end")
        status = MigrationStatus.COMPLETED if failure is None else MigrationStatus.ERROR
        record = self.finish(job.mig_id, status, failure, final, job.throttle)
        if self.on_arrival is not None:
            self.on_arrival(record)

    def rollback(
        self,
        job: Job,
        status: MigrationStatus,
        exc: BaseException,
        info: JobInfo | None = None,
    ) -> None:
        """Clean the destination, then record the instance where it really runs."""
        store, name = self.store, job.instance
        store.notify(name, "compute.instance.live_migration._rollback.start")
        where = self._where(name)
        cleanup: Exception | None = None
        if job.dest is not None and (where is None or where != job.dest):
            try:
                self.driver.rollback_live_migration(name, job.source, job.dest,
                                                    job.block_migration)
            except Exception as err:  # noqa: BLE001 - recorded below
                # a destination known to be dead needs no cleanup: what it held died with it
                if job.dest not in self.failed_hosts:
                    cleanup = err
        self.settle(job, where)
        if where is not None and where == job.dest:
            status = MigrationStatus.ERROR  # it switched over after all: not a clean failure
        self._resume_guest(job)
        store.notify(name, "compute.instance.live_migration._rollback.end")
        note = None
        if cleanup is not None:  # the destination may still hold something: not clean
            status = MigrationStatus.ERROR
            note = f"rollback on {job.dest} failed: {_name(cleanup)}: {cleanup}"
        self.finish(job.mig_id, status, exc, info, job.throttle, note=note)

    def monitoring_failed(self, job: Job, exc: BaseException) -> None:
        """The driver failed while watching: stop the job if possible, then settle."""
        with contextlib.suppress(Exception):
            self.driver.abort_job(job.instance)
        self.rollback(job, MigrationStatus.FAILED, exc)

    def _lost_on(self, name: str, host: str) -> bool:
        """The guest of ``name`` runs nowhere although ``host`` can be asked, or is known
        to have died (its guests with it): a dead guest is never recorded ACTIVE."""
        if self._where(name) is not None:
            return False
        if host in self.failed_hosts:
            return True
        try:
            world = self.driver.world()
        except Exception:  # noqa: BLE001 - the driver cannot say: assume it runs there
            return False
        return host not in world.unreachable or host in world.powered_off

    def _where(self, name: str) -> str | None:
        try:
            return self.driver.instance_host(name)
        except Exception:  # noqa: BLE001 - the driver cannot say
            return None

    def give_back(self, job: Job) -> str | None:
        """A migration that never started a job ends: the instance stays where the driver
        says it runs (its source, as it was), or goes to ERROR if it died meanwhile."""
        return self.settle(job, self._where(job.instance))

    def settle(self, job: Job, where: str | None) -> str | None:
        """Record the instance where the driver says it runs (``where``) after a failed
        migration.

        * on its source: back to its old state;
        * on the destination (it switched over after all): post-migration, ACTIVE there;
        * nowhere, its source unreachable (but not known to have died or to be down) and
          no post-copy:
          left on the source as it was (the guest most likely still runs there; the
          invariants call it unverifiable);
        * nowhere: ERROR, on the host it last ran on (dest after a switch to post-copy).

        Returns the host the instance is now recorded on.
        """
        store, driver, name = self.store, self.driver, job.instance
        postcopy = self.store.migration(job.mig_id).postcopy_at is not None
        if where == job.source:
            store.update_instance(name, host=job.source, vm_state=job.vm_state, task_state=None)
            return job.source
        if where is not None and where == job.dest:
            with contextlib.suppress(Exception):
                driver.post_live_migration(name, job.source, job.dest)
            store.update_instance(name, host=job.dest, vm_state=VmState.ACTIVE, task_state=None)
            return job.dest
        try:
            world = driver.world()
            unreachable = set(world.unreachable) - set(world.powered_off)
        except Exception:  # noqa: BLE001
            unreachable = set()
        if (where is None and not postcopy and job.source in unreachable
                and job.source not in self.failed_hosts):
            store.update_instance(name, host=job.source, vm_state=job.vm_state, task_state=None)
            return job.source
        last = job.dest if postcopy and job.dest is not None else job.source
        host = where or last
        store.update_instance(name, host=host, vm_state=VmState.ERROR, task_state=None)
        return host

    def _resume_guest(self, job: Job) -> None:
        """A guest force-complete paused is resumed where it ended up."""
        if self.store.migration(job.mig_id).paused_guest:
            with contextlib.suppress(Exception):
                self.driver.resume(job.instance)

    def finish(
        self,
        mig_id: int,
        status: MigrationStatus,
        exc: BaseException | None,
        info: JobInfo | None = None,
        throttle: int = 0,
        note: str | None = None,
    ) -> MigrationRecord:
        """Record the ending; ``throttle``: the highest auto-converge throttle seen;
        ``note``: appended to the error message (what went wrong afterwards)."""
        changes: dict[str, Any] = {"status": status, "finished_at": self.env.now}
        if exc is not None:
            text = str(exc) if note is None else f"{exc}; {note}"
            changes["error"] = _name(exc)
            changes["error_message"] = " ".join(text.split())
        if info is not None and info.type is not JobType.NONE:
            changes.update(
                total_time=info.time_elapsed,
                downtime=info.downtime,
                iterations=info.memory_iteration,
                data_transferred=info.data_processed,
                progress=progress(info.memory_total, info.memory_remaining),
                auto_converge_throttle=max(info.auto_converge_throttle, throttle),
            )
        record = self.store.update_migration(mig_id, **changes)
        if self.on_finish is not None:
            self.on_finish(record)
        return record


def _name(exc: BaseException) -> str:
    return exc.name if isinstance(exc, NovaException) else type(exc).__name__


def _reading(driver: Driver, name: str) -> JobInfo | None:
    try:
        return driver.job_info(name)
    except Exception:  # noqa: BLE001 - statistics are a nicety once the guest moved
        return None
