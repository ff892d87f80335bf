"""The real driver's intricate logic on the fake libvirt (``tests/fakelibvirt``), no root:
job readings through a migration's phases, adopting a job after a controller restart,
post-copy endings, abort, and connections lost mid-job. Each test asserts what the driver
reports against what the fake world really did; the lab tests (``tests/lab``) check the
same paths on real libvirt."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakelibvirt import libvirt as fake
from fakelibvirt.driver import driver_modules, fake_driver, two_host_world
from fakelibvirt.world import World
from fakes import poll_job

from livemig.core.errors import HypervisorUnavailable, MigrationError
from livemig.core.flags import AUTO_CONVERGE, POSTCOPY, parse_flags
from livemig.core.model import HostSpec, MigrationPolicy, Policy, Scenario, Storage, VmSpec
from livemig.drivers.base import JobInfo, JobType

MiB = 1 << 20
GiB = 1 << 30
SRC, DEST = "lab1", "lab2"
VM = "fk1"
RUNNING = (fake.VIR_DOMAIN_RUNNING, fake.VIR_DOMAIN_RUNNING_MIGRATED)
BOOTED = (fake.VIR_DOMAIN_RUNNING, fake.VIR_DOMAIN_RUNNING_BOOTED)


def scenario(*, ws_mib: int = 8, rate_mib: int = 0, max_downtime: float = 0.5,
             keepalive: tuple[float, int] = (1.0, 1)) -> Scenario:
    return Scenario(
        name="fake-libvirt",
        hosts=tuple(HostSpec(name=n, ram=4 * GiB, vcpus=4, disk=20 * GiB,
                             storage=Storage.SHARED) for n in (SRC, DEST)),
        vms=(VmSpec(name=VM, host=SRC, ram=128 * MiB, vcpus=1, used_memory=64 * MiB,
                    working_set=ws_mib * MiB, dirty_rate=rate_mib * MiB),),
        policy=Policy(migration=MigrationPolicy(
            completion_timeout=0.0, max_downtime=max_downtime,
            keepalive_interval=keepalive[0], keepalive_count=keepalive[1])),
    )


@pytest.fixture
def world() -> World:
    return two_host_world((SRC, DEST))


@pytest.fixture
def make(world: World, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make(scenario, **driver options)``: a driver on ``world``, closed after the test."""
    made: list[Any] = []

    def build(scn: Scenario | None = None, **options: Any) -> Any:
        drv = fake_driver(world, scn or scenario(), tmp_path, **options)
        made.append(drv)
        return drv

    yield build
    for drv in reversed(made):
        drv.close()


def flags(drv: Any, extra: int = 0) -> int:
    return parse_flags(drv._policy.live_migration_flag) | extra


def migrate(drv: Any, *, cap: int = 0, extra: int = 0) -> None:
    drv.pre_live_migration(VM, DEST, False)
    drv.start_migration(VM, DEST, uri=f"qemu+tcp://{DEST}/system", flags=flags(drv, extra),
                        bandwidth_mib=cap)


def poll(drv: Any, until: Callable[[JobInfo], bool], timeout: float = 10.0) -> list[JobInfo]:
    """``job_info`` every 20 ms (real time) until ``until`` holds; every reading."""
    return poll_job(drv, VM, until, timeout=timeout, step=0.02)


def ended(info: JobInfo) -> bool:
    return info.type is not JobType.UNBOUNDED


def last_migration(world: World) -> Any:
    return world.migrations[-1]


# -- the fake itself ------------------------------------------------------------------------------


def test_the_driver_runs_on_the_fake_not_on_libvirt_python() -> None:
    mods = driver_modules()
    for module in (mods.real, mods.conn, mods.jobs, mods.domains):
        assert module.libvirt is fake


def test_unreachable_hosts_raise_libvirts_errors(world: World) -> None:
    world.install()
    conn = fake.open(world.hosts[SRC].uri)
    with pytest.raises(fake.libvirtError) as exc:
        conn.lookupByName("nope")
    assert exc.value.get_error_code() == fake.VIR_ERR_NO_DOMAIN
    world.fault("service_down", SRC)
    assert not conn.isAlive()
    with pytest.raises(fake.libvirtError) as exc:
        fake.open(world.hosts[SRC].uri)
    assert exc.value.get_error_code() == fake.VIR_ERR_SYSTEM_ERROR
    assert "Connection refused" in str(exc.value)
    world.fault("service_up", SRC)
    assert not conn.isAlive()  # a restarted libvirtd does not revive old connections
    assert fake.open(world.hosts[SRC].uri).isAlive()


def test_a_cut_link_fails_calls_after_the_keepalive(world: World) -> None:
    world.install()
    fake.virEventRegisterDefaultImpl()
    conn = fake.open(world.hosts[DEST].uri)
    conn.setKeepAlive(2, 3)  # 8 s, times the world's keepalive_scale (0.05): 0.4 s
    world.fault("link_down", DEST)
    t0 = time.monotonic()
    with pytest.raises(fake.libvirtError) as exc:
        conn.getInfo()
    waited = time.monotonic() - t0
    assert exc.value.get_error_code() == fake.VIR_ERR_INTERNAL_ERROR
    assert exc.value.get_error_domain() == fake.VIR_FROM_RPC
    assert "keepalive timeout" in str(exc.value)
    assert 0.3 <= waited < 3.0
    assert not conn.isAlive()


# -- job readings through the phases --------------------------------------------------------------


def test_job_readings_follow_the_precopy_passes_to_completion(
    world: World, make: Callable[..., Any]
) -> None:
    # 128 MiB at 128 MiB/s while 32 MiB are dirtied at 64 MiB/s: three passes, then the
    # 12.8 MiB left fit in 0.1 s of downtime
    drv = make(scenario(ws_mib=32, rate_mib=64, max_downtime=0.1))
    migrate(drv, cap=128)
    seen = poll(drv, ended)
    running, final = seen[:-1], seen[-1]
    assert final.type is JobType.COMPLETED, final
    assert {i.type for i in running} == {JobType.UNBOUNDED}
    iterations = [i.memory_iteration for i in running]
    assert iterations == sorted(iterations) and max(iterations) >= 2
    elapsed = [i.time_elapsed for i in running]
    assert elapsed == sorted(elapsed)
    assert any(0 < i.memory_processed < 128 * MiB for i in running)
    assert all(i.memory_total == 128 * MiB for i in running if i.memory_total)
    assert any(i.memory_dirty_rate == 64 * MiB for i in running)  # pages/s x page size
    mig = last_migration(world)
    # the final reading is the destination's completed-job statistics, in base units
    assert final.downtime == pytest.approx(mig.downtime_ms / 1000)
    assert final.memory_iteration == mig.iteration >= 3
    assert final.memory_remaining == 0 and final.memory_processed > 128 * MiB
    assert final.downtime <= 0.1 + 0.01
    assert world.where(VM) == {DEST: RUNNING}
    assert drv.job_info(VM) == final  # ended: the same reading from now on


def test_post_is_no_error_when_libvirt_undefines_the_source_domain_meanwhile(
    world: World, make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """libvirt undefines the source's domain (VIR_MIGRATE_UNDEFINE_SOURCE) at a moment of
    its choosing: post saw it still defined, and it was gone when post undefined it (a
    calibration case on the lab ended in error, "Domain not found")."""
    drv = make()
    drv.pre_live_migration(VM, DEST, False)
    drv.start_migration(VM, DEST, uri=f"qemu+tcp://{DEST}/system",
                        flags=flags(drv) & ~fake.VIR_MIGRATE_UNDEFINE_SOURCE, bandwidth_mib=0)
    assert poll(drv, ended)[-1].type is JobType.COMPLETED
    real = driver_modules().real
    seen = real.domain_info

    def seen_then_undefined(conn: Any, name: str) -> Any:
        state = seen(conn, name)
        if state is not None and state.persistent and not state.active:
            state.dom.undefine()  # libvirt's own confirm phase, between post's two calls
        return state

    monkeypatch.setattr(real, "domain_info", seen_then_undefined)
    drv.post_live_migration(VM, SRC, DEST)  # no libvirtError
    assert world.where(VM) == {DEST: RUNNING}


def test_auto_converge_throttle_is_read_and_rises(world: World, make: Callable[..., Any]) -> None:
    # dirtying faster than the cap: only the throttle lets the guest converge
    drv = make(scenario(ws_mib=32, rate_mib=200, max_downtime=0.1))
    migrate(drv, cap=128, extra=AUTO_CONVERGE)
    seen = poll(drv, ended)
    assert seen[-1].type is JobType.COMPLETED, seen[-1]
    throttles = [i.auto_converge_throttle for i in seen[:-1]]
    assert throttles == sorted(throttles) and throttles[-1] >= 30


def test_a_raised_max_downtime_lets_a_stuck_precopy_switch_over(
    world: World, make: Callable[..., Any]
) -> None:
    # dirtying 200 MiB/s under a 128 MiB/s cap: 32 MiB left after every pass, which 10 ms
    # of downtime never covers; 300 ms (38.4 MiB at the cap) does
    drv = make(scenario(ws_mib=32, rate_mib=200, max_downtime=0.01))
    migrate(drv, cap=128)
    poll(drv, lambda i: i.memory_iteration >= 4)
    assert drv.job_info(VM).type is JobType.UNBOUNDED
    drv.set_max_downtime(VM, 0.3)
    final = poll(drv, ended)[-1]
    assert final.type is JobType.COMPLETED, final
    assert 0.2 < final.downtime <= 0.3 + 0.01  # 32 MiB or a little more at 128 MiB/s


def test_compare_cpu_follows_the_hosts_models(tmp_path: Path) -> None:
    world = World()
    world.add_host(SRC, cpu_model="Haswell")
    world.add_host(DEST, cpu_model="Westmere")
    drv = fake_driver(world, scenario(), tmp_path)
    try:
        assert drv.compare_cpu(DEST, SRC)  # Westmere guests run on a Haswell host
        assert not drv.compare_cpu(SRC, DEST)  # Haswell's CPU is more than Westmere has
        assert drv.host_facts(SRC).cpu_model == "Haswell"
    finally:
        drv.close()


# -- abort ----------------------------------------------------------------------------------------


def test_abort_cancels_and_the_guest_stays(world: World, make: Callable[..., Any]) -> None:
    drv = make()
    migrate(drv, cap=1)
    poll(drv, lambda i: i.memory_processed > 0)
    drv.abort_job(VM)
    final = poll(drv, ended)[-1]
    assert final.type is JobType.CANCELLED and "canceled by client" in (final.error or "")
    assert final.downtime is None  # an unfinished job paused nothing
    assert world.where(VM) == {SRC: BOOTED}  # never paused: still as booted
    assert drv.instance_host(VM) == SRC


def test_abort_in_postcopy_is_refused(world: World, make: Callable[..., Any]) -> None:
    drv = make()
    migrate(drv, cap=1, extra=POSTCOPY)
    poll(drv, lambda i: i.memory_processed > 0)
    world.wait_for(lambda: last_migration(world).phase == "precopy")
    world.link_mib_s = 4.0  # post-copy slow enough to be caught
    drv.start_postcopy(VM)
    poll(drv, lambda i: i.postcopy)
    with pytest.raises(MigrationError, match="post-copy"):
        drv.abort_job(VM)
    world.link_mib_s = 256.0
    assert poll(drv, ended)[-1].type is JobType.COMPLETED


# -- post-copy endings ----------------------------------------------------------------------------


def test_postcopy_stats_come_from_the_sources_event(world: World, make: Callable[..., Any]) -> None:
    drv = make()
    migrate(drv, cap=1, extra=POSTCOPY)
    poll(drv, lambda i: i.memory_processed > 0)
    drv.start_postcopy(VM)
    final = poll(drv, ended)[-1]
    assert final.type is JobType.COMPLETED and final.postcopy, final
    mig = last_migration(world)
    assert mig.phase == "completed"
    world.install()
    dest = fake.open(world.hosts[DEST].uri).lookupByName(VM)
    completed = dest.jobStats(fake.VIR_DOMAIN_JOB_STATS_COMPLETED
                              | fake.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    assert completed == {"type": fake.VIR_DOMAIN_JOB_NONE}  # nothing on the destination
    assert final.downtime == pytest.approx(mig.downtime_ms / 1000)  # so it was the event
    assert final.memory_processed == pytest.approx(128 * MiB, rel=0.01)
    assert world.where(VM) == {DEST: RUNNING}


def test_postcopy_asked_before_the_job_began_is_switched_at_the_first_reading(
    world: World, make: Callable[..., Any]
) -> None:
    drv = make()
    world.setup_seconds = 1.0  # libvirt still starting the destination
    migrate(drv, cap=1, extra=POSTCOPY)
    assert last_migration(world).phase == "setup"
    drv.start_postcopy(VM)  # refused by the fake (setup): remembered by the driver
    assert drv._jobs[VM].postcopy_requested
    final = poll(drv, ended)[-1]
    assert final.type is JobType.COMPLETED and final.postcopy, final
    assert world.where(VM) == {DEST: RUNNING}


def test_postcopy_failing_on_a_cut_link_leaves_a_failed_job(
    world: World, make: Callable[..., Any]
) -> None:
    drv = make()
    world.link_mib_s = 2.0  # post-copy pulls slowly: the link is cut while it does
    migrate(drv, cap=1, extra=POSTCOPY)
    poll(drv, lambda i: i.memory_processed > 0)
    drv.start_postcopy(VM)
    poll(drv, lambda i: i.postcopy)
    world.fault("link_down", DEST)
    final = poll(drv, ended)[-1]
    assert final.type is JobType.FAILED and final.postcopy, final
    assert "post-copy failed" in (final.error or "") or "keepalive" in (final.error or "")
    assert world.where(VM)[SRC] == (fake.VIR_DOMAIN_PAUSED,
                                    fake.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)
    assert drv.instance_host(VM) is None  # a post-copy source holds no guest by itself
    world.fault("link_up", DEST)


# -- adopting a job after a controller restart ----------------------------------------------------


def test_a_job_still_running_is_adopted_and_watched_to_its_end(
    world: World, make: Callable[..., Any]
) -> None:
    first = make(keep_domains=True)
    migrate(first, cap=64)
    poll(first, lambda i: i.memory_processed > 0)
    first.close()  # the controller goes; a peer-to-peer job goes on in the source's libvirtd
    second = make(boot=False, keep_domains=True)
    assert second.job_info(VM).type is JobType.NONE
    second.attach_job(VM, SRC, DEST)
    seen = poll(second, ended)
    early, final = seen[0], seen[-1]
    assert early.type is JobType.UNBOUNDED and early.memory_processed > 0, early
    assert final.type is JobType.COMPLETED, final
    assert final.downtime is not None and final.memory_remaining == 0
    assert final.time_elapsed >= early.time_elapsed
    assert world.where(VM) == {DEST: RUNNING}


def test_a_job_that_completed_while_away_reads_completed(
    world: World, make: Callable[..., Any]
) -> None:
    first = make(keep_domains=True)
    migrate(first, cap=0)
    first.close()
    world.wait_for(lambda: last_migration(world).phase == "completed")
    later = make(boot=False, keep_domains=True)
    later.attach_job(VM, SRC, DEST)
    info = later.job_info(VM)
    assert info.type is JobType.COMPLETED and info.downtime is not None, info
    assert info.downtime == pytest.approx(last_migration(world).downtime_ms / 1000)
    # read with KEEP_COMPLETED: a second controller still finds them
    again = make(boot=False, keep_domains=True)
    again.attach_job(VM, SRC, DEST)
    assert again.job_info(VM) == info
    # the same guest said to be migrating back: the job "ended" on its source
    again.attach_job(VM, DEST, SRC)
    back = again.job_info(VM)
    assert back.type is JobType.FAILED and "controller was away" in (back.error or "")


def test_a_job_that_failed_while_away_reads_failed(world: World, make: Callable[..., Any]) -> None:
    first = make(keep_domains=True)
    migrate(first, cap=1)
    poll(first, lambda i: i.memory_processed > 0)
    first.close()
    world.fault("service_down", DEST)  # the destination's libvirtd stops: the job fails
    world.wait_for(lambda: last_migration(world).phase == "failed")
    world.fault("service_up", DEST)
    later = make(boot=False, keep_domains=True)
    later.attach_job(VM, SRC, DEST)
    info = later.job_info(VM)
    assert info.type is JobType.FAILED and "controller was away" in (info.error or ""), info
    assert world.where(VM) == {SRC: BOOTED}  # never paused: still as booted
    assert later.instance_host(VM) == SRC


# -- connections lost mid-job ---------------------------------------------------------------------


def test_the_destinations_libvirtd_stopping_fails_the_job(
    world: World, make: Callable[..., Any]
) -> None:
    drv = make()
    migrate(drv, cap=1)
    poll(drv, lambda i: i.memory_processed > 0)
    world.fault("service_down", DEST)
    final = poll(drv, ended)[-1]
    assert final.type is JobType.FAILED and "End of file" in (final.error or ""), final
    assert drv.instance_host(VM) == SRC
    world.fault("service_up", DEST)
    drv._conns.forget_failure(DEST)  # as inject_fault does after SERVICE_UP
    drv.rollback_live_migration(VM, SRC, DEST, False)
    assert world.where(VM) == {SRC: BOOTED}  # never paused: still as booted
    assert drv.world().claims == {}


def test_a_cut_source_link_reads_running_until_the_keepalive_fails_the_call(
    world: World, make: Callable[..., Any]
) -> None:
    drv = make(scenario(keepalive=(2.0, 3)))  # 8 s x 0.05: the call fails after 0.4 s
    migrate(drv, cap=1)
    poll(drv, lambda i: i.memory_processed > 0)
    world.fault("link_down", SRC)
    t0 = time.monotonic()
    final = poll(drv, ended)[-1]
    assert final.type is JobType.FAILED and "keepalive" in (final.error or ""), final
    waited = time.monotonic() - t0  # a reading waits for the keepalive, not longer
    assert 0.3 <= waited < 3.0
    assert drv.world().unreachable == (SRC,)
    with pytest.raises(HypervisorUnavailable):
        drv.instance_running_on(VM, SRC)
    world.fault("link_up", SRC)
    drv._conns.forget_failure(SRC)
    assert drv.instance_host(VM) == SRC  # the migration failed with the link: guest stayed
    assert DEST not in world.where(VM)


def test_a_stopped_libvirtd_makes_its_host_unreachable_not_a_hang(
    world: World, make: Callable[..., Any]
) -> None:
    drv = make()
    world.fault("service_down", DEST)
    facts = drv.world()
    assert facts.unreachable == (DEST,)
    assert [(d.instance, d.host) for d in facts.domains] == [(VM, SRC)]
    assert drv.instance_host(VM) == SRC
    with pytest.raises(HypervisorUnavailable, match=DEST):
        drv.instance_running_on(VM, DEST)
    assert drv.host_facts(DEST).memory_mb == 0  # stale facts, no exception
    world.fault("service_up", DEST)
    drv._conns.forget_failure(DEST)
    assert drv.world().unreachable == ()  # the dead connection is reopened once
    assert drv.instance_running_on(VM, DEST) is False


# -- the fake's coverage and fidelity ------------------------------------------------------------


def test_the_fake_has_every_libvirt_name_the_driver_uses() -> None:
    drivers = Path(driver_modules().real.__file__).parent
    used = set()
    for path in drivers.glob("libvirt_*.py"):
        used |= set(re.findall(r"\blibvirt\.([A-Za-z_]\w*)", path.read_text()))
    assert {"migrateToURI", "open", "VIR_DOMAIN_JOB_STATS_COMPLETED"} - used == {"migrateToURI"}
    missing = sorted(name for name in used if not hasattr(fake, name))
    assert not missing, f"extend tests/fakelibvirt/libvirt.py with {missing}"


@pytest.mark.lab  # needs libvirt-python, which the lab has
def test_the_fakes_constants_and_methods_are_libvirts() -> None:
    import libvirt as real

    constants = [n for n in vars(fake) if n.startswith("VIR_")]
    assert len(constants) > 60
    assert {n: getattr(fake, n) for n in constants} == {n: getattr(real, n) for n in constants}
    for cls in (fake.virConnect, fake.virDomain, fake.virStoragePool, fake.virStorageVol):
        methods = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
        assert methods <= set(dir(getattr(real, cls.__name__))), cls.__name__
    for fn in ("open", "registerErrorHandler", "virEventRegisterDefaultImpl",
               "virEventRunDefaultImpl"):
        assert callable(getattr(real, fn))
