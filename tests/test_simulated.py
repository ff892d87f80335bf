"""The simulated driver against the pre-copy arithmetic and hand computations.

One isolated migration must reproduce :func:`livemig.drivers.precopy.plan`
(total time, downtime, iterations, bytes) within 0.1 %; sharing links must
follow max-min fairness; idle VMs must cost no simulation events.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import simpy
from fakes import GiB, MiB, host, migrate, scenario, vm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from livemig.core.errors import MigrationError
from livemig.core.flags import parse_flags
from livemig.core.model import MigrationPolicy, MigrationStatus, NetworkSpec, Scenario, Storage
from livemig.core.runner import run_scenario
from livemig.core.state import MigrationRecord
from livemig.drivers.base import JobType
from livemig.drivers.precopy import PrecopyPlan, plan
from livemig.drivers.simulated import ABORTED, SimulatedDriver

LINK = 1.25e9  # 10 Gbit/s
LIVE = parse_flags(MigrationPolicy().live_migration_flag)
BLOCK = parse_flags(MigrationPolicy().block_migration_flag)
REL = 1e-3  # 0.1 %


def policy(**fields: object) -> MigrationPolicy:
    """No completion timeout unless asked: these tests measure the job itself."""
    fields.setdefault("completion_timeout", 0.0)
    return MigrationPolicy(**fields)  # type: ignore[arg-type]


def one_migration(
    used: int, working_set: int, dirty_rate: float, *, link: float = LINK,
    max_downtime: float = 0.5, switchover_cost: float = 0.0, bandwidth: float = 0.0,
    ram: int | None = None,
) -> MigrationRecord:
    sc = scenario(
        [host("h1", ram=64 * GiB), host("h2", ram=64 * GiB)],
        [vm("vm1", "h1", ram=ram or max(used, GiB), used_memory=used, working_set=working_set,
            dirty_rate=dirty_rate)],
        [migrate("vm1", "h2")],
        migration=policy(max_downtime=max_downtime, switchover_cost=switchover_cost,
                         bandwidth=bandwidth),
        network=NetworkSpec(host_link=link),
    )
    (record,) = run_scenario(sc).store.migrations()
    assert record.status is MigrationStatus.COMPLETED, record
    return record


def assert_matches(record: MigrationRecord, expected: PrecopyPlan, extra_time: float = 0.0,
                   extra_bytes: float = 0.0) -> None:
    assert record.iterations == expected.iterations
    assert record.total_time == pytest.approx(expected.total_time + extra_time, rel=REL)
    assert record.downtime == pytest.approx(expected.downtime, rel=REL, abs=1e-9)
    assert record.data_transferred == pytest.approx(expected.data_transferred + extra_bytes,
                                                    rel=REL)


def safe_plan(used: float, working_set: float, dirty_rate: float, bandwidth: float,
              max_downtime: float, switchover_cost: float = 0.0) -> PrecopyPlan | None:
    """The plan, or None when the sim may rightly differ (no convergence, or a
    switchover decision within rounding of its threshold)."""
    p = plan(used, working_set, dirty_rate, bandwidth, max_downtime, switchover_cost)
    if not p.converged:
        return None
    limit = bandwidth * max_downtime
    for t in p.round_times:
        r = min(working_set, dirty_rate * t)
        if limit and abs(r - limit) <= 1e-6 * limit:
            return None
    return p


# -- one migration = plan() ----------------------------------------------------------------


def _grid() -> list[tuple]:
    cases = []
    for used in (512 * MiB, 4 * GiB):
        for ws in (64 * MiB, GiB):
            for dirty in (0.0, 50 * MiB, 400 * MiB, 1.0e9):
                for link, cap in ((LINK, 0.0), (1.25e8, 0.0), (LINK, 100 * MiB)):
                    for downtime in (0.3, 0.01):
                        for cost in (0.0, 0.05):
                            bandwidth = cap or link
                            if safe_plan(used, min(ws, used), dirty, bandwidth, downtime, cost):
                                cases.append((used, min(ws, used), dirty, link, cap, downtime,
                                              cost))
    return cases


GRID = _grid()


def test_grid_covers_multi_round_cases() -> None:
    iterations = {plan(u, w, d, c or b, t).iterations for u, w, d, b, c, t, _ in GRID}
    assert len(GRID) > 100 and max(iterations) >= 4 and 1 in iterations


@pytest.mark.parametrize("used, ws, dirty, link, cap, downtime, cost", GRID)
def test_isolated_migration_reproduces_plan(used: int, ws: int, dirty: float, link: float,
                                            cap: float, downtime: float, cost: float) -> None:
    record = one_migration(used, ws, dirty, link=link, max_downtime=downtime,
                           switchover_cost=cost, bandwidth=cap)
    assert_matches(record, plan(used, ws, dirty, cap or link, downtime, cost))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    used=st.integers(64, 8192).map(lambda m: m * MiB),
    ws_fraction=st.floats(0.01, 1.0),
    dirty=st.floats(0.0, 1.2e9),
    link=st.sampled_from([1.25e8, 1.25e9, 3.125e9]),
    downtime=st.floats(0.005, 1.0),
    cost=st.sampled_from([0.0, 0.02, 0.2]),
)
def test_isolated_migration_reproduces_plan_property(
    used: int, ws_fraction: float, dirty: float, link: float, downtime: float, cost: float
) -> None:
    ws = max(1, int(used * ws_fraction))
    expected = safe_plan(used, ws, dirty, link, downtime, cost)
    assume(expected is not None)
    record = one_migration(used, ws, dirty, link=link, max_downtime=downtime,
                           switchover_cost=cost)
    assert_matches(record, expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "used, dirty, bandwidth, downtime, cost",
    [
        (4 * GiB, 100 * MiB, LINK, 0.5, 0.0),
        (4 * GiB, 100 * MiB, LINK, 0.01, 0.0),
        (4 * GiB, 100 * MiB, LINK, 0.01, 0.05),
        (2 * GiB, 600 * MiB, LINK, 0.05, 0.0),
        (GiB, 50 * MiB, 1.25e8, 0.1, 0.0),
        (3 * GiB, 0.0, LINK, 0.3, 0.1),
    ],
)
def test_closed_form_geometric_rounds(used: int, dirty: float, bandwidth: float,
                                      downtime: float, cost: float) -> None:
    """W >= U, D < B: round i sends U*rho^i (rho = D/B); converged after the first
    n >= 1 with U*rho^n <= B*T; total = U/B*(1-rho^n)/(1-rho) + U*rho^n/B + cost."""
    rho = dirty / bandwidth
    n = 1
    while used * rho**n > bandwidth * downtime:
        n += 1
    precopy = used / bandwidth * (1 - rho**n) / (1 - rho)
    down = used * rho**n / bandwidth + cost
    data = used * (1 - rho ** (n + 1)) / (1 - rho)
    record = one_migration(used, used, dirty, link=bandwidth, max_downtime=downtime,
                           switchover_cost=cost)
    assert record.iterations == n
    assert record.total_time == pytest.approx(precopy + down, rel=REL)
    assert record.downtime == pytest.approx(down, rel=REL, abs=1e-9)
    assert record.data_transferred == pytest.approx(data, rel=REL)


def test_worked_example_of_the_precopy_module() -> None:
    """4 GiB guest, 1 GiB working set at 100 MiB/s, 10 Gbit/s, 10 ms: 3 rounds, 3.75041 s."""
    record = one_migration(4 * GiB, GiB, 100 * MiB, max_downtime=0.01)
    assert record.iterations == 3
    assert record.total_time == pytest.approx(3.75041, abs=1e-5)
    assert record.downtime == pytest.approx(0.002028, abs=1e-6)


# -- block migration, caps -----------------------------------------------------------------


def test_block_migration_sends_allocated_disk_before_memory() -> None:
    local = Storage.LOCAL
    used, ws, dirty = 2 * GiB, 512 * MiB, 200 * MiB
    sc = scenario(
        [host("h1", storage=local), host("h2", storage=local)],
        [vm("vm1", "h1", ram=4 * GiB, used_memory=used, working_set=ws, dirty_rate=dirty,
            disk=40 * GiB, disk_allocated=6 * GiB)],
        [migrate("vm1", "h2", block=True)], migration=policy(max_downtime=0.05),
    )
    (record,) = run_scenario(sc).store.migrations()
    expected = plan(used, ws, dirty, LINK, 0.05)
    assert_matches(record, expected, extra_time=6 * GiB / LINK, extra_bytes=6 * GiB)


def test_disk_phase_then_memory_phase_in_job_info() -> None:
    local = Storage.LOCAL
    sc = scenario([host("h1", storage=local), host("h2", storage=local)],
                  [vm("vm1", "h1", used_memory=GiB, disk=10 * GiB, disk_allocated=5 * GiB)])
    env, drv = started(sc, flags=BLOCK, block=True)
    disk_time = 5 * GiB / LINK
    env.run(until=disk_time / 2)
    info = drv.job_info("vm1")
    assert (info.type, info.memory_iteration, info.memory_processed) == (JobType.UNBOUNDED, 0, 0)
    assert info.disk_total == 5 * GiB and info.memory_total == GiB
    assert info.disk_processed == pytest.approx(2.5 * GiB, rel=1e-6)
    assert info.data_total == 6 * GiB
    env.run(until=disk_time + 0.1)
    info = drv.job_info("vm1")
    assert info.disk_processed == info.disk_total and info.disk_remaining == 0
    assert info.memory_iteration == 1
    assert info.memory_processed == pytest.approx(0.1 * LINK, rel=1e-6)


def test_volume_backed_block_migration_copies_no_disk() -> None:
    local = Storage.LOCAL
    sc = scenario([host("h1", storage=local), host("h2", storage=local)],
                  [vm("vm1", "h1", used_memory=GiB, disk=10 * GiB, volume_backed=True)])
    env, drv = started(sc, flags=BLOCK, block=True)
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED and info.disk_total == 0
    assert info.time_elapsed == pytest.approx(GiB / LINK)


@pytest.mark.parametrize(
    "bandwidth, rate",
    [
        (100 * MiB, 100 * MiB),
        (1.25e8, 119 * MiB),  # libvirt takes whole MiB/s: 119.2 rounds to 119
        (1.0, 1 * MiB),  # any positive limit is at least 1 MiB/s
        (50 * GiB, LINK),  # a cap above the link: the link decides
    ],
)
def test_bandwidth_cap(bandwidth: float, rate: float) -> None:
    used, ws, dirty = GiB, 128 * MiB, 20 * MiB if rate > 1e7 else 0.0
    record = one_migration(used, ws, dirty, bandwidth=bandwidth, max_downtime=0.5)
    assert_matches(record, plan(used, ws, dirty, rate, 0.5))


def test_job_info_rates_under_a_cap() -> None:
    sc = scenario([host("h1"), host("h2")], [vm("vm1", "h1", used_memory=GiB)])
    env, drv = started(sc, bandwidth_mib=100)
    env.run(until=2.0)
    info = drv.job_info("vm1")
    assert info.memory_processed == pytest.approx(200 * MiB, rel=1e-9)
    assert info.data_remaining == pytest.approx(GiB - 200 * MiB, rel=1e-9)
    assert info.time_elapsed == 2.0


def test_migration_without_live_flag_pauses_instead_of_iterating() -> None:
    """Havana's default flags lack VIR_MIGRATE_LIVE: one pass, the dirty rate is moot."""
    sc = scenario([host("h1"), host("h2")],
                  [vm("vm1", "h1", used_memory=2 * GiB, working_set=GiB, dirty_rate=5e9)])
    env, drv = started(sc, flags=parse_flags("VIR_MIGRATE_UNDEFINE_SOURCE, "
                                             "VIR_MIGRATE_PEER2PEER"))
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.memory_iteration == 1
    assert info.time_elapsed == pytest.approx(2 * GiB / LINK)


# -- sharing the network -----------------------------------------------------------------------


def shared_run(hosts, vms, events, **policy_fields) -> list[MigrationRecord]:
    policy_fields.setdefault("max_concurrent_per_host", 4)
    return run_scenario(scenario(hosts, vms, events, migration=policy(**policy_fields))
                        ).store.migrations()


def test_two_migrations_from_one_host_share_its_link_fairly() -> None:
    used, ws, dirty = 2 * GiB, 256 * MiB, 100 * MiB
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm(n, "h1", ram=4 * GiB, used_memory=used, working_set=ws, dirty_rate=dirty)
           for n in ("a", "b")]
    alone = shared_run(hosts, vms[:1], [migrate("a", "h2")])[0]
    both = shared_run(hosts, vms, [migrate("a", "h2"), migrate("b", "h3")])
    half = plan(used, ws, dirty, LINK / 2, 0.5)  # in lockstep: each sees half the link
    for record in both:
        assert_matches(record, half)
        assert record.total_time == pytest.approx(2 * alone.total_time, rel=0.05)


def test_two_migrations_into_one_host_share_its_link_fairly() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", used_memory=GiB), vm("b", "h3", used_memory=GiB)]
    a, b = shared_run(hosts, vms, [migrate("a", "h2"), migrate("b", "h2")])
    assert a.total_time == pytest.approx(2 * GiB / LINK, rel=1e-9)
    assert b.total_time == pytest.approx(2 * GiB / LINK, rel=1e-9)


def test_unequal_transfers_share_then_the_survivor_speeds_up() -> None:
    """1 GiB and 3 GiB idle guests on one link: both at B/2 until the small one is done
    (2 GiB/B), then the big one alone at B for its last 2 GiB: 4 GiB/B in all."""
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("small", "h1", ram=2 * GiB, used_memory=GiB),
           vm("big", "h1", ram=4 * GiB, used_memory=3 * GiB)]
    small, big = shared_run(hosts, vms, [migrate("small", "h2"), migrate("big", "h3")])
    assert small.total_time == pytest.approx(2 * GiB / LINK, rel=1e-9)
    assert big.total_time == pytest.approx(4 * GiB / LINK, rel=1e-9)


def test_later_migration_slows_an_earlier_one_only_while_they_overlap() -> None:
    """a (2 GiB) starts at 0, b (2 GiB) at 1.0 s on the same source link."""
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", ram=4 * GiB, used_memory=2 * GiB),
           vm("b", "h1", ram=4 * GiB, used_memory=2 * GiB)]
    a, b = shared_run(hosts, vms, [migrate("a", "h2"), migrate("b", "h3", at=1.0)])
    # a: 1 s alone (LINK bytes), then half rate for the rest
    a_time = 1.0 + (2 * GiB - LINK) / (LINK / 2)
    assert a.total_time == pytest.approx(a_time, rel=1e-9)
    # b: half rate until a ends, then the whole link
    b_sent = (a_time - 1.0) * LINK / 2
    assert b.total_time == pytest.approx(a_time - 1.0 + (2 * GiB - b_sent) / LINK, rel=1e-9)


def test_full_duplex_opposite_migrations_do_not_slow_each_other() -> None:
    hosts = [host("h1"), host("h2")]
    vms = [vm("a", "h1", used_memory=2 * GiB, working_set=GiB, dirty_rate=300 * MiB),
           vm("b", "h2", used_memory=2 * GiB, working_set=GiB, dirty_rate=300 * MiB)]
    alone = shared_run(hosts, vms, [migrate("a", "h2")])[0]
    a, b = shared_run(hosts, vms, [migrate("a", "h2"), migrate("b", "h1")])
    expected = plan(2 * GiB, GiB, 300 * MiB, LINK, 0.5)
    for record in (alone, a, b):
        assert_matches(record, expected)


def test_rack_uplink_is_the_bottleneck() -> None:
    racks = [host("h1", rack="r1"), host("h2", rack="r1"),
             host("h3", rack="r2"), host("h4", rack="r2"), host("h5", rack="r2")]
    net = NetworkSpec(host_link=LINK, uplink=5e8)
    vms = [vm("a", "h1", used_memory=GiB), vm("b", "h2", used_memory=GiB),
           vm("c", "h3", used_memory=GiB)]

    def run(events) -> list[MigrationRecord]:
        sc = scenario(racks, vms, events, network=net, migration=policy())
        return run_scenario(sc).store.migrations()

    (cross,) = run([migrate("a", "h3")])
    assert cross.total_time == pytest.approx(GiB / 5e8, rel=1e-9)
    (inside,) = run([migrate("a", "h2")])
    assert inside.total_time == pytest.approx(GiB / LINK, rel=1e-9)
    # two cross-rack migrations out of r1 share its uplink; one inside r2 is not slowed
    a, b, c = run([migrate("a", "h3"), migrate("b", "h4"), migrate("c", "h5")])
    assert a.total_time == pytest.approx(GiB / 2.5e8, rel=1e-9)
    assert b.total_time == pytest.approx(GiB / 2.5e8, rel=1e-9)
    assert c.total_time == pytest.approx(GiB / LINK, rel=1e-9)


def test_max_min_share_behind_an_uplink_bottleneck() -> None:
    """b (cross-rack, held to 2.5e8 by the shared uplink) and c (in-rack) both enter h4:
    max-min gives c what b cannot use, 1.25e9 - 2.5e8 = 1e9 B/s."""
    racks = [host("h1", rack="r1"), host("h2", rack="r1"),
             host("h3", rack="r2"), host("h4", rack="r2")]
    net = NetworkSpec(host_link=LINK, uplink=5e8)
    vms = [vm("a", "h1", used_memory=GiB), vm("b", "h2", used_memory=GiB),
           vm("c", "h3", used_memory=GiB)]
    sc = scenario(racks, vms, [migrate("a", "h3"), migrate("b", "h4"), migrate("c", "h4")],
                  network=net, migration=policy())
    a, b, c = run_scenario(sc).store.migrations()
    assert c.total_time == pytest.approx(GiB / 1e9, rel=1e-9)
    assert a.total_time == pytest.approx(GiB / 2.5e8, rel=1e-9)
    assert b.total_time == pytest.approx(GiB / 2.5e8, rel=1e-9)


def test_automatic_racks_from_hosts_per_rack() -> None:
    hosts = [host(f"h{i}") for i in range(1, 5)]  # rack0: h1 h2, rack1: h3 h4
    net = NetworkSpec(hosts_per_rack=2, uplink=2.5e8)
    sc = scenario(hosts, [vm("a", "h1", used_memory=GiB), vm("b", "h2", used_memory=GiB)],
                  [migrate("a", "h3"), migrate("b", "h4")],
                  network=net, migration=policy())
    a, b = run_scenario(sc).store.migrations()
    assert a.total_time == pytest.approx(GiB / 1.25e8, rel=1e-9)
    assert b.total_time == pytest.approx(GiB / 1.25e8, rel=1e-9)


# -- non-convergence and abort (driver API in a bare SimPy environment) ---------------------------


def started(sc: Scenario, *, instance: str = "vm1", dest: str = "h2", flags: int = LIVE,
            bandwidth_mib: int = 0, block: bool = False) -> tuple[simpy.Environment,
                                                                 SimulatedDriver]:
    env = simpy.Environment()
    drv = SimulatedDriver(env, sc)
    drv.pre_live_migration(instance, dest, block)
    drv.start_migration(instance, dest, uri=f"qemu+tcp://{dest}/system", flags=flags,
                        bandwidth_mib=bandwidth_mib)
    return env, drv


def test_dirtying_faster_than_the_link_never_converges_until_aborted() -> None:
    used, ws = 2 * GiB, GiB
    sc = scenario([host("h1"), host("h2")],
                  [vm("vm1", "h1", ram=4 * GiB, used_memory=used, working_set=ws,
                      dirty_rate=2e9)])
    env, drv = started(sc)
    free_before = drv.host_facts("h2").free_ram_mb + 4096  # before the claim
    env.run(until=60.0)
    info = drv.job_info("vm1")
    assert info.type is JobType.UNBOUNDED
    # round 0 (2 GiB) then the whole working set again and again, W/B each
    rounds = 1 + math.floor((60.0 - used / LINK) / (ws / LINK))
    assert info.memory_iteration in (rounds, rounds + 1)
    assert info.memory_processed == pytest.approx(60.0 * LINK, rel=1e-9)
    assert drv.instance_running_on("vm1", "h1") and not drv.instance_running_on("vm1", "h2")
    drv.abort_job("vm1")
    env.run(until=60.5)
    info = drv.job_info("vm1")
    assert info.type is JobType.CANCELLED and info.error == ABORTED
    assert info.time_elapsed == pytest.approx(60.0)
    assert info.downtime is None
    assert drv.instance_host("vm1") == "h1" and drv.instance_running_on("vm1", "h1")
    assert drv.network.active_flows() == ()
    drv.rollback_live_migration("vm1", "h1", "h2", False)
    assert drv.host_facts("h2").free_ram_mb == free_before
    with pytest.raises(MigrationError):
        drv.abort_job("vm1")  # nothing left to abort


def test_abort_during_the_disk_copy() -> None:
    local = Storage.LOCAL
    sc = scenario([host("h1", storage=local), host("h2", storage=local)],
                  [vm("vm1", "h1", used_memory=GiB, disk=20 * GiB)])
    env, drv = started(sc, flags=BLOCK, block=True)
    env.run(until=1.0)
    drv.abort_job("vm1")
    env.run(until=2.0)
    info = drv.job_info("vm1")
    assert info.type is JobType.CANCELLED
    assert info.memory_processed == 0 and info.memory_iteration == 0
    assert info.time_elapsed == pytest.approx(1.0)
    assert drv.instance_host("vm1") == "h1"
    assert drv.network.active_flows() == ()


def test_abort_without_a_job_is_an_error() -> None:
    sc = scenario([host("h1"), host("h2")], [vm("vm1", "h1")])
    drv = SimulatedDriver(simpy.Environment(), sc)
    with pytest.raises(MigrationError):
        drv.abort_job("vm1")
    env, drv = started(sc)
    env.run()
    assert drv.job_info("vm1").type is JobType.COMPLETED
    with pytest.raises(MigrationError):
        drv.abort_job("vm1")  # already completed


def test_second_job_for_the_same_instance_is_refused() -> None:
    sc = scenario([host("h1"), host("h2"), host("h3")], [vm("vm1", "h1")])
    env, drv = started(sc)
    with pytest.raises(MigrationError):
        drv.start_migration("vm1", "h3", uri="qemu+tcp://h3/system", flags=LIVE,
                            bandwidth_mib=0)


# -- accounting ---------------------------------------------------------------------------------


def test_host_facts_arithmetic() -> None:
    sc = scenario(
        [host("h1", ram=16 * GiB, vcpus=8, disk=100 * GiB + 512 * MiB, storage=Storage.LOCAL),
         host("h2", ram=8 * GiB, vcpus=4, disk=50 * GiB, storage=Storage.LOCAL)],
        [vm("a", "h1", ram=2 * GiB, vcpus=2, disk=30 * GiB, disk_allocated=10 * GiB),
         vm("b", "h1", ram=GiB, vcpus=1, disk=5 * GiB, volume_backed=True)],
        migration=policy(reserved_host_memory_mb=1024),
    )
    drv = SimulatedDriver(simpy.Environment(), sc)
    f = drv.host_facts("h1")
    assert (f.memory_mb, f.free_ram_mb) == (16384, 16384 - 1024 - 3072)
    assert (f.vcpus, f.vcpus_used) == (8, 3)
    assert f.local_gb == 100
    assert f.disk_available_least == 90  # 100.5 - 10 allocated (volume disk not local)
    drv.pre_live_migration("a", "h2", True)  # claims RAM, vCPUs and the allocated disk
    g = drv.host_facts("h2")
    assert (g.free_ram_mb, g.vcpus_used, g.disk_available_least) == (8192 - 1024 - 2048, 2, 40)
    drv.rollback_live_migration("a", "h1", "h2", True)
    g = drv.host_facts("h2")
    assert (g.free_ram_mb, g.vcpus_used, g.disk_available_least) == (7168, 0, 50)


def test_post_releases_the_source_and_the_claim_becomes_resident() -> None:
    sc = scenario([host("h1"), host("h2")], [vm("vm1", "h1", ram=4 * GiB)])
    env, drv = started(sc)
    claimed = drv.host_facts("h2").free_ram_mb
    env.run()
    assert drv.host_facts("h2").free_ram_mb == claimed  # claim -> resident, no double count
    assert drv.host_facts("h1").free_ram_mb == 16384 - 512 - 4096  # until post
    drv.post_live_migration("vm1", "h1", "h2")
    assert drv.host_facts("h1").free_ram_mb == 16384 - 512
    assert drv.host_facts("h1").vcpus_used == 0


def test_claims_refuse_what_does_not_fit() -> None:
    sc = scenario([host("h1"), host("h2", ram=4 * GiB)],
                  [vm("a", "h1", ram=2 * GiB), vm("b", "h1", ram=2 * GiB)])
    drv = SimulatedDriver(simpy.Environment(), sc)
    drv.pre_live_migration("a", "h2", False)  # 3584 MiB free -> 1536
    with pytest.raises(MigrationError) as err:
        drv.pre_live_migration("b", "h2", False)
    assert "h2" in str(err.value)
    assert drv.host_facts("h2").free_ram_mb == 1536


def test_block_claim_refused_without_disk_room() -> None:
    local = Storage.LOCAL
    sc = scenario([host("h1", storage=local), host("h2", storage=local, disk=10 * GiB)],
                  [vm("a", "h1", disk=20 * GiB)])
    drv = SimulatedDriver(simpy.Environment(), sc)
    with pytest.raises(MigrationError):
        drv.pre_live_migration("a", "h2", True)
    assert drv.host_facts("h2").free_ram_mb == 16384 - 512  # nothing claimed


@pytest.mark.parametrize("now, beat", [(0.0, 0.0), (9.99, 0.0), (25.0, 20.0), (100.0, 100.0)])
def test_heartbeats_every_report_interval(now: float, beat: float) -> None:
    env = simpy.Environment()
    drv = SimulatedDriver(env, scenario([host("h1")], [], migration=policy(report_interval=10.0)))
    if now:
        env.run(until=now)
    assert drv.host_facts("h1").last_heartbeat == beat


@pytest.mark.parametrize(
    "src, dst, ok",
    [("Haswell", "Skylake-Server", True), ("Skylake-Server", "Haswell", False),
     ("Nehalem", "Icelake-Server", True), ("EPYC", "EPYC", True), ("EPYC", "Haswell", False),
     ("Haswell", "EPYC", False)],
)
def test_cpu_models_run_on_same_or_newer(src: str, dst: str, ok: bool) -> None:
    drv = SimulatedDriver(simpy.Environment(), scenario(
        [host("h1", cpu_model=src), host("h2", cpu_model=dst)], []))
    assert drv.compare_cpu("h1", "h2") is ok


def test_storage_pools() -> None:
    local, shared = Storage.LOCAL, Storage.SHARED
    drv = SimulatedDriver(simpy.Environment(), scenario(
        [host("s1", storage=shared), host("s2", storage=shared),
         host("l1", storage=local), host("l2", storage=local)], []))
    m = drv.create_shared_storage_test_file("s2")
    assert drv.check_shared_storage_test_file("s1", m)
    assert not drv.check_shared_storage_test_file("l1", m)
    n = drv.create_shared_storage_test_file("l2")
    assert n != m
    assert drv.check_shared_storage_test_file("l2", n)
    assert not drv.check_shared_storage_test_file("l1", n)
    assert not drv.check_shared_storage_test_file("s1", n)
    drv.cleanup_shared_storage_test_file("s2", m)
    assert not drv.check_shared_storage_test_file("s1", m)


# -- no work per VM per simulated second ---------------------------------------------------------


def crowd(idle_vms: int, at: float = 10.0) -> Scenario:
    per_host = 100
    hosts = [host("src"), host("dst")] + [
        host(f"idle{i}", ram=64 * GiB) for i in range(max(1, idle_vms // per_host))]
    vms = [vm("mover", "src", used_memory=GiB, dirty_rate=100 * MiB)] + [
        vm(f"idle-{i}", f"idle{i // per_host}", ram=256 * MiB, used_memory=128 * MiB)
        for i in range(idle_vms)]
    return scenario(hosts, vms, [migrate("mover", "dst", at=at)], migration=policy())


def test_idle_vms_cost_no_simulation_events() -> None:
    small, large = run_scenario(crowd(10)), run_scenario(crowd(10_000))
    assert small.store.migrations()[0].status is MigrationStatus.COMPLETED
    assert small.sim_events == large.sim_events
    assert small.store.migrations()[0].total_time == large.store.migrations()[0].total_time


def test_waiting_costs_no_events_per_second() -> None:
    late_crowd = dataclasses.replace(crowd(100, at=1e6), until=2e6)  # beyond the default 24 h
    soon, late = run_scenario(crowd(100, at=10.0)), run_scenario(late_crowd)
    assert soon.sim_events == late.sim_events
    assert late.sim_time > 1e6


# -- regressions (bugs found by these tests) ----------------------------------------------


@pytest.mark.parametrize("cost", [0.0, 0.05])
def test_guest_without_used_memory_migrates(cost: float) -> None:
    """Nothing to send in round 0: switch over at once (it used to divide by zero)."""
    record = one_migration(0, 0, 0.0, switchover_cost=cost)
    assert record.iterations == 1 and record.data_transferred == 0
    assert record.total_time == pytest.approx(cost) and record.downtime == pytest.approx(cost)


def test_memory_remaining_is_positive_while_later_rounds_run() -> None:
    sc = scenario([host("h1"), host("h2")],
                  [vm("vm1", "h1", ram=8 * GiB, used_memory=4 * GiB, working_set=GiB,
                      dirty_rate=100 * MiB)],
                  migration=policy(max_downtime=0.01))
    env, drv = started(sc)
    expected = plan(4 * GiB, GiB, 100 * MiB, LINK, 0.01)
    round0, round1 = expected.round_times[:2]
    env.run(until=round0 / 2)
    info = drv.job_info("vm1")
    assert info.memory_remaining == pytest.approx(4 * GiB - LINK * round0 / 2, rel=1e-6)
    env.run(until=round0 + round1 / 2)  # halfway through round 1 (360 MB)
    info = drv.job_info("vm1")
    assert info.type is JobType.UNBOUNDED and info.memory_iteration == 2
    assert info.memory_remaining == pytest.approx(expected.rounds[1] / 2, rel=1e-6)
    assert info.data_remaining == info.memory_remaining
    assert info.memory_processed == pytest.approx(4 * GiB + expected.rounds[1] / 2, rel=1e-6)
    env.run()
    assert drv.job_info("vm1").memory_remaining == 0


def test_memory_remaining_is_the_whole_memory_during_the_disk_copy() -> None:
    local = Storage.LOCAL
    sc = scenario([host("h1", storage=local), host("h2", storage=local)],
                  [vm("vm1", "h1", used_memory=GiB, disk=10 * GiB)])
    env, drv = started(sc, flags=BLOCK, block=True)
    env.run(until=1.0)
    info = drv.job_info("vm1")
    assert info.memory_remaining == GiB
    assert info.data_remaining == pytest.approx(11 * GiB - LINK, rel=1e-9)


def test_cancelled_job_keeps_the_bytes_it_sent() -> None:
    local = Storage.LOCAL
    sc = scenario([host("h1", storage=local), host("h2", storage=local)],
                  [vm("vm1", "h1", used_memory=GiB, disk=20 * GiB)])
    env, drv = started(sc, flags=BLOCK, block=True)
    env.run(until=1.0)
    assert drv.job_info("vm1").disk_processed == pytest.approx(LINK, rel=1e-9)
    drv.abort_job("vm1")
    env.run(until=2.0)
    info = drv.job_info("vm1")
    assert info.disk_processed == pytest.approx(LINK, rel=1e-9)
    assert info.data_processed == pytest.approx(LINK, rel=1e-9)


def test_capped_migrations_on_a_roomy_link_do_not_slow_each_other() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", used_memory=GiB), vm("b", "h1", used_memory=GiB)]
    a, b = shared_run(hosts, vms, [migrate("a", "h2"), migrate("b", "h3")],
                      bandwidth=200 * MiB)  # 2 x 200 MiB/s < 1.25e9 B/s
    assert a.total_time == pytest.approx(GiB / (200 * MiB), rel=1e-9)
    assert b.total_time == pytest.approx(GiB / (200 * MiB), rel=1e-9)


def test_caps_above_the_fair_share_leave_the_link_shared() -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("a", "h1", used_memory=GiB), vm("b", "h1", used_memory=GiB)]
    a, b = shared_run(hosts, vms, [migrate("a", "h2"), migrate("b", "h3")],
                      bandwidth=1000 * MiB)  # fair share 625e6 B/s < cap
    assert a.total_time == pytest.approx(2 * GiB / LINK, rel=1e-9)
    assert b.total_time == pytest.approx(2 * GiB / LINK, rel=1e-9)


@pytest.mark.parametrize("storage, block", [(Storage.SHARED, False), (Storage.LOCAL, True)])
def test_there_and_back_again_leaves_the_books_as_they_were(
    storage: Storage, block: bool, sim_drivers: list[SimulatedDriver]
) -> None:
    hosts = [host("h1", storage=storage), host("h2", storage=storage)]
    vms = [vm("vm1", "h1", ram=3 * GiB, vcpus=2, disk=20 * GiB, disk_allocated=4 * GiB)]
    events = [migrate("vm1", "h2", block=block), migrate("vm1", "h1", at=20.0, block=block)]
    initial = SimulatedDriver(simpy.Environment(), scenario(hosts, vms))
    result = run_scenario(scenario(hosts, vms, events, migration=policy()))
    assert [m.status for m in result.store.migrations()] == [MigrationStatus.COMPLETED] * 2
    assert result.final_hosts == {"vm1": "h1"}
    drv = sim_drivers[-1]
    for name in ("h1", "h2"):
        assert drv.host_facts(name) == dataclasses.replace(
            initial.host_facts(name), last_heartbeat=drv.host_facts(name).last_heartbeat)


def test_a_new_claim_replaces_the_instances_old_one() -> None:
    sc = scenario([host("h1"), host("h2"), host("h3")], [vm("vm1", "h1", ram=4 * GiB)])
    drv = SimulatedDriver(simpy.Environment(), sc)
    drv.pre_live_migration("vm1", "h2", False)
    drv.pre_live_migration("vm1", "h3", False)  # a retry elsewhere without a rollback
    assert drv.host_facts("h2").free_ram_mb == 16384 - 512
    assert drv.host_facts("h3").free_ram_mb == 16384 - 512 - 4096
    assert drv.world().claims == {"vm1": "h3"}


def test_switchover_after_an_early_rollback_still_counts_the_guest_on_dest() -> None:
    """A controller that rolled back while the job ran (it should not): the guest that
    arrives is counted where it runs, and nothing crashes."""
    sc = scenario([host("h1"), host("h2")], [vm("vm1", "h1", ram=4 * GiB)])
    env, drv = started(sc)
    drv.rollback_live_migration("vm1", "h1", "h2", False)
    env.run()
    assert drv.job_info("vm1").type is JobType.COMPLETED
    assert drv.host_facts("h2").free_ram_mb == 16384 - 512 - 4096
    drv.post_live_migration("vm1", "h1", "h2")
    assert drv.host_facts("h1").free_ram_mb == 16384 - 512
