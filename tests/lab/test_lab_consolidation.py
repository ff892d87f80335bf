"""The consolidation controller on real hosts: ``scenarios/lab-consolidation.yaml`` on a
3-host namespace lab (lab ``cons``, shared storage), through the same code as
``livemig run SCENARIO --driver libvirt --inventory INV`` (:func:`run_spec`).

Three lab guests start on lab1 and burn their CPU traces (20 %, then 100 %, 100 %, 60 %).
The controller reads each guest's CPU from libvirt every 20 s (utilisation + waiting, see
:mod:`livemig.consolidation.utilisation`), THR 0.8 finds lab1 overloaded and the
controller asks for a live migration to a named destination. What is asked afterwards is
asked of libvirt (``virsh``) and of the guests (their consoles keep ticking). A lab that
cannot start fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from labcheck import SCENARIOS, assert_guest_keeps_ticking, hosts_running
from lablock import running_lab

from livemig.consolidation.run import run_spec
from livemig.consolidation.scenario import load
from livemig.drivers.lab.inventory import load_inventory

pytestmark = pytest.mark.lab

LAB = "cons"
VMS = ("vm-0", "vm-1", "vm-2")


@pytest.fixture(scope="module")
def lab() -> Iterator[SimpleNamespace]:
    with running_lab(LAB, hosts=3, storage="shared") as record:
        yield SimpleNamespace(inventory=load_inventory(record), inventory_path=record)


def test_the_controller_relieves_the_overloaded_host_by_a_real_live_migration(
        lab: SimpleNamespace) -> None:
    spec = load(SCENARIOS / "lab-consolidation.yaml")
    started = time.monotonic()
    outcome, timings = run_spec(spec, "libvirt", {"inventory": str(lab.inventory_path),
                                                  "keep_domains": True})
    m = outcome.metrics
    print(f"\nlab-consolidation on the lab: run {timings['run_s']:.1f} s "
          f"(wall {time.monotonic() - started:.1f} s), load {os.getloadavg()}, "
          f"migrations {outcome.migrations}, by status {m['migrations_by_status']}, "
          f"utilisation reads {m['utilisation_reads']}, final {m['final_hosts']}")
    for step in m["utilisation_by_step"]:
        print(f"  step {step['time_s']:.1f} s: demand {step['vms']} (got {step['got']}) "
              f"on hosts {step['hosts']}")
    # the controller decided it: a migration planned off lab1 (host 0), while overloaded
    first = outcome.migrations[0]
    vm, source, dest = f"vm-{first[0]}", first[1], first[2]
    assert source == 0 and dest != 0, outcome.migrations
    overloaded_steps = [row for row in outcome.series if row["overloaded_hosts"] > 0]
    assert overloaded_steps and overloaded_steps[0]["time_s"] == first[3], outcome.series
    assert m["migrations_completed"] >= 1, m["migrations_by_status"]
    assert m["utilisation_reads"] >= 2  # measured, step after step
    # libvirt agrees: the VM runs on its destination, every VM runs exactly once
    dest_name = spec.host_names[dest]
    assert m["final_hosts"][vm] == dest_name
    assert hosts_running(lab, vm) == [dest_name]
    for name in VMS:
        assert len(hosts_running(lab, name)) == 1, name
        assert hosts_running(lab, name) == [m["final_hosts"][name]], name
    assert m["invariant_violations"] == 0, m["invariant_details"]
    # lab1 is no longer overloaded after the move: the last steps find none
    assert outcome.series[-1]["overloaded_hosts"] == 0, outcome.series
    assert_guest_keeps_ticking(lab, vm)  # the moved guest lives on, on its destination
