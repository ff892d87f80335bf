"""Instance and migration records, compare-and-swap updates, notifications.

Like Nova's database layer: every instance update may name the task_state it
expects, and fails with ``UnexpectedTaskStateError`` when another request got
there first. Every update emits a notification (``compute.instance.update``);
it counts as a *state change* when vm_state or task_state changed
(``notify_on_state_change = vm_and_task_state``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from livemig.core.errors import InstanceNotFound, UnexpectedTaskStateError
from livemig.core.model import MigrationStatus, TaskState, VmSpec, VmState

_UNSET: Any = object()


@dataclass(frozen=True, kw_only=True)
class InstanceRecord:
    name: str
    host: str
    vm_state: VmState = VmState.ACTIVE
    task_state: TaskState | None = None
    ram: int  # bytes (the flavor)
    vcpus: int
    disk: int  # bytes, virtual size
    disk_allocated: int  # bytes really allocated
    volume_backed: bool = False


@dataclass(frozen=True, kw_only=True)
class MigrationRecord:
    id: int
    instance: str
    source: str | None
    dest: str | None  # the requested host, then the chosen one
    block_migration: bool
    disk_over_commit: bool
    requested_at: float
    status: MigrationStatus = MigrationStatus.ACCEPTED
    started_at: float | None = None  # the transfer began (migrateToURI called)
    finished_at: float | None = None  # post or rollback done
    error: str | None = None  # exception name
    error_message: str | None = None
    attempted_hosts: tuple[str, ...] = ()  # hosts the scheduler loop tried and rejected
    total_time: float | None = None  # seconds, the job's own time_elapsed
    downtime: float | None = None  # seconds
    iterations: int | None = None
    data_transferred: int | None = None  # bytes
    flags: int = 0  # the VIR_MIGRATE_* bitmask the job started with
    max_downtime: float | None = None  # seconds: the last limit set (downtime steps)
    progress: float | None = None  # percent, Nova's formula, at the last poll
    postcopy_at: float | None = None  # when the job switched to post-copy
    paused_guest: bool = False  # force-complete paused the guest (resumed at the end)
    auto_converge_throttle: int | None = None  # percent, the last one seen
    timeout_action: str | None = None  # the completion timeout's action, when it fired


@dataclass(frozen=True, kw_only=True)
class ActionRecord:
    """A scenario event applied to the run (operator action, fault, controller restart)."""

    time: float
    kind: str  # the event's key: abort, force_complete, host_down, controller_restart, ...
    target: str  # the instance or host it named ("" for a controller restart)
    outcome: str  # "ok", or why it was refused / what it did


@dataclass(frozen=True, kw_only=True)
class Notification:
    time: float
    instance: str
    event: str
    old_vm_state: VmState | None
    new_vm_state: VmState | None
    old_task_state: TaskState | None
    new_task_state: TaskState | None
    state_change: bool


class StateStore:
    """In-memory records; ``clock`` gives the time stamped on notifications."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._instances: dict[str, InstanceRecord] = {}
        self._on_host: dict[str, dict[str, None]] = {}  # host -> its instances, in order
        self._migrations: list[MigrationRecord] = []
        self.notifications: list[Notification] = []

    # -- instances --------------------------------------------------------
    def add_instances(self, vms: Iterable[VmSpec]) -> None:
        for vm in vms:
            self._on_host.setdefault(vm.host, {})[vm.name] = None
            self._instances[vm.name] = InstanceRecord(
                name=vm.name,
                host=vm.host,
                ram=vm.ram,
                vcpus=vm.vcpus,
                disk=vm.disk,
                disk_allocated=vm.disk if vm.disk_allocated is None else vm.disk_allocated,
                volume_backed=vm.volume_backed,
            )

    def instance(self, name: str) -> InstanceRecord:
        try:
            return self._instances[name]
        except KeyError:
            raise InstanceNotFound(instance=name) from None

    def instances(self) -> list[InstanceRecord]:
        return list(self._instances.values())

    def instances_on(self, host: str) -> list[InstanceRecord]:
        return [self._instances[name] for name in self._on_host.get(host, ())]

    def update_instance(
        self,
        name: str,
        *,
        expected_task_state: TaskState | None = _UNSET,
        **changes: Any,
    ) -> InstanceRecord:
        """Apply ``changes``; with ``expected_task_state``, only if it matches.

        >>> store = StateStore(lambda: 0.0)
        >>> store.add_instances([VmSpec(name="vm1", host="a", ram=1, used_memory=1,
        ...                             working_set=0, dirty_rate=0)])
        >>> _ = store.update_instance("vm1", task_state=TaskState.MIGRATING,
        ...                           expected_task_state=None)
        >>> store.update_instance("vm1", task_state=TaskState.MIGRATING,
        ...                       expected_task_state=None)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        UnexpectedTaskStateError: Unexpected task state: expecting None but ...
        """
        old = self.instance(name)
        if expected_task_state is not _UNSET and old.task_state != expected_task_state:
            raise UnexpectedTaskStateError(expected=expected_task_state, actual=old.task_state)
        new = dataclasses.replace(old, **changes)
        self._instances[name] = new
        if new.host != old.host:
            del self._on_host[old.host][name]
            self._on_host.setdefault(new.host, {})[name] = None
        self._notify(old, new, "compute.instance.update")
        return new

    def notify(self, instance: str, event: str) -> None:
        """A lifecycle notification (e.g. ``compute.instance.live_migration._post.end``)."""
        record = self.instance(instance)
        self._notify(record, record, event)

    def _notify(self, old: InstanceRecord, new: InstanceRecord, event: str) -> None:
        changed = old.vm_state != new.vm_state or old.task_state != new.task_state
        self.notifications.append(
            Notification(
                time=self._clock(),
                instance=new.name,
                event=event,
                old_vm_state=old.vm_state,
                new_vm_state=new.vm_state,
                old_task_state=old.task_state,
                new_task_state=new.task_state,
                state_change=changed,
            )
        )

    # -- migrations -------------------------------------------------------
    def add_migration(self, **fields: Any) -> MigrationRecord:
        record = MigrationRecord(id=len(self._migrations) + 1, **fields)
        self._migrations.append(record)
        return record

    def migration(self, migration_id: int) -> MigrationRecord:
        return self._migrations[self._position(migration_id)]

    def _position(self, migration_id: int) -> int:
        if not 1 <= migration_id <= len(self._migrations):
            raise KeyError(f"no migration record {migration_id}")
        return migration_id - 1

    def migrations(self) -> list[MigrationRecord]:
        return list(self._migrations)

    def update_migration(self, migration_id: int, **changes: Any) -> MigrationRecord:
        position = self._position(migration_id)
        new = dataclasses.replace(self._migrations[position], **changes)
        self._migrations[position] = new
        return new
