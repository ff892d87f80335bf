"""Every shipped scenario runs on the simulator with the outcome its header promises."""

from __future__ import annotations

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


def test_every_shipped_scenario_is_covered() -> None:
    shipped = {p.stem for p in SCENARIOS.glob("*.yaml")}
    covered = set(EXPECTED) | {"quickstart", "rack-drain"}
    assert {s for s in shipped if not s.startswith("lab-")} <= covered
