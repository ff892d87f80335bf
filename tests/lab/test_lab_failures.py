"""Every fault and convergence policy on real libvirt hosts: the shipped ``lab-*`` fault
and policy scenarios run in a namespace lab, and again on the simulator.

After each run the tests ask libvirt itself (``virsh`` over fresh connections, not the
orchestrator's records) where every domain is, read each surviving guest's serial
console to see it still runs, require zero invariant violations, and compare the
outcome with the simulator's and with the promise in the scenario's header
(``tests/test_shipped_scenarios.py``'s table). Faults are real: the destination's QEMU
and daemons killed, its veth taken down, its libvirtd stopped after the checks.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt
import pytest
from labcheck import (
    SCENARIOS,
    assert_guest_keeps_ticking,
    defined_domains,
    hosts_running,
    remove_domains,
    wait_transfer_under_way,
)
from test_shipped_scenarios import FAULTS_AND_POLICIES  # tests/ (the simulator's table)

from livemig.core import results, runner
from livemig.core.flags import MIGRATE_FLAGS
from livemig.core.model import MigrationStatus, Scenario
from livemig.core.runner import RunResult, run_scenario
from livemig.core.scenario import load_scenario
from livemig.drivers.lab.lab import lab_status

if TYPE_CHECKING:
    from conftest import LabUnderTest

pytestmark = pytest.mark.lab


def healthy(lab: LabUnderTest) -> bool:
    """Every host's libvirtd answers (a fault scenario must leave the lab as it found it)."""
    for host in lab.inventory.hosts:
        try:
            libvirt.open(host.uri).close()
        except libvirt.libvirtError:
            return False
    return True


class Ran:
    def __init__(self, scenario: Scenario, real: RunResult, sim: RunResult) -> None:
        self.scenario, self.real, self.sim = scenario, real, sim

    def migration(self, vm: str = "lab-vm1") -> Any:
        return next(m for m in self.real.store.migrations() if m.instance == vm)


@pytest.fixture
def run_fault(fault_lab: LabUnderTest, lab_figures: dict[str, dict[str, Any]]) -> Iterator[Any]:
    ran: list[Scenario] = []

    def run(name: str) -> Ran:
        scenario = load_scenario(SCENARIOS / f"{name}.yaml")
        ran.append(scenario)
        t0 = time.monotonic()
        real = run_scenario(scenario, "libvirt", driver_options={
            "inventory": str(fault_lab.inventory_path), "keep_domains": True})
        wall = time.monotonic() - t0
        sim = run_scenario(scenario, "sim")
        m = next(iter(real.store.migrations()))
        s = next(iter(sim.store.migrations()))
        lab_figures[name] = {
            "wall_s": wall, "real_status": m.status.value, "sim_status": s.status.value,
            "real_total_s": m.total_time, "sim_total_s": s.total_time,
            "real_finished_at": m.finished_at, "sim_finished_at": s.finished_at,
            "real_downtime_ms": None if m.downtime is None else round(m.downtime * 1e3, 1),
            "sim_downtime_ms": None if s.downtime is None else round(s.downtime * 1e3, 1),
            "real_violations": len(real.invariants.violations),
        }
        return Ran(scenario, real, sim)

    yield run
    assert healthy(fault_lab), "the scenario left a host of the lab down"
    if lab_status(fault_lab.name)["state"] == "up":
        for scenario in ran:
            remove_domains(fault_lab, scenario)


def assert_promised_outcome(lab: LabUnderTest, ran: Ran, name: str) -> None:
    """Outcome as promised (and as simulated); every domain where libvirt says it is."""
    expected = FAULTS_AND_POLICIES[name]
    real, sim = ran.real, ran.sim
    assert real.invariants.violations == (), real.invariants.violations
    assert real.invariants.unverifiable == ()
    for vm, (status, error, host, vm_state) in expected.items():
        m = ran.migration(vm)
        inst = real.store.instance(vm)
        assert (m.status.value, m.error, inst.host, inst.vm_state.value) == (
            status, error, host, vm_state), (m, inst)
        assert inst.task_state is None
        if vm_state == "active":
            assert hosts_running(lab, vm) == [host]  # libvirt: exactly there
            for other in (h.name for h in lab.inventory.hosts if h.name != host):
                assert vm not in defined_domains(lab, other), f"{vm} left on {other}"
            assert_guest_keeps_ticking(lab, vm)
        else:  # ERROR: the guest died with its host
            assert hosts_running(lab, vm) == []
        sim_m = next(x for x in sim.store.migrations() if x.instance == vm)
        assert sim_m.status is m.status
        assert sim.store.instance(vm).host == inst.host


@pytest.mark.parametrize("name", [
    "lab-dest-down", "lab-link-cut", "lab-service-down", "lab-operator-abort", "lab-abort",
    "lab-postcopy", "lab-auto-converge", "lab-force-pause", "lab-downtime-steps",
    "lab-operator-force", "lab-source-down", "lab-link-blip", "lab-queued-abort",
    "lab-controller-restart",
])
def test_fault_or_policy_scenario_on_real_hosts(
    name: str, fault_lab: LabUnderTest, run_fault: Any
) -> None:
    ran = run_fault(name)
    assert_promised_outcome(fault_lab, ran, name)
    m = ran.migration()
    actions = {(a.kind, a.target): a.outcome for a in ran.real.store.actions()}
    if name == "lab-postcopy":
        assert m.timeout_action == "force_complete" and m.postcopy_at is not None
    elif name == "lab-operator-force":
        assert actions[("force_complete", "lab-vm1")] == "ok" and m.postcopy_at is not None
    elif name == "lab-force-pause":
        assert (m.timeout_action, m.paused_guest, m.postcopy_at) == (
            "force_complete", True, None)
    elif name == "lab-auto-converge":
        assert m.auto_converge_throttle is not None and m.auto_converge_throttle >= 20
        assert m.timeout_action is None
    elif name == "lab-downtime-steps":
        assert m.max_downtime is not None and m.max_downtime > 0.5  # several steps applied
    elif name == "lab-operator-abort":
        assert actions[("abort", "lab-vm1")] == "ok" and "canceled by client" in (
            m.error_message or "")
    elif name == "lab-abort":
        # the one real run of lab-abort (test_lab_scenarios.py ran it again): aborted by
        # the completion timeout, 10 s/GiB x 2 GiB, at the first poll past 20 s
        assert m.timeout_action == "abort"
        assert "canceled by client" in (m.error_message or "")
        assert m.total_time is not None and 20.0 < m.total_time < 30.0
        assert m.downtime is None  # never switched over
        assert m.data_transferred is not None and m.data_transferred > 0
        assert defined_domains(fault_lab, "lab2") == set()  # nothing left on lab2
        assert ran.real.final_hosts == ran.sim.final_hosts == {"lab-vm1": "lab1"}
        sim_m = next(iter(ran.sim.store.migrations()))
        assert (sim_m.status, sim_m.error, sim_m.dest) == (m.status, m.error, m.dest)
        assert [(i.name, i.host, i.vm_state) for i in ran.real.store.instances()] == [
            (i.name, i.host, i.vm_state) for i in ran.sim.store.instances()]
        assert sim_m.total_time == pytest.approx(m.total_time, abs=2.0)
    elif name == "lab-link-cut":
        # failed by libvirt's keepalive, not by a timeout of ours
        assert m.timeout_action is None and m.finished_at is not None
        assert 7.0 + 20.0 < m.finished_at < 7.0 + 60.0
    elif name == "lab-service-down":
        assert m.started_at is None  # pre_live_migration found lab2's libvirtd gone
        assert "fired after the checks" in actions[("service_down", "lab2")]
    elif name == "lab-queued-abort":
        assert ran.migration("lab-vm2").started_at is None
    elif name == "lab-controller-restart":
        assert ran.real.restarts == 1 and m.status is MigrationStatus.COMPLETED


def test_a_killed_controller_is_replaced_by_resume(
    fault_lab: LabUnderTest, tmp_path: Path, lab_figures: dict[str, dict[str, Any]]
) -> None:
    """`livemig run` SIGKILLed mid-migration; a new controller finishes the run by asking
    libvirt (the job went on inside libvirtd without its client)."""
    out = tmp_path / "run"
    scenario_file = SCENARIOS / "lab-resume.yaml"
    cmd = [sys.executable, "-m", "livemig.core.cli", "run", str(scenario_file), "--driver",
           "libvirt", "--inventory", str(fault_lab.inventory_path), "--out", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while migration_status(out / runner.STATE_FILE) != "running":
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started its migration"
            time.sleep(0.2)
        # well into the transfer (libvirtd has the job): a condition, not a fixed sleep
        wait_transfer_under_way(fault_lab.inventory.host("lab1").uri, "lab-vm1")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert migration_status(out / runner.STATE_FILE) == "running"
    assert not (out / "summary.json").exists()
    # the guest did not die with it (lab2 holds the paused incoming domain of the job)
    assert "lab1" in hosts_running(fault_lab, "lab-vm1")

    t0 = time.monotonic()
    result = runner.resume_run(out, driver_options={"keep_domains": True})
    try:
        (m,) = result.store.migrations()
        assert (m.status, m.dest, m.error) == (MigrationStatus.COMPLETED, "lab2", None), m
        assert result.restarts == 1 and result.invariants.violations == ()
        assert hosts_running(fault_lab, "lab-vm1") == ["lab2"]
        assert "lab-vm1" not in defined_domains(fault_lab, "lab1")
        assert result.store.instance("lab-vm1").host == "lab2"
        assert_guest_keeps_ticking(fault_lab, "lab-vm1")
        written = results.write_results(result, out, force=True)
        summary = json.loads((written / "summary.json").read_text())
        assert summary["invariants"]["violations"] == 0
        assert (written / runner.STATE_FILE).is_file()  # the records stay with the results
        lab_figures["lab-resume (killed run)"] = {
            "resume_wall_s": time.monotonic() - t0, "total_time_s": m.total_time}
    finally:
        remove_domains(fault_lab, result.scenario)


def migration_status(db: Path) -> str | None:
    """The first migration's status in a run's state file, read like another process."""
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        try:
            row = conn.execute("SELECT status FROM migrations ORDER BY id LIMIT 1").fetchone()
        except sqlite3.OperationalError:  # created but no table yet
            return None
    return None if row is None else str(row[0])


def test_a_scenario_over_tls_end_to_end(
    tls_lab: LabUnderTest, lab_figures: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """qemu+tls for the controller and between the libvirtds, VIR_MIGRATE_TLS for QEMU's
    stream; the lab's keys appear in no result file."""
    assert tls_lab.inventory.tls
    assert all(h.uri.startswith("qemu+tls://") for h in tls_lab.inventory.hosts)
    scenario = load_scenario(SCENARIOS / "lab-tls.yaml")
    real = run_scenario(scenario, "libvirt", driver_options={
        "inventory": str(tls_lab.inventory_path), "keep_domains": True})
    try:
        (m,) = real.store.migrations()
        assert (m.status, m.error, m.dest) == (MigrationStatus.COMPLETED, None, "lab2"), m
        assert m.flags & MIGRATE_FLAGS["VIR_MIGRATE_TLS"]
        assert real.invariants.violations == ()
        assert hosts_running(tls_lab, "lab-vm1") == ["lab2"]
        assert_guest_keeps_ticking(tls_lab, "lab-vm1")
        out = results.write_results(real, tmp_path / "out")
        keys = [p.read_bytes() for p in Path(tls_lab.inventory.lab_dir).rglob("*key*.pem")]
        assert keys
        for produced in out.iterdir():
            data = produced.read_bytes()
            assert not any(key.strip() in data for key in keys), produced
            assert b"PRIVATE KEY" not in data, produced
        lab_figures["lab-tls"] = {"total_time_s": m.total_time, "downtime_ms":
                                  None if m.downtime is None else round(m.downtime * 1e3, 1)}
    finally:
        remove_domains(tls_lab, scenario)
