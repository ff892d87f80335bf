"""The orchestrator end to end: every outcome of a live-migration request.

Most tests run real scenarios on the simulated driver through
:func:`run_scenario`. The driver-misbehaviour tests at the end use the scripted
fake of ``tests/fakes.py`` (a job failing, being cancelled, raising, ...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import simpy
from fakes import (
    GiB,
    MiB,
    ScriptedDriver,
    body,
    drain,
    ended,
    facts,
    host,
    migrate,
    orchestrate,
    running,
    scenario,
    vm,
)

from livemig.core.errors import MigrationError
from livemig.core.model import (
    Heuristic,
    HostSpec,
    MigrationPolicy,
    MigrationStatus,
    SchedulerPolicy,
    Storage,
    TaskState,
    VmState,
)
from livemig.core.runner import RunResult, expected_migrations, run_scenario
from livemig.core.scenario import load_scenario
from livemig.core.state import MigrationRecord, StateStore
from livemig.drivers.base import JobInfo, JobType
from livemig.drivers.simulated import SimulatedDriver

S = MigrationStatus
LINK = 1.25e9  # bytes/s, the default 10 Gbit/s host link


def only(result: RunResult) -> MigrationRecord:
    (record,) = result.store.migrations()
    return record


def two_hosts(**h2: object) -> list[HostSpec]:
    return [host("h1"), host("h2", **h2)]  # type: ignore[arg-type]


def assert_untouched(result: RunResult, name: str = "vm1", source: str = "h1",
                     vm_state: VmState = VmState.ACTIVE) -> None:
    """The instance is where it was, in its old state, with no task."""
    record = result.store.instance(name)
    assert record.host == source
    assert record.vm_state is vm_state
    assert record.task_state is None
    assert result.final_hosts[name] == source


# -- success --------------------------------------------------------------------------


def test_explicit_destination_completes(sim_drivers: list[SimulatedDriver]) -> None:
    result = run_scenario(scenario(two_hosts(), [vm("vm1", "h1", ram=2 * GiB,
                                                    used_memory=GiB)],
                                   [migrate("vm1", "h2")]))
    m = only(result)
    assert (m.status, m.source, m.dest, m.error, m.attempted_hosts) == (
        S.COMPLETED, "h1", "h2", None, ())
    # an idle guest: one round of 1 GiB at 10 Gbit/s, nothing left for the downtime
    assert m.total_time == pytest.approx(GiB / LINK, rel=1e-9)
    assert m.downtime == 0.0
    assert m.iterations == 1
    assert m.data_transferred == GiB
    assert m.requested_at == m.started_at == 0.0
    assert m.finished_at == 1.0  # the first 0.5 s poll after the job ended (0.86 s)
    inst = result.store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h2", VmState.ACTIVE, None)
    assert result.final_hosts == {"vm1": "h2"}
    drv = sim_drivers[-1]
    reserved = MigrationPolicy().reserved_host_memory_mb
    assert drv.host_facts("h1").free_ram_mb == 16 * 1024 - reserved
    assert drv.host_facts("h2").free_ram_mb == 14 * 1024 - reserved
    assert drv.host_facts("h2").vcpus_used == 1


def test_status_goes_accepted_preparing_running_completed(
    status_history: dict[int, list[MigrationStatus]],
) -> None:
    run_scenario(scenario(two_hosts(), [vm("vm1", "h1")], [migrate("vm1", "h2")]))
    assert status_history[1] == [S.ACCEPTED, S.PREPARING, S.RUNNING, S.COMPLETED]


def test_notifications_of_a_migration() -> None:
    result = run_scenario(scenario(two_hosts(), [vm("vm1", "h1")],
                                   [migrate("vm1", "h2", at=2.0)]))
    events = [(n.event, n.new_task_state, n.state_change) for n in result.store.notifications]
    assert events == [
        ("compute.instance.update", TaskState.MIGRATING, True),
        ("compute.instance.live_migration.pre.start", TaskState.MIGRATING, False),
        ("compute.instance.live_migration.pre.end", TaskState.MIGRATING, False),
        ("compute.instance.live_migration._post.start", TaskState.MIGRATING, False),
        ("compute.instance.update", None, True),
        ("compute.instance.live_migration._post.end", None, False),
    ]
    assert result.store.notifications[0].time == 2.0
    assert result.store.notifications[-1].time == only(result).finished_at


def test_volume_backed_instance_migrates_without_shared_storage() -> None:
    local = Storage.LOCAL
    result = run_scenario(scenario(
        [host("h1", storage=local), host("h2", storage=local)],
        [vm("vm1", "h1", volume_backed=True)], [migrate("vm1", "h2")]))
    assert only(result).status is S.COMPLETED
    assert result.final_hosts["vm1"] == "h2"


def test_block_migration_between_local_disks(sim_drivers: list[SimulatedDriver]) -> None:
    local = Storage.LOCAL
    result = run_scenario(scenario(
        [host("h1", storage=local), host("h2", storage=local, disk=100 * GiB)],
        [vm("vm1", "h1", used_memory=GiB, disk=20 * GiB, disk_allocated=5 * GiB)],
        [migrate("vm1", "h2", block=True)]))
    m = only(result)
    assert m.status is S.COMPLETED and m.block_migration
    assert m.total_time == pytest.approx((5 * GiB + GiB) / LINK, rel=1e-9)  # allocated disk
    assert m.data_transferred == 6 * GiB
    assert sim_drivers[-1].host_facts("h2").disk_available_least == 95


def test_paused_instance_comes_back_active_after_success() -> None:
    env = simpy.Environment()
    sc = scenario(two_hosts(), [vm("vm1", "h1")])
    orch, store = orchestrate(SimulatedDriver(env, sc), sc.vms)
    store.update_instance("vm1", vm_state=VmState.PAUSED)
    env.run(orch.live_migrate("vm1", body("h2")))
    assert store.migration(1).status is S.COMPLETED
    assert store.instance("vm1").vm_state is VmState.ACTIVE


# -- pre-check failures -----------------------------------------------------------------

LOCAL = Storage.LOCAL
PRECHECK_CASES = {
    "self": (two_hosts(), {}, migrate("vm1", "h1"), "UnableToMigrateToSelf"),
    "no-service-record": (two_hosts(service=False), {}, migrate("vm1", "h2"),
                          "ComputeServiceUnavailable"),
    "unknown-host": (two_hosts(), {}, migrate("vm1", "h9"), "ComputeServiceUnavailable"),
    "hypervisor-type": (two_hosts(hypervisor_type="Xen"), {}, migrate("vm1", "h2"),
                        "InvalidHypervisorType"),
    "hypervisor-too-old": (two_hosts(hypervisor_version=9_000_000), {}, migrate("vm1", "h2"),
                           "DestinationHypervisorTooOld"),
    "cpu": (two_hosts(cpu_model="Nehalem"), {}, migrate("vm1", "h2"), "InvalidCPUInfo"),
    # 2.5 GiB - 512 MiB reserved = 2048 MiB free == the instance's 2048 MiB: refused
    "memory-equal": (two_hosts(ram=5 * GiB // 2), {}, migrate("vm1", "h2"),
                     "MigrationPreCheckError"),
    "block-on-shared": (two_hosts(), {}, migrate("vm1", "h2", block=True),
                        "InvalidLocalStorage"),
    "live-on-local": ([host("h1", storage=LOCAL), host("h2", storage=LOCAL)], {},
                      migrate("vm1", "h2"), "InvalidSharedStorage"),
    "disk-too-large": ([host("h1", storage=LOCAL), host("h2", storage=LOCAL, disk=40 * GiB)],
                       {"disk": 50 * GiB}, migrate("vm1", "h2", block=True),
                       "MigrationPreCheckError"),
    # RamFilter: 1024 MiB * 1.5 - 512 MiB reserved = 1024 MiB usable < 2048 MiB
    "no-valid-host": ([host("h1"), host("h2", ram=GiB), host("h3", ram=GiB)], {},
                      migrate("vm1"), "NoValidHost"),
}


@pytest.mark.parametrize("case", list(PRECHECK_CASES))
def test_precheck_failure_leaves_instance_on_source(
    case: str, sim_drivers: list[SimulatedDriver],
    status_history: dict[int, list[MigrationStatus]],
) -> None:
    hosts, vm_fields, event, error = PRECHECK_CASES[case]
    result = run_scenario(scenario(hosts, [vm("vm1", "h1", **vm_fields)], [event]))
    m = only(result)
    assert (m.status, m.error) == (S.ERROR, error)
    assert m.error_message
    assert m.started_at is None and m.total_time is None
    assert status_history[1] == [S.ACCEPTED, S.ERROR]
    assert_untouched(result)
    drv = sim_drivers[-1]
    assert drv.job_info("vm1").type is JobType.NONE  # no job was ever started
    for name in drv.host_names():  # no claim left behind
        assert drv.host_facts(name).free_ram_mb == (
            drv.host_facts(name).memory_mb - 512 - (2048 if name == "h1" else 0))
    tasks = [n.new_task_state for n in result.store.notifications if n.state_change]
    assert tasks == [TaskState.MIGRATING, None]


def test_stale_source_heartbeat_is_compute_service_unavailable() -> None:
    policy = MigrationPolicy(service_down_time=1.0, report_interval=10.0)
    # at t=5 every host last reported at t=0: 5 s > 1 s
    result = run_scenario(scenario(two_hosts(), [vm("vm1", "h1")],
                                   [migrate("vm1", "h2", at=5.0)], migration=policy))
    m = only(result)
    assert (m.status, m.error) == (S.ERROR, "ComputeServiceUnavailable")
    assert "h1" in m.error_message
    assert_untouched(result)


def test_precheck_failure_restores_a_paused_instance() -> None:
    env = simpy.Environment()
    sc = scenario(two_hosts(hypervisor_type="Xen"), [vm("vm1", "h1")])
    orch, store = orchestrate(SimulatedDriver(env, sc), sc.vms)
    store.update_instance("vm1", vm_state=VmState.PAUSED)
    env.run(orch.live_migrate("vm1", body("h2")))
    assert store.migration(1).error == "InvalidHypervisorType"
    inst = store.instance("vm1")
    assert (inst.vm_state, inst.task_state, inst.host) == (VmState.PAUSED, None, "h1")


def test_max_retries_exceeded_is_a_precheck_failure() -> None:
    hosts = [host("h1"), host("h2", ram=64 * GiB, hypervisor_version=1), host("h3")]
    result = run_scenario(scenario(hosts, [vm("vm1", "h1")], [migrate("vm1")],
                                   scheduler=SchedulerPolicy(max_retries=0)))
    m = only(result)
    assert (m.status, m.error) == (S.ERROR, "MaxRetriesExceeded")
    assert_untouched(result)


# -- request rejections ---------------------------------------------------------------------


def test_unknown_instance_is_rejected() -> None:
    result = run_scenario(scenario(two_hosts(), [vm("vm1", "h1")], [migrate("ghost", "h2")]))
    m = only(result)
    assert (m.status, m.error, m.source) == (S.ERROR, "InstanceNotFound", None)
    assert result.store.notifications == []


@pytest.mark.parametrize("missing", ["host", "block_migration", "disk_over_commit"])
def test_malformed_body_is_rejected_without_touching_the_instance(missing: str) -> None:
    env = simpy.Environment()
    sc = scenario(two_hosts(), [vm("vm1", "h1")])
    orch, store = orchestrate(SimulatedDriver(env, sc), sc.vms)
    request = body("h2")
    del request[missing]
    env.run(orch.live_migrate("vm1", request))
    m = store.migration(1)
    assert (m.status, m.error) == (S.ERROR, "BadRequest")
    assert store.instance("vm1").task_state is None and store.notifications == []


@pytest.mark.parametrize("state", [VmState.STOPPED, VmState.ERROR])
def test_instance_in_wrong_vm_state_is_rejected(state: VmState) -> None:
    env = simpy.Environment()
    sc = scenario(two_hosts(), [vm("vm1", "h1")])
    orch, store = orchestrate(SimulatedDriver(env, sc), sc.vms)
    store.update_instance("vm1", vm_state=state)
    before = store.instance("vm1")
    env.run(orch.live_migrate("vm1", body("h2")))
    assert (store.migration(1).status, store.migration(1).error) == (
        S.ERROR, "InstanceInvalidState")
    assert store.instance("vm1") is before


@pytest.mark.parametrize("second_at", [0.0, 0.3])
def test_second_request_while_one_runs_is_rejected(
    second_at: float, status_history: dict[int, list[MigrationStatus]]
) -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    alone = run_scenario(scenario(hosts, [vm("vm1", "h1")], [migrate("vm1", "h2")]))
    result = run_scenario(scenario(hosts, [vm("vm1", "h1")],
                                   [migrate("vm1", "h2"), migrate("vm1", "h3", at=second_at)]))
    first, second = result.store.migrations()
    assert (second.status, second.error) == (S.ERROR, "InstanceInvalidState")
    assert "task_state" in second.error_message
    assert second.finished_at == second_at
    assert first == only(alone)  # the first one is not disturbed at all
    assert result.final_hosts["vm1"] == "h2"
    assert status_history[2] == [S.ACCEPTED, S.ERROR]


# -- the scheduler -------------------------------------------------------------------------


def test_scheduler_retries_past_a_too_old_host() -> None:
    hosts = [host("h1"),
             host("h2", ram=64 * GiB, hypervisor_version=9_000_000),  # most free RAM, too old
             host("h3", ram=32 * GiB),
             host("h4", ram=8 * GiB)]
    result = run_scenario(scenario(hosts, [vm("vm1", "h1")], [migrate("vm1")]))
    m = only(result)
    assert (m.status, m.dest, m.attempted_hosts) == (S.COMPLETED, "h3", ("h2",))
    assert result.final_hosts["vm1"] == "h3"


def test_scheduler_stacks_with_negative_weight() -> None:
    hosts = [host("h1"), host("h2", ram=64 * GiB), host("h3", ram=8 * GiB),
             host("h4", ram=32 * GiB)]
    stack = SchedulerPolicy(ram_weight_multiplier=-1.0)
    result = run_scenario(scenario(hosts, [vm("vm1", "h1")], [migrate("vm1")], scheduler=stack))
    assert only(result).dest == "h3"


@pytest.mark.parametrize(
    "heuristic, dest",
    [(Heuristic.FIRST_FIT, "h2"), (Heuristic.BEST_FIT, "h3"), (Heuristic.WORST_FIT, "h4")],
)
def test_scheduler_heuristics(heuristic: Heuristic, dest: str) -> None:
    hosts = [host("h1"), host("h2", ram=16 * GiB), host("h3", ram=8 * GiB),
             host("h4", ram=32 * GiB)]
    result = run_scenario(scenario(hosts, [vm("vm1", "h1")], [migrate("vm1")],
                                   scheduler=SchedulerPolicy(heuristic=heuristic)))
    assert only(result).dest == dest


# -- concurrency ----------------------------------------------------------------------------


def test_one_slot_per_host_serialises_migrations(
    status_history: dict[int, list[MigrationStatus]],
) -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("vm1", "h1"), vm("vm2", "h1")]
    result = run_scenario(scenario(hosts, vms, [migrate("vm1", "h2"), migrate("vm2", "h3")]))
    first, second = result.store.migrations()
    assert first.status is second.status is S.COMPLETED
    assert status_history[1] == [S.ACCEPTED, S.PREPARING, S.RUNNING, S.COMPLETED]
    assert status_history[2] == [S.ACCEPTED, S.QUEUED, S.PREPARING, S.RUNNING, S.COMPLETED]
    assert second.started_at >= first.finished_at
    # not slowed by sharing the source's link: each took what it takes alone
    assert second.total_time == pytest.approx(first.total_time, rel=1e-9)


def test_two_slots_let_migrations_run_together(
    status_history: dict[int, list[MigrationStatus]],
) -> None:
    hosts = [host("h1"), host("h2"), host("h3")]
    vms = [vm("vm1", "h1"), vm("vm2", "h1")]
    policy = MigrationPolicy(max_concurrent_per_host=2)
    result = run_scenario(scenario(hosts, vms, [migrate("vm1", "h2"), migrate("vm2", "h3")],
                                   migration=policy))
    first, second = result.store.migrations()
    assert first.started_at == second.started_at == 0.0
    assert S.QUEUED not in status_history[2]
    # sharing h1's uplink: each at half the link rate
    assert first.total_time == pytest.approx(2 * GiB / LINK, rel=1e-9)


def test_failed_migration_frees_its_slot(
    status_history: dict[int, list[MigrationStatus]],
) -> None:
    hosts = [host("h1"), host("h2", hypervisor_type="Xen"), host("h3")]
    vms = [vm("vm1", "h1"), vm("vm2", "h1")]
    result = run_scenario(scenario(hosts, vms, [migrate("vm1", "h2"), migrate("vm2", "h3")]))
    first, second = result.store.migrations()
    assert first.error == "InvalidHypervisorType"
    assert second.status is S.COMPLETED
    assert status_history[2][:2] == [S.ACCEPTED, S.QUEUED]


def _capacity_watch(drivers: list[SimulatedDriver], seen: list[MigrationRecord]):
    def on_finish(record: MigrationRecord) -> None:
        seen.append(record)
        drv = drivers[-1]
        for name in drv.host_names():
            f = drv.host_facts(name)
            assert f.free_ram_mb >= 0, (name, f, record)
            assert f.vcpus_used <= f.vcpus * 16
    return on_finish


def test_concurrent_migrations_never_overfill_an_explicit_destination(
    sim_drivers: list[SimulatedDriver],
) -> None:
    # dest: 4 GiB - 512 MiB reserved = 3584 MiB; 1 GiB guests: 3 fit (512 MiB left <= 1024)
    hosts = [host("small", ram=4 * GiB)] + [host(f"s{i}") for i in range(8)]
    vms = [vm(f"vm{i}", f"s{i}", ram=GiB) for i in range(8)]
    seen: list[MigrationRecord] = []
    result = run_scenario(
        scenario(hosts, vms, [migrate(f"vm{i}", "small") for i in range(8)]),
        on_finish=_capacity_watch(sim_drivers, seen),
    )
    assert len(seen) == 8
    statuses = [m.status for m in result.store.migrations()]
    assert statuses.count(S.COMPLETED) == 3
    assert {m.error for m in result.store.migrations() if m.status is not S.COMPLETED} == {
        "MigrationPreCheckError"}
    assert sum(h == "small" for h in result.final_hosts.values()) == 3
    assert sim_drivers[-1].host_facts("small").free_ram_mb == 512


def test_concurrent_scheduled_migrations_never_overfill_any_host(
    sim_drivers: list[SimulatedDriver],
) -> None:
    """The scheduler over-commits RAM 1.5x; pre_live_migration's claim still holds the line."""
    small = [host(f"d{i}", ram=3 * GiB) for i in range(3)]
    sources = [host(f"s{i}", ram=4 * GiB) for i in range(6)]
    vms = [vm(f"vm{i}-{j}", f"s{i}", ram=GiB, used_memory=GiB // 4)
           for i in range(6) for j in range(3)]
    policy = MigrationPolicy(max_concurrent_per_host=3, reserved_host_memory_mb=0)
    seen: list[MigrationRecord] = []
    result = run_scenario(
        scenario([*sources, *small], vms, [drain(f"s{i}") for i in range(6)],
                 migration=policy),
        on_finish=_capacity_watch(sim_drivers, seen),
    )
    assert len(seen) == 18
    done = [m for m in result.store.migrations() if m.status is S.COMPLETED]
    assert done  # some went, and none of the refusals left a claim behind
    for m in result.store.migrations():
        if m.status is not S.COMPLETED:
            assert m.status in (S.ERROR, S.FAILED), m
            assert result.final_hosts[m.instance] == m.source


# -- drain -----------------------------------------------------------------------------------


def test_drain_moves_every_instance_off_the_host() -> None:
    hosts = [host("h1", ram=32 * GiB), host("h2"), host("h3"), host("h4")]
    vms = [vm(f"vm{i}", "h1", dirty_rate=50 * MiB) for i in range(6)] + [vm("other", "h2")]
    sc = scenario(hosts, vms, [drain("h1", at=1.0)])
    result = run_scenario(sc)
    migrations = result.store.migrations()
    assert len(migrations) == expected_migrations(sc) == 6
    assert all(m.status is S.COMPLETED for m in migrations)
    assert result.store.instances_on("h1") == []
    assert all(host_ != "h1" for host_ in result.final_hosts.values())
    assert result.final_hosts["other"] == "h2"
    assert {m.instance for m in migrations} == {f"vm{i}" for i in range(6)}
    # spreading: the RAM weigher sends them to more than one host
    assert len({m.dest for m in migrations}) > 1
    for i in range(6):  # MIGRATING then None for each migrated instance
        tasks = [n.new_task_state for n in result.store.notifications
                 if n.instance == f"vm{i}" and n.state_change]
        assert tasks == [TaskState.MIGRATING, None]


# -- determinism -----------------------------------------------------------------------------


def busy_drain(seed: int, heuristic: Heuristic = Heuristic.WEIGHED):
    hosts = [host("h1", ram=64 * GiB)] + [host(f"h{i}") for i in range(2, 8)]
    vms = [vm(f"vm{i}", "h1", dirty_rate=(i + 1) * 20 * MiB, working_set=(i + 1) * 64 * MiB)
           for i in range(8)]
    return scenario(hosts, vms, [drain("h1"), migrate("vm3", "h2", at=0.1)], seed=seed,
                    scheduler=SchedulerPolicy(heuristic=heuristic),
                    migration=MigrationPolicy(max_concurrent_per_host=3))


def test_same_seed_same_run() -> None:
    a, b = run_scenario(busy_drain(1)), run_scenario(busy_drain(1))
    assert a.store.migrations() == b.store.migrations()
    assert a.store.notifications == b.store.notifications
    assert a.final_hosts == b.final_hosts and a.sim_events == b.sim_events


def test_same_seed_same_random_run() -> None:
    a = run_scenario(busy_drain(5, Heuristic.RANDOM))
    b = run_scenario(busy_drain(5, Heuristic.RANDOM))
    assert a.store.migrations() == b.store.migrations()
    assert a.store.notifications == b.store.notifications


def test_random_placement_depends_on_the_seed() -> None:
    dests = {tuple(m.dest for m in run_scenario(busy_drain(s, Heuristic.RANDOM))
                   .store.migrations()) for s in range(4)}
    assert len(dests) > 1


def test_run_seed_overrides_scenario_seed() -> None:
    a = run_scenario(busy_drain(0, Heuristic.RANDOM), seed=3)
    b = run_scenario(busy_drain(3, Heuristic.RANDOM))
    assert a.seed == 3
    assert a.store.migrations() == b.store.migrations()


# -- completion timeout (Nova: 800 s per GiB, abort) ---------------------------------------------


def test_non_converging_migration_is_aborted_at_the_completion_timeout(
    sim_drivers: list[SimulatedDriver],
) -> None:
    # dirtying 2e9 B/s on a 1.25e9 B/s link never converges; 2 GiB RAM -> 2 GiB of data,
    # 5 s per GiB -> a 10 s timeout, noticed at the first poll past it (10.5 s)
    policy = MigrationPolicy(completion_timeout=5.0)
    result = run_scenario(scenario(
        two_hosts(), [vm("vm1", "h1", working_set=GiB, dirty_rate=2e9)],
        [migrate("vm1", "h2")], migration=policy))
    m = only(result)
    assert (m.status, m.error) == (S.CANCELLED, "LiveMigrationFailed")
    assert "canceled" in m.error_message
    assert m.total_time == pytest.approx(10.5)
    assert m.finished_at == 11.0
    assert m.downtime is None
    assert_untouched(result)
    drv = sim_drivers[-1]
    assert drv.host_facts("h2").free_ram_mb == 16 * 1024 - 512  # claim released


def test_completion_timeout_zero_disables_it(sim_drivers: list[SimulatedDriver]) -> None:
    """With no timeout the job runs until something else stops it: here an abort at 30 s."""
    def abort_later(drv: SimulatedDriver) -> None:
        def proc():
            yield drv.env.timeout(30.0)
            drv.abort_job("vm1")
        drv.env.process(proc())

    sim_drivers.on_start.append(abort_later)  # type: ignore[attr-defined]
    result = run_scenario(scenario(
        two_hosts(), [vm("vm1", "h1", working_set=GiB, dirty_rate=2e9)],
        [migrate("vm1", "h2")], migration=MigrationPolicy(completion_timeout=0.0)))
    m = only(result)
    assert m.status is S.CANCELLED
    assert m.total_time == pytest.approx(30.0)
    assert_untouched(result)


# -- driver misbehaviour (scripted fake) ----------------------------------------------------------

VMS = [vm("vm1", "h1")]


def run_fake(driver: ScriptedDriver, request: dict | None = None, *,
             migration: MigrationPolicy | None = None) -> StateStore:
    orch, store = orchestrate(driver, VMS, migration=migration)
    driver.env.run(orch.live_migrate("vm1", request or body("h2")))
    return store


def fake(**kwargs: object) -> ScriptedDriver:
    return ScriptedDriver(simpy.Environment(), **kwargs)  # type: ignore[arg-type]


def assert_rolled_back(driver: ScriptedDriver, store: StateStore) -> None:
    assert [c.args for c in driver.calls_to("rollback_live_migration")] == [
        ("vm1", "h1", "h2", False)]
    assert driver.calls_to("post_live_migration") == []
    inst = store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h1", VmState.ACTIVE, None)
    events = [n.event for n in store.notifications]
    assert events[-2:] == ["compute.instance.live_migration._rollback.start",
                           "compute.instance.live_migration._rollback.end"] or events[-3:] == [
        "compute.instance.live_migration._rollback.start", "compute.instance.update",
        "compute.instance.live_migration._rollback.end"]


def test_success_posts_exactly_once_and_never_rolls_back() -> None:
    final = dataclasses.replace(ended(JobType.COMPLETED), time_elapsed=7.25, downtime=0.042,
                                memory_iteration=4, data_processed=3 * GiB)
    driver = fake(script=[*running(4), final])
    store = run_fake(driver)
    assert [c.args for c in driver.calls_to("post_live_migration")] == [("vm1", "h1", "h2")]
    assert driver.calls_to("rollback_live_migration") == []
    assert driver.calls_to("abort_job") == []
    m = store.migration(1)
    assert (m.status, m.total_time, m.downtime, m.iterations, m.data_transferred) == (
        S.COMPLETED, 7.25, 0.042, 4, 3 * GiB)
    assert store.instance("vm1").host == "h2"


def test_start_migration_arguments() -> None:
    driver = fake()
    run_fake(driver, migration=MigrationPolicy(bandwidth=1.25e8))
    (call,) = driver.calls_to("start_migration")
    assert call.args == ("vm1", "h2")
    assert call.kwargs == {"uri": "qemu+tcp://h2/system", "flags": 19, "bandwidth_mib": 119}
    assert call.time == 0.0


def test_block_migration_uses_the_block_flags() -> None:
    driver = fake(shared=False)
    run_fake(driver, body("h2", block=True),
             migration=MigrationPolicy(uri="qemu+ssh://%s/system"))
    (call,) = driver.calls_to("start_migration")
    assert call.kwargs == {"uri": "qemu+ssh://h2/system", "flags": 147, "bandwidth_mib": 0}
    (pre,) = driver.calls_to("pre_live_migration")
    assert pre.args == ("vm1", "h2", True)


def test_migrate_to_uri_raising_rolls_back_as_failed() -> None:
    driver = fake(start_error=MigrationError(reason="unable to connect"))
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.FAILED, "MigrationError")
    assert "unable to connect" in m.error_message
    assert m.started_at is None
    assert_rolled_back(driver, store)
    assert driver.calls_to("job_info") == []


def test_non_nova_exception_from_migrate_to_uri_is_named_by_its_type() -> None:
    driver = fake(start_error=OSError("libvirtError: broken pipe"))
    store = run_fake(driver)
    assert (store.migration(1).status, store.migration(1).error) == (S.FAILED, "OSError")
    assert_rolled_back(driver, store)


def test_job_failing_midway_rolls_back_as_failed() -> None:
    failed = ended(JobType.FAILED, elapsed=1.5, error="migration stream broken")
    driver = fake(script=[*running(2), failed])
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.FAILED, "LiveMigrationFailed")
    assert "migration stream broken" in m.error_message
    assert m.total_time == 1.5 and m.downtime is None
    assert m.finished_at == 1.5  # the third poll
    assert_rolled_back(driver, store)


def test_job_failing_without_a_reason_names_the_job_type() -> None:
    driver = fake(script=[ended(JobType.FAILED)])
    store = run_fake(driver)
    assert "failed" in store.migration(1).error_message


def test_cancelled_job_rolls_back_as_cancelled() -> None:
    driver = fake(script=[*running(1), ended(JobType.CANCELLED, error="canceled by client")])
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.CANCELLED, "LiveMigrationFailed")
    assert_rolled_back(driver, store)


def test_pre_live_migration_raising_is_error_with_rollback() -> None:
    driver = fake(pre_error=MigrationError(reason="no room"))
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.ERROR, "MigrationError")
    assert_rolled_back(driver, store)
    assert driver.calls_to("start_migration") == []


def test_domain_leaving_the_source_counts_as_done() -> None:
    """Havana's watch: the domain gone from the source means the job finished."""
    driver = fake(script=running(50), gone_after=3)
    store = run_fake(driver)
    assert store.migration(1).status is S.COMPLETED
    assert len(driver.calls_to("post_live_migration")) == 1
    assert store.migration(1).finished_at == 1.5


@pytest.mark.parametrize("poll", [0.5, 0.2, 2.0])
def test_poll_interval_is_respected(poll: float) -> None:
    driver = fake(script=[*running(5), ended(JobType.COMPLETED)])
    run_fake(driver, migration=MigrationPolicy(poll_interval=poll))
    times = [c.time for c in driver.calls_to("job_info")]
    polls, final = times[:-1], times[-1]  # the last call is the post-migration reading
    assert polls == pytest.approx([poll * (i + 1) for i in range(6)])
    assert final == polls[-1]


def test_timeout_aborts_once_then_rolls_back_as_cancelled() -> None:
    slow = [JobInfo(type=JobType.UNBOUNDED, time_elapsed=0.5 * (i + 1)) for i in range(100)]
    driver = fake(script=slow)
    # 2 GiB of RAM counts as 2 GiB; 1 s per GiB -> abort at the first reading past 2 s
    store = run_fake(driver, migration=MigrationPolicy(completion_timeout=1.0))
    (abort,) = driver.calls_to("abort_job")
    assert abort.time == 2.5
    m = store.migration(1)
    assert m.status is S.CANCELLED
    assert_rolled_back(driver, store)


@pytest.mark.parametrize("case", ["ok", "invalid-shared-storage", "block-on-shared"])
def test_shared_storage_marker_is_always_cleaned_up(case: str) -> None:
    driver = fake(shared=case != "invalid-shared-storage")
    run_fake(driver, body("h2", block=case == "block-on-shared"))
    created = driver.calls_to("create_shared_storage_test_file")
    cleaned = driver.calls_to("cleanup_shared_storage_test_file")
    assert [c.args for c in created] == [("h2",)]
    assert [c.args[0] for c in cleaned] == ["h2"]
    (check,) = driver.calls_to("check_shared_storage_test_file")
    assert check.args[0] == "h1"  # looked for from the source
    assert check.args[1] == cleaned[0].args[1]


def test_unexpected_error_in_the_checks_puts_the_instance_in_error() -> None:
    """Nova: an exception that is not a known pre-check failure sets vm_state ERROR."""
    driver = fake(hosts=[facts("h1"), facts("h2", hypervisor_version="x")])  # unorderable
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.FAILED, "TypeError")
    inst = store.instance("vm1")
    assert (inst.vm_state, inst.task_state, inst.host) == (VmState.ERROR, None, "h1")
    assert driver.calls_to("pre_live_migration") == []


def test_error_while_monitoring_rolls_back_instead_of_crashing() -> None:
    """A driver error during the poll must not crash the run nor leave the task set."""
    driver = fake(script=[*running(1), RuntimeError("libvirt: connection reset")])
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.FAILED, "RuntimeError")
    assert "connection reset" in m.error_message
    assert m.finished_at == 1.0
    assert_rolled_back(driver, store)
    assert len(driver.calls_to("abort_job")) == 1  # the job is stopped first


def test_error_while_monitoring_after_the_switchover_keeps_the_instance_on_dest() -> None:
    """The domain already runs on dest when the driver fails: no rollback, host = dest."""
    driver = fake(script=[*running(1), RuntimeError("jobStats: domain not found")],
                  gone_after=2)
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.ERROR, "RuntimeError")
    assert driver.calls_to("rollback_live_migration") == []
    inst = store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h2", VmState.ACTIVE, None)


def test_failing_post_migration_records_error_with_the_instance_on_dest() -> None:
    driver = fake(post_error=MigrationError(reason="cannot undefine source domain"))
    store = run_fake(driver)
    m = store.migration(1)
    assert (m.status, m.error) == (S.ERROR, "MigrationError")
    assert "undefine" in m.error_message
    assert m.total_time is not None  # the job's own statistics are still recorded
    assert len(driver.calls_to("post_live_migration")) == 1
    assert driver.calls_to("rollback_live_migration") == []
    inst = store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h2", VmState.ACTIVE, None)


def test_one_failing_migration_does_not_stop_the_others() -> None:
    """A driver error in one migration's monitor leaves concurrent ones running."""
    env = simpy.Environment()
    sc = scenario([host("h1"), host("h2"), host("h3")], [vm("vm1", "h1"), vm("vm2", "h3")])
    drv = SimulatedDriver(env, sc)
    orch, store = orchestrate(drv, sc.vms)
    real_job_info = drv.job_info

    def flaky(name: str) -> JobInfo:
        if name == "vm1":
            raise RuntimeError("lost the connection to h1")
        return real_job_info(name)

    drv.job_info = flaky  # type: ignore[method-assign]
    env.run(env.all_of([orch.live_migrate("vm1", body("h2")),
                        orch.live_migrate("vm2", body("h2"))]))
    first, second = store.migrations()
    assert (first.status, first.error) == (S.FAILED, "RuntimeError")
    assert second.status is S.COMPLETED
    assert store.instance("vm1").host == "h1" and store.instance("vm2").host == "h2"


def test_scheduler_path_over_the_fake_driver_reads_the_host_table() -> None:
    driver = fake(hosts=[facts("h1"), facts("h2", free_ram_mb=3000),
                         facts("h3", free_ram_mb=6000)])
    store = run_fake(driver, body(None))
    m = store.migration(1)
    assert (m.status, m.dest) == (S.COMPLETED, "h3")
    assert driver.calls_to("host_table")


def test_concurrent_drains_do_not_refill_each_other() -> None:
    """A drained host is disabled: other drains never pick it (rack-drain.yaml's case)."""
    hosts = [host("h1", ram=32 * GiB), host("h2", ram=32 * GiB),
             host("h3", ram=24 * GiB), host("h4", ram=24 * GiB)]
    vms = [vm(f"{h}-vm{i}", h, ram=4 * GiB) for h in ("h1", "h2") for i in range(4)]
    result = run_scenario(scenario(hosts, vms, [drain("h1"), drain("h2")]))
    assert all(m.status is S.COMPLETED for m in result.store.migrations())
    assert result.store.instances_on("h1") == [] and result.store.instances_on("h2") == []
    assert {m.dest for m in result.store.migrations()} == {"h3", "h4"}


def test_a_drained_host_takes_no_scheduled_migrations_afterwards() -> None:
    hosts = [host("h1", ram=64 * GiB), host("h2"), host("h3")]
    vms = [vm("a", "h1"), vm("b", "h2")]
    result = run_scenario(scenario(hosts, vms, [drain("h1"), migrate("b", at=5.0)]))
    a, b = result.store.migrations()
    assert a.dest != "h1"
    assert b.dest == "h3"  # h1 has the most free RAM, but its service is disabled


def test_drain_then_nothing_left_is_no_valid_host() -> None:
    """Only the drained hosts could take the VM: NoValidHost, the VM stays put."""
    hosts = [host("h1"), host("h2")]
    result = run_scenario(scenario(hosts, [vm("a", "h1"), vm("b", "h2")],
                                   [drain("h1"), drain("h2")]))
    assert {(m.status, m.error) for m in result.store.migrations()} == {(S.ERROR, "NoValidHost")}
    assert result.final_hosts == {"a": "h1", "b": "h2"}


def test_block_migration_scheduler_retries_past_a_host_without_disk_room() -> None:
    """The default filters have no DiskFilter: the most-free-RAM host is picked, fails the
    source's disk check (MigrationPreCheckError, retryable), and the next one is used."""
    local = Storage.LOCAL
    hosts = [host("h1", storage=local), host("h2", ram=64 * GiB, disk=10 * GiB, storage=local),
             host("h3", ram=32 * GiB, disk=100 * GiB, storage=local)]
    result = run_scenario(scenario(hosts, [vm("vm1", "h1", disk=20 * GiB)],
                                   [migrate("vm1", block=True)]))
    m = only(result)
    assert (m.status, m.dest, m.attempted_hosts) == (S.COMPLETED, "h3", ("h2",))


def test_events_fire_at_their_own_time() -> None:
    """Events listed out of time order still fire at their own ``at``."""
    hosts = [host("h1"), host("h2"), host("h3")]
    events = [migrate("vm1", "h2", at=10.0), migrate("vm2", "h3", at=5.0)]
    try:
        result = run_scenario(scenario(hosts, [vm("vm1", "h1"), vm("vm2", "h2")], events))
    except ValueError:
        return  # rejecting unsorted events is fine too
    times = {m.instance: m.requested_at for m in result.store.migrations()}
    assert times == {"vm1": 10.0, "vm2": 5.0}


@pytest.mark.parametrize(
    "request_body, vm_fields, timeout",
    [
        (body("h2"), {}, 2.0),  # 2 GiB of RAM
        (body("h2"), {"ram": 512 * MiB}, 2.0),  # RAM counts at least 2 GiB
        (body("h2"), {"ram": 3 * GiB}, 3.0),
        (body("h2", block=True), {"disk": 20 * GiB, "disk_allocated": 10 * GiB}, 12.0),
        (body("h2", block=True), {"disk": 20 * GiB, "disk_allocated": GiB}, 4.0),
        (body("h2", block=True), {"disk": 20 * GiB, "volume_backed": True}, 2.0),
    ],
    ids=["ram", "small-ram", "big-ram", "block", "block-small-disk", "block-volume"],
)
def test_completion_timeout_scales_with_the_data(request_body: dict, vm_fields: dict,
                                                 timeout: float) -> None:
    """Nova: 800 s (here 1 s) per GiB of RAM plus each copied disk, each at least 2 GiB."""
    slow = [JobInfo(type=JobType.UNBOUNDED, time_elapsed=0.5 * (i + 1)) for i in range(100)]
    driver = fake(script=slow, shared=not request_body["block_migration"])
    orch, store = orchestrate(driver, [vm("vm1", "h1", **vm_fields)],
                              migration=MigrationPolicy(completion_timeout=1.0))
    driver.env.run(orch.live_migrate("vm1", request_body))
    (abort,) = driver.calls_to("abort_job")
    assert abort.time == timeout + 0.5  # the first reading past the timeout
    assert store.migration(1).status is S.CANCELLED


def test_drain_with_block_migration() -> None:
    local = Storage.LOCAL
    hosts = [host(f"h{i}", storage=local) for i in range(1, 4)]
    vms = [vm(f"vm{i}", "h1", disk=10 * GiB, disk_allocated=2 * GiB) for i in range(3)]
    result = run_scenario(scenario(hosts, vms, [drain("h1", block=True)]))
    migrations = result.store.migrations()
    assert all(m.status is S.COMPLETED and m.block_migration for m in migrations)
    assert all(m.data_transferred >= 2 * GiB + GiB for m in migrations)  # disk + memory
    assert result.store.instances_on("h1") == []


def test_shipped_rack_drain_scenario_empties_the_drained_hosts() -> None:
    """scenarios/rack-drain.yaml drains three hosts at once; none may be refilled."""
    path = Path(__file__).resolve().parents[1] / "scenarios" / "rack-drain.yaml"
    sc = load_scenario(path)
    result = run_scenario(sc)
    drained = {e.host for e in sc.events}
    migrations = result.store.migrations()
    assert len(migrations) == expected_migrations(sc) == 30
    assert all(m.status is S.COMPLETED for m in migrations)
    assert not drained & {m.dest for m in migrations}
    assert not drained & set(result.final_hosts.values())
