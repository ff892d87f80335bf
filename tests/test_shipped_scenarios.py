"""Every shipped scenario runs on the simulator with the outcome its ``expect:`` promises."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from livemig.consolidation.scenario import is_consolidation
from livemig.core.expectations import evaluate
from livemig.core.model import DrainEvent, LiveMigrateEvent, MigrationStatus, VmState
from livemig.core.runner import expected_migrations, run_scenario
from livemig.core.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

SHIPPED = sorted(p.stem for p in SCENARIOS.glob("*.yaml")
                 if not is_consolidation(p.read_text()))  # those: tests/test_consolidation.py


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenario_meets_the_expectations_it_carries(name: str) -> None:
    """Each file's ``expect:`` section is its promise (``livemig check scenarios/``)."""
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    result = run_scenario(scenario)
    failed = [str(v) for v in evaluate(scenario.expect, result) if not v.met]
    assert failed == []
    for m in result.store.migrations():
        inst = result.store.instance(m.instance)
        # every instance ends with no task; it runs where its record says, or (ERROR,
        # its host died) nowhere
        assert inst.task_state is None
        running = inst.vm_state is VmState.ACTIVE
        assert result.final_hosts[m.instance] == (inst.host if running else None)


def test_every_shipped_scenario_promises_its_migrations_and_their_outcome() -> None:
    """The expectations cannot quietly shrink: each file counts all the migrations its
    events request, and the status of every VM an event migrates (by name, or all
    completed)."""
    for name in SHIPPED:
        scenario = load_scenario(SCENARIOS / f"{name}.yaml")
        expect = scenario.expect
        assert expect is not None, name
        totals = [c.count for c in expect.outcomes if c.status == "total"]
        assert totals == [expected_migrations(scenario)], name
        counts = {c.status: c.count for c in expect.outcomes}
        if counts.get("completed") == counts["total"]:
            continue
        with_status = {c.pattern for c in expect.instances if c.field == "status"}
        for event in scenario.events:
            if isinstance(event, LiveMigrateEvent):
                assert event.instance in with_status, (name, event.instance)


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
# file -> per VM: (migration status, error, the host it ends on, its vm_state), as the
# file's expect.instances promises it
FAULT_AND_POLICY_SCENARIOS = (
    "lab-abort", "lab-downtime-steps", "lab-force-pause", "lab-postcopy", "lab-auto-converge",
    "lab-operator-abort", "lab-operator-force", "lab-queued-abort", "lab-dest-down",
    "lab-source-down", "lab-link-cut", "lab-link-blip", "lab-service-down",
    "lab-controller-restart", "lab-resume", "lab-tls",
)


def promised_outcomes(name: str) -> dict[str, tuple[str, str | None, str, str]]:
    """``{vm: (status, error, host, vm_state)}`` from the instances of a file's expect:."""
    expect = load_scenario(SCENARIOS / f"{name}.yaml").expect
    assert expect is not None, name
    fields: dict[str, dict[str, str | None]] = {}
    for check in expect.instances:
        fields.setdefault(check.pattern, {})[check.field] = check.value
    return {vm: (f["status"], f["error"], f["host"], f["vm_state"])  # type: ignore[misc]
            for vm, f in fields.items()}


FAULTS_AND_POLICIES = {name: promised_outcomes(name) for name in FAULT_AND_POLICY_SCENARIOS}


def test_fault_and_policy_scenarios_promise_every_field_of_every_vm() -> None:
    """tests/lab compares real hosts with these promises: each names all four fields."""
    for name, promised in FAULTS_AND_POLICIES.items():
        scenario = load_scenario(SCENARIOS / f"{name}.yaml")
        assert set(promised) == {vm.name for vm in scenario.vms}, name
        for vm, (status, _, host, vm_state) in promised.items():
            assert status and host and vm_state, (name, vm)
        assert [c.what for c in scenario.expect.invariants] == [  # type: ignore[union-attr]
            "violations", "unverifiable"], name


def test_policy_scenarios_show_their_mechanism() -> None:
    """Each policy scenario converges (or ends) by the mechanism it is about."""

    def first(name: str) -> object:
        return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml")).store.migration(1)

    steps = first("lab-downtime-steps")
    # the last step (2.05 s) let it switch over; QEMU then flushes the 16 MiB at the
    # link's speed, not the 8 MiB/s cap (the lab showed 26-41 ms)
    assert steps.max_downtime >= 2.05 and steps.downtime < 0.1  # type: ignore[attr-defined]
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
