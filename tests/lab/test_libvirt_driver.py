"""The real driver's issue-4 paths on real libvirt: post-copy, auto-converge, suspend and
resume across a migration, adopting a job (a second driver; a killed controller), and
the facts it reports when a host cannot be reached.

Lab ``treal`` (two hosts, shared storage) is brought up for this module under its lab
lock and taken down after it; a lab that cannot start fails the tests. Each test boots
its own 128 MiB TCG guest and removes it at the end. Where a domain runs afterwards is
asked from libvirt itself over fresh connections (not through the driver), and a guest
that must have survived is checked inside: its serial console keeps ticking.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
import simpy.rt
from fakes import poll_job
from labcheck import wait_transfer_under_way
from lablock import running_lab

from livemig.core.flags import AUTO_CONVERGE, POSTCOPY, parse_flags
from livemig.core.model import (
    FaultKind,
    HostSpec,
    MigrationPolicy,
    Policy,
    Scenario,
    Storage,
    VmSpec,
)
from livemig.drivers.base import DomainState, JobInfo, JobType
from livemig.drivers.lab.inventory import load_inventory
from livemig.drivers.libvirt_real import HostUnreachable, LibvirtDriver

pytestmark = pytest.mark.lab

LAB = "treal"
HOSTS = ("lab1", "lab2")
MiB = 1 << 20
GiB = 1 << 30
TICK_RE = re.compile(r"^tick (\d+) ", re.MULTILINE)
GUEST_DEATH = ("Kernel panic", "dirtier exited")
TICK_TIMEOUT = 45.0  # seconds for a guest to print 3 more ticks on this busy machine
JOB_TIMEOUT = 90.0
#: the cap (MiB/s) of the jobs another driver attaches to: ~70 MiB take ~9 s, long enough
#: for the attach (under a second) to find the job running, short enough not to wait idly
ATTACH_CAP_MIB = 8

_CHILD = textwrap.dedent(
    """
    import sys, time
    import simpy.rt
    from livemig.core.flags import parse_flags
    sys.path[:0] = [sys.argv[1], sys.argv[1] + "/.."]  # tests/lab, tests (lablock)
    from test_libvirt_driver import scenario_for
    from livemig.drivers.libvirt_real import LibvirtDriver

    inventory, vm, ws, rate, cap = sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
    scenario = scenario_for(vm, ws_mib=ws, rate_mib=rate)
    env = simpy.rt.RealtimeEnvironment(strict=False)
    drv = LibvirtDriver(env, scenario, inventory=inventory, boot=False, keep_domains=True)
    drv.pre_live_migration(vm, "lab2", False)
    flags = parse_flags(scenario.policy.migration.live_migration_flag)
    drv.start_migration(vm, "lab2", uri="qemu+tcp://lab2/system", flags=flags,
                        bandwidth_mib=cap)
    print("started", flush=True)
    time.sleep(600)
    """
)


def scenario_for(
    vm: str, *, ws_mib: int = 8, rate_mib: int = 0, keepalive: tuple[float, int] = (5.0, 5)
) -> Scenario:
    """Two shared-storage hosts; one 128 MiB guest ``vm`` on lab1 dirtying as asked."""
    return Scenario(
        name="libvirt-driver",
        hosts=tuple(HostSpec(name=n, ram=4 * GiB, vcpus=4, disk=20 * GiB,
                             storage=Storage.SHARED) for n in HOSTS),  # fmt: skip
        vms=(VmSpec(name=vm, host=HOSTS[0], ram=128 * MiB, vcpus=1, used_memory=64 * MiB,
                    working_set=ws_mib * MiB, dirty_rate=rate_mib * MiB),),  # fmt: skip
        policy=Policy(migration=MigrationPolicy(
            completion_timeout=0.0, keepalive_interval=keepalive[0],
            keepalive_count=keepalive[1])),  # fmt: skip
    )


# -- the lab and asking libvirt directly ----------------------------------------------------


@pytest.fixture(scope="module")
def inventory() -> Iterator[Path]:
    with running_lab(LAB, hosts=2, storage="shared") as path:
        yield path


def where(inventory: Path, vm: str) -> dict[str, DomainState]:
    """host -> state of ``vm``'s domain there, for every host that has one (fresh conns)."""
    states = {
        libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
        libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    }
    found: dict[str, DomainState] = {}
    for host in load_inventory(inventory).hosts:
        conn = libvirt.open(host.uri)
        try:
            for dom in conn.listAllDomains():
                if dom.name() == vm:
                    found[host.name] = states.get(dom.state()[0], DomainState.SHUTOFF)
        finally:
            conn.close()
    return found


def console(inventory: Path, vm: str) -> Path:
    return Path(load_inventory(inventory).console_dir) / f"{vm}.log"


def last_tick(log: Path) -> int:
    ticks = TICK_RE.findall(log.read_text(errors="replace"))
    return int(ticks[-1]) if ticks else -1


def assert_ticking(log: Path, more: int = 3) -> None:
    """The guest prints ``more`` new ticks (it lives), and never died on the way."""
    start = last_tick(log)
    deadline = time.monotonic() + TICK_TIMEOUT
    while last_tick(log) < start + more:
        assert time.monotonic() < deadline, f"{log.name}: no new ticks after tick {start}"
        time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert not any(d in text for d in GUEST_DEATH), text[-500:]


@contextmanager
def guest(inventory: Path, scenario: Scenario) -> Iterator[LibvirtDriver]:
    """A driver that booted ``scenario``'s guest; the guest is removed afterwards."""
    drv = LibvirtDriver(rt_env(), scenario, inventory=inventory, keep_domains=True)
    try:
        yield drv
    finally:
        drv.close()
        LibvirtDriver(rt_env(), scenario, inventory=inventory, boot=False).close()


def rt_env() -> simpy.rt.RealtimeEnvironment:
    return simpy.rt.RealtimeEnvironment(strict=False)


def poll(drv: LibvirtDriver, vm: str, until: Callable[[JobInfo], bool],
         timeout: float = JOB_TIMEOUT, step: float = 0.5) -> list[JobInfo]:
    """Readings of ``job_info`` every ``step`` until ``until(reading)``; fails on timeout."""
    return poll_job(drv, vm, until, timeout=timeout, step=step)


def ended(info: JobInfo) -> bool:
    return info.type is not JobType.UNBOUNDED


def flags_of(scenario: Scenario) -> int:
    return parse_flags(scenario.policy.migration.live_migration_flag)


def migrate(drv: LibvirtDriver, scenario: Scenario, *, extra: int = 0, cap: int = 0) -> None:
    vm = scenario.vms[0].name
    drv.pre_live_migration(vm, HOSTS[1], False)
    drv.start_migration(vm, HOSTS[1], uri=f"qemu+tcp://{HOSTS[1]}/system",
                        flags=flags_of(scenario) | extra, bandwidth_mib=cap)


# -- post-copy, auto-converge, suspend/resume ------------------------------------------------


def test_postcopy_switch_moves_a_dirtying_guest(inventory: Path) -> None:
    # 8 MiB/s of writes over a 2 MiB/s cap: pre-copy alone would never end
    scenario = scenario_for("rpc", ws_mib=32, rate_mib=8)
    with guest(inventory, scenario) as drv:
        migrate(drv, scenario, extra=POSTCOPY, cap=2)
        seen = poll(drv, "rpc", lambda i: i.memory_processed > 0, timeout=30)
        assert not seen[-1].postcopy and seen[-1].type is JobType.UNBOUNDED
        drv.start_postcopy("rpc")
        seen = poll(drv, "rpc", ended, timeout=60)
        final = seen[-1]
        assert final.type is JobType.COMPLETED, final
        assert final.postcopy and all(i.postcopy for i in seen)
        # statistics from the source's JOB_COMPLETED event (dest has none after post-copy)
        assert final.time_elapsed > 0 and final.memory_processed > 0
        assert final.memory_remaining == 0 and final.downtime is not None
        assert where(inventory, "rpc") == {"lab2": DomainState.RUNNING}
        assert drv.instance_host("rpc") == "lab2"
        drv.post_live_migration("rpc", "lab1", "lab2")
        assert_ticking(console(inventory, "rpc"))


def test_auto_converge_throttle_rises_under_a_low_cap(inventory: Path) -> None:
    # 16 MiB/s of busy-wait writes over a 4 MiB/s cap: QEMU throttles the vCPU harder
    # after each round that does not converge (20 %, then +10 %)
    scenario = scenario_for("rac", ws_mib=8, rate_mib=16)
    with guest(inventory, scenario) as drv:
        migrate(drv, scenario, extra=AUTO_CONVERGE, cap=4)
        seen = poll(drv, "rac", lambda i: ended(i) or i.auto_converge_throttle >= 30,
                    timeout=120, step=1.0)
        throttles = [i.auto_converge_throttle for i in seen]
        print(f"auto-converge throttle after {seen[-1].time_elapsed:.1f} s: {throttles}")
        assert seen[-1].type is JobType.UNBOUNDED, seen[-1]
        assert throttles[0] < 20 <= max(throttles) and throttles[-1] >= 30
        assert throttles == sorted(throttles)  # it only rises while the job runs
        drv.abort_job("rac")
        final = poll(drv, "rac", ended, timeout=60)[-1]
        assert final.type is JobType.CANCELLED, final
        drv.rollback_live_migration("rac", "lab1", "lab2", False)
        assert where(inventory, "rac") == {"lab1": DomainState.RUNNING}
        assert_ticking(console(inventory, "rac"))  # the throttle is gone with the job


def test_suspended_guest_arrives_paused_and_resumes_on_dest(inventory: Path) -> None:
    scenario = scenario_for("rsus")
    log = console(inventory, "rsus")
    with guest(inventory, scenario) as drv:
        drv.suspend("rsus")
        assert where(inventory, "rsus") == {"lab1": DomainState.PAUSED}
        drv.suspend("rsus")  # already paused: nothing happens
        dest_free = drv.host_facts("lab2").free_ram_mb
        migrate(drv, scenario)
        final = poll(drv, "rsus", ended)[-1]
        assert final.type is JobType.COMPLETED, final
        # the claim became the domain: counted once (the claim is released by post)
        assert drv.host_facts("lab2").free_ram_mb == dest_free - 128
        drv.post_live_migration("rsus", "lab1", "lab2")
        assert where(inventory, "rsus") == {"lab2": DomainState.PAUSED}
        facts = drv.world()
        assert [(d.instance, d.host, d.state) for d in facts.domains] == [
            ("rsus", "lab2", DomainState.PAUSED)]
        assert facts.unreachable == () and facts.overcommitted == () and facts.claims == {}
        tick = last_tick(log)
        time.sleep(3.0)
        assert last_tick(log) <= tick + 1  # paused: no ticks (one may have been in flight)
        drv.resume("rsus")
        assert where(inventory, "rsus") == {"lab2": DomainState.RUNNING}
        drv.resume("rsus")  # running: a no-op
        assert_ticking(log)


# -- adopting a job ----------------------------------------------------------------------------


def test_a_second_driver_attaches_to_a_running_job(inventory: Path) -> None:
    scenario = scenario_for("ratt", ws_mib=16, rate_mib=0)
    with guest(inventory, scenario) as first:
        migrate(first, scenario, cap=ATTACH_CAP_MIB)
        poll(first, "ratt", lambda i: i.memory_processed > 0, timeout=30)
        first.close()  # keep_domains: the controller goes, the job must not
        second = LibvirtDriver(rt_env(), scenario, inventory=inventory, boot=False,
                               keep_domains=True)
        try:
            assert second.job_info("ratt").type is JobType.NONE
            second.attach_job("ratt", "lab1", "lab2")
            early = second.job_info("ratt")
            assert early.type is JobType.UNBOUNDED and early.memory_processed > 0, early
            seen = poll(second, "ratt", ended)
            final = seen[-1]
            assert final.type is JobType.COMPLETED, final
            assert final.downtime is not None and final.memory_remaining == 0
            assert final.time_elapsed >= early.time_elapsed
            assert where(inventory, "ratt") == {"lab2": DomainState.RUNNING}
        finally:
            second.close()
        # a job that ended while no controller watched: adopted afterwards
        later = LibvirtDriver(rt_env(), scenario, inventory=inventory, boot=False,
                              keep_domains=True)
        try:
            later.attach_job("ratt", "lab1", "lab2")
            info = later.job_info("ratt")
            assert info.type is JobType.COMPLETED and info.downtime is not None, info
            # the same guest said to be migrating back: the job "ended" on its source
            later.attach_job("ratt", "lab2", "lab1")
            back = later.job_info("ratt")
            assert back.type is JobType.FAILED and "controller was away" in (back.error or "")
        finally:
            later.close()
        assert where(inventory, "ratt") == {"lab2": DomainState.RUNNING}  # close kept it
        assert_ticking(console(inventory, "ratt"))


def test_a_killed_controllers_job_goes_on_and_is_adopted(inventory: Path) -> None:
    scenario = scenario_for("rkill", ws_mib=16, rate_mib=0)
    with guest(inventory, scenario):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(Path(__file__).parent), str(inventory),
             "rkill", "16", "0", str(ATTACH_CAP_MIB)],
            stdout=subprocess.PIPE, text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "started"
            # libvirtd has the job and sends memory (not a fixed sleep: load delays it)
            wait_transfer_under_way(load_inventory(inventory).host("lab1").uri, "rkill")
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        adopter = LibvirtDriver(rt_env(), scenario, inventory=inventory, boot=False,
                                keep_domains=True)
        try:
            adopter.attach_job("rkill", "lab1", "lab2")
            seen = poll(adopter, "rkill", ended)
            assert seen[0].type is JobType.UNBOUNDED  # libvirtd kept the job going
            final = seen[-1]
            assert final.type is JobType.COMPLETED, final
            assert final.downtime is not None and final.memory_processed > 0
            adopter.post_live_migration("rkill", "lab1", "lab2")
        finally:
            adopter.close()
        assert where(inventory, "rkill") == {"lab2": DomainState.RUNNING}
        assert_ticking(console(inventory, "rkill"))


# -- hosts that cannot be reached ----------------------------------------------------------------


def test_a_poll_during_a_migration_whose_source_link_drops_ends_by_the_keepalive(
    inventory: Path,
) -> None:
    """Issue 8 (a CI run hung ~15 min in lab-source-down): the source's link goes down
    while ``migrateToURI`` is in flight. Sharing one connection with it, the poll's call
    hung until TCP gave up; on separate connections it fails by the keepalive."""
    scenario = scenario_for("rdrop", ws_mib=16, rate_mib=4, keepalive=(1.0, 2))
    with guest(inventory, scenario) as drv:
        migrate(drv, scenario, cap=4)
        poll(drv, "rdrop", lambda i: i.memory_processed > 0, timeout=60)
        drv.inject_fault(FaultKind.LINK_DOWN, "lab1")  # nothing more arrives, not even a FIN
        try:
            answers: list[object] = []

            def read() -> None:
                try:
                    answers.append(drv.job_info("rdrop"))
                except Exception as exc:  # noqa: BLE001 - any answer is an answer
                    answers.append(exc)

            t0 = time.monotonic()
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(60.0)  # keepalive 1 s x 2 (+ a 1.5 s probe): seconds, not minutes
            assert answers, "job_info still blocked 60 s after the source's link went down"
            print(f"job_info answered after {time.monotonic() - t0:.1f} s: {answers[0]}")
        finally:
            drv.inject_fault(FaultKind.LINK_UP, "lab1")
        final = poll(drv, "rdrop", ended)[-1]
        assert final.type in (JobType.FAILED, JobType.CANCELLED), final
        drv.rollback_live_migration("rdrop", "lab1", "lab2", False)  # Nova's rollback
        assert set(where(inventory, "rdrop")) == {"lab1"}  # it never left


def test_a_stopped_libvirtd_makes_its_host_unreachable_not_a_hang(inventory: Path) -> None:
    scenario = scenario_for("rflt", keepalive=(1.0, 2))
    with guest(inventory, scenario) as drv:
        drv.inject_fault(FaultKind.SERVICE_DOWN, "lab2")
        try:
            t0 = time.monotonic()
            facts = drv.world()
            assert facts.unreachable == ("lab2",)
            assert [(d.instance, d.host) for d in facts.domains] == [("rflt", "lab1")]
            assert drv.instance_host("rflt") == "lab1"  # answered from reachable hosts
            with pytest.raises(HostUnreachable, match="lab2"):
                drv.instance_running_on("rflt", "lab2")
            assert drv.host_facts("lab2").memory_mb == 0  # stale facts, no exception
            assert time.monotonic() - t0 < 15.0
        finally:
            drv.inject_fault(FaultKind.SERVICE_UP, "lab2")
        # a new libvirtd: the dead connection is reopened once and answers
        assert drv.world().unreachable == ()
        assert drv.instance_running_on("rflt", "lab2") is False
        drv.inject_fault(FaultKind.LINK_DOWN, "lab1")
        try:
            t0 = time.monotonic()
            with pytest.raises(HostUnreachable):
                drv.instance_running_on("rflt", "lab1")
            assert drv.world().unreachable == ("lab1",)
            hung = time.monotonic() - t0
            assert hung < 20.0, f"calls to a host whose link is down took {hung:.1f} s"
        finally:
            drv.inject_fault(FaultKind.LINK_UP, "lab1")
        assert drv.instance_host("rflt") == "lab1"
        # the destination's libvirtd stops mid-migration: the job fails, the guest stays
        migrate(drv, scenario, cap=2)
        poll(drv, "rflt", lambda i: i.memory_processed > 0, timeout=30)
        drv.inject_fault(FaultKind.SERVICE_DOWN, "lab2")
        try:
            final = poll(drv, "rflt", ended, timeout=60)[-1]
            assert final.type is JobType.FAILED and final.error, final
            print(f"dest libvirtd stopped mid-migration: {final.error}")
            assert drv.instance_host("rflt") == "lab1"
        finally:
            drv.inject_fault(FaultKind.SERVICE_UP, "lab2")
        drv.rollback_live_migration("rflt", "lab1", "lab2", False)
        assert where(inventory, "rflt") == {"lab1": DomainState.RUNNING}
        assert drv.world().claims == {}
        assert_ticking(console(inventory, "rflt"))
