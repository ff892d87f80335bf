"""A drain never leaves VMs behind silently (issue 8, item 6).

A VM already on its way into a host when that host's drain begins is moved away
once it arrives (a follow-up, scheduler-chosen migration); what no host can take
stays, and summary.json's ``drains`` says so, drain by drain. The large case is
``benchmarks/bench_drain.py`` (1,000 hosts, 100 drains one second apart).
"""

from __future__ import annotations

from fakes import GiB, drain, host, migrate, scenario, vm

from livemig.core.model import MigrationPolicy, MigrationStatus, VmState
from livemig.core.results import drains_block, summarize, summary_table
from livemig.core.runner import run_scenario

SLOW = MigrationPolicy(bandwidth=100e6, completion_timeout=0)  # 1 GiB used: ~10.7 s
HOSTS = [host("h1"), host("h2"), host("h3"), host("h4")]


def test_a_vm_arriving_at_a_draining_host_is_moved_away() -> None:
    # a leaves h1 for the emptiest host, h2; h2's drain begins (1 s) while a is on its
    # way: when it arrives (11 s) it is migrated again, to a host that is not drained
    result = run_scenario(scenario(
        HOSTS, [vm("a", "h1"), vm("c", "h3"), vm("d", "h4")],
        [drain("h1"), drain("h2", at=1.0)], migration=SLOW))
    first, second = result.store.migration(1), result.store.migration(2)
    assert (first.dest, first.status, first.finished_at) == ("h2", MigrationStatus.COMPLETED,
                                                             11.0)
    assert (second.instance, second.source, second.requested_at) == ("a", "h2", 11.0)
    assert second.status is MigrationStatus.COMPLETED and second.dest in ("h3", "h4")
    assert result.store.instance("a").host == second.dest == result.final_hosts["a"]
    assert [d["completed"] for d in drains_block(result)] == [True, True]
    assert result.invariants.violations == ()


def test_a_vm_sent_explicitly_after_the_drain_began_stays() -> None:
    # the operator's own request, made after the drain, is not undone
    result = run_scenario(scenario(
        HOSTS, [vm("a", "h1"), vm("c", "h3")],
        [drain("h2"), migrate("a", "h2", at=1.0)], migration=SLOW))
    assert len(result.store.migrations()) == 1
    assert result.store.instance("a").host == "h2"
    assert drains_block(result) == [
        {"at": 0.0, "completed": False, "host": "h2", "instances_left": ["a"]}]


def test_what_no_host_can_take_is_reported_as_left() -> None:
    big = [host("h1"), host("h2", ram=8 * GiB)]
    result = run_scenario(scenario(
        big, [vm("a", "h1", ram=12 * GiB), vm("b", "h1", ram=GiB)], [drain("h1")],
        migration=SLOW))
    statuses = {m.instance: (m.status, m.error) for m in result.store.migrations()}
    assert statuses == {"a": (MigrationStatus.ERROR, "NoValidHost"),
                        "b": (MigrationStatus.COMPLETED, None)}
    inst = result.store.instance("a")
    assert (inst.host, inst.vm_state) == ("h1", VmState.ACTIVE)
    summary = summarize(result)
    assert summary["drains"] == [
        {"at": 0.0, "completed": False, "host": "h1", "instances_left": ["a"]}]
    assert "drain of h1 (at 0 s) incomplete: 1 instance(s) left: a" in summary_table(result)
