"""The state store: compare-and-swap updates, notifications, migration records.

Every behaviour test runs on both kinds of store (in memory and on a file); the
file-only properties (two connections, reopening, a killed writer) follow.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakes import GiB, vm

from livemig.core.errors import InstanceNotFound, UnexpectedTaskStateError
from livemig.core.model import MigrationStatus, TaskState, VmState
from livemig.core.state import (
    ActionRecord,
    InstanceRecord,
    MigrationRecord,
    MigrationStateConflict,
    StateStore,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> StateStore:
    path = ":memory:" if request.param == "memory" else tmp_path / "state.sqlite"
    s = StateStore(clock, path)
    request.addfinalizer(s.close)
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


def test_a_host_lists_its_instances_in_order_of_arrival(store: StateStore) -> None:
    store.update_instance("vm3", host="h1")
    store.update_instance("vm1", host="h2")
    assert [i.name for i in store.instances_on("h1")] == ["vm2", "vm3"]
    store.update_instance("vm1", host="h1")
    assert [i.name for i in store.instances_on("h1")] == ["vm2", "vm3", "vm1"]
    assert [i.name for i in store.instances_on("h2")] == []
    assert [i.name for i in store.instances()] == ["vm1", "vm2", "vm3"]  # order added


def test_duplicate_instance_names_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="duplicate instance name"):
        store.add_instances([vm("vm1", "h3")])
    assert store.instance("vm1").host == "h1"


def test_a_migration_id_cannot_change(store: StateStore) -> None:
    new_migration(store)
    with pytest.raises(ValueError, match="id cannot change"):
        store.update_migration(1, id=5)
    assert store.migration(1).id == 1


# -- migration compare-and-swap ---------------------------------------------------------


def test_migration_cas_on_one_status(store: StateStore) -> None:
    new_migration(store)
    running = store.update_migration(1, status=MigrationStatus.RUNNING,
                                     expected_status=MigrationStatus.ACCEPTED)
    with pytest.raises(MigrationStateConflict) as err:
        store.update_migration(1, status=MigrationStatus.CANCELLED,
                               expected_status=MigrationStatus.ACCEPTED)
    assert err.value.actual is MigrationStatus.RUNNING
    assert err.value.expected == (MigrationStatus.ACCEPTED,)
    assert "expected status accepted but it is running" in str(err.value)
    assert store.migration(1) == running


def test_migration_cas_on_several_statuses(store: StateStore) -> None:
    """An abort applies to a queued or running migration, not to a finished one."""
    new_migration(store)
    abortable = (MigrationStatus.QUEUED, MigrationStatus.RUNNING)
    store.update_migration(1, status=MigrationStatus.QUEUED)
    done = store.update_migration(1, status=MigrationStatus.CANCELLED, finished_at=4.0,
                                  expected_status=abortable)
    assert done.status is MigrationStatus.CANCELLED and done.finished_at == 4.0
    with pytest.raises(MigrationStateConflict):
        store.update_migration(1, status=MigrationStatus.CANCELLED, expected_status=abortable)
    with pytest.raises(MigrationStateConflict):  # a check with no change is still a check
        store.update_migration(1, expected_status=abortable)
    assert store.migration(1) == done


def test_every_migration_field_round_trips(store: StateStore) -> None:
    new_migration(store)
    changes = dict(
        status=MigrationStatus.POSTCOPY, dest="h2", attempted_hosts=("h3", "h4"),
        started_at=2.0, total_time=0.1 + 0.2, downtime=1e-3, iterations=7,
        data_transferred=3 * GiB + 1, flags=0x8000 | 0x2, max_downtime=0.3,
        progress=99.5, postcopy_at=5.25, paused_guest=True, auto_converge_throttle=40,
        timeout_action="force_complete", error="MigrationError", error_message="x\ny",
    )
    updated = store.update_migration(1, **changes)
    assert store.migrations() == [updated]
    (read,) = store.migrations()
    for name, value in changes.items():
        got = getattr(read, name)
        assert got == value and type(got) is type(value), name


# -- actions and metadata ---------------------------------------------------------------


def test_actions_are_stamped_and_kept_in_order(store: StateStore, clock: Clock) -> None:
    clock.now = 7.5
    first = store.record_action("abort", "vm1", "ok")
    clock.now = 9.0
    store.record_action("host_down", "h2", "ok")
    store.record_action("controller_restart", "", "reconciled 1 migration")
    assert first == ActionRecord(time=7.5, kind="abort", target="vm1", outcome="ok")
    assert [(a.time, a.kind, a.target) for a in store.actions()] == [
        (7.5, "abort", "vm1"), (9.0, "host_down", "h2"), (9.0, "controller_restart", ""),
    ]


def test_meta_holds_json_values(store: StateStore) -> None:
    assert store.meta("scenario") is None and store.meta("seed", 3) == 3
    value = {"hosts": ["h1", "h2"], "seed": 7, "rate": 0.1, "none": None, "yes": True}
    store.set_meta("scenario", value)
    store.set_meta("seed", 7)
    store.set_meta("seed", 8)
    assert store.meta("scenario") == value and store.meta("seed") == 8
    with pytest.raises(ValueError):
        store.set_meta("bad", float("nan"))


# -- a store file: two connections, reopening, a killed writer --------------------------


def file_store(path: Path, clock: Clock) -> StateStore:
    store = StateStore(clock, path)
    store.add_instances([vm(f"vm{i}", f"h{i % 3}") for i in range(1, 7)])
    return store


def test_two_stores_on_one_file_cannot_both_win(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state.sqlite"
    a = file_store(path, clock)
    b = StateStore.open(path, clock)
    assert b.instance("vm1").task_state is None  # b has read (and cached) it
    a.update_instance("vm1", task_state=TaskState.MIGRATING, expected_task_state=None)
    with pytest.raises(UnexpectedTaskStateError) as err:
        b.update_instance("vm1", task_state=TaskState.MIGRATING, host="h9",
                          expected_task_state=None)
    assert "migrating" in str(err.value)
    assert b.instance("vm1").task_state is TaskState.MIGRATING  # b sees a's write
    assert a.instance("vm1").host == b.instance("vm1").host == "h1"
    a.close()
    b.close()


def test_the_compare_and_swap_is_done_by_sqlite(tmp_path: Path, clock: Clock) -> None:
    """Even with a stale cache that believes the expected state, the update loses."""
    path = tmp_path / "state.sqlite"
    a = file_store(path, clock)
    b = StateStore.open(path, clock)
    a.add_migration(instance="vm2", source="h2", dest=None, block_migration=False,
                    disk_over_commit=False, requested_at=0.0)
    b.instance("vm2")
    b.migration(1)
    b._fresh = lambda: None  # type: ignore[method-assign] # b never notices a's commits
    a.update_instance("vm2", task_state=TaskState.MIGRATING)
    a.update_migration(1, status=MigrationStatus.CANCELLED)
    assert b.instance("vm2").task_state is None  # stale, as arranged
    assert b.migration(1).status is MigrationStatus.ACCEPTED
    with pytest.raises(UnexpectedTaskStateError):
        b.update_instance("vm2", task_state=TaskState.MIGRATING, expected_task_state=None)
    with pytest.raises(MigrationStateConflict) as err:
        b.update_migration(1, status=MigrationStatus.RUNNING,
                           expected_status=MigrationStatus.ACCEPTED)
    assert err.value.actual is MigrationStatus.CANCELLED
    a.close()
    b.close()


RACER = textwrap.dedent("""
    import sys
    from livemig.core.errors import UnexpectedTaskStateError
    from livemig.core.model import TaskState
    from livemig.core.state import StateStore
    store = StateStore.open(sys.argv[1], lambda: 0.0)
    print("ready", flush=True)
    sys.stdin.readline()
    won = []
    for i in range(1, int(sys.argv[2]) + 1):
        try:
            store.update_instance(f"vm{i}", task_state=TaskState.MIGRATING,
                                  expected_task_state=None)
            won.append(f"vm{i}")
        except UnexpectedTaskStateError:
            pass
    print(" ".join(won), flush=True)
""")


def test_two_processes_racing_on_one_file_win_each_instance_once(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "state.sqlite"
    count = 40
    store = StateStore(clock, path)
    store.add_instances([vm(f"vm{i}", "h1") for i in range(1, count + 1)])
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, str(path), str(count)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for racer in racers:
        assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    won = [set(racer.communicate(timeout=60)[0].split()) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers)
    assert won[0].isdisjoint(won[1])
    assert won[0] | won[1] == {f"vm{i}" for i in range(1, count + 1)}
    assert all(i.task_state is TaskState.MIGRATING for i in store.instances())
    store.close()


def test_reopening_gives_every_record_as_it_was(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state.sqlite"
    store = file_store(path, clock)
    clock.now = 2.0
    store.update_instance("vm1", task_state=TaskState.MIGRATING, expected_task_state=None)
    store.update_instance("vm1", host="h0", vm_state=VmState.PAUSED)
    store.notify("vm1", "compute.instance.live_migration._post.start")
    mig = store.add_migration(instance="vm1", source="h1", dest="h0", block_migration=True,
                              disk_over_commit=False, requested_at=0.5)
    store.update_migration(mig.id, status=MigrationStatus.RUNNING, attempted_hosts=("h2",),
                           flags=0x80, paused_guest=True, progress=12.5)
    store.record_action("force_complete", "vm1", "paused the guest")
    store.set_meta("driver", "libvirt")
    before = (store.instances(), store.instances_on("h0"), store.migrations(),
              store.notifications, store.actions())
    store.close()

    again = StateStore.open(path, clock)
    after = (again.instances(), again.instances_on("h0"), again.migrations(),
             again.notifications, again.actions())
    assert after == before
    assert again.meta("driver") == "libvirt"
    # numbering goes on where it stopped
    again.update_instance("vm4", host="h0")
    assert [i.name for i in again.instances_on("h0")][-2:] == ["vm1", "vm4"]
    assert again.add_migration(instance="vm2", source=None, dest=None, block_migration=False,
                               disk_over_commit=False, requested_at=3.0).id == 2
    again.close()


def test_open_refuses_what_is_not_a_store(tmp_path: Path, clock: Clock) -> None:
    with pytest.raises(FileNotFoundError, match="no state store file"):
        StateStore.open(tmp_path / "missing.sqlite", clock)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not a database\n" * 100)
    with pytest.raises(ValueError, match="junk.sqlite: not a state store"):
        StateStore.open(junk, clock)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("PRAGMA user_version = 42").connection.close()
    with pytest.raises(ValueError, match="schema version 42"):
        StateStore.open(other, clock)


WRITER = textwrap.dedent("""
    import sys, time
    from livemig.core.model import MigrationStatus, TaskState
    from livemig.core.state import StateStore
    store = StateStore.open(sys.argv[1], lambda: 1.0)
    store.update_instance("vm1", task_state=TaskState.MIGRATING, expected_task_state=None)
    store.update_migration(1, status=MigrationStatus.RUNNING)
    store.record_action("abort", "vm1", "ok")
    print("written", flush=True)
    time.sleep(60)
""")


def test_a_write_survives_its_process_being_killed(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "state.sqlite"
    store = file_store(path, clock)
    store.add_migration(instance="vm1", source="h1", dest=None, block_migration=False,
                        disk_over_commit=False, requested_at=0.0)
    store.close()
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "written\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    again = StateStore.open(path, clock)
    assert again.instance("vm1").task_state is TaskState.MIGRATING
    assert again.migration(1).status is MigrationStatus.RUNNING
    assert [a.kind for a in again.actions()] == ["abort"]
    assert len(again.notifications) == 1
    assert again._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again.close()
