"""The invariants, rule by rule, on hand-made records and world facts: each rule must
catch the field report it exists for (a completed migration whose record still names
the source, a failed one that kept its reservation, a guest left paused, ...)."""

from __future__ import annotations

import dataclasses

from fakes import instance

from livemig.core.invariants import check
from livemig.core.model import MigrationStatus, TaskState, VmState
from livemig.core.state import MigrationRecord
from livemig.drivers.base import DomainFact, DomainState, WorldFacts

S = MigrationStatus
RUN, PAUSE, OFF = DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTOFF


def dom(name: str, host: str, state: DomainState = RUN) -> DomainFact:
    return DomainFact(instance=name, host=host, state=state)


def world(*domains: DomainFact, claims: dict[str, str] | None = None,
          unreachable: tuple[str, ...] = (), overcommitted: tuple[str, ...] = ()) -> WorldFacts:
    return WorldFacts(domains=domains, claims=claims or {}, unreachable=unreachable,
                      overcommitted=overcommitted)


def mig(status: MigrationStatus, dest: str = "h2", **fields: object) -> MigrationRecord:
    return MigrationRecord(id=1, instance="vm1", source="h1", dest=dest, block_migration=False,
                           disk_over_commit=False, requested_at=0.0, status=status,
                           **fields)  # type: ignore[arg-type]


def rules(report: object) -> list[str]:
    return [f"{v.rule}:{v.subject}" for v in report.violations]  # type: ignore[attr-defined]


def test_a_consistent_world_has_no_violation() -> None:
    report = check([instance("vm1", "h2"), instance("vm2", "h1")],
                   [mig(S.COMPLETED)], world(dom("vm1", "h2"), dom("vm2", "h1")))
    assert report.violations == () and report.unverifiable == ()
    assert report.checked == {"placement": 2, "capacity": 0, "migration": 1, "paused": 2}


def test_placement_catches_a_stale_record_a_lost_guest_and_a_duplicate() -> None:
    stale = check([instance("vm1", "h1")], [], world(dom("vm1", "h2")))
    assert [str(v) for v in stale.violations] == [
        "placement: vm1: recorded on h1 (active) but runs on h2"]
    lost = check([instance("vm1", "h1")], [], world(dom("vm1", "h1", OFF)))
    assert rules(lost) == ["placement:vm1"] and "runs nowhere" in str(lost.violations[0])
    twice = check([instance("vm1", "h1")], [], world(dom("vm1", "h1"), dom("vm1", "h2")))
    assert "runs on h1, h2" in str(twice.violations[0])


def test_error_with_its_host_known_is_fine_and_a_left_task_is_not() -> None:
    dead = instance("vm1", "h1", vm_state=VmState.ERROR)
    assert check([dead], [], world()).violations == ()
    busy = instance("vm1", "h1", task_state=TaskState.MIGRATING)
    assert "task_state migrating left set" in str(check([busy], [], world(dom("vm1", "h1")))
                                                  .violations[0])


def test_an_unreachable_host_is_unverifiable_not_a_violation() -> None:
    report = check([instance("vm1", "h1")], [], world(unreachable=("h1",)))
    assert report.violations == ()
    assert [str(v) for v in report.unverifiable] == [
        "placement: vm1: recorded on h1 (active), which cannot be asked"]


def test_capacity_reports_each_overcommitted_host() -> None:
    report = check([], [], world(overcommitted=("h3",)))
    assert rules(report) == ["capacity:h3"]


def test_a_failed_migration_may_leave_neither_reservation_nor_domain_on_dest() -> None:
    inst = instance("vm1", "h1")
    clean = check([inst], [mig(S.FAILED)], world(dom("vm1", "h1")))
    assert clean.violations == ()
    claimed = check([inst], [mig(S.FAILED)], world(dom("vm1", "h1"), claims={"vm1": "h2"}))
    assert [str(v) for v in claimed.violations] == [
        "leftover: migration 1: failed, reservation for vm1 still held on h2"]
    leftover = check([inst], [mig(S.CANCELLED)], world(dom("vm1", "h1"),
                                                       dom("vm1", "h2", OFF)))
    assert "domain vm1 still on h2" in str(leftover.violations[0])
    unknown = check([inst], [mig(S.ERROR)], world(dom("vm1", "h1"), unreachable=("h2",)))
    assert unknown.violations == () and len(unknown.unverifiable) == 1


def test_a_later_successful_move_to_the_same_dest_is_not_a_leftover() -> None:
    first, second = mig(S.FAILED), dataclasses.replace(mig(S.COMPLETED), id=2)
    report = check([instance("vm1", "h2")], [first, second], world(dom("vm1", "h2")))
    assert report.violations == ()


def test_unfinished_migrations_and_paused_guests_are_violations() -> None:
    report = check([instance("vm1", "h1")], [mig(S.RUNNING)], world(dom("vm1", "h1", PAUSE)))
    assert rules(report) == ["migration:migration 1", "paused:vm1"]
    paused_on_purpose = instance("vm1", "h1", vm_state=VmState.PAUSED)
    assert check([paused_on_purpose], [], world(dom("vm1", "h1", PAUSE))).violations == ()
