"""Every run ends: the horizon ``until`` (issue 8, item 3).

A migration that cannot converge with ``completion_timeout: 0s`` (dirtying 1 GiB/s
over 100 MiB/s) used to spin forever. At the horizon the controller is halted: a
queued migration is cancelled, a running pre-copy job aborted at its next poll, both
recorded ``cancelled`` / ``HorizonReached``, their guests left running on their
sources; summary.json says where the horizon was and that it was reached.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import pytest
from fakes import GiB, host, migrate, scenario, vm

from livemig.core import cli, plots
from livemig.core.model import (
    DEFAULT_UNTIL,
    ControllerRestartEvent,
    FaultEvent,
    FaultKind,
    MigrationPolicy,
    MigrationStatus,
    VmState,
)
from livemig.core.runner import run_scenario
from livemig.core.scenario import load_scenario

NEVER = """\
name: never
hosts: [{name: h1, ram: 8GiB, vcpus: 4}, {name: h2, ram: 8GiB, vcpus: 4}]
vms: [{prefix: vm, count: 3, host: h1, ram: 2GiB, working_set: 1GiB, dirty_rate: 1GiB/s}]
policy: {migration: {bandwidth: 100MiB/s, completion_timeout: 0s}}
until: 1min
events:
  - {at: 0s, live_migrate: {instance: vm1, dest: h2}}
  - {at: 0s, live_migrate: {instance: vm2, dest: h2}}
"""
STUCK = MigrationPolicy(bandwidth=100 * 2**20, completion_timeout=0)


def stuck(*events: object, until: float = 60.0) -> object:
    """vm1 and vm2 on h1 rewrite 1 GiB at 1 GiB/s: over 100 MiB/s neither ever converges."""
    sc = scenario([host("h1"), host("h2")],
                  [vm("vm1", "h1", working_set=GiB, dirty_rate=GiB),
                   vm("vm2", "h1", working_set=GiB, dirty_rate=GiB)],
                  list(events), migration=STUCK)  # type: ignore[arg-type]
    return dataclasses.replace(sc, until=until)


def test_a_migration_that_never_converges_is_ended_by_the_horizon() -> None:
    result = run_scenario(stuck(migrate("vm1", "h2"), migrate("vm2", "h2")))
    running, queued = result.store.migration(1), result.store.migration(2)
    assert (running.status, running.error) == (MigrationStatus.CANCELLED, "HorizonReached")
    assert running.finished_at == 60.5  # aborted at the first poll after the horizon
    assert "while the migration was running: aborted" in (running.error_message or "")
    assert (queued.status, queued.error, queued.finished_at) == (
        MigrationStatus.CANCELLED, "HorizonReached", 60.0)
    assert queued.started_at is None
    for name in ("vm1", "vm2"):
        inst = result.store.instance(name)
        assert (inst.host, inst.vm_state, inst.task_state) == ("h1", VmState.ACTIVE, None)
    assert result.final_hosts == {"vm1": "h1", "vm2": "h1"}
    assert (result.horizon, result.horizon_reached) == (60.0, True)
    assert result.sim_time == 60.5
    assert result.invariants.violations == ()


def test_a_run_that_ends_before_its_horizon_stops_there() -> None:
    result = run_scenario(stuck(migrate("vm1", "h2"), FaultEvent(
        at=5.0, kind=FaultKind.HOST_DOWN, host="h2")))
    assert result.store.migration(1).status is MigrationStatus.FAILED
    assert result.sim_time == 5.0 and not result.horizon_reached


def test_a_controller_back_at_the_horizon_comes_back_halted() -> None:
    # down from 10 s to the horizon itself: the new controller recovers the job, halted
    result = run_scenario(stuck(migrate("vm1", "h2"),
                                ControllerRestartEvent(at=10.0, down_for=50.0)))
    m = result.store.migration(1)
    assert (m.status, m.error) == (MigrationStatus.CANCELLED, "HorizonReached")
    assert result.horizon_reached and result.invariants.violations == ()


def test_the_default_horizon_is_a_day() -> None:
    assert DEFAULT_UNTIL == 24 * 3600
    assert scenario([host("h1")], [vm("vm1", "h1")]).until == DEFAULT_UNTIL


def test_summary_and_progress_bar_show_the_horizon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(plots, "write_plots", lambda result, directory: [])
    path = tmp_path / "never.yaml"
    path.write_text(NEVER)
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["horizon_s"], summary["horizon_reached"]) == (60.0, True)
    assert summary["error_counts"] == {"HorizonReached": 2}
    drawn = tty.getvalue()
    assert drawn.startswith("\r[..............................] 0/2 migrations finished, "
                            "horizon 1 min\r")
    assert drawn.endswith("2/2 migrations finished (2 not completed), at 1.01 min of 1 min "
                          "(horizon reached)\n")
    assert "horizon reached (until: 1 min)" in capsys.readouterr().out


def test_events_after_the_horizon_are_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "late.yaml"
    path.write_text(NEVER + "  - {at: 2min, live_migrate: {instance: vm3, dest: h2}}\n"
                    "  - {at: 50s, controller_restart: {down_for: 20s}}\n")
    assert cli.main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"livemig: error: {path}:9: events[2].at: 120 s is after until (60 s); "
        "expected events within the run's horizon (raise until:)")
    path.write_text(NEVER + "  - {at: 50s, controller_restart: {down_for: 20s}}\n")
    assert cli.main(["validate", str(path)]) == 2
    assert "events[2].controller_restart.down_for: the controller would still be down at " \
        "until (60 s); expected at + down_for <= until" in capsys.readouterr().err


def test_generated_faults_after_the_horizon_are_recorded_not_played(tmp_path: Path) -> None:
    path = tmp_path / "late-faults.yaml"
    path.write_text(NEVER.replace("until: 1min", "until: 20s")
                    .replace("  - {at: 0s, live_migrate: {instance: vm2, dest: h2}}\n", "")
                    + "  - {at: 0s, random_faults: {hosts: h2, host_down: 1, within: 10s, "
                    "repair: 30s, seed: 1}}\n")
    sc = load_scenario(path)
    down, up = [e for e in sc.events if isinstance(e, FaultEvent)]
    assert down.at < 10.0 < 20.0 < up.at
    result = run_scenario(sc)
    actions = [(a.kind, a.target, a.outcome) for a in result.store.actions()]
    assert actions == [("host_down", "h2", "ok"),
                       ("host_up", "h2", "not applied: after the horizon (until: 20 s)")]
    assert result.invariants.violations == ()
