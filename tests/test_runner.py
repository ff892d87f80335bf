"""The runner's players on the simulator: operator actions and their recorded outcomes,
faults on time and on ``checks_passed``, controller restarts (in memory and with the
records on disk), ``resume`` refusals, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from fakes import GiB, host, scenario, vm

from livemig.core import cli
from livemig.core.model import (
    AbortEvent,
    ControllerRestartEvent,
    FaultEvent,
    FaultKind,
    FaultTrigger,
    ForceCompleteEvent,
    LiveMigrateEvent,
    MigrationPolicy,
    MigrationStatus,
    VmState,
)
from livemig.core.runner import STATE_FILE, resume_run, run_scenario
from livemig.core.scenario import load_scenario
from livemig.core.state import StateStore

S = MigrationStatus
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SLOW = MigrationPolicy(bandwidth=100e6, completion_timeout=0)  # 1 GiB used: ~10.7 s


def two_vms(*events: object, policy: MigrationPolicy = SLOW) -> object:
    return scenario([host("h1"), host("h2"), host("h3")],
                    [vm("vm1", "h1", ram=2 * GiB), vm("vm2", "h3", ram=2 * GiB)],
                    list(events), migration=policy)


def outcomes(result: object) -> list[tuple[float, str, str, str]]:
    return [(a.time, a.kind, a.target, a.outcome)
            for a in result.store.actions()]  # type: ignore[attr-defined]


def test_operator_actions_are_recorded_with_their_outcome() -> None:
    result = run_scenario(two_vms(
        AbortEvent(at=0.5, instance="vm1"),  # nothing in progress yet
        LiveMigrateEvent(at=1.0, instance="vm1", dest="h2"),
        ForceCompleteEvent(at=3.0, instance="vm1"),
        AbortEvent(at=30.0, instance="vm1"),  # long finished
    ))
    got = outcomes(result)
    assert got[0][:3] == (0.5, "abort", "vm1") and got[0][3].startswith(
        "refused: MigrationNotFoundForInstance: Migration for instance vm1 is not in progress")
    assert got[1] == (3.0, "force_complete", "vm1", "ok")
    assert got[2][3].startswith("refused: MigrationNotFoundForInstance")
    m = result.store.migration(1)
    assert m.status is S.COMPLETED and m.paused_guest  # forced: paused, then resumed
    assert result.invariants.violations == ()


def test_a_host_dying_idle_puts_its_guests_in_error_and_coming_back_restarts_none() -> None:
    result = run_scenario(two_vms(
        FaultEvent(at=1.0, kind=FaultKind.HOST_DOWN, host="h3"),
        FaultEvent(at=5.0, kind=FaultKind.HOST_UP, host="h3"),
    ))
    assert outcomes(result) == [(1.0, "host_down", "h3", "ok; instances lost: vm2"),
                                (5.0, "host_up", "h3", "ok")]
    dead = result.store.instance("vm2")
    assert (dead.host, dead.vm_state) == ("h3", VmState.ERROR)
    assert result.final_hosts == {"vm1": "h1", "vm2": None}
    assert result.invariants.violations == ()


def test_a_checks_passed_fault_that_never_fires_is_reported() -> None:
    result = run_scenario(two_vms(
        FaultEvent(at=0.0, kind=FaultKind.SERVICE_DOWN, host="h3",
                   trigger=FaultTrigger.CHECKS_PASSED),
        LiveMigrateEvent(at=1.0, instance="vm1", dest="h2"),
    ))
    assert outcomes(result) == [(result.sim_time, "service_down", "h3",
                                 "never fired: no migration to h3 passed its checks")]
    assert result.store.migration(1).status is S.COMPLETED


def test_requests_made_while_the_controller_is_down_wait_for_it() -> None:
    result = run_scenario(two_vms(
        LiveMigrateEvent(at=1.0, instance="vm1", dest="h2"),
        ControllerRestartEvent(at=2.0, down_for=5.0),
        LiveMigrateEvent(at=3.0, instance="vm2", dest="h1"),
        FaultEvent(at=4.0, kind=FaultKind.LINK_DOWN, host="h1"),  # the world goes on
        FaultEvent(at=4.5, kind=FaultKind.LINK_UP, host="h1"),
    ))
    first, second = result.store.migrations()
    assert second.requested_at == 7.0  # accepted when the new controller came up
    assert [a.time for a in result.store.actions() if a.kind.startswith("link")] == [4.0, 4.5]
    assert first.status is S.COMPLETED and second.status is S.COMPLETED
    assert result.restarts == 1 and result.invariants.violations == ()
    # nobody polled the first job while the controller was down: its end is seen at 7.5
    assert first.finished_at is not None and first.finished_at >= 7.5


def test_a_restart_reads_the_records_back_from_disk(tmp_path: Path) -> None:
    path = SCENARIOS / "lab-controller-restart.yaml"
    memory = run_scenario(load_scenario(path))
    on_disk = run_scenario(load_scenario(path), run_dir=tmp_path)
    # same outcome with the records in memory or in state.sqlite (reopened at the restart)
    assert [dataclasses.astuple(m) for m in on_disk.store.migrations()] == [
        dataclasses.astuple(m) for m in memory.store.migrations()]
    reread = StateStore.open(tmp_path / STATE_FILE, lambda: 0.0)
    assert reread.migrations() == on_disk.store.migrations()
    assert reread.migration(1).status is S.COMPLETED
    info = json.loads((tmp_path / "run.json").read_text())
    assert (info["driver"], info["seed"], info["scenario_source"]) == ("sim", 0, str(path))


def test_a_simulated_run_cannot_be_resumed(tmp_path: Path) -> None:
    run_scenario(load_scenario(SCENARIOS / "lab-explicit.yaml"), run_dir=tmp_path)
    with pytest.raises(ValueError, match="a 'sim' run cannot be resumed"):
        resume_run(tmp_path)


def test_resume_refuses_what_is_not_a_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"livemig: error: {tmp_path}: not a resumable run directory (expected "
                   "run.json and state.sqlite, written by `livemig run` for a real-time "
                   "driver)\n")
    (tmp_path / STATE_FILE).write_text("")
    (tmp_path / "run.json").write_text("{not json")
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert "run.json: unreadable" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", STATE_FILE]


def test_runs_with_faults_and_restarts_are_deterministic() -> None:
    scn = load_scenario(SCENARIOS / "rack-drain-faults.yaml")
    scn = dataclasses.replace(scn, events=(*scn.events,
                                           ControllerRestartEvent(at=20.0, down_for=2.0)))
    a, b = run_scenario(scn), run_scenario(scn)
    assert [dataclasses.astuple(m) for m in a.store.migrations()] == [
        dataclasses.astuple(m) for m in b.store.migrations()]
    assert a.store.actions() == b.store.actions()
    assert a.invariants.violations == () and a.restarts == 1


def test_guests_lost_with_their_host_are_no_host_mismatch(tmp_path: Path) -> None:
    """ERROR instances name the host they died on: the invariants accept that, and the
    summary's host_mismatches (records that disagree with a running domain) ignores it."""
    from livemig.core import results

    result = run_scenario(two_vms(FaultEvent(at=1.0, kind=FaultKind.HOST_DOWN, host="h3")))
    assert result.store.instance("vm2").vm_state is VmState.ERROR
    assert results.host_mismatches(result) == []
    summary = json.loads((results.write_results(result, tmp_path / "o") / "summary.json")
                         .read_text())
    assert (summary["host_mismatches"], summary["invariants"]["violations"]) == (0, 0)
    assert "WARNING" not in results.summary_table(result)
