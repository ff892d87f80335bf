"""Asking libvirt and the guests directly, for the real-lab tests (``tests/lab``).

Fresh ``virsh`` calls and connections, never the orchestrator's records: where each
domain is, what a host has defined, whether a guest's serial console keeps ticking.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt
import pytest
import simpy.rt

from livemig.core.model import Scenario
from livemig.drivers.libvirt_real import LibvirtDriver

if TYPE_CHECKING:
    from conftest import LabUnderTest  # tests/lab/conftest.py

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
TICK_RE = re.compile(r"^tick (\d+) ", re.MULTILINE)
NEW_TICKS = 3  # tick lines (one a second) the guest must add after the run ended
TICK_TIMEOUT = 45.0  # seconds to wait for them on this busy machine
GUEST_DEATH = ("Kernel panic", "dirtier exited")


def virsh(uri: str, *args: str) -> str:
    cp = subprocess.run(
        ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=60
    )
    assert cp.returncode == 0, f"virsh -c {uri} {' '.join(args)}: {cp.stderr.strip()}"
    return cp.stdout


def running_domains(lab: LabUnderTest) -> dict[str, set[str]]:
    """host -> names of its active domains, as ``virsh list --name`` says."""
    return {h.name: set(virsh(h.uri, "list", "--name").split()) for h in lab.inventory.hosts}


def defined_domains(lab: LabUnderTest, host: str) -> set[str]:
    """Every domain ``host`` knows, running or not (``virsh list --all --name``)."""
    return set(virsh(lab.inventory.host(host).uri, "list", "--all", "--name").split())


def hosts_running(lab: LabUnderTest, vm: str) -> list[str]:
    return sorted(h for h, names in running_domains(lab).items() if vm in names)


def console_log(lab: LabUnderTest, vm: str) -> Path:
    """Where the driver points the guest's serial console (``LibvirtDriver.console_log``)."""
    return Path(lab.inventory.console_dir) / f"{vm}.log"


def last_tick(log: Path) -> int:
    ticks = TICK_RE.findall(log.read_text(errors="replace")) if log.exists() else []
    return int(ticks[-1]) if ticks else 0


def wait_tick_above(log: Path, n: int, timeout: float) -> int:
    """Wait until the guest's console shows a tick above ``n``; returns that tick."""
    deadline = time.monotonic() + timeout
    while (t := last_tick(log)) <= n:
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
            pytest.fail(f"console {log} stuck at tick {t} (wanted > {n}); tail:\n{tail}")
        time.sleep(0.2)
    return t


def wait_transfer_under_way(uri: str, vm: str, timeout: float = 120.0) -> int:
    """Wait until ``vm``'s migration job on its source (``uri``, a fresh connection) has
    sent memory; returns the bytes sent. A condition, not a fixed sleep: on a loaded
    machine libvirt takes seconds just to start the destination's QEMU."""
    deadline = time.monotonic() + timeout
    conn = libvirt.open(uri)
    try:
        while True:
            try:
                stats = conn.lookupByName(vm).jobStats()
            except libvirt.libvirtError:
                stats = {}
            if (stats.get("type") in (libvirt.VIR_DOMAIN_JOB_BOUNDED,
                                      libvirt.VIR_DOMAIN_JOB_UNBOUNDED)
                    and stats.get("memory_processed", 0) > 0):
                return int(stats["memory_processed"])
            if time.monotonic() > deadline:
                pytest.fail(f"{vm}: no migration job sending memory on {uri} within "
                            f"{timeout:g} s (last stats: {stats})")
            time.sleep(0.2)
    finally:
        conn.close()


def assert_guest_keeps_ticking(lab: LabUnderTest, vm: str) -> int:
    """The guest, wherever it runs, adds NEW_TICKS tick lines after this call began."""
    log = console_log(lab, vm)
    start = last_tick(log)
    assert start > 0, f"{log} has no tick line at all"
    deadline = time.monotonic() + TICK_TIMEOUT
    while (now := last_tick(log)) < start + NEW_TICKS:
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-1500:]
            pytest.fail(f"{vm}: console {log} stuck at tick {now} (from {start}); tail:\n{tail}")
        time.sleep(0.25)
    text = log.read_text(errors="replace")
    assert not [d for d in GUEST_DEATH if d in text], text[-1500:]
    return now - start


def remove_domains(lab: LabUnderTest, scenario: Scenario) -> None:
    """Let the driver destroy the scenario's domains (and disks) everywhere."""
    env = simpy.rt.RealtimeEnvironment(strict=False)
    LibvirtDriver(env, scenario, inventory=lab.inventory_path, boot=False).close()
