"""The real driver's CPU utilisation on real libvirt, of lab guests burning a CPU trace.

Lab ``cpu`` (two hosts, shared storage) is brought up for this module under its lab lock
and taken down after it; a lab that cannot start fails the tests. Three 128 MiB TCG guests
on lab1: ``c80`` and ``c20`` burn 80 % and 20 % of their vCPU, ``ctr`` follows a ramp.

What is checked, and why so: a guest keeps its vCPU busy for its target share d of the
time by its own clock (``cpu_pct`` on its console, within ``GUEST_TOLERANCE``). The host
runs the vCPU thread for that time only when a host CPU is free: this machine has 2 cores
shared with other work, so the driver's utilisation u (libvirt's vCPU run time) is d minus
what the vCPU spent waiting in the host's run queue (``waiting``, libvirt's vCPU delay).
Hence: u never exceeds d by more than TCG's overhead (``OVERHEAD``), u + waiting is never
below d (``LOST_TOLERANCE``), and u + waiting equals the time the guest's vCPU was runnable
by the guest's own account (busy, plus its wake-ups that came late: ``wake_late_pct``)
within ``ACCOUNT_TOLERANCE``; on an idle host waiting is ~0 and u is d itself. The
tolerances come from measurements (README, "CPU utilisation on real hosts"): at a load
average of 9.6-15.9 on the 2 cores an 80 % guest got u = 0.17-0.33 and u + waiting matched
the guest's account within 0.018.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import simpy.rt
from fakes import poll_job
from lablock import running_lab

from livemig.core.cpu_trace import utilisation_at
from livemig.core.flags import parse_flags
from livemig.core.model import HostSpec, MigrationPolicy, Policy, Scenario, Storage, VmSpec
from livemig.drivers.base import JobType
from livemig.drivers.cpu_stats import CpuUsage
from livemig.drivers.libvirt_real import LibvirtDriver

pytestmark = pytest.mark.lab

LAB = "cpu"
HOSTS = ("lab1", "lab2")
MiB = 1 << 20
GiB = 1 << 30
RAMP = (0.0, 60.0)  # ctr: 0 % to 60 % over RAMP_INTERVAL seconds, then 60 %
RAMP_INTERVAL = 20.0
WINDOW_TICKS = 10  # a measured window: 10 of the guests' 1 s console ticks
TICK_TIMEOUT = 60.0  # seconds for a guest to print its next ticks on this busy machine
# tolerances from four runs at load 9.6-15.9 and a probe at load 4.3 (README table)
GUEST_TOLERANCE = 6.0  # percent points, the guest's cpu_pct against its target (seen: 3.0)
OVERHEAD = 0.05  # share of a vCPU TCG adds to the guest's busy time (seen: idle guest 0.009)
LOST_TOLERANCE = 0.03  # u + waiting below d: the counters' 10 ms steps (seen: never below)
ACCOUNT_TOLERANCE = 0.05  # |u + waiting - (busy + late wake-ups)| (seen: at most 0.018)
TICK_RE = re.compile(r"^tick (\d+) uptime=([\d.]+) .*cpu_pct=([-\d.]+) "
                     r"cpu_target=([\d.]+) wake_late_pct=([-\d.]+)$", re.MULTILINE)


def vm(name: str, trace: tuple[float, ...], interval: float = 1.0) -> VmSpec:
    return VmSpec(name=name, host=HOSTS[0], ram=128 * MiB, vcpus=1, used_memory=64 * MiB,
                  working_set=8 * MiB, dirty_rate=0.0, cpu_trace=trace,
                  cpu_trace_interval=interval)


SCENARIO = Scenario(
    name="lab-cpu",
    hosts=tuple(HostSpec(name=n, ram=4 * GiB, vcpus=4, disk=20 * GiB,
                         storage=Storage.SHARED) for n in HOSTS),
    vms=(vm("c80", (80.0,)), vm("c20", (20.0,)), vm("ctr", RAMP, RAMP_INTERVAL)),
    policy=Policy(migration=MigrationPolicy(completion_timeout=0.0)),
)


@pytest.fixture(scope="module")
def driver() -> Iterator[LibvirtDriver]:
    with running_lab(LAB, hosts=2, storage="shared") as path:
        drv = LibvirtDriver(simpy.rt.RealtimeEnvironment(strict=False), SCENARIO,
                            inventory=path)
        try:
            yield drv
        finally:
            drv.close()


# -- the guests' consoles -------------------------------------------------------------------


def ticks(drv: LibvirtDriver, name: str) -> list[tuple[int, float, float, float, float]]:
    """(tick, uptime s, cpu_pct, cpu_target, wake_late_pct) of every console line so far."""
    text = drv.console_log(name).read_text(errors="replace")
    assert "Kernel panic" not in text and "dirtier exited" not in text, text[-500:]
    return [(int(n), float(up), float(pct), float(target), float(late))
            for n, up, pct, target, late in TICK_RE.findall(text)]


def last_tick(drv: LibvirtDriver, name: str) -> int:
    seen = ticks(drv, name)
    return seen[-1][0] if seen else 0


def wait_ticks(drv: LibvirtDriver, name: str, tick: int) -> None:
    """Until ``name``'s console shows tick number ``tick`` (it is alive and counting)."""
    deadline = time.monotonic() + TICK_TIMEOUT
    while last_tick(drv, name) < tick:
        assert time.monotonic() < deadline, f"{name}: no tick {tick} within {TICK_TIMEOUT} s"
        time.sleep(0.2)


@dataclass(frozen=True)
class Reading:
    """The driver's usage of a guest over a window, and the guest's own account of it
    (means of its console's per-second figures, percent)."""

    used: CpuUsage
    guest_pct: float  # the program did not sleep
    late_pct: float  # its wake-ups came later than asked: runnable, not yet running


def measure(drv: LibvirtDriver, names: tuple[str, ...]) -> dict[str, Reading]:
    """Each guest's usage over a window of WINDOW_TICKS console ticks."""
    for name in names:
        drv.cpu_usage(name)  # the window starts here (a first reading waits 1 s)
    start = {name: last_tick(drv, name) for name in names}
    for name in names:
        wait_ticks(drv, name, start[name] + WINDOW_TICKS + 1)
    out = {}
    for name in names:
        used = drv.cpu_usage(name)
        inside = [(pct, late) for n, _, pct, _, late in ticks(drv, name)
                  if start[name] < n <= start[name] + WINDOW_TICKS + 1]
        out[name] = Reading(used=used, guest_pct=sum(p for p, _ in inside) / len(inside),
                            late_pct=sum(late for _, late in inside) / len(inside))
    return out


def check(name: str, target: float, reading: Reading, figures: dict[str, Any]) -> None:
    """The guest burns its target; the host counted every moment its vCPU was runnable as
    run (the driver's utilisation) or waited (the CPU it could not get)."""
    used = reading.used
    assert used.waiting is not None, "libvirt gave no vCPU run-queue delay (vcpu.N.delay)"
    runnable_host = used.utilisation + used.waiting
    runnable_guest = (reading.guest_pct + reading.late_pct) / 100
    load = os.getloadavg()[0]
    figures.update({f"{name}_u": used.utilisation, f"{name}_wait": used.waiting,
                    f"{name}_guest_pct": reading.guest_pct,
                    f"{name}_late_pct": reading.late_pct, f"{name}_window_s": used.window,
                    f"{name}_load1": load})
    print(f"{name}: target {target:.2f} guest {reading.guest_pct:.1f} % (+{reading.late_pct:.1f}"
          f" % late wake-ups) u {used.utilisation:.3f} waiting {used.waiting:.3f} u+waiting "
          f"{runnable_host:.3f} over {used.window:.1f} s (load {load:.1f})")
    assert abs(reading.guest_pct - 100 * target) <= GUEST_TOLERANCE, (name, reading)
    assert used.window >= WINDOW_TICKS - 1
    assert used.utilisation <= target + OVERHEAD, (name, used)
    assert runnable_host >= target - LOST_TOLERANCE, (name, used)  # no demand lost
    assert abs(runnable_host - runnable_guest) <= ACCOUNT_TOLERANCE, (name, reading)


# -- the tests ------------------------------------------------------------------------------


def test_utilisation_of_an_80_and_a_20_percent_guest(
    driver: LibvirtDriver, lab_figures: dict[str, dict[str, Any]]
) -> None:
    figures = lab_figures.setdefault("cpu utilisation (lab cpu)", {})
    for name in ("c80", "c20"):
        wait_ticks(driver, name, 2)  # past the boot
    readings = measure(driver, ("c80", "c20"))
    for name, target in (("c80", 0.8), ("c20", 0.2)):
        check(name, target, readings[name], figures)
    # whatever the contention, the busier guest is the busier one
    assert readings["c80"].used.utilisation > readings["c20"].used.utilisation


def test_utilisation_survives_a_migration(
    driver: LibvirtDriver, lab_figures: dict[str, dict[str, Any]]
) -> None:
    figures = lab_figures.setdefault("cpu utilisation after migration (lab cpu)", {})
    driver.cpu_usage("c80")
    source_process = driver._cpu_samples["c80"].process
    driver.pre_live_migration("c80", HOSTS[1], False)
    driver.start_migration("c80", HOSTS[1], uri=f"qemu+tcp://{HOSTS[1]}/system",
                           flags=parse_flags(SCENARIO.policy.migration.live_migration_flag),
                           bandwidth_mib=0)
    final = poll_job(driver, "c80", lambda i: i.type is not JobType.UNBOUNDED, timeout=120.0,
                     step=0.5)[-1]
    assert final.type is JobType.COMPLETED, final
    driver.post_live_migration("c80", HOSTS[0], HOSTS[1])
    assert driver.instance_host("c80") == HOSTS[1]
    readings = measure(driver, ("c80",))
    process = driver._cpu_samples["c80"].process
    assert process[0] == HOSTS[1] and process != source_process  # the destination's QEMU
    check("c80", 0.8, readings["c80"], figures)


def test_a_guest_follows_its_trace(
    driver: LibvirtDriver, lab_figures: dict[str, dict[str, Any]]
) -> None:
    figures = lab_figures.setdefault("cpu trace (lab cpu)", {})
    # the ramp ends at RAMP_INTERVAL s of the guest's uptime: measure in the hold after it
    deadline = time.monotonic() + 2 * RAMP_INTERVAL + TICK_TIMEOUT
    while not ticks(driver, "ctr") or ticks(driver, "ctr")[-1][1] < RAMP_INTERVAL:
        assert time.monotonic() < deadline, "ctr never reached the end of its ramp"
        time.sleep(0.5)
    readings = measure(driver, ("ctr",))
    check("ctr", RAMP[-1] / 100, readings["ctr"], figures)
    # every second the guest asked itself for the trace's value at its uptime (the target
    # of the 100 ms period that just ran, printed when the guest next runs: a late wake-up
    # on this busy machine puts the line later still, so half a second of the slope)
    slope = (RAMP[1] - RAMP[0]) / RAMP_INTERVAL  # percent per second
    lines = ticks(driver, "ctr")
    ramp = [(up, target) for _, up, _, target, _ in lines if up <= RAMP_INTERVAL]
    assert len(ramp) >= RAMP_INTERVAL / 2, lines[:5]
    for up, target in ramp:
        assert abs(target - 100 * utilisation_at(RAMP, RAMP_INTERVAL, up)) <= 0.5 * slope
    assert all(target == RAMP[-1] for _, up, _, target, _ in lines if up > RAMP_INTERVAL + 1)
    # and got it: the guest's own busy share tracks the ramp, second by second
    misses = [(up, pct, target) for _, up, pct, target, _ in lines[2:]
              if abs(pct - target) > slope + GUEST_TOLERANCE]
    assert len(misses) <= len(lines) // 10, misses
