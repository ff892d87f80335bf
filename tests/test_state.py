"""The state store: compare-and-swap updates, notifications, migration records."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import GiB, vm

from livemig.core.errors import InstanceNotFound, UnexpectedTaskStateError
from livemig.core.model import MigrationStatus, TaskState, VmState
from livemig.core.state import InstanceRecord, MigrationRecord, StateStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> StateStore:
    s = StateStore(clock)
    s.add_instances([
        vm("vm1", "h1", ram=2 * GiB, disk=10 * GiB),
        vm("vm2", "h1", disk=10 * GiB, disk_allocated=3 * GiB, volume_backed=True),
        vm("vm3", "h2"),
    ])
    return s


# -- instances ---------------------------------------------------------------------


def test_instances_are_recorded_from_specs(store: StateStore) -> None:
    assert store.instance("vm1") == InstanceRecord(
        name="vm1", host="h1", vm_state=VmState.ACTIVE, task_state=None, ram=2 * GiB,
        vcpus=1, disk=10 * GiB, disk_allocated=10 * GiB, volume_backed=False,
    )
    vm2 = store.instance("vm2")
    assert (vm2.disk, vm2.disk_allocated, vm2.volume_backed) == (10 * GiB, 3 * GiB, True)


def test_unknown_instance_is_not_found(store: StateStore) -> None:
    with pytest.raises(InstanceNotFound) as err:
        store.instance("nope")
    assert "nope" in str(err.value)
    with pytest.raises(InstanceNotFound):
        store.update_instance("nope", task_state=None)


def test_instances_on_a_host(store: StateStore) -> None:
    assert [i.name for i in store.instances_on("h1")] == ["vm1", "vm2"]
    assert [i.name for i in store.instances_on("h9")] == []
    assert [i.name for i in store.instances()] == ["vm1", "vm2", "vm3"]


def test_records_are_frozen(store: StateStore) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        store.instance("vm1").host = "h2"  # type: ignore[misc]


# -- compare-and-swap -----------------------------------------------------------------


def test_cas_succeeds_when_task_state_is_the_expected_one(store: StateStore) -> None:
    new = store.update_instance("vm1", task_state=TaskState.MIGRATING, expected_task_state=None)
    assert new.task_state is TaskState.MIGRATING
    assert store.instance("vm1") == new


def test_cas_fails_and_leaves_record_unchanged(store: StateStore) -> None:
    store.update_instance("vm1", task_state=TaskState.MIGRATING, expected_task_state=None)
    before = store.instance("vm1")
    sent = len(store.notifications)
    with pytest.raises(UnexpectedTaskStateError) as err:
        store.update_instance("vm1", task_state=TaskState.MIGRATING, host="h2",
                              expected_task_state=None)
    assert "expecting None" in str(err.value) and "migrating" in str(err.value)
    assert store.instance("vm1") is before
    assert len(store.notifications) == sent  # a refused update notifies nothing


def test_exactly_one_of_two_concurrent_requests_wins(store: StateStore) -> None:
    outcomes = []
    for _ in range(2):
        try:
            store.update_instance("vm1", task_state=TaskState.MIGRATING,
                                  expected_task_state=None)
            outcomes.append("won")
        except UnexpectedTaskStateError:
            outcomes.append("lost")
    assert outcomes == ["won", "lost"]


def test_cas_on_a_non_none_expected_state(store: StateStore) -> None:
    store.update_instance("vm1", task_state=TaskState.MIGRATING)
    store.update_instance("vm1", task_state=None, expected_task_state=TaskState.MIGRATING)
    assert store.instance("vm1").task_state is None
    with pytest.raises(UnexpectedTaskStateError):
        store.update_instance("vm1", task_state=None, expected_task_state=TaskState.MIGRATING)


def test_update_without_expectation_always_applies(store: StateStore) -> None:
    store.update_instance("vm1", task_state=TaskState.MIGRATING)
    store.update_instance("vm1", task_state=TaskState.MIGRATING, host="h2")
    assert store.instance("vm1").host == "h2"


def test_update_leaves_other_instances_alone(store: StateStore) -> None:
    before = store.instance("vm2")
    store.update_instance("vm1", host="h3", vm_state=VmState.ERROR)
    assert store.instance("vm2") is before


def test_unknown_field_is_an_error(store: StateStore) -> None:
    with pytest.raises(TypeError):
        store.update_instance("vm1", colour="blue")


# -- notifications ------------------------------------------------------------------


def test_task_state_change_is_a_state_change(store: StateStore, clock: Clock) -> None:
    clock.now = 12.5
    store.update_instance("vm1", task_state=TaskState.MIGRATING, expected_task_state=None)
    (n,) = store.notifications
    assert n.time == 12.5 and n.instance == "vm1" and n.event == "compute.instance.update"
    assert (n.old_vm_state, n.new_vm_state) == (VmState.ACTIVE, VmState.ACTIVE)
    assert (n.old_task_state, n.new_task_state) == (None, TaskState.MIGRATING)
    assert n.state_change is True


def test_vm_state_change_is_a_state_change(store: StateStore) -> None:
    store.update_instance("vm1", vm_state=VmState.ERROR)
    assert store.notifications[-1].state_change is True
    assert store.notifications[-1].new_vm_state is VmState.ERROR


@pytest.mark.parametrize(
    "changes",
    [{"host": "h2"}, {"vm_state": VmState.ACTIVE}, {"task_state": None}, {}],
    ids=["host-only", "same-vm-state", "same-task-state", "nothing"],
)
def test_other_updates_are_plain_updates(store: StateStore, changes: dict) -> None:
    store.update_instance("vm1", **changes)
    (n,) = store.notifications
    assert n.event == "compute.instance.update" and n.state_change is False


def test_lifecycle_notification(store: StateStore, clock: Clock) -> None:
    clock.now = 3.0
    store.update_instance("vm1", task_state=TaskState.MIGRATING)
    store.notify("vm1", "compute.instance.live_migration.pre.start")
    n = store.notifications[-1]
    assert n.event == "compute.instance.live_migration.pre.start" and n.time == 3.0
    assert n.state_change is False
    assert n.old_task_state is n.new_task_state is TaskState.MIGRATING
    with pytest.raises(InstanceNotFound):
        store.notify("nope", "x")


# -- migrations -----------------------------------------------------------------------


def new_migration(store: StateStore, instance: str = "vm1") -> MigrationRecord:
    return store.add_migration(instance=instance, source="h1", dest=None,
                               block_migration=False, disk_over_commit=False, requested_at=1.0)


def test_migration_ids_count_from_one(store: StateStore) -> None:
    first, second = new_migration(store), new_migration(store, "vm2")
    assert (first.id, second.id) == (1, 2)
    assert first.status is MigrationStatus.ACCEPTED
    assert first.started_at is first.finished_at is first.error is None
    assert first.attempted_hosts == ()
    assert store.migration(2) == second
    assert store.migrations() == [first, second]


def test_update_migration_replaces_the_record(store: StateStore) -> None:
    first, second = new_migration(store), new_migration(store)
    updated = store.update_migration(1, status=MigrationStatus.RUNNING, started_at=2.0)
    assert updated == dataclasses.replace(first, status=MigrationStatus.RUNNING, started_at=2.0)
    assert store.migration(1) == updated and store.migration(2) == second
    assert first.status is MigrationStatus.ACCEPTED  # the old record is not mutated


def test_migrations_returns_a_copy(store: StateStore) -> None:
    new_migration(store)
    store.migrations().clear()
    assert len(store.migrations()) == 1


@pytest.mark.parametrize("status", list(MigrationStatus))
def test_finished_statuses(status: MigrationStatus) -> None:
    assert status.finished is (status in {MigrationStatus.COMPLETED, MigrationStatus.FAILED,
                                          MigrationStatus.ERROR, MigrationStatus.CANCELLED})


def test_migration_id_zero_is_not_a_record(store: StateStore) -> None:
    """Ids start at 1: 0 or a negative id must not wrap around to the last record."""
    new_migration(store)
    last = new_migration(store)
    for bad in (0, -1, 3):
        with pytest.raises(KeyError):
            store.migration(bad)
        with pytest.raises(KeyError):
            store.update_migration(bad, status=MigrationStatus.FAILED)
    assert store.migration(2) == last
