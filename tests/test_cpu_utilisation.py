"""A guest's CPU utilisation: the scenario's ``cpu_trace``, the simulator's reading of it,
the real driver's reading of libvirt's CPU statistics (on the fake libvirt, whose guests
burn their trace), and the lab guest's kernel command line. The real guests are measured
in ``tests/lab/test_lab_cpu.py``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import simpy
from fakelibvirt.driver import fake_driver, two_host_world
from fakelibvirt.world import World, parse_domain
from fakes import poll_job

from livemig.core.flags import parse_flags
from livemig.core.model import HostSpec, MigrationPolicy, Policy, Scenario, Storage, VmSpec
from livemig.core.scenario import ScenarioError, parse_scenario
from livemig.drivers.base import DriverSetupError, JobType
from livemig.drivers.cpu_stats import CpuSample, sample_from_stats, usage
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.simulated import SimulatedDriver

MiB = 1 << 20
GiB = 1 << 30
SRC, DEST = "lab1", "lab2"
WINDOW = 0.3  # seconds: the fake driver's CPU window (real time)
# the fake's reading: timing jitter of a 0.3 s window on a busy machine (the fake burns
# exactly its trace; 10 ms late in reading the second sample is 3 % of the window)
FAKE_TOLERANCE = 0.06


def vm(name: str, trace: tuple[float, ...] = (), interval: float = 300.0,
       vcpus: int = 1) -> VmSpec:
    return VmSpec(name=name, host=SRC, ram=128 * MiB, vcpus=vcpus, used_memory=64 * MiB,
                  working_set=8 * MiB, dirty_rate=0.0, cpu_trace=trace,
                  cpu_trace_interval=interval)


def scenario(*vms: VmSpec) -> Scenario:
    return Scenario(
        name="cpu",
        hosts=tuple(HostSpec(name=n, ram=4 * GiB, vcpus=4, disk=20 * GiB,
                             storage=Storage.SHARED) for n in (SRC, DEST)),
        vms=vms,
        policy=Policy(migration=MigrationPolicy(completion_timeout=0.0)),
    )


# -- the scenario ---------------------------------------------------------------------------


YAML = """
name: t
hosts: [{name: a, ram: 4GiB, vcpus: 4}]
vms:
  - {name: v, host: a, ram: 1GiB, %s}
"""


def test_scenario_reads_a_cpu_trace_and_its_interval() -> None:
    s = parse_scenario(YAML % "cpu_trace: [80, 20.5, 0, 100], cpu_trace_interval: 10s", "t")
    assert s.vms[0].cpu_trace == (80.0, 20.5, 0.0, 100.0)
    assert s.vms[0].cpu_trace_interval == 10.0
    plain = parse_scenario(YAML % "vcpus: 1", "t").vms[0]
    assert plain.cpu_trace == () and plain.cpu_trace_interval == 300.0


@pytest.mark.parametrize(("field", "problem"), [
    ("cpu_trace: [80, 101]", "vms[0].cpu_trace[1]: 101 is out of range; expected a percentage"),
    ("cpu_trace: [-1]", "vms[0].cpu_trace[0]: -1 is out of range"),
    ("cpu_trace: []", "vms[0].cpu_trace: empty list; expected a list of CPU utilisation"),
    ("cpu_trace: 50", "vms[0].cpu_trace: 50 is not valid here; expected a list"),
    ("cpu_trace: [x]", "vms[0].cpu_trace[0]: 'x' is not valid here; expected a number"),
    ("cpu_trace_interval: 0s", "vms[0].cpu_trace_interval: '0s' must be > 0"),
])
def test_a_bad_cpu_trace_is_one_clear_error(field: str, problem: str) -> None:
    with pytest.raises(ScenarioError) as exc:
        parse_scenario(YAML % field, "f.yaml")
    assert str(exc.value).startswith("f.yaml:5: ")
    assert problem in str(exc.value)


# -- the simulator --------------------------------------------------------------------------


def test_simulator_reports_the_trace_at_its_clock() -> None:
    env = simpy.Environment()
    drv = SimulatedDriver(env, scenario(vm("t", (80.0, 20.0), interval=100.0), vm("none")))
    readings = []
    for t in (0, 50, 100, 1000):
        env.run(until=t) if t else None
        readings.append(drv.cpu_utilisation("t"))
    assert readings == [0.8, 0.5, 0.2, 0.2]
    assert drv.cpu_utilisation("none") == 0.0  # no trace: no CPU demand modelled
    with pytest.raises(KeyError):
        drv.cpu_utilisation("nope")


def test_simulator_a_paused_guest_uses_no_cpu() -> None:
    drv = SimulatedDriver(simpy.Environment(), scenario(vm("t", (60.0,))))
    drv.suspend("t")
    assert drv.cpu_utilisation("t") == 0.0
    drv.resume("t")
    assert drv.cpu_utilisation("t") == 0.6


# -- the arithmetic -------------------------------------------------------------------------


def test_usage_is_clamped_and_refuses_an_empty_window() -> None:
    a = CpuSample(at=1.0, run_ns=0, wait_ns=None, vcpus=1)
    over = CpuSample(at=2.0, run_ns=1_010_000_000, wait_ns=5, vcpus=1)  # one 10 ms step over
    assert usage(a, over).utilisation == 1.0 and usage(a, over).waiting is None
    with pytest.raises(ValueError, match="window must be > 0"):
        usage(a, a)


def test_sample_counts_every_vcpu() -> None:
    stats = {"vcpu.current": 4, **{f"vcpu.{n}.time": 10 * n for n in range(4)},
             **{f"vcpu.{n}.delay": n for n in range(4)}, "cpu.time": 1000}
    s = sample_from_stats(stats, 0.0, ("h", 3))
    assert (s.run_ns, s.wait_ns, s.vcpus, s.process) == (60, 6, 4, ("h", 3))


# -- the lab guest's command line -----------------------------------------------------------


def test_guest_xml_carries_the_trace_and_the_fake_reads_it() -> None:
    xml = domain_xml("g", 128, 2, Path("/k"), Path("/i"), 8, 0, Path("/c/g.log"),
                     cpu_trace=(80.0, 20.0, 99.6), cpu_trace_interval=2.5)
    rec = parse_domain(xml)
    assert rec.cpu_trace == (80.0, 20.0, 100.0) and rec.cpu_interval == 2.5
    assert rec.vcpus == 2


def test_guest_xml_refuses_a_trace_its_command_line_cannot_hold() -> None:
    from livemig.drivers.lab.errors import LabError

    with pytest.raises(LabError, match="401 samples; the guest takes at most 400"):
        domain_xml("g", 128, 1, Path("/k"), Path("/i"), 8, 0, Path("/c/g.log"),
                   cpu_trace=[100.0] * 401, cpu_trace_interval=1)
    xml = domain_xml("g", 128, 1, Path("/k"), Path("/i"), 8, 0, Path("/c/g.log"),
                     cpu_trace=[100.0] * 400, cpu_trace_interval=1)
    cmdline = xml.split("<cmdline>")[1].split("</cmdline>")[0]
    assert len(cmdline) < 2048  # x86's COMMAND_LINE_SIZE
    with pytest.raises(LabError, match="cpu_trace_interval"):
        domain_xml("g", 128, 1, Path("/k"), Path("/i"), 8, 0, Path("/c/g.log"),
                   cpu_trace=[1.0, 2.0])


# -- the real driver on the fake libvirt ----------------------------------------------------


@pytest.fixture
def world() -> World:
    return two_host_world((SRC, DEST))


@pytest.fixture
def make(world: World, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    made: list[Any] = []

    def build(scn: Scenario, **options: Any) -> Any:
        drv = fake_driver(world, scn, tmp_path, **options)
        drv.cpu_window = WINDOW
        made.append(drv)
        return drv

    yield build
    for drv in reversed(made):
        drv.close()


def test_driver_reads_each_guests_burn_from_libvirts_vcpu_times(make: Any) -> None:
    drv = make(scenario(vm("hi", (80.0,)), vm("lo", (20.0,)), vm("busy"),
                        vm("two", (30.0,), vcpus=2)))
    first = {name: drv.cpu_usage(name) for name in ("hi", "lo", "busy", "two")}
    for name, want in (("hi", 0.8), ("lo", 0.2), ("busy", 1.0), ("two", 0.3)):
        got = first[name]
        assert got.window >= WINDOW  # a first reading waits for its window
        assert abs(got.utilisation - want) <= FAKE_TOLERANCE, (name, got)
        assert got.waiting == 0.0
    # a later call measures since the previous one (the three other first readings took
    # a window each) and need not wait
    again = drv.cpu_usage("hi")
    assert again.window >= 3 * WINDOW and abs(again.utilisation - 0.8) <= FAKE_TOLERANCE


def test_driver_follows_a_trace_over_time(make: Any, world: World) -> None:
    drv = make(scenario(vm("tr", (100.0, 100.0, 0.0), interval=0.5)))
    started = world.hosts[SRC].domains["tr"].guest_started
    assert abs(drv.cpu_utilisation("tr") - 1.0) <= FAKE_TOLERANCE  # its first 0.3 s: 100 %
    deadline = time.monotonic() + 10
    while drv._cpu_samples["tr"].at < started + 1.0:  # the next window: the hold at 0 %
        assert time.monotonic() < deadline
        drv.cpu_utilisation("tr")
    assert drv.cpu_utilisation("tr") <= FAKE_TOLERANCE


def test_driver_a_paused_guest_reads_zero(make: Any) -> None:
    drv = make(scenario(vm("p", (90.0,))))
    drv.suspend("p")
    assert drv.cpu_usage("p").utilisation == 0.0
    drv.resume("p")
    assert abs(drv.cpu_utilisation("p") - 0.9) <= FAKE_TOLERANCE


def test_driver_reads_the_destination_after_a_migration(make: Any, world: World) -> None:
    scn = scenario(vm("m", (70.0,)))
    drv = make(scn)
    assert abs(drv.cpu_utilisation("m") - 0.7) <= FAKE_TOLERANCE
    src_process = drv._cpu_samples["m"].process
    drv.pre_live_migration("m", DEST, False)
    drv.start_migration("m", DEST, uri=f"qemu+tcp://{DEST}/system",
                        flags=parse_flags(scn.policy.migration.live_migration_flag),
                        bandwidth_mib=0)
    final = poll_job(drv, "m", lambda i: i.type is not JobType.UNBOUNDED, timeout=10.0,
                     step=0.02)[-1]
    assert final.type is JobType.COMPLETED
    drv.post_live_migration("m", SRC, DEST)
    after = drv.cpu_usage("m")
    # a new QEMU process whose counters restarted: measured afresh, not against the source's
    assert drv._cpu_samples["m"].process[0] == DEST != src_process[0]
    assert after.window >= WINDOW
    assert abs(after.utilisation - 0.7) <= FAKE_TOLERANCE


def test_driver_unknown_or_vanished_guests(make: Any, world: World) -> None:
    drv = make(scenario(vm("g", (50.0,))))
    with pytest.raises(KeyError):
        drv.cpu_utilisation("not-in-the-scenario")
    world.fault("host_down", SRC)  # its guests die; nothing to ask
    world.fault("host_up", SRC)
    assert drv.cpu_usage("g").utilisation == 0.0


def test_driver_refuses_to_boot_a_trace_the_guest_cannot_take(make: Any) -> None:
    with pytest.raises(DriverSetupError, match="VM long: cpu_trace has 500 samples"):
        make(scenario(vm("long", (50.0,) * 500, interval=1.0)))


def test_driver_reports_a_guest_the_lab_cannot_build_as_a_setup_error(make: Any) -> None:
    # regression: domain_xml's LabError (here a working set with no room for the guest's
    # kernel) escaped the driver's constructor as a traceback instead of one line
    big = VmSpec(name="big", host=SRC, ram=128 * MiB, used_memory=128 * MiB,
                 working_set=100 * MiB, dirty_rate=0.0)
    with pytest.raises(DriverSetupError, match="VM big: ws_mib"):
        make(scenario(big))
