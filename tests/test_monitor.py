"""The monitor's decisions, driven by the scripted fake driver: downtime steps, the
completion timeout's two actions, operator abort / force-complete, post-copy status,
the endings' record of where the guest really is, and recovery after a restart.

The simulator runs the same paths in tests/test_faults_end_to_end.py; here each
decision is isolated so that a wrong call or a wrong order shows at once.
"""

from __future__ import annotations

import pytest
import simpy
from fakes import GiB, ScriptedDriver, body, ended, orchestrate, running, vm

from livemig.core.errors import InvalidMigrationState, MigrationNotFoundForInstance
from livemig.core.flags import POSTCOPY
from livemig.core.model import MigrationPolicy, MigrationStatus, TimeoutAction, VmState
from livemig.core.state import StateStore
from livemig.drivers.base import JobInfo, JobType

S = MigrationStatus
VMS = [vm("vm1", "h1", ram=2 * GiB)]  # data_gb = 2.0


def fake(**kwargs: object) -> ScriptedDriver:
    return ScriptedDriver(simpy.Environment(), **kwargs)  # type: ignore[arg-type]


def reading(elapsed: float, **fields: object) -> JobInfo:
    return JobInfo(type=JobType.UNBOUNDED, time_elapsed=elapsed, memory_total=GiB,
                   memory_remaining=GiB // 4, **fields)  # type: ignore[arg-type]


def run(driver: ScriptedDriver, migration: MigrationPolicy | None = None,
        actions: list[tuple[float, str]] = ()) -> StateStore:  # type: ignore[assignment]
    orch, store = orchestrate(driver, VMS, migration=migration)
    env = driver.env
    proc = orch.live_migrate("vm1", body("h2"))

    def operator() -> simpy.events.ProcessGenerator:
        for at, action in actions:
            yield env.timeout(at - env.now)
            getattr(orch, action)("vm1")

    env.process(operator())
    env.run(proc)
    return store


# -- downtime steps ---------------------------------------------------------------------


def test_downtime_steps_follow_novas_schedule_by_the_jobs_elapsed_time() -> None:
    # 2 GiB -> data_gb 2.0 -> delay int(75 * 2) = 150 s; 500 ms in 10 steps: 50 + 45 i ms
    script = [reading(0.5), reading(149.0), reading(150.0), reading(151.0), reading(305.0),
              ended(JobType.COMPLETED)]
    driver = fake(script=script)
    store = run(driver, MigrationPolicy(downtime_steps=10, completion_timeout=0))
    calls = [c.args[1] for c in driver.calls_to("set_max_downtime")]
    assert calls == [0.05, 0.095, 0.14]  # once per new step, never repeated
    m = store.migration(1)
    assert m.status is S.COMPLETED and m.max_downtime == 0.14


def test_without_downtime_steps_the_limit_is_never_changed_while_running() -> None:
    driver = fake(script=[reading(0.5), reading(400.0), ended(JobType.COMPLETED)])
    store = run(driver, MigrationPolicy(completion_timeout=0))
    assert driver.calls_to("set_max_downtime") == []
    assert store.migration(1).max_downtime is None


# -- completion timeout ---------------------------------------------------------------


def test_timeout_abort_cancels_the_job_once_and_rolls_back() -> None:
    # 1 s per GiB x 2 GiB = 2 s
    driver = fake(script=[reading(1.0), reading(2.0), reading(2.5), reading(3.0)])
    store = run(driver, MigrationPolicy(completion_timeout=1.0))
    assert len(driver.calls_to("abort_job")) == 1
    m = store.migration(1)
    assert (m.status, m.timeout_action) == (S.CANCELLED, "abort")
    assert driver.calls_to("abort_job")[0].time == 1.5  # the poll that read 2.5 s
    inst = store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h1", VmState.ACTIVE, None)


def test_timeout_force_complete_without_post_copy_pauses_then_resumes_on_dest() -> None:
    script = [reading(1.0), reading(2.5), reading(3.0), ended(JobType.COMPLETED)]
    driver = fake(script=script)
    store = run(driver, MigrationPolicy(completion_timeout=1.0,
                                        timeout_action=TimeoutAction.FORCE_COMPLETE))
    assert [c.name for c in driver.calls if c.name in ("suspend", "resume",
                                                      "start_postcopy", "abort_job")] == [
        "suspend", "resume"]
    names = [c.name for c in driver.calls]
    assert names.index("resume") > names.index("post_live_migration")  # resumed on dest
    m = store.migration(1)
    assert (m.status, m.timeout_action, m.paused_guest) == (S.COMPLETED, "force_complete", True)
    assert driver.paused == set()
    assert store.instance("vm1").host == "h2"


def test_timeout_force_complete_with_post_copy_switches_and_records_the_status() -> None:
    script = [reading(1.0), reading(2.5), reading(3.0, postcopy=True),
              reading(3.5, postcopy=True), ended(JobType.COMPLETED)]
    driver = fake(script=script)
    store = run(driver, MigrationPolicy(completion_timeout=1.0, permit_post_copy=True,
                                        timeout_action=TimeoutAction.FORCE_COMPLETE))
    assert len(driver.calls_to("start_postcopy")) == 1
    assert driver.calls_to("suspend") == []
    start = driver.calls_to("start_migration")[0]
    assert start.kwargs["flags"] & POSTCOPY
    m = store.migration(1)
    assert m.status is S.COMPLETED and m.postcopy_at == 1.5  # the poll that saw post-copy
    assert m.flags & POSTCOPY


def test_in_post_copy_a_missing_source_domain_is_not_completion() -> None:
    # the guest left the source at the switch; only the job's end completes it
    script = [reading(1.0, postcopy=True), reading(1.5, postcopy=True),
              ended(JobType.COMPLETED)]
    driver = fake(script=script, gone_after=1)
    store = run(driver, MigrationPolicy(completion_timeout=0, permit_post_copy=True))
    assert driver.calls_to("post_live_migration")[0].time == 1.5  # third poll, not first
    assert store.migration(1).status is S.COMPLETED


def test_a_failed_post_copy_whose_guest_runs_nowhere_is_error_on_dest() -> None:
    script = [reading(1.0, postcopy=True), ended(JobType.FAILED, error="source lost")]
    driver = fake(script=script)
    orig = driver.job_info

    def job_info(name: str) -> JobInfo:
        info = orig(name)
        if info.type is JobType.FAILED:
            driver.instances.pop(name)  # the guest died with its source
        return info

    driver.job_info = job_info  # type: ignore[method-assign]
    store = run(driver, MigrationPolicy(completion_timeout=0, permit_post_copy=True))
    m = store.migration(1)
    assert m.status is S.FAILED
    inst = store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h2", VmState.ERROR, None)


# -- operator actions -------------------------------------------------------------------


def test_operator_abort_while_running() -> None:
    driver = fake(script=running(20))
    store = run(driver, MigrationPolicy(completion_timeout=0), [(1.2, "abort")])
    assert [c.time for c in driver.calls_to("abort_job")] == [1.5]
    assert store.migration(1).status is S.CANCELLED
    assert store.instance("vm1").host == "h1"


# libvirt under load: the job the controller aborted reports FAILED, or migrateToURI raises a
# generic error instead of "operation aborted ... canceled by client" (issue 8, lab-abort).
FAILED_AFTER_ABORT = ended(JobType.FAILED, error="operation failed: job 'migration out' "
                           "failed: migration was active, but no RAM info was set")


def test_an_operator_abort_whose_job_then_fails_is_cancelled() -> None:
    driver = fake(script=running(20), after_abort=FAILED_AFTER_ABORT)
    store = run(driver, MigrationPolicy(completion_timeout=0), [(1.2, "abort")])
    m = store.migration(1)
    assert (m.status, m.error) == (S.CANCELLED, "LiveMigrationFailed")
    assert "no RAM info" in (m.error_message or "")  # libvirt's own words are kept
    inst = store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h1", VmState.ACTIVE, None)


def test_a_timeout_abort_whose_job_then_fails_is_cancelled() -> None:
    driver = fake(script=[reading(1.0), reading(2.5), reading(3.0)],
                  after_abort=FAILED_AFTER_ABORT)
    store = run(driver, MigrationPolicy(completion_timeout=1.0))
    m = store.migration(1)
    assert (m.status, m.timeout_action) == (S.CANCELLED, "abort")
    assert len(driver.calls_to("abort_job")) == 1


def test_a_job_that_fails_without_an_abort_stays_failed() -> None:
    driver = fake(script=[*running(2), ended(JobType.FAILED, error="keepalive timeout")])
    store = run(driver, MigrationPolicy(completion_timeout=0))
    assert store.migration(1).status is S.FAILED
    assert driver.calls_to("abort_job") == []


def test_an_aborted_job_that_completed_anyway_is_completed() -> None:
    # the abort came too late: the guest switched over; its end is the job's, not ours
    driver = fake(script=running(20), after_abort=ended(JobType.COMPLETED))
    orig = driver.abort_job

    def abort_job(name: str) -> None:
        orig(name)
        driver.instances[name] = "h2"

    driver.abort_job = abort_job  # type: ignore[method-assign]
    store = run(driver, MigrationPolicy(completion_timeout=0), [(1.2, "abort")])
    assert store.migration(1).status is S.COMPLETED
    assert store.instance("vm1").host == "h2"


def test_operator_force_complete_while_running_pauses_without_post_copy() -> None:
    driver = fake(script=[*running(4), ended(JobType.COMPLETED)])
    store = run(driver, MigrationPolicy(completion_timeout=0), [(1.2, "force_complete")])
    assert [c.time for c in driver.calls_to("suspend")] == [1.5]
    assert store.migration(1).paused_guest and driver.paused == set()


def test_abort_of_a_queued_migration_cancels_it_before_it_touches_the_driver() -> None:
    driver = fake(script=[*running(6), ended(JobType.COMPLETED)],
                  instances={"vm1": "h1", "vm2": "h1"})
    orch, store = orchestrate(driver, [*VMS, vm("vm2", "h1")],
                              migration=MigrationPolicy(completion_timeout=0))
    env = driver.env
    first = orch.live_migrate("vm1", body("h2"))
    second = orch.live_migrate("vm2", body("h2"))
    env.run(until=1.0)
    assert store.migration(2).status is S.QUEUED
    orch.abort("vm2")
    env.run(env.all_of([first, second]))
    m = store.migration(2)
    assert (m.status, m.error) == (S.CANCELLED, "MigrationAborted")
    assert [c.args[0] for c in driver.calls_to("start_migration")] == ["vm1"]
    assert store.instance("vm2").task_state is None
    assert store.migration(1).status is S.COMPLETED


def test_actions_in_the_wrong_status_are_refused_like_novas_api() -> None:
    driver = fake(script=[reading(0.5, postcopy=True), reading(1.0, postcopy=True),
                          reading(1.5, postcopy=True), ended(JobType.COMPLETED)])
    orch, store = orchestrate(driver, VMS, migration=MigrationPolicy(
        completion_timeout=0, permit_post_copy=True))
    with pytest.raises(MigrationNotFoundForInstance):
        orch.abort("vm1")
    proc = orch.live_migrate("vm1", body("h2"))
    driver.env.run(until=1.2)
    assert store.migration(1).status is S.POSTCOPY
    with pytest.raises(InvalidMigrationState, match="running \\(post-copy\\)"):
        orch.abort("vm1")
    with pytest.raises(InvalidMigrationState, match="Cannot force complete"):
        orch.force_complete("vm1")
    driver.env.run(proc)
    assert driver.calls_to("abort_job") == [] and driver.calls_to("suspend") == []


# -- restart ----------------------------------------------------------------------------


def test_a_restarted_controller_adopts_the_running_job_and_finishes_it() -> None:
    driver = fake(script=[*running(6), ended(JobType.COMPLETED)])
    orch, store = orchestrate(driver, VMS, migration=MigrationPolicy(completion_timeout=0))
    env = driver.env
    orch.live_migrate("vm1", body("h2"))
    env.run(until=1.2)
    orch.stop()
    env.run(until=5.0)  # nobody watches: no poll while the controller is down
    polls_while_down = [c for c in driver.calls_to("job_info") if 1.2 < c.time <= 5.0]
    assert polls_while_down == []
    assert store.migration(1).status is S.RUNNING
    orch2 = orch.__class__(driver, store, orch.policy, orch.rng)  # a brand-new controller
    processes = orch2.recover()
    env.run(env.all_of(processes))
    assert [c.args for c in driver.calls_to("attach_job")] == [("vm1", "h1", "h2")]
    m = store.migration(1)
    assert m.status is S.COMPLETED
    assert store.instance("vm1").host == "h2" and store.instance("vm1").task_state is None


def test_recovery_of_a_migration_that_never_started_gives_the_instance_back() -> None:
    driver = fake(script=[*running(6), ended(JobType.COMPLETED)],
                  instances={"vm1": "h1", "vm2": "h1"})
    orch, store = orchestrate(driver, [*VMS, vm("vm2", "h1")],
                              migration=MigrationPolicy(completion_timeout=0))
    env = driver.env
    orch.live_migrate("vm1", body("h2"))
    orch.live_migrate("vm2", body("h2"))
    env.run(until=1.0)
    orch.stop()
    orch2 = orch.__class__(driver, store, orch.policy, orch.rng)
    env.run(env.all_of(orch2.recover()))
    queued = store.migration(2)
    assert (queued.status, queued.error) == (S.ERROR, "ControllerRestarted")
    assert store.instance("vm2").task_state is None and store.instance("vm2").host == "h1"
    assert store.migration(1).status is S.COMPLETED


def test_the_highest_auto_converge_throttle_seen_is_recorded() -> None:
    # libvirt's completed-job statistics carry no throttle: the polls' readings do
    script = [reading(0.5, auto_converge_throttle=20), reading(1.0, auto_converge_throttle=40),
              reading(1.5, auto_converge_throttle=30), ended(JobType.COMPLETED)]
    store = run(fake(script=script), MigrationPolicy(completion_timeout=0,
                                                     permit_auto_converge=True))
    assert store.migration(1).auto_converge_throttle == 40
