"""The consolidation controller's default mode on either driver: utilisation read from the
driver, host names and start from the scenario, the run's end at the limit, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import simpy

from livemig.consolidation import flow
from livemig.consolidation.run import build_experiment, run_spec
from livemig.consolidation.scenario import load, parse
from livemig.consolidation.traces import load_trace
from livemig.consolidation.utilisation import DriverUtilisation, TraceUtilisation
from livemig.core import cli
from livemig.core.yaml_nodes import ScenarioError
from livemig.drivers.simulated import SimulatedDriver

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
LAB = SCENARIOS / "lab-consolidation.yaml"


def _engine(**options: object) -> flow.FlowEngine:
    spec = load(LAB)
    exp = build_experiment(spec, load_trace(spec.trace))
    return flow.FlowEngine(exp, spec.policy, initial_hosts=list(spec.initial_hosts or ()),
                           dirty_rate_max=spec.dirty_rate_max or 0.0, **options)


def test_the_simulated_driver_answers_what_the_controller_reads_from_the_trace() -> None:
    """In the simulator the controller reads all VMs' traces at once; the driver, asked VM
    by VM (as on real hosts), gives the same numbers at every time, bit for bit."""
    engine = _engine()
    engine.place_initial()
    env = simpy.Environment()
    driver = SimulatedDriver(env, engine.scenario())
    names = tuple(engine.vm_index)
    from_driver = DriverUtilisation(driver, names, refresh=0.0)
    from_trace = TraceUtilisation(names, engine.exp.samples, engine.exp.interval)
    for t in (0.0, 5.0, 20.1, 33.3, 40.1, 59.9, 125.0, 1000.0):
        env.run(until=t) if t > env.now else None
        assert from_driver.every(t).tolist() == from_trace.every(t).tolist(), t
    driver.close()


def test_lab_scenario_on_the_simulator_relieves_lab1_once() -> None:
    outcome, _ = run_spec(load(LAB))
    m = outcome.metrics
    assert [(v, s, d) for v, s, d, *_ in outcome.migrations] == [(0, 0, 1)]
    assert m["migrations_by_status"] == {"completed": 1}
    assert m["final_hosts"] == {"vm-0": "lab2", "vm-1": "lab1", "vm-2": "lab1"}
    assert m["invariant_violations"] == 0
    assert [row["overloaded_hosts"] for row in outcome.series] == [0, 1, 0, 0]


def test_a_migration_running_at_the_limit_is_halted_and_ends_before_the_driver_closes() -> None:
    """The lab scenario's migration starts at 40.1 s and takes 1.5 s; with the limit at
    40.5 s the orchestrator is halted there and the run waits for the job's end (on real
    hosts no migration may outlive the driver)."""
    engine = _engine()
    engine.exp = dataclasses.replace(engine.exp, limit=40.5)
    out = engine.run()
    assert engine.processes and not any(p.is_alive for p in engine.processes)
    assert engine.env.now > 40.5  # it ran on to the job's end
    assert out.migrations[0][4] == 40.5  # the books are cut at the limit
    assert out.metrics["invariant_violations"] == 0
    assert out.metrics["final_hosts"]["vm-0"] == "lab1"  # aborted: it stays on its source


def test_driver_utilisation_is_demand_and_reads_at_most_every_refresh() -> None:
    calls: list[str] = []

    class Usage:
        def __init__(self, u: float, w: float | None) -> None:
            self.utilisation, self.waiting = u, w

    class Fake:
        def cpu_usage(self, name: str) -> Usage:
            calls.append(name)
            if name == "gone":
                raise KeyError(name)
            return Usage(0.3, 0.9) if name == "busy" else Usage(0.2, None)

    source = DriverUtilisation(Fake(), ("busy", "plain", "gone"), refresh=10.0)
    assert source.every(0.0).tolist() == [1.0, 0.2, 0.0]  # 0.3 + 0.9 capped; no waiting
    assert source.got == {"busy": 0.3, "plain": 0.2, "gone": 0.0}
    assert source.every(9.9).tolist() == [1.0, 0.2, 0.0] and len(calls) == 3  # cached
    source.every(10.0)
    assert len(calls) == 6 and source.reads == 2

    class Plain:
        def cpu_utilisation(self, name: str) -> float:
            return 0.4

    assert DriverUtilisation(Plain(), ("a",), 1.0).cpu_utilisation("a", 0.0) == 0.4


def test_host_names_and_initial_hosts_are_checked_with_file_and_line(tmp_path: Path) -> None:
    base = "consolidation:\n  mode: default\n  trace: t.csv\n  policy: {overload: thr}\n"
    spec = parse(base + "  host_names: [a, b]\n  initial_hosts: [b, a, b]\n", "x.yaml")
    assert (spec.hosts, spec.host_names, spec.initial_hosts) == (2, ("a", "b"), (1, 0, 1))
    cases = {
        "  host_names: [a, b]\n  hosts: 3\n": "x.yaml:5: consolidation.host_names: 2 names "
                                             "for 3 hosts; expected one name per host",
        "  host_names: [a, a]\n": "x.yaml:5: consolidation.host_names[1]: duplicate host "
                                  "name 'a'; expected distinct names",
        "  host_names: [a]\n  initial_hosts: [c]\n": "x.yaml:6: consolidation.initial_hosts"
                                                     "[0]: unknown host 'c'",
        "  initial_hosts: [host-5]\n  hosts: 2\n": "x.yaml:5: consolidation.initial_hosts[0]: "
                                                  "unknown host 'host-5'",
    }
    for extra, message in cases.items():
        with pytest.raises(ScenarioError) as err:
            parse(base + extra, "x.yaml")
        assert str(err.value).startswith(message), (extra, str(err.value))


def test_initial_hosts_must_name_one_host_per_vm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.csv").write_text("vm,u0\na,10\nb,20\n")
    path = tmp_path / "s.yaml"
    path.write_text("consolidation:\n  mode: default\n  trace: t.csv\n  hosts: 2\n"
                    "  initial_hosts: [host-0]\n  policy: {overload: thr}\n")
    assert cli.main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("consolidation.initial_hosts: 1 hosts for 2 VMs in the trace; "
                        "expected one per VM"), err
    assert not (tmp_path / "out").exists()


def test_the_cloudsim_mode_is_simulator_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: []\n")
    scenario = SCENARIOS / "planetlab-sample-thr-mmt-cloudsim.yaml"
    assert cli.main(["run", str(scenario), "--driver", "libvirt", "--inventory",
                     str(inventory), "--out", str(tmp_path / "out")]) == 2
    assert "the cloudsim mode runs on the simulator only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_consolidation_run_goes_to_the_libvirt_driver_with_its_inventory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``livemig run lab-consolidation.yaml --driver libvirt --inventory INV``: the flow
    engine gets the driver's name and the inventory (here a fake driver that stops)."""
    from livemig.drivers.base import DriverSetupError

    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: []\n")
    seen: dict[str, object] = {}

    class Stop:
        REALTIME = True

        def __init__(self, env: object, scenario: object, **options: object) -> None:
            seen.update(scenario=scenario, options=options)
            raise DriverSetupError("no lab here")

    monkeypatch.setattr("livemig.drivers.driver_class", lambda name: Stop)
    assert cli.main(["run", str(LAB), "--driver", "libvirt", "--inventory", str(inventory),
                     "--out", str(tmp_path / "out")]) == 2
    assert "no lab here" in capsys.readouterr().err
    assert seen["options"] == {"inventory": str(inventory)}
    scenario = seen["scenario"]
    assert [h.name for h in scenario.hosts] == ["lab1", "lab2", "lab3"]  # type: ignore[attr-defined]
    vms = scenario.vms  # type: ignore[attr-defined]
    assert [(v.host, v.ram, v.cpu_trace[:3]) for v in vms] == [
        ("lab1", 128 << 20, (20.0, 20.0, 100.0)), ("lab1", 128 << 20, (20.0, 20.0, 100.0)),
        ("lab1", 128 << 20, (20.0, 20.0, 60.0))]
    assert {v.cpu_trace_interval for v in vms} == {20.0}
    assert not (tmp_path / "out").exists()


def test_summary_names_the_driver(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli.main(["run", str(LAB), "--out", str(out)]) == 0
    data = json.loads((out / "summary.json").read_text())
    assert data["driver"] == "sim" and data["expectations"]["failed"] == 0
    assert np.isclose(data["interval_s"], 20.0)


def _precopy(follows: bool, trace: tuple[float, ...]) -> int:
    """Bytes sent by one simulated live migration (at 25 s) of a VM dirtying up to
    200 MiB/s."""
    from livemig.core.model import (
        HostSpec,
        LiveMigrateEvent,
        MigrationPolicy,
        Scenario,
        VmSpec,
    )
    from livemig.core.model import Policy as NovaPolicy
    from livemig.core.runner import run_scenario

    mib = 1 << 20
    vm = VmSpec(name="v", host="a", ram=512 * mib, used_memory=256 * mib,
                working_set=128 * mib, dirty_rate=200 * mib, cpu_trace=trace,
                cpu_trace_interval=10.0, dirty_rate_follows_cpu=follows)
    scenario = Scenario(
        name="follows", hosts=tuple(HostSpec(name=n, ram=4 << 30, vcpus=4, disk=1 << 40)
                                    for n in "ab"),
        vms=(vm,), events=(LiveMigrateEvent(at=25.0, instance="v", dest="b"),),
        policy=NovaPolicy(migration=MigrationPolicy()))
    (record,) = run_scenario(scenario, "sim").store.migrations()
    assert record.status.value == "completed"
    return int(record.data_transferred or 0)


def test_a_dirty_rate_that_follows_the_cpu_dirties_by_the_utilisation_now() -> None:
    """At 25 s the trace (0 % until 10 s, 100 % from 20 s) is at 100 %: the same as a
    fixed rate; at 0 % the VM dirties nothing, so only its used memory is sent."""
    fixed = _precopy(False, (0.0, 0.0, 100.0))
    busy = _precopy(True, (0.0, 0.0, 100.0))
    idle = _precopy(True, (100.0, 100.0, 0.0))
    assert busy == fixed
    assert idle == 256 << 20
    assert fixed > idle


def test_the_default_mode_can_give_each_vm_the_dirty_rate_of_its_cpu_now() -> None:
    engine = _engine(dirty_rate_follows_cpu=True)
    engine.place_initial()
    vms = engine.scenario().vms
    assert {(v.dirty_rate, v.dirty_rate_follows_cpu) for v in vms} == {(4 << 20, True)}
    spec = parse("consolidation:\n  mode: default\n  trace: t.csv\n  policy: {overload: thr}\n"
                 "  dirty_rate_follows_cpu: true\n", "x.yaml")
    assert spec.dirty_rate_follows_cpu


def test_a_scenario_vm_can_have_its_dirty_rate_follow_its_cpu_trace() -> None:
    from livemig.core.scenario import parse_scenario

    text = ("name: t\nhosts: [{name: a, ram: 4GiB, vcpus: 4}]\nvms:\n"
            "  - {name: v, host: a, ram: 1GiB, dirty_rate: 8MiB/s, %s}\n")
    (vm,) = parse_scenario(text % "cpu_trace: [10, 90], dirty_rate_follows_cpu: true",
                           source="t.yaml").vms
    assert vm.dirty_rate_follows_cpu and vm.cpu_trace == (10.0, 90.0)
    with pytest.raises(ScenarioError, match=r"^t.yaml:4: vms\[0\].dirty_rate_follows_cpu: a "
                       "dirty rate that follows the CPU needs the VM's cpu_trace"):
        parse_scenario(text % "dirty_rate_follows_cpu: true", source="t.yaml")
