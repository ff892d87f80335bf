"""Bounds that keep a run finite and its arithmetic exact (issue 8, items 4 and 5).

* ``poll_interval`` >= 10 ms and ``max_downtime`` >= 1 ms (QEMU's own minimum);
* every time and duration <= ``MAX_SECONDS`` (1e9 s): an event ``at: 1e16s`` used to
  give a 1 GiB migration 0 s and 0 downtime (float seconds that large are 2 s apart);
* a simulated job that still iterates after ``MAX_PRECOPY_ROUNDS`` pre-copy rounds fails
  and leaves its guest on its source.
"""

from __future__ import annotations

import textwrap

import pytest
from fakes import GiB, MiB, host, migrate, scenario, vm

from livemig.core.model import MigrationModel, MigrationPolicy, MigrationStatus, VmState
from livemig.core.runner import run_scenario
from livemig.core.scenario import ScenarioError, parse_scenario
from livemig.drivers import sim_jobs

HEAD = """\
hosts: [{name: h1, ram: 8GiB, vcpus: 4}, {name: h2, ram: 8GiB, vcpus: 4}]
vms: [{name: vm1, host: h1, ram: 1GiB}]
"""


def load(text: str) -> object:
    return parse_scenario(HEAD + textwrap.dedent(text), "t.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("policy: {migration: {poll_interval: 1e-9s}}",
     "t.yaml:3: policy.migration.poll_interval: '1e-9s' is too small; "
     "expected a duration >= 10 ms"),
    ("policy: {migration: {poll_interval: 9ms}}", "poll_interval: '9ms' is too small"),
    ("policy: {migration: {max_downtime: 100us}}",
     "t.yaml:3: policy.migration.max_downtime: '100us' is too small; "
     "expected a duration >= 1 ms"),
    ("events: [{at: 1e16s, live_migrate: {instance: vm1, dest: h2}}]",
     "t.yaml:3: events[0].at: '1e16s' is too large; expected a duration <= 1e9s "
     "(about 31 years)"),
    ("events: [{at: 1s, controller_restart: {down_for: 1e10s}}]",
     "events[0].controller_restart.down_for: '1e10s' is too large"),
    ("policy: {migration: {completion_timeout: 40000000h}}",
     "completion_timeout: '40000000h' is too large"),
])
def test_nonsensical_durations_are_refused(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        load(text)
    assert message in str(info.value)


def test_the_bounds_themselves_are_accepted() -> None:
    sc = load("""\
        policy: {migration: {poll_interval: 10ms, max_downtime: 1ms}}
        events: [{at: 1e9s, live_migrate: {instance: vm1, dest: h2}}]
        until: 1e9s
    """)
    mig = sc.policy.migration  # type: ignore[attr-defined]
    assert (mig.poll_interval, mig.max_downtime) == (0.01, 0.001)
    assert sc.events[0].at == 1e9  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", list(MigrationModel))
def test_a_job_that_never_converges_fails_after_the_round_bound(
    monkeypatch: pytest.MonkeyPatch, model: MigrationModel,
) -> None:
    # a 2 MiB working set rewritten at 2 GiB/s: rounds of ~1.7 ms that never fit in 1 ms
    # (the qemu model counts iterations in bitmap syncs: the start's, then one per pass)
    monkeypatch.setattr(sim_jobs, "MAX_PRECOPY_ROUNDS", 50)
    result = run_scenario(scenario(
        [host("h1"), host("h2")],
        [vm("vm1", "h1", ram=GiB, used_memory=GiB, working_set=2 * MiB, dirty_rate=2 * GiB)],
        [migrate("vm1", "h2")],
        migration=MigrationPolicy(max_downtime=0.001, completion_timeout=0), model=model))
    m = result.store.migration(1)
    assert (m.status, m.iterations) == (MigrationStatus.FAILED, 50)
    assert "did not converge in 50 pre-copy iterations" in (m.error_message or "")
    inst = result.store.instance("vm1")
    assert (inst.host, inst.vm_state, result.final_hosts["vm1"]) == ("h1", VmState.ACTIVE, "h1")
    assert result.invariants.violations == ()
