"""A guest that died with its host is never recorded ACTIVE (issue 8, item 1).

A host that dies while a migration into or out of it is in flight, or while the
controller is away, leaves nothing that runs; whatever ends that migration later
(post-migration, the next controller's recovery) asks the driver and records the
instance in ERROR on the dead host. The invariants count "recorded ACTIVE, runs
nowhere" on a host the simulator knows to be down as a violation, not as unverifiable.
"""

from __future__ import annotations

from fakes import GiB, drain, host, migrate, scenario, vm

from livemig.core.invariants import check
from livemig.core.model import (
    ControllerRestartEvent,
    FaultEvent,
    FaultKind,
    MigrationPolicy,
    MigrationStatus,
    VmState,
)
from livemig.core.runner import RunResult, run_scenario
from livemig.core.state import InstanceRecord
from livemig.drivers.base import WorldFacts

HOSTS = [host("h1"), host("h2"), host("h3")]


def down(at: float, name: str) -> FaultEvent:
    return FaultEvent(at=at, kind=FaultKind.HOST_DOWN, host=name)


def state(result: RunResult, name: str) -> tuple[str, VmState, str | None]:
    inst = result.store.instance(name)
    return inst.host, inst.vm_state, result.final_hosts[name]


def test_a_guest_that_died_on_its_destination_after_the_switchover_is_in_error() -> None:
    # 1 GiB at 10 Gbit/s: switched over at ~0.86 s; the poll at 1.0 s post-migrates,
    # after h2 died (0.9 s) and came back empty (0.95 s)
    result = run_scenario(scenario(HOSTS, [vm("vm1", "h1")], [
        migrate("vm1", "h2"), down(0.9, "h2"),
        FaultEvent(at=0.95, kind=FaultKind.HOST_UP, host="h2")]))
    assert state(result, "vm1") == ("h2", VmState.ERROR, None)
    assert result.store.migration(1).status is MigrationStatus.COMPLETED
    assert result.invariants.violations == () and result.invariants.unverifiable == ()


def test_a_migration_finished_by_the_next_controller_sees_that_its_host_died() -> None:
    # switched over while the controller was away; h2 died at 10 s; back at 20.5 s
    result = run_scenario(scenario(HOSTS, [vm("vm1", "h1")], [
        migrate("vm1", "h2"), ControllerRestartEvent(at=0.5, down_for=20.0),
        down(10.0, "h2")]))
    assert state(result, "vm1") == ("h2", VmState.ERROR, None)
    assert result.invariants.violations == () and result.invariants.unverifiable == ()


def test_a_queued_drain_migration_whose_host_died_leaves_its_guest_in_error() -> None:
    # vm1 moves; vm2 waits for h1's only slot when the controller dies (0.1 s); h1 dies
    # at 5 s with vm2 on it; the next controller resolves vm2's migration
    result = run_scenario(scenario(HOSTS, [vm("vm1", "h1"), vm("vm2", "h1")], [
        drain("h1"), ControllerRestartEvent(at=0.1, down_for=20.0), down(5.0, "h1")]))
    assert state(result, "vm1")[1:] == (VmState.ACTIVE, result.store.instance("vm1").host)
    assert state(result, "vm2") == ("h1", VmState.ERROR, None)
    assert result.store.migration(2).error == "ControllerRestarted"
    assert result.invariants.violations == () and result.invariants.unverifiable == ()


def test_a_live_record_on_a_host_known_to_be_down_is_a_violation() -> None:
    rec = InstanceRecord(name="vm1", host="h2", ram=GiB, vcpus=1, disk=0, disk_allocated=0)
    cannot_ask = WorldFacts(domains=(), claims={}, unreachable=("h2",))
    assert check([rec], [], cannot_ask).violations == ()
    assert len(check([rec], [], cannot_ask).unverifiable) == 1
    dead = WorldFacts(domains=(), claims={}, unreachable=("h2",), powered_off=("h2",))
    report = check([rec], [], dead)
    assert [str(v) for v in report.violations] == [
        "placement: vm1: recorded on h2 (active) but runs nowhere (h2 is down)"]
    assert report.unverifiable == ()


def test_the_simulator_reports_its_dead_hosts_as_powered_off(sim_drivers: list) -> None:
    run_scenario(scenario(HOSTS, [vm("vm1", "h1")], [
        down(1.0, "h3"), down(2.0, "h2"), FaultEvent(at=3.0, kind=FaultKind.HOST_UP, host="h2"),
        FaultEvent(at=3.0, kind=FaultKind.SERVICE_DOWN, host="h1")]))
    world = sim_drivers[0].world()
    assert world.powered_off == ("h3",)  # h2 is back; h1 only lost its libvirtd
    assert world.unreachable == ("h1", "h3")


def test_a_queued_migration_refused_by_its_checks_after_its_host_died_is_in_error() -> None:
    # vm2 waits for h1's only slot behind vm1 (10.7 s at 100 MB/s); h1 dies at 1 s; vm2's
    # turn comes, its checks refuse h3 (another hypervisor): its guest died with h1
    hosts = [host("h1"), host("h2"), host("h3", hypervisor_type="Xen")]
    result = run_scenario(scenario(hosts, [vm("vm1", "h1"), vm("vm2", "h1")], [
        migrate("vm1", "h2"), migrate("vm2", "h3"), down(1.0, "h1")],
        migration=MigrationPolicy(bandwidth=100e6, completion_timeout=0)))
    assert result.store.migration(2).error == "InvalidHypervisorType"
    assert state(result, "vm2") == ("h1", VmState.ERROR, None)
    assert result.invariants.violations == ()
