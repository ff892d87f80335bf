"""The simulated job's convergence machinery, driven through the driver API directly:
auto-converge (throttle schedule and effect, hand-computed rounds), post-copy (switch
timing, downtime, bytes, accounting), suspend / resume (a paused guest converges and
arrives paused)."""

from __future__ import annotations

import math

import pytest
import simpy
from fakes import GiB, MiB, host, scenario, vm

from livemig.core.errors import MigrationError
from livemig.core.flags import AUTO_CONVERGE, LIVE, NON_SHARED_INC, POSTCOPY, parse_flags
from livemig.core.model import MigrationPolicy, Scenario, Storage
from livemig.drivers.base import DomainFact, DomainState, JobInfo, JobType
from livemig.drivers.precopy import plan
from livemig.drivers.simulated import SimulatedDriver

LINK = 1.25e9  # B/s, the default host link
BASE = parse_flags(MigrationPolicy().live_migration_flag)  # LIVE | PEER2PEER | UNDEFINE
RESERVED_MB = 512
HOST_MB = 16384


def two_hosts(*, used: int, ws: int, dirty: float, ram: int = 4 * GiB, storage: Storage =
              Storage.SHARED, disk: int = 0, **policy: object) -> Scenario:
    policy.setdefault("completion_timeout", 0.0)
    return scenario([host("h1", storage=storage), host("h2", storage=storage)],
                    [vm("vm1", "h1", ram=ram, used_memory=used, working_set=ws,
                        dirty_rate=dirty, disk=disk)],
                    migration=MigrationPolicy(**policy))  # type: ignore[arg-type]


def start(sc: Scenario, flags: int, *, bandwidth_mib: int = 0,
          block: bool = False) -> tuple[simpy.Environment, SimulatedDriver]:
    env = simpy.Environment()
    drv = SimulatedDriver(env, sc)
    drv.pre_live_migration("vm1", "h2", block)
    drv.start_migration("vm1", "h2", uri="qemu+tcp://h2/system", flags=flags,
                        bandwidth_mib=bandwidth_mib)
    return env, drv


def at(env: simpy.Environment, drv: SimulatedDriver, when: float) -> JobInfo:
    env.run(until=when)
    return drv.job_info("vm1")


def state_of(drv: SimulatedDriver, instance: str = "vm1") -> tuple[str, DomainState] | None:
    facts = [f for f in drv.world().domains if f.instance == instance]
    assert len(facts) <= 1
    return (facts[0].host, facts[0].state) if facts else None


# -- auto-converge ------------------------------------------------------------------------------


def reference_rounds(used: float, ws: float, dirty: float, bandwidth: float,
                     max_downtime: float, auto_converge: bool,
                     max_rounds: int = 50) -> tuple[list[float], list[int], float]:
    """The rounds as the issue defines them, written out independently of the driver:
    (bytes per round, throttle in force during each round, remainder at switchover)."""
    sent, throttle, not_converged = used, 0, 0
    rounds, throttles = [], []
    while len(rounds) < max_rounds:
        rounds.append(sent)
        throttles.append(throttle)
        seconds = sent / bandwidth
        remainder = min(ws, dirty * (100 - throttle) / 100.0 * seconds)
        if remainder <= bandwidth * max_downtime:
            return rounds, throttles, remainder
        if auto_converge:
            not_converged += 1
            throttle = min(99, 20 + 10 * (not_converged - 1))
        sent = remainder
    return rounds, throttles, math.nan


def test_reference_rounds_by_hand() -> None:
    """2 GiB, 1 GiB working set at 2e9 B/s, 1.25e9 B/s, 0.5 s (625 MB): the guest refills
    its working set at 100, 80, 70 and 60 % of its CPU (2e9, 1.6e9, 1.4e9, 1.2e9 B/s
    times 0.859 s >= 1 GiB but for the last: 1.031e9 B); at 50 %, 1.031e9 B take 0.825 s,
    dirtying 8.25e8 B; at 40 %, 8.25e8 B take 0.66 s, dirtying 5.28e8 B <= 6.25e8."""
    rounds, throttles, remainder = reference_rounds(2 * GiB, GiB, 2e9, LINK, 0.5, True)
    assert throttles == [0, 20, 30, 40, 50, 60]
    assert rounds[:3] == [2 * GiB, GiB, GiB]
    assert rounds[3] == GiB  # 1.4e9 * 0.859 s = 1.2e9 > 1 GiB: still the working set
    assert rounds[4] == pytest.approx(1.2e9 * GiB / LINK)  # 1.0308e9
    assert rounds[5] == pytest.approx(1.0e9 * rounds[4] / LINK)  # 8.2463e8
    assert remainder == pytest.approx(0.8e9 * rounds[5] / LINK)  # 5.2777e8
    assert remainder == pytest.approx(5.2777e8, rel=1e-4)
    _, _, never = reference_rounds(2 * GiB, GiB, 2e9, LINK, 0.5, False)
    assert math.isnan(never)  # without the throttle it does not converge


def test_plan_with_auto_converge_is_the_reference() -> None:
    for dirty in (1e9, 2e9, 5e9, 3e10):
        rounds, throttles, remainder = reference_rounds(2 * GiB, GiB, dirty, LINK, 0.1, True)
        p = plan(2 * GiB, GiB, dirty, LINK, 0.1, auto_converge=True)
        assert p.converged and list(p.rounds) == rounds and list(p.throttles) == throttles
        assert p.remaining == remainder


def _auto_converge_grid() -> list[tuple[int, int, float, float]]:
    cases = []
    for used in (GiB, 4 * GiB):
        for ws in (256 * MiB, GiB):
            for dirty in (1e9, 2e9, 5e9, 2e10):
                for downtime in (0.3, 0.05):
                    p = plan(used, ws, dirty, LINK, downtime, auto_converge=True)
                    near = any(abs(min(ws, dirty * (100 - th) / 100 * d / LINK)
                                   - LINK * downtime) < 1e-6 * LINK * downtime
                               for d, th in zip(p.rounds, p.throttles, strict=True))
                    if p.converged and not near:
                        cases.append((used, ws, dirty, downtime))
    return cases


AUTO_CONVERGE_GRID = _auto_converge_grid()


def test_auto_converge_grid_needs_the_throttle() -> None:
    hopeless = [c for c in AUTO_CONVERGE_GRID if not plan(*c[:3], LINK, c[3]).converged]
    assert len(AUTO_CONVERGE_GRID) >= 20 and len(hopeless) >= 10
    assert max(plan(*c[:3], LINK, c[3], auto_converge=True).throttles[-1]
               for c in AUTO_CONVERGE_GRID) == 99


@pytest.mark.parametrize("used, ws, dirty, downtime", AUTO_CONVERGE_GRID)
def test_auto_converge_job_reproduces_plan(used: int, ws: int, dirty: float,
                                           downtime: float) -> None:
    expected = plan(used, ws, dirty, LINK, downtime, auto_converge=True)
    env, drv = start(two_hosts(used=used, ws=ws, dirty=dirty, max_downtime=downtime),
                     BASE | AUTO_CONVERGE)
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.memory_iteration == expected.iterations
    assert info.auto_converge_throttle == expected.throttles[-1]
    assert info.time_elapsed == pytest.approx(expected.total_time, rel=1e-9)
    assert info.downtime == pytest.approx(expected.downtime, rel=1e-9, abs=1e-12)
    assert info.memory_processed == pytest.approx(expected.data_transferred, rel=1e-9)


def test_auto_converge_makes_a_hopeless_guest_converge() -> None:
    used, ws, dirty = 2 * GiB, GiB, 2e9
    rounds, throttles, remainder = reference_rounds(used, ws, dirty, LINK, 0.5, True)
    env, drv = start(two_hosts(used=used, ws=ws, dirty=dirty), BASE | AUTO_CONVERGE)
    # the throttle in force, and the dirty rate the guest shows, halfway through each round
    elapsed = 0.0
    for number, (nbytes, throttle) in enumerate(zip(rounds, throttles, strict=True), 1):
        info = at(env, drv, elapsed + nbytes / LINK / 2)
        assert info.type is JobType.UNBOUNDED
        assert info.memory_iteration == number
        assert info.auto_converge_throttle == throttle
        assert info.memory_dirty_rate == pytest.approx(dirty * (100 - throttle) / 100)
        assert info.memory_remaining == pytest.approx(nbytes / 2, abs=2)
        elapsed += nbytes / LINK
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.memory_iteration == 6 and info.auto_converge_throttle == 60
    assert info.downtime == pytest.approx(remainder / LINK, rel=1e-9)
    assert info.time_elapsed == pytest.approx((sum(rounds) + remainder) / LINK, rel=1e-9)
    assert info.memory_processed == pytest.approx(sum(rounds) + remainder, rel=1e-9)
    assert drv.instance_host("vm1") == "h2"


def test_without_auto_converge_it_iterates_until_the_core_acts() -> None:
    used, ws, dirty = 2 * GiB, GiB, 2e9
    env, drv = start(two_hosts(used=used, ws=ws, dirty=dirty), BASE)
    info = at(env, drv, 100.0)
    assert info.type is JobType.UNBOUNDED and info.auto_converge_throttle == 0
    assert info.memory_dirty_rate == dirty
    # round 0, then the working set again and again
    done = 100.0 - used / LINK
    assert info.memory_iteration == 2 + math.floor(done / (ws / LINK))
    assert info.memory_processed == pytest.approx(100.0 * LINK, rel=1e-9)
    assert info.memory_remaining == pytest.approx(ws - (done % (ws / LINK)) * LINK, rel=1e-6)


def test_throttle_caps_at_99_percent() -> None:
    """A guest that still refills its working set at 1 % of its CPU: the throttle climbs
    20, 30, ... 90, 99 and stays there."""
    used, ws, dirty = GiB, 64 * MiB, 1e12
    env, drv = start(two_hosts(used=used, ws=ws, dirty=dirty, max_downtime=0.001),
                     BASE | AUTO_CONVERGE)
    seen = []
    step = ws / LINK
    for k in range(12):
        seen.append(at(env, drv, used / LINK + (k + 0.5) * step).auto_converge_throttle)
    assert seen == [20, 30, 40, 50, 60, 70, 80, 90, 99, 99, 99, 99]


def test_auto_converge_flag_without_need_changes_nothing() -> None:
    """A guest that converges in round 0 is never throttled: same job as without the flag."""
    readings = []
    for flags in (BASE, BASE | AUTO_CONVERGE):
        env, drv = start(two_hosts(used=4 * GiB, ws=GiB, dirty=100 * MiB), flags)
        env.run()
        readings.append(drv.job_info("vm1"))
    assert readings[0] == readings[1]
    assert readings[1].auto_converge_throttle == 0


# -- post-copy ----------------------------------------------------------------------------------


def hopeless(**policy: object) -> Scenario:
    """4 GiB used, the whole 1 GiB working set rewritten at 2e9 B/s: never converges."""
    return two_hosts(used=4 * GiB, ws=GiB, dirty=2e9, ram=8 * GiB, **policy)


def test_postcopy_switch_timing_downtime_bytes_and_accounting() -> None:
    cost = 0.05
    env, drv = start(hopeless(switchover_cost=cost), BASE | POSTCOPY)
    dest_claimed = drv.host_facts("h2").free_ram_mb
    assert dest_claimed == HOST_MB - RESERVED_MB - 8192
    env.run(until=2.0)  # in round 0: 2.5e9 B of 4 GiB sent, 4e9 B dirtied -> the 1 GiB set
    drv.start_postcopy("vm1")
    missing = (4 * GiB - 2.5e9) + GiB
    info = drv.job_info("vm1")  # the switch: paused on the source for switchover_cost
    assert info.type is JobType.UNBOUNDED and not info.postcopy
    assert info.memory_remaining == int(missing) and info.downtime == cost
    assert info.memory_processed == pytest.approx(2.5e9, rel=1e-12)
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    assert drv.instance_host("vm1") == "h1"

    info = at(env, drv, 2.0 + cost + 1.0)  # switched: runs on h2 and pulls at full speed
    assert info.postcopy and info.type is JobType.UNBOUNDED
    assert drv.instance_host("vm1") == "h2"
    assert drv.instance_running_on("vm1", "h2") and not drv.instance_running_on("vm1", "h1")
    assert state_of(drv) == ("h2", DomainState.RUNNING)
    assert info.memory_remaining == pytest.approx(missing - LINK, rel=1e-9)
    assert info.memory_dirty_rate == 0.0
    assert drv.host_facts("h2").free_ram_mb == dest_claimed  # the claim became resident
    assert drv.world().claims == {}
    assert drv.host_facts("h1").free_ram_mb == HOST_MB - RESERVED_MB - 8192  # until post
    with pytest.raises(MigrationError, match="post-copy"):
        drv.abort_job("vm1")

    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED and info.postcopy
    assert info.memory_remaining == 0 and info.downtime == cost
    assert info.time_elapsed == pytest.approx(2.0 + cost + missing / LINK, rel=1e-12)
    assert info.memory_processed == pytest.approx(2.5e9 + missing, rel=1e-9)
    assert info.memory_iteration == 1
    drv.post_live_migration("vm1", "h1", "h2")
    assert drv.host_facts("h1").free_ram_mb == HOST_MB - RESERVED_MB
    assert drv.host_facts("h2").free_ram_mb == dest_claimed


def test_postcopy_pull_is_not_capped_and_missing_is_at_most_used_memory() -> None:
    """Under a 100 MiB/s cap, at 2 s: 200 MiB sent, 1 GiB dirtied; unsent + dirty exceeds
    the 4 GiB of used memory, so 4 GiB are pulled, at the link's full rate."""
    env, drv = start(hopeless(), BASE | POSTCOPY, bandwidth_mib=100)
    env.run(until=2.0)
    drv.start_postcopy("vm1")
    assert drv.job_info("vm1").memory_remaining == 4 * GiB
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.time_elapsed == pytest.approx(2.0 + 4 * GiB / LINK, rel=1e-12)
    assert info.memory_processed == pytest.approx(200 * MiB + 4 * GiB, rel=1e-9)


def test_postcopy_in_a_later_round() -> None:
    """In round 2 (the working set again): its unsent part plus what was dirtied since it
    began (capped by the working set)."""
    env, drv = start(hopeless(), BASE | POSTCOPY)
    round0, round1 = 4 * GiB / LINK, GiB / LINK
    when = round0 + round1 + 0.25  # 0.25 s into round 2
    env.run(until=when)
    assert drv.job_info("vm1").memory_iteration == 3
    drv.start_postcopy("vm1")
    missing = (GiB - 0.25 * LINK) + 0.25 * 2e9
    assert drv.job_info("vm1").memory_remaining == pytest.approx(missing, abs=1)
    env.run()
    info = drv.job_info("vm1")
    assert info.time_elapsed == pytest.approx(when + missing / LINK, rel=1e-12)
    assert info.downtime == 0.0


def test_start_postcopy_needs_the_flag_and_a_running_job() -> None:
    env, drv = start(hopeless(), BASE)
    env.run(until=1.0)
    with pytest.raises(MigrationError, match="VIR_MIGRATE_POSTCOPY"):
        drv.start_postcopy("vm1")
    info = at(env, drv, 2.0)
    assert info.type is JobType.UNBOUNDED and not info.postcopy  # the job goes on
    assert drv.instance_host("vm1") == "h1"
    drv.abort_job("vm1")
    with pytest.raises(MigrationError, match="in progress"):
        drv.start_postcopy("vm1")
    fresh = SimulatedDriver(simpy.Environment(), hopeless())
    with pytest.raises(MigrationError):
        fresh.start_postcopy("vm1")


def test_start_postcopy_twice_is_one_switch() -> None:
    env, drv = start(hopeless(), BASE | POSTCOPY)
    env.run(until=2.0)
    drv.start_postcopy("vm1")
    env.run(until=2.5)
    drv.start_postcopy("vm1")  # already in post-copy: nothing more to do
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.time_elapsed == pytest.approx(2.0 + (4 * GiB - 2.5e9 + GiB) / LINK, rel=1e-12)


def test_start_postcopy_during_the_disk_copy_switches_when_it_is_done() -> None:
    local = Storage.LOCAL
    sc = two_hosts(used=GiB, ws=GiB // 4, dirty=1e9, storage=local, disk=5 * GiB)
    env, drv = start(sc, BASE | NON_SHARED_INC | POSTCOPY, block=True)
    env.run(until=1.0)
    drv.start_postcopy("vm1")
    info = drv.job_info("vm1")
    assert info.type is JobType.UNBOUNDED and not info.postcopy
    assert drv.instance_host("vm1") == "h1"
    disk_time = 5 * GiB / LINK
    info = at(env, drv, disk_time + 0.1)
    assert info.postcopy and drv.instance_host("vm1") == "h2"
    assert info.memory_iteration == 0
    assert info.memory_remaining == pytest.approx(GiB - 0.1 * LINK, rel=1e-9)
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.time_elapsed == pytest.approx(disk_time + GiB / LINK, rel=1e-12)
    assert drv.host_facts("h2").disk_available_least == 200 - 5  # the disk is resident


def test_start_postcopy_during_the_final_switchover_changes_nothing() -> None:
    """Switching over (paused, the last 2 GiB of dirty pages on the wire): post-copy has
    nothing to add; the job completes as a pre-copy one."""
    sc = two_hosts(used=4 * GiB, ws=2 * GiB, dirty=1e9, max_downtime=2.0)
    env, drv = start(sc, BASE | POSTCOPY)
    round0 = 4 * GiB / LINK  # dirties min(2 GiB, 3.4e9): fits in 2 s
    env.run(until=round0 + 0.5)
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    drv.start_postcopy("vm1")
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED and not info.postcopy
    assert info.downtime == pytest.approx(2 * GiB / LINK, rel=1e-12)


def test_switchover_cost_keeps_the_guest_paused_with_nothing_left_to_send() -> None:
    env, drv = start(two_hosts(used=GiB, ws=GiB, dirty=0.0, switchover_cost=1.0), BASE)
    info = at(env, drv, GiB / LINK + 0.5)
    assert info.type is JobType.UNBOUNDED and info.memory_remaining == 0
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED and info.downtime == 1.0
    assert state_of(drv) == ("h2", DomainState.RUNNING)


# -- suspend / resume ---------------------------------------------------------------------------


def test_suspended_guest_dirties_nothing_so_the_next_round_converges() -> None:
    """Hopeless guest paused 0.5 s into round 1 (which resends its 1 GiB working set): it
    dirtied 1e9 B in that half second, which round 2 sends while the guest dirties
    nothing, so the switchover has nothing left to send."""
    env, drv = start(hopeless(), BASE)
    round0, round1 = 4 * GiB / LINK, GiB / LINK
    env.run(until=round0 + 0.5)
    drv.suspend("vm1")
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    assert drv.job_info("vm1").memory_dirty_rate == 0.0
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    # round 1's dirty set: 0.5 s of running at 2e9 B/s = 1e9 B (< 1 GiB)
    assert info.memory_iteration == 3
    assert info.time_elapsed == pytest.approx(round0 + round1 + 1e9 / LINK, rel=1e-12)
    # nothing left to send at the switchover, but the guest has not run since it was
    # suspended: QEMU (and the lab: 5.2 s in lab-force-pause) counts that as downtime
    assert info.downtime == pytest.approx(info.time_elapsed - (round0 + 0.5), rel=1e-12)
    assert state_of(drv) == ("h2", DomainState.PAUSED)  # arrives paused
    assert drv.instance_running_on("vm1", "h2")
    drv.resume("vm1")
    assert state_of(drv) == ("h2", DomainState.RUNNING)
    drv.resume("vm1")  # running already: no-op
    assert state_of(drv) == ("h2", DomainState.RUNNING)


def test_only_the_seconds_the_guest_ran_dirty_memory() -> None:
    """4 GiB, whole memory as working set at 5e8 B/s: round 0 lasts 3.436 s; paused from
    1 s to 3 s, the guest ran 1.436 s and dirtied 7.18e8 B, round 1's size."""
    sc = two_hosts(used=4 * GiB, ws=4 * GiB, dirty=5e8, max_downtime=0.01)
    env, drv = start(sc, BASE)
    round0 = 4 * GiB / LINK
    env.run(until=1.0)
    drv.suspend("vm1")
    env.run(until=3.0)
    drv.resume("vm1")
    dirty0 = 5e8 * (round0 - 2.0)
    info = at(env, drv, round0 + 0.1)
    assert info.memory_iteration == 2
    assert info.memory_remaining == pytest.approx(dirty0 - 0.1 * LINK, rel=1e-9)


def test_job_pause_is_separate_from_an_operator_pause() -> None:
    """Without VIR_MIGRATE_LIVE the job holds the guest paused and ends that itself; an
    operator's pause during it survives the migration, a resume during it waits for it."""
    no_live = BASE & ~LIVE
    sc = two_hosts(used=2 * GiB, ws=GiB, dirty=5e9)
    env, drv = start(sc, no_live)
    env.run(until=0.5)
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    drv.resume("vm1")  # not the operator's pause: the job still holds it
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    env.run()
    assert state_of(drv) == ("h2", DomainState.RUNNING)

    env, drv = start(sc, no_live)
    env.run(until=0.5)
    drv.suspend("vm1")
    env.run()
    assert drv.job_info("vm1").type is JobType.COMPLETED
    assert state_of(drv) == ("h2", DomainState.PAUSED)


def test_suspend_before_a_migration_and_abort_keeps_it_paused() -> None:
    env, drv = start(hopeless(), BASE)
    drv.suspend("vm1")
    env.run(until=1.0)
    drv.abort_job("vm1")
    assert drv.job_info("vm1").type is JobType.CANCELLED
    assert state_of(drv) == ("h1", DomainState.PAUSED)
    drv.resume("vm1")
    assert drv.world().domains == (DomainFact(instance="vm1", host="h1",
                                              state=DomainState.RUNNING),)


def test_suspend_of_an_unknown_guest_raises() -> None:
    drv = SimulatedDriver(simpy.Environment(), hopeless())
    with pytest.raises(MigrationError):
        drv.suspend("nope")
    with pytest.raises(MigrationError):
        drv.resume("nope")


# -- determinism --------------------------------------------------------------------------------


def test_same_inputs_same_readings() -> None:
    def run() -> list[JobInfo]:
        env, drv = start(hopeless(switchover_cost=0.01), BASE | POSTCOPY | AUTO_CONVERGE)
        readings = []
        for k in range(1, 30):
            env.run(until=k * 0.37)
            readings.append(drv.job_info("vm1"))
            if k == 12:
                drv.start_postcopy("vm1")
        return readings

    assert run() == run()
