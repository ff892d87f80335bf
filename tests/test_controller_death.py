"""A dead controller does nothing more (issue 8, item 2).

A request accepted in the same instant as a ``controller_restart`` is not carried
out by the dead controller: its record waits, ``accepted``, for the next
controller, which resolves it (``ControllerRestarted``); a later request for the
same instance is then the only migration that runs.
"""

from __future__ import annotations

from fakes import GiB, host, migrate, scenario, vm

from livemig.core.model import ControllerRestartEvent, MigrationPolicy, MigrationStatus, VmState
from livemig.core.runner import run_scenario

SLOW = MigrationPolicy(bandwidth=100e6, completion_timeout=0)  # 1 GiB used: ~10.7 s


def test_a_request_in_the_instant_the_controller_dies_is_not_carried_out(
    status_history: dict,
) -> None:
    result = run_scenario(scenario(
        [host("h1"), host("h2"), host("h3")], [vm("vm1", "h1", ram=2 * GiB)],
        [migrate("vm1", "h2"), ControllerRestartEvent(at=0.0, down_for=0.0),
         migrate("vm1", "h3")], migration=SLOW))
    first, second = result.store.migration(1), result.store.migration(2)
    assert status_history[1] == [MigrationStatus.ACCEPTED, MigrationStatus.ERROR]
    assert (first.error, first.started_at) == ("ControllerRestarted", None)
    assert second.status is MigrationStatus.COMPLETED and second.dest == "h3"
    inst = result.store.instance("vm1")
    assert (inst.host, inst.vm_state, inst.task_state) == ("h3", VmState.ACTIVE, None)
    assert result.final_hosts == {"vm1": "h3"}
    assert result.invariants.violations == ()
