"""The lab scenarios (``scenarios/lab-*.yaml``) on real libvirt hosts, checked against
libvirt itself and against the simulator.

Real, no mocks: each scenario runs through :func:`run_scenario` with the ``libvirt`` driver
in a namespace lab (``conftest.py``: a shared-storage lab, then a local-storage one, never
both at once). After the run the tests ask libvirt directly (``virsh`` and fresh
connections, not the orchestrator's records) where each domain is, read the guest's
serial console to see that it still runs, and compare the migration record with
libvirt's completed-job statistics. The same file on the ``sim`` driver must end the same
way (status, error, host). Root and the packages of ``scripts/setup-lab`` are needed; a
lab that cannot start fails the tests.
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    running_domains,
)

from livemig.core import results
from livemig.core.model import MigrationStatus, Scenario
from livemig.core.runner import RunResult, run_scenario
from livemig.core.scenario import load_scenario
from livemig.core.state import MigrationRecord
from livemig.drivers.lab.lab import lab_down, lab_status
from livemig.drivers.lab.proc import Tracked, ns_id, pids_in_namespaces, start_time

if TYPE_CHECKING:
    from conftest import LabUnderTest  # tests/lab/conftest.py

pytestmark = pytest.mark.lab

COMPLETED_STATS = (
    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
)


# -- asking libvirt and the guest directly -----------------------------------------------------


def completed_job_stats(lab: LabUnderTest, host: str, vm: str) -> dict[str, Any]:
    """libvirt's statistics of the last completed job of ``vm`` on ``host`` (fresh conn)."""
    conn = libvirt.open(lab.inventory.host(host).uri)
    try:
        return conn.lookupByName(vm).jobStats(COMPLETED_STATS)
    finally:
        conn.close()


# -- running a scenario -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Run:
    scenario: Scenario
    real: RunResult
    sim: RunResult
    wall_s: float

    @property
    def migration(self) -> MigrationRecord:
        (record,) = self.real.store.migrations()
        return record

    @property
    def sim_migration(self) -> MigrationRecord:
        (record,) = self.sim.store.migrations()
        return record


@pytest.fixture
def run_lab(lab_figures: dict[str, dict[str, Any]]) -> Iterator[Any]:
    """``run_lab(lab, "lab-x.yaml")``: the scenario on the lab (domains kept) and on sim."""
    ran: list[tuple[LabUnderTest, Scenario]] = []

    def run(lab: LabUnderTest, file: str) -> Run:
        scenario = load_scenario(SCENARIOS / file)
        ran.append((lab, scenario))
        t0 = time.monotonic()
        real = run_scenario(
            scenario, "libvirt",
            driver_options={"inventory": str(lab.inventory_path), "keep_domains": True},
        )
        result = Run(scenario=scenario, real=real, sim=run_scenario(scenario, "sim"),
                     wall_s=time.monotonic() - t0)
        lab_figures[scenario.name] = {
            "wall_s": result.wall_s,
            **{f"real_{k}": v for k, v in figures(result.migration).items()},
            **{f"sim_{k}": v for k, v in figures(result.sim_migration).items()},
        }
        return result

    yield run
    for lab, scenario in ran:
        if lab_status(lab.name)["state"] == "up":
            remove_domains(lab, scenario)
            for vm in scenario.vms:
                assert hosts_running(lab, vm.name) == []


def figures(m: MigrationRecord) -> dict[str, Any]:
    return {
        "status": m.status.value, "total_time_s": m.total_time,
        "downtime_ms": None if m.downtime is None else round(m.downtime * 1000, 1),
        "iterations": m.iterations, "bytes": m.data_transferred,
    }


def assert_same_outcome_as_sim(run: Run) -> None:
    real, sim = run.migration, run.sim_migration
    assert (real.status, real.error, real.dest) == (sim.status, sim.error, sim.dest)
    assert run.real.final_hosts == run.sim.final_hosts
    assert [(i.name, i.host, i.vm_state) for i in run.real.store.instances()] == [
        (i.name, i.host, i.vm_state) for i in run.sim.store.instances()
    ]


def assert_where(lab: LabUnderTest, run: Run, expected: dict[str, str]) -> None:
    """Each VM runs on exactly one host, the expected one, as libvirt and the records say."""
    for vm, host in expected.items():
        assert hosts_running(lab, vm) == [host], running_domains(lab)
        assert run.real.final_hosts[vm] == host
        assert run.real.store.instance(vm).host == host
        others = [h.name for h in lab.inventory.hosts if h.name != host]
        for other in others:
            assert vm not in defined_domains(lab, other), f"{vm} is still defined on {other}"


def assert_matches_libvirt(lab: LabUnderTest, m: MigrationRecord) -> dict[str, Any]:
    """The record's figures are libvirt's completed-job statistics on the destination."""
    assert m.dest is not None
    stats = completed_job_stats(lab, m.dest, m.instance)
    assert stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED, stats
    assert m.total_time == stats["time_elapsed"] / 1000.0
    assert m.downtime == stats["downtime"] / 1000.0
    assert m.data_transferred == stats["data_processed"]
    assert m.iterations == stats["memory_iteration"]
    return stats


def assert_completed(lab: LabUnderTest, run: Run, dest: str) -> dict[str, Any]:
    m = run.migration
    assert (m.status, m.error, m.source, m.dest) == (MigrationStatus.COMPLETED, None, "lab1", dest)
    stats = assert_matches_libvirt(lab, m)
    assert_where(lab, run, {m.instance: dest})
    assert_guest_keeps_ticking(lab, m.instance)
    assert_same_outcome_as_sim(run)
    return stats


def assert_rejected(lab: LabUnderTest, run: Run, error: str, message: str) -> None:
    m = run.migration
    assert (m.status, m.error) == (MigrationStatus.ERROR, error), m
    assert message in (m.error_message or "")
    assert m.started_at is None and m.total_time is None  # no transfer began
    assert_where(lab, run, {m.instance: "lab1"})
    assert_guest_keeps_ticking(lab, m.instance)
    assert_same_outcome_as_sim(run)


# -- lab down --------------------------------------------------------------------------------


def lab_processes(lab: LabUnderTest) -> set[Tracked]:
    """The lab's tracked daemons and holders plus everything in its network namespaces."""
    ids = [i for h in lab.inventory.hosts if (i := ns_id(f"/run/netns/{h.netns}"))]
    pids = [p for h in lab.inventory.hosts for p in h.pids.values()]
    procs = set()
    for pid in pids + pids_in_namespaces("net", ids):
        st = start_time(pid)
        if st is not None:
            procs.add(Tracked(pid, st))
    return procs


def processes_naming(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (libvirtd/virtlogd pidfiles
    and QEMU's console path are under the lab's directory)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd:
            found.append(f"{pid}: {cmd.strip()}")
    return found


def assert_down_leaves_nothing(lab: LabUnderTest) -> None:
    procs = lab_processes(lab)
    assert len(procs) >= 6  # a holder, virtlogd and libvirtd per host
    net_ids = [i for h in lab.inventory.hosts if (i := ns_id(f"/run/netns/{h.netns}"))]
    assert len(net_ids) == 2
    t0 = time.monotonic()
    lab_down(lab.name)
    lab.down_s = time.monotonic() - t0

    assert [p.pid for p in procs if p.alive()] == []
    assert pids_in_namespaces("net", net_ids) == []
    assert processes_naming(lab.inventory.lab_dir + "/") == []
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert [n for n in netns if n.startswith(f"{lab.name}-")] == []
    assert [n for n in os.listdir("/sys/class/net") if n.startswith(f"{lab.name}-")] == []
    assert not Path(lab.inventory.lab_dir).exists()
    assert lab_status(lab.name)["state"] == "down"


# -- the scenarios -----------------------------------------------------------------------------


class TestSharedStorage:
    """lab-explicit, lab-scheduler, lab-precheck-shared on a shared-storage lab (lab-abort,
    and what it shows here, is asserted by test_lab_failures.py)."""

    def test_explicit_destination(
        self, shared_lab: LabUnderTest, run_lab: Any, tmp_path: Path
    ) -> None:
        run = run_lab(shared_lab, "lab-explicit.yaml")
        stats = assert_completed(shared_lab, run, "lab2")

        # The result files, written as `livemig run` writes them, say what libvirt says.
        out = results.write_results(run.real, tmp_path / "out")
        with (out / "migrations.csv").open() as fh:
            (row,) = list(csv.DictReader(fh))
        assert (row["status"], row["source"], row["dest"]) == ("completed", "lab1", "lab2")
        assert float(row["total_time_s"]) == stats["time_elapsed"] / 1000.0
        assert float(row["downtime_ms"]) == pytest.approx(stats["downtime"], abs=1e-9)
        assert int(row["data_transferred_bytes"]) == stats["data_processed"]
        assert int(row["iterations"]) == stats["memory_iteration"]
        with (out / "instances.csv").open() as fh:
            (inst,) = list(csv.DictReader(fh))
        assert (inst["host"], inst["driver_host"]) == ("lab2", "lab2")

    def test_scheduler_picks_the_only_other_host(
        self, shared_lab: LabUnderTest, run_lab: Any
    ) -> None:
        run = run_lab(shared_lab, "lab-scheduler.yaml")
        assert run.scenario.events[0].dest is None  # type: ignore[union-attr]
        assert_completed(shared_lab, run, "lab2")
        assert run.migration.attempted_hosts == ()

    def test_block_migration_on_shared_storage_is_rejected(
        self, shared_lab: LabUnderTest, run_lab: Any
    ) -> None:
        run = run_lab(shared_lab, "lab-precheck-shared.yaml")
        assert_rejected(shared_lab, run, "InvalidLocalStorage",
                        "Block migration can not be used with shared storage")

    def test_down_leaves_nothing(self, shared_lab: LabUnderTest) -> None:
        assert_down_leaves_nothing(shared_lab)


class TestLocalStorage:
    """lab-block and lab-precheck on a local-storage lab."""

    def test_block_migration_moves_the_disk(self, local_lab: LabUnderTest, run_lab: Any) -> None:
        lab1, lab2 = (Path(h.instances_dir) for h in local_lab.inventory.hosts)
        assert lab1 != lab2
        disk = "lab-vm1.qcow2"
        run = run_lab(local_lab, "lab-block.yaml")
        assert run.migration.block_migration
        assert_completed(local_lab, run, "lab2")
        assert (lab2 / disk).is_file() and not (lab1 / disk).exists()
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(lab2 / disk)],
                              capture_output=True, text=True, check=True).stdout
        assert '"virtual-size": 67108864' in info  # 64 MiB, as the scenario says

    def test_live_migration_on_local_storage_is_rejected(
        self, local_lab: LabUnderTest, run_lab: Any
    ) -> None:
        run = run_lab(local_lab, "lab-precheck.yaml")
        assert_rejected(local_lab, run, "InvalidSharedStorage",
                        "Live migration can not be used without shared storage")
        lab1, lab2 = (Path(h.instances_dir) for h in local_lab.inventory.hosts)
        assert (lab1 / "lab-vm1.qcow2").is_file() and not (lab2 / "lab-vm1.qcow2").exists()

    def test_down_leaves_nothing(self, local_lab: LabUnderTest) -> None:
        assert_down_leaves_nothing(local_lab)
