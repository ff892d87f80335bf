"""Every shipped scenario runs on the simulator with the outcome its header promises."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from livemig.core.model import DrainEvent, MigrationStatus, VmState
from livemig.core.runner import run_scenario
from livemig.core.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

# file -> (status, error) of each requested migration, in request order
EXPECTED: dict[str, list[tuple[str, str | None]]] = {
    "seed-explicit-dest": [("completed", None)],
    "seed-scheduler-retry": [("completed", None)],
    "seed-self": [("error", "UnableToMigrateToSelf")],
    "seed-no-service": [("error", "ComputeServiceUnavailable")],
    "seed-hypervisor-type": [("error", "InvalidHypervisorType")],
    "seed-hypervisor-too-old": [("error", "DestinationHypervisorTooOld")],
    "seed-memory": [("error", "MigrationPreCheckError")],
    "seed-cpu": [("error", "InvalidCPUInfo")],
    "seed-block-on-shared": [("error", "InvalidLocalStorage")],
    "seed-live-on-local": [("error", "InvalidSharedStorage")],
    "seed-volume-backed": [("completed", None)],
    "seed-block-migration": [("completed", None)],
    "seed-disk-space": [("error", "MigrationPreCheckError"), ("completed", None)],
    "seed-no-valid-host": [("error", "NoValidHost")],
}


def outcomes(name: str) -> tuple[list[tuple[str, str | None]], object]:
    result = run_scenario(load_scenario(SCENARIOS / f"{name}.yaml"))
    return [(m.status.value, m.error) for m in result.store.migrations()], result


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_seed_scenario_outcome(name: str) -> None:
    got, result = outcomes(name)
    assert got == EXPECTED[name]
    last = {m.instance: m for m in result.store.migrations()}  # type: ignore[attr-defined]
    for m in last.values():
        inst = result.store.instance(m.instance)  # type: ignore[attr-defined]
        # every instance ends usable, on the host its last migration says; the driver agrees
        assert inst.vm_state is VmState.ACTIVE and inst.task_state is None
        expected_host = m.dest if m.status is MigrationStatus.COMPLETED else m.source
        assert inst.host == expected_host
        assert result.final_hosts[m.instance] == inst.host  # type: ignore[attr-defined]


def test_seed_retry_records_the_rejected_host() -> None:
    result = run_scenario(load_scenario(SCENARIOS / "seed-scheduler-retry.yaml"))
    (m,) = result.store.migrations()
    assert m.attempted_hosts and m.dest not in m.attempted_hosts


@pytest.mark.parametrize("name", ["quickstart", "rack-drain", "lab-explicit"])
def test_scenario_completes_and_drains_empty_their_hosts(name: str) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    result = run_scenario(scenario)
    migrations = result.store.migrations()
    assert migrations and all(m.status is MigrationStatus.COMPLETED for m in migrations)
    for event in scenario.events:
        if isinstance(event, DrainEvent):
            assert result.store.instances_on(event.host) == []
    assert all(result.final_hosts[i.name] == i.host for i in result.store.instances())


# The fault and policy scenarios (both drivers; tests/lab runs them on real hosts):
# file -> per VM: (migration status, error, the host it ends on, its vm_state)
FAULTS_AND_POLICIES: dict[str, dict[str, tuple[str, str | None, str, str]]] = {
    "lab-abort": {"lab-vm1": ("cancelled", "LiveMigrationFailed", "lab1", "active")},
    "lab-downtime-steps": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-force-pause": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-postcopy": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-auto-converge": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-operator-abort": {"lab-vm1": ("cancelled", "LiveMigrationFailed", "lab1", "active")},
    "lab-operator-force": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-queued-abort": {"lab-vm1": ("completed", None, "lab2", "active"),
                         "lab-vm2": ("cancelled", "MigrationAborted", "lab1", "active")},
    "lab-dest-down": {"lab-vm1": ("failed", "LiveMigrationFailed", "lab1", "active")},
    "lab-source-down": {"lab-vm1": ("failed", "LiveMigrationFailed", "lab1", "error")},
    # the job failed (keepalive); lab2, still cut off, could not be cleaned: not clean
    "lab-link-cut": {"lab-vm1": ("error", "LiveMigrationFailed", "lab1", "active")},
    "lab-link-blip": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-service-down": {"lab-vm1": ("error", "HypervisorUnavailable", "lab1", "active")},
    "lab-controller-restart": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-resume": {"lab-vm1": ("completed", None, "lab2", "active")},
    "lab-tls": {"lab-vm1": ("completed", None, "lab2", "active")},
}


@pytest.mark.parametrize("name", sorted(FAULTS_AND_POLICIES))
def test_fault_and_policy_scenario_outcome(name: str) -> None:
    result = run_scenario(load_scenario(SCENARIOS / f"{name}.yaml"))
    got = {}
    for m in result.store.migrations():
        inst = result.store.instance(m.instance)
        got[m.instance] = (m.status.value, m.error, inst.host, inst.vm_state.value)
        assert inst.task_state is None
        running = inst.vm_state is VmState.ACTIVE
        assert result.final_hosts[m.instance] == (inst.host if running else None)
    assert got == FAULTS_AND_POLICIES[name]
    assert result.invariants.violations == ()
    assert result.invariants.unverifiable == ()


def test_policy_scenarios_show_their_mechanism() -> None:
    """Each policy scenario converges (or ends) by the mechanism it is about."""

    def first(name: str) -> object:
        return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml")).store.migration(1)

    steps = first("lab-downtime-steps")
    assert steps.max_downtime >= 2.05 and steps.downtime >= 1.9  # type: ignore[attr-defined]
    pause = first("lab-force-pause")
    assert (pause.timeout_action, pause.paused_guest, pause.postcopy_at) == (  # type: ignore[attr-defined]
        "force_complete", True, None)
    # paused at the first poll past the 20 s timeout: the guest is down from then on
    assert pause.downtime == pytest.approx(pause.total_time - 20.5, abs=1e-9)  # type: ignore[attr-defined]
    post = first("lab-postcopy")
    assert post.timeout_action == "force_complete" and post.postcopy_at is not None  # type: ignore[attr-defined]
    assert not post.paused_guest  # type: ignore[attr-defined]
    auto = first("lab-auto-converge")
    assert auto.auto_converge_throttle >= 20 and auto.timeout_action is None  # type: ignore[attr-defined]
    forced = first("lab-operator-force")
    assert forced.postcopy_at is not None and forced.total_time < 10  # type: ignore[attr-defined]
    cut = first("lab-link-cut")
    # the link went down at 7 s (6 s into the job): libvirt's keepalive gives up 30 s later
    assert 35.5 <= cut.finished_at <= 37.5  # type: ignore[attr-defined]


def test_rack_drain_under_random_faults_keeps_every_invariant() -> None:
    scenario = load_scenario(SCENARIOS / "rack-drain-faults.yaml")
    result = run_scenario(scenario)
    assert result.invariants.violations == ()
    statuses = {m.status for m in result.store.migrations()}
    assert MigrationStatus.COMPLETED in statuses and statuses <= {
        MigrationStatus.COMPLETED, MigrationStatus.FAILED, MigrationStatus.ERROR,
        MigrationStatus.CANCELLED}
    actions = result.store.actions()
    downs = [a for a in actions if a.kind == "host_down"]
    assert len(downs) == 4 and len([a for a in actions if a.kind == "link_down"]) == 6
    # every instance of a host that died (and was not migrated away first) is in ERROR
    # on that host; every other instance runs exactly where its record says
    for inst in result.store.instances():
        if inst.vm_state is VmState.ERROR:
            assert inst.host in {a.target for a in downs}
            assert result.final_hosts[inst.name] is None
        else:
            assert result.final_hosts[inst.name] == inst.host
    again = run_scenario(scenario)
    assert [dataclasses.astuple(m) for m in again.store.migrations()] == [
        dataclasses.astuple(m) for m in result.store.migrations()]


def test_every_shipped_scenario_is_covered() -> None:
    shipped = {p.stem for p in SCENARIOS.glob("*.yaml")}
    covered = set(EXPECTED) | set(FAULTS_AND_POLICIES) | {
        "quickstart", "rack-drain", "rack-drain-faults", "lab-explicit", "lab-scheduler",
        "lab-block", "lab-precheck", "lab-precheck-shared"}
    assert shipped <= covered
