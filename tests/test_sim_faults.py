"""Faults in the simulated driver, through the driver API: host, link and service down
and up, on the source or the destination, before a migration, during pre-copy, during
post-copy and after it. Each test says where the guest runs, what the job reads, what is
claimed and counted, what the heartbeats and ``world()`` say."""

from __future__ import annotations

import pytest
import simpy
from fakes import GiB, host, scenario, vm

from livemig.core.errors import HypervisorUnavailable, MigrationError
from livemig.core.flags import POSTCOPY, parse_flags
from livemig.core.model import FaultKind, MigrationPolicy, Scenario
from livemig.core.policy import keepalive_timeout
from livemig.drivers.base import DomainFact, DomainState, JobType
from livemig.drivers.simulated import SimulatedDriver

LINK = 1.25e9
BASE = parse_flags(MigrationPolicy().live_migration_flag)
FULL = 16384 - 512  # MiB free on an empty 16 GiB host (512 MiB reserved)
KEEPALIVE = keepalive_timeout(MigrationPolicy())  # 30 s
RUNNING, PAUSED = DomainState.RUNNING, DomainState.PAUSED


def world_scenario(*, dirty: float = 2e9, ws: int = GiB, used: int = 2 * GiB,
                   **policy: object) -> Scenario:
    """vm1 (4 GiB) migrates h1 -> h2; vm2 (2 GiB) stays on h1, vm3 (1 GiB) on h2; h3 idle.
    By default vm1 rewrites its 1 GiB working set at 2e9 B/s: pre-copy never ends."""
    policy.setdefault("completion_timeout", 0.0)
    return scenario(
        [host("h1"), host("h2"), host("h3")],
        [vm("vm1", "h1", ram=4 * GiB, used_memory=used, working_set=ws, dirty_rate=dirty),
         vm("vm2", "h1", ram=2 * GiB), vm("vm3", "h2", ram=GiB)],
        migration=MigrationPolicy(**policy),  # type: ignore[arg-type]
    )


def fresh(sc: Scenario | None = None) -> tuple[simpy.Environment, SimulatedDriver]:
    env = simpy.Environment()
    return env, SimulatedDriver(env, sc or world_scenario())


def migrating(sc: Scenario | None = None, flags: int = BASE | POSTCOPY,
              ) -> tuple[simpy.Environment, SimulatedDriver]:
    env, drv = fresh(sc)
    drv.pre_live_migration("vm1", "h2", False)
    drv.start_migration("vm1", "h2", uri="qemu+tcp://h2/system", flags=flags,
                        bandwidth_mib=0)
    return env, drv


def in_postcopy(sc: Scenario | None = None) -> tuple[simpy.Environment, SimulatedDriver]:
    """vm1 switched to post-copy at 1 s: runs on h2 and pulls 3.4e9 B (2.7 s)."""
    env, drv = migrating(sc)
    env.run(until=1.0)
    drv.start_postcopy("vm1")
    env.run(until=1.5)
    assert drv.job_info("vm1").postcopy and drv.instance_host("vm1") == "h2"
    return env, drv


def free(drv: SimulatedDriver, name: str) -> int:
    return drv.host_facts(name).free_ram_mb


def domains(drv: SimulatedDriver) -> dict[str, tuple[str, DomainState]]:
    return {f.instance: (f.host, f.state) for f in drv.world().domains}


def fault(drv: SimulatedDriver, kind: FaultKind, name: str) -> None:
    drv.inject_fault(kind, name)


# -- host down / up -----------------------------------------------------------------------------


def test_host_down_before_any_migration_kills_its_guests() -> None:
    env, drv = fresh()
    env.run(until=25.0)
    fault(drv, FaultKind.HOST_DOWN, "h1")
    assert drv.instance_host("vm1") is None and drv.instance_host("vm2") is None
    assert not drv.instance_running_on("vm1", "h1")
    assert free(drv, "h1") == FULL  # nothing counted on it any more
    env.run(until=55.0)
    assert drv.host_facts("h1").last_heartbeat == 20.0  # its last report
    assert drv.host_facts("h2").last_heartbeat == 50.0
    w = drv.world()
    assert w.unreachable == ("h1",)
    assert w.domains == (DomainFact(instance="vm3", host="h2", state=RUNNING),)
    with pytest.raises(HypervisorUnavailable):
        drv.pre_live_migration("vm3", "h1", False)
    with pytest.raises(MigrationError):
        drv.suspend("vm1")  # no such domain anywhere
    with pytest.raises(MigrationError):
        drv.start_migration("vm1", "h3", uri="qemu+tcp://h3/system", flags=BASE,
                            bandwidth_mib=0)

    fault(drv, FaultKind.HOST_UP, "h1")
    assert drv.host_facts("h1").last_heartbeat == 55.0  # reports from now on
    env.run(until=65.0)
    assert drv.host_facts("h1").last_heartbeat == 60.0
    assert drv.instance_host("vm1") is None  # no guest restarted
    assert drv.world().unreachable == ()
    assert free(drv, "h1") == FULL
    drv.pre_live_migration("vm3", "h1", False)  # capacity available again
    assert drv.world().claims == {"vm3": "h1"}


def test_host_down_twice_or_up_while_up_changes_nothing() -> None:
    env, drv = fresh()
    fault(drv, FaultKind.HOST_UP, "h3")
    fault(drv, FaultKind.HOST_DOWN, "h3")
    env.run(until=30.0)
    fault(drv, FaultKind.HOST_DOWN, "h3")
    assert drv.host_facts("h3").last_heartbeat == 0.0
    with pytest.raises(ValueError, match="h9"):
        drv.inject_fault(FaultKind.HOST_DOWN, "h9")


def test_destination_down_during_precopy() -> None:
    env, drv = migrating()
    claimed = free(drv, "h1")
    env.run(until=3.0)
    fault(drv, FaultKind.HOST_DOWN, "h2")
    info = drv.job_info("vm1")  # the source answers
    assert info.type is JobType.FAILED and "h2" in (info.error or "")
    assert info.time_elapsed == 3.0 and info.downtime is None
    assert info.memory_processed == pytest.approx(3.0 * LINK, rel=1e-9)
    assert drv.instance_host("vm1") == "h1" and drv.instance_running_on("vm1", "h1")
    assert drv.instance_host("vm3") is None  # h2's own guest died
    assert drv.network.active_flows() == ()
    assert domains(drv) == {"vm1": ("h1", RUNNING), "vm2": ("h1", RUNNING)}
    assert drv.world().claims == {"vm1": "h2"}  # until the rollback
    with pytest.raises(HypervisorUnavailable, match="h2 \\(host down\\)"):
        drv.rollback_live_migration("vm1", "h1", "h2", False)  # nobody to clean up there
    assert drv.world().claims == {}  # the claim is released all the same
    assert free(drv, "h1") == claimed
    fault(drv, FaultKind.HOST_UP, "h2")
    assert free(drv, "h2") == FULL


def test_destination_down_during_the_switchover_unpauses_the_guest_on_its_source() -> None:
    """max downtime 2 s: after round 0 (3.44 s) the 2 GiB dirty set goes paused (1.72 s)."""
    env, drv = migrating(world_scenario(dirty=1e9, ws=2 * GiB, used=4 * GiB,
                                        max_downtime=2.0))
    env.run(until=4.0)
    assert domains(drv)["vm1"] == ("h1", PAUSED)
    fault(drv, FaultKind.HOST_DOWN, "h2")
    assert drv.job_info("vm1").type is JobType.FAILED
    assert domains(drv)["vm1"] == ("h1", RUNNING)


def test_source_down_during_precopy() -> None:
    env, drv = migrating()
    before = free(drv, "h2")
    env.run(until=3.0)
    fault(drv, FaultKind.HOST_DOWN, "h1")
    assert drv.instance_host("vm1") is None and drv.instance_host("vm2") is None
    # the controller's migrateToURI call to the source's libvirtd returned its error
    assert drv.job_info("vm1").type is JobType.FAILED
    with pytest.raises(HypervisorUnavailable):
        drv.abort_job("vm1")
    assert drv.network.active_flows() == ()
    assert domains(drv) == {"vm3": ("h2", RUNNING)}
    assert drv.world().claims == {"vm1": "h2"}
    drv.rollback_live_migration("vm1", "h1", "h2", False)
    assert free(drv, "h2") == before + 4096
    fault(drv, FaultKind.HOST_UP, "h1")
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.time_elapsed == 3.0
    assert drv.instance_host("vm1") is None


def test_destination_down_during_postcopy_loses_the_guest() -> None:
    env, drv = in_postcopy()
    fault(drv, FaultKind.HOST_DOWN, "h2")
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.postcopy
    assert drv.instance_host("vm1") is None
    assert free(drv, "h1") == FULL - 2048  # vm2 only: vm1's source share went with it
    drv.post_live_migration("vm1", "h1", "h2")  # nothing left to release
    with pytest.raises(HypervisorUnavailable):
        drv.rollback_live_migration("vm1", "h1", "h2", False)
    assert free(drv, "h1") == FULL - 2048
    assert drv.world().claims == {}
    fault(drv, FaultKind.HOST_UP, "h2")
    assert free(drv, "h2") == FULL
    assert domains(drv) == {"vm2": ("h1", RUNNING)}


def test_source_down_during_postcopy_loses_the_guest() -> None:
    env, drv = in_postcopy()
    fault(drv, FaultKind.HOST_DOWN, "h1")
    assert drv.instance_host("vm1") is None
    assert not drv.instance_running_on("vm1", "h2")
    assert free(drv, "h2") == FULL - 1024  # vm3 only
    assert drv.network.active_flows() == ()
    assert domains(drv) == {"vm3": ("h2", RUNNING)}
    fault(drv, FaultKind.HOST_UP, "h1")
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.postcopy and info.time_elapsed == 1.5


@pytest.mark.parametrize("where", ["h1", "h2"])
def test_host_down_after_a_migration(where: str) -> None:
    env, drv = migrating(world_scenario(dirty=0.0))
    env.run()
    assert drv.job_info("vm1").type is JobType.COMPLETED
    fault(drv, FaultKind.HOST_DOWN, where)
    if where == "h1":  # the source: the guest is elsewhere; its leftover share goes too
        assert drv.job_info("vm1").type is JobType.COMPLETED  # an ended job stays readable
        assert drv.instance_host("vm1") == "h2"
        drv.post_live_migration("vm1", "h1", "h2")
        fault(drv, FaultKind.HOST_UP, "h1")
        assert free(drv, "h1") == FULL
        assert free(drv, "h2") == FULL - 1024 - 4096
    else:  # the destination: the guest dies there
        assert drv.job_info("vm1").type is JobType.COMPLETED
        assert drv.instance_host("vm1") is None
        drv.post_live_migration("vm1", "h1", "h2")
        assert free(drv, "h1") == FULL - 2048


# -- link down / up -----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["h1", "h2"])
def test_link_down_stalls_the_job_until_keepalive_fails_it(cut: str) -> None:
    env, drv = migrating()
    env.run(until=3.0)
    fault(drv, FaultKind.LINK_DOWN, cut)
    sent = drv.job_info("vm1").memory_processed
    env.run(until=3.0 + KEEPALIVE - 0.01)
    info = drv.job_info("vm1")
    assert info.type is JobType.UNBOUNDED and info.memory_processed == sent  # stalled
    assert drv.host_facts(cut).last_heartbeat == 0.0  # stopped at 3 s
    assert drv.world().unreachable == ()  # its libvirtd still runs
    env.run(until=3.0 + KEEPALIVE + 1e-6)
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and "connection to peer lost" in (info.error or "")
    assert info.time_elapsed == 3.0 + KEEPALIVE
    assert domains(drv)["vm1"] == ("h1", RUNNING)
    assert drv.network.active_flows() == ()
    fault(drv, FaultKind.LINK_UP, cut)
    assert drv.host_facts(cut).last_heartbeat == env.now  # reports again from now
    assert drv.network.link_capacity(cut, "sw:core") == LINK


def test_link_back_before_the_keepalive_lets_the_job_finish_late() -> None:
    """An idle 2 GiB guest: 1.72 s of transfer, stalled from 1 s to 21 s."""
    env, drv = migrating(world_scenario(dirty=0.0))
    env.run(until=1.0)
    fault(drv, FaultKind.LINK_DOWN, "h2")
    env.run(until=21.0)
    fault(drv, FaultKind.LINK_UP, "h2")
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED
    assert info.time_elapsed == pytest.approx(2 * GiB / LINK + 20.0, rel=1e-12)
    assert drv.instance_host("vm1") == "h2"


def test_keepalive_counts_while_either_end_is_cut_off() -> None:
    """Source cut 1-21 s, destination 11-45 s: the peers never heard each other from 1 s."""
    env, drv = migrating()
    env.run(until=1.0)
    fault(drv, FaultKind.LINK_DOWN, "h1")
    env.run(until=11.0)
    fault(drv, FaultKind.LINK_DOWN, "h2")
    env.run(until=21.0)
    fault(drv, FaultKind.LINK_UP, "h1")
    env.run(until=1.0 + KEEPALIVE + 1e-6)
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.time_elapsed == 1.0 + KEEPALIVE


def test_link_down_during_postcopy_loses_the_guest_after_the_keepalive() -> None:
    env, drv = in_postcopy()
    fault(drv, FaultKind.LINK_DOWN, "h1")
    env.run(until=1.5 + KEEPALIVE + 1e-6)
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.postcopy
    assert drv.instance_host("vm1") is None
    assert free(drv, "h2") == FULL - 1024
    assert free(drv, "h1") == FULL - 2048


def test_link_back_during_postcopy_and_it_completes() -> None:
    env, drv = in_postcopy()
    left = drv.job_info("vm1").memory_remaining
    fault(drv, FaultKind.LINK_DOWN, "h2")
    env.run(until=11.5)
    fault(drv, FaultKind.LINK_UP, "h2")
    env.run()
    info = drv.job_info("vm1")
    assert info.type is JobType.COMPLETED and drv.instance_host("vm1") == "h2"
    assert info.time_elapsed == pytest.approx(11.5 + left / LINK, rel=1e-9)


@pytest.mark.parametrize("cut", ["h1", "h2"])
def test_link_down_after_a_migration_changes_nothing_but_heartbeats(cut: str) -> None:
    env, drv = migrating(world_scenario(dirty=0.0))
    env.run()
    done = drv.job_info("vm1")
    fault(drv, FaultKind.LINK_DOWN, cut)
    env.run(until=env.now + 2 * KEEPALIVE)
    assert drv.job_info("vm1") == done
    assert domains(drv)["vm1"] == ("h2", RUNNING)
    assert drv.host_facts(cut).last_heartbeat == 0.0
    assert drv.host_facts("h3").last_heartbeat == 60.0


def test_nothing_starts_towards_a_cut_off_host() -> None:
    env, drv = fresh()
    fault(drv, FaultKind.LINK_DOWN, "h2")
    with pytest.raises(HypervisorUnavailable):
        drv.pre_live_migration("vm1", "h2", False)
    drv.pre_live_migration("vm1", "h3", False)
    fault(drv, FaultKind.LINK_DOWN, "h3")
    with pytest.raises(MigrationError, match="h3"):
        drv.start_migration("vm1", "h3", uri="qemu+tcp://h3/system", flags=BASE,
                            bandwidth_mib=0)


# -- service down / up --------------------------------------------------------------------------


def test_service_down_before_any_migration() -> None:
    env, drv = fresh()
    env.run(until=12.0)
    fault(drv, FaultKind.SERVICE_DOWN, "h1")
    assert drv.instance_host("vm1") == "h1" and drv.instance_running_on("vm1", "h1")
    assert free(drv, "h1") == FULL - 4096 - 2048  # the guests still run
    w = drv.world()
    assert w.unreachable == ("h1",)
    assert w.domains == (DomainFact(instance="vm3", host="h2", state=RUNNING),)
    for call in (drv.suspend, drv.resume):
        with pytest.raises(HypervisorUnavailable):
            call("vm1")
    with pytest.raises(HypervisorUnavailable):
        drv.pre_live_migration("vm3", "h1", False)
    with pytest.raises(HypervisorUnavailable):
        drv.start_migration("vm1", "h2", uri="qemu+tcp://h2/system", flags=BASE,
                            bandwidth_mib=0)
    env.run(until=40.0)
    assert drv.host_facts("h1").last_heartbeat == 10.0
    fault(drv, FaultKind.SERVICE_UP, "h1")
    assert drv.host_facts("h1").last_heartbeat == 40.0
    assert drv.world().unreachable == ()
    drv.suspend("vm1")
    assert domains(drv)["vm1"] == ("h1", PAUSED)


def test_destination_service_down_during_precopy_fails_the_job_at_once() -> None:
    env, drv = migrating()
    env.run(until=3.0)
    fault(drv, FaultKind.SERVICE_DOWN, "h2")
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.time_elapsed == 3.0
    assert domains(drv)["vm1"] == ("h1", RUNNING)
    assert drv.instance_host("vm3") == "h2"  # its guests keep running
    assert drv.world().claims == {"vm1": "h2"}
    with pytest.raises(HypervisorUnavailable, match="libvirtd not running"):
        drv.rollback_live_migration("vm1", "h1", "h2", False)
    assert drv.world().claims == {}


def test_source_service_down_during_precopy() -> None:
    env, drv = migrating()
    env.run(until=3.0)
    fault(drv, FaultKind.SERVICE_DOWN, "h1")
    assert drv.job_info("vm1").type is JobType.FAILED  # the migrate call's connection broke
    for call in (drv.abort_job, drv.start_postcopy, drv.suspend):
        with pytest.raises(HypervisorUnavailable):
            call("vm1")
    with pytest.raises(HypervisorUnavailable):
        drv.set_max_downtime("vm1", 1.0)
    assert drv.instance_host("vm1") == "h1"  # the guest runs on, unseen
    assert drv.network.active_flows() == ()
    env.run(until=5.0)
    fault(drv, FaultKind.SERVICE_UP, "h1")
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.time_elapsed == 3.0
    assert domains(drv)["vm1"] == ("h1", RUNNING)


@pytest.mark.parametrize("where", ["h1", "h2"])
def test_service_down_during_postcopy_loses_the_guest(where: str) -> None:
    env, drv = in_postcopy()
    fault(drv, FaultKind.SERVICE_DOWN, where)
    assert drv.instance_host("vm1") is None
    assert free(drv, "h2") == FULL - 1024
    assert free(drv, "h1") == FULL - 2048
    fault(drv, FaultKind.SERVICE_UP, where)
    info = drv.job_info("vm1")
    assert info.type is JobType.FAILED and info.postcopy


def test_service_down_after_a_migration_leaves_the_guest_alone() -> None:
    env, drv = migrating(world_scenario(dirty=0.0))
    env.run()
    fault(drv, FaultKind.SERVICE_DOWN, "h2")
    assert drv.instance_host("vm1") == "h2"
    assert drv.job_info("vm1").type is JobType.COMPLETED  # asked of the source
    assert "vm1" not in domains(drv)  # h2 cannot be asked
    fault(drv, FaultKind.SERVICE_UP, "h2")
    assert domains(drv)["vm1"] == ("h2", RUNNING)


# -- world facts, attach ------------------------------------------------------------------------


def test_world_reports_overcommitted_reachable_hosts() -> None:
    sc = scenario([host("h1", ram=4 * GiB), host("h2", ram=4 * GiB)],
                  [vm("a", "h1", ram=2 * GiB), vm("b", "h1", ram=2 * GiB)])
    env, drv = fresh(sc)
    assert drv.world().overcommitted == ("h1",)  # 4 GiB of guests + 512 MiB reserved
    fault(drv, FaultKind.SERVICE_DOWN, "h1")
    assert drv.world().overcommitted == ()  # unknown: unreachable
    assert drv.world().unreachable == ("h1",)


def test_attach_job_checks_the_job_it_adopts() -> None:
    env, drv = migrating()
    env.run(until=2.0)
    drv.attach_job("vm1", "h1", "h2")
    assert drv.job_info("vm1").type is JobType.UNBOUNDED
    with pytest.raises(MigrationError):
        drv.attach_job("vm1", "h1", "h3")
    with pytest.raises(MigrationError):
        drv.attach_job("vm2", "h1", "h2")
    drv.abort_job("vm1")
    drv.attach_job("vm1", "h1", "h2")  # ended jobs can be adopted too
    assert drv.job_info("vm1").type is JobType.CANCELLED


# -- determinism --------------------------------------------------------------------------------


def test_faults_are_deterministic() -> None:
    def run() -> list[object]:
        env, drv = migrating()
        seen: list[object] = []
        for k, (kind, name) in enumerate([(FaultKind.LINK_DOWN, "h2"),
                                          (FaultKind.LINK_UP, "h2"),
                                          (FaultKind.SERVICE_DOWN, "h3"),
                                          (FaultKind.HOST_DOWN, "h2")]):
            env.run(until=1.3 * (k + 1))
            fault(drv, kind, name)
            seen += [drv.job_info("vm1"), drv.world(), drv.host_table().free_ram_mb.tolist()]
        return seen

    assert run() == run()
