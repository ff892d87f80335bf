"""The driver contract suite's harness: one canonical scenario, every driver.

Every test of ``tests/contract`` takes the ``contract_driver`` fixture
(``conftest.py``), a :class:`ContractLab`: a driver built for the canonical
scenario (two hosts with shared storage, one small idle VM on the first) plus
the names the test needs. The fixture is parametrised over :data:`TARGETS`
(this module), so each contract test runs once per registered driver.

Three targets: ``sim`` (the simulator) and ``libvirt-fake`` (the real driver on the
fake libvirt of ``tests/fakelibvirt``: seconds, no root) are registered below; the real
driver on a namespace lab is ``test_libvirt_contract.py`` (marked ``lab``).

Adding a driver (e.g. the real libvirt one)
--------------------------------------------
Write a factory that takes the canonical :class:`~livemig.core.model.Scenario`
(already renamed to your hosts) and returns a started driver, then register
it in :data:`TARGETS` below::

    def make_libvirt(scenario: Scenario) -> Driver:
        env = simpy.rt.RealtimeEnvironment(strict=False)
        return LibvirtDriver(env, scenario, inventory=os.environ["LIVEMIG_INVENTORY"])

    TARGETS["libvirt"] = ContractTarget(
        make=make_libvirt,
        hosts=("lab-h1", "lab-h2"),  # the lab's names for canonical h1, h2
        timeout=120.0,               # seconds a 128 MiB guest may take to migrate
        marks=(pytest.mark.lab,),    # deselected where there is no lab
    )

Import heavy modules (libvirt) inside the factory so collection works without
them. The fixture closes the driver after each test; the factory must give each
test a fresh world (the VM running, not paused, on the first host only; no claims, no
markers). The post-copy tests need a guest that a 1 MiB/s pre-copy cannot move within
a second, and ``start_postcopy`` refused for want of ``VIR_MIGRATE_POSTCOPY`` must
raise :class:`~livemig.core.errors.MigrationError` (wrap the libvirt error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import simpy

from livemig.core.model import (
    HostSpec,
    MigrationPolicy,
    Policy,
    Scenario,
    Storage,
    VmSpec,
)
from livemig.drivers.base import Driver, JobInfo, JobType
from livemig.drivers.simulated import SimulatedDriver

MiB = 1 << 20
GiB = 1 << 30
VM = "contract-vm1"
VM_RAM = 128 * MiB


def canonical_scenario(hosts: tuple[str, str] = ("h1", "h2")) -> Scenario:
    """Two hosts on shared storage; one idle 128 MiB, 1 vCPU VM on the first."""
    first, second = hosts
    return Scenario(
        name="driver-contract",
        hosts=tuple(
            HostSpec(name=n, ram=4 * GiB, vcpus=4, disk=20 * GiB, storage=Storage.SHARED)
            for n in (first, second)
        ),
        vms=(VmSpec(name=VM, host=first, ram=VM_RAM, vcpus=1, used_memory=VM_RAM // 2,
                    working_set=8 * MiB, dirty_rate=0.0),),
        policy=Policy(migration=MigrationPolicy(completion_timeout=0.0)),
    )


@dataclass(frozen=True, kw_only=True)
class ContractTarget:
    """How to get one driver for the contract suite."""

    make: Callable[[Scenario], Driver]  # canonical scenario (renamed) -> driver
    hosts: tuple[str, str] = ("h1", "h2")  # this driver's names for canonical h1, h2
    timeout: float = 60.0  # seconds of the driver's clock a small migration may take
    marks: tuple[pytest.MarkDecorator, ...] = ()


def make_sim(scenario: Scenario) -> Driver:
    return SimulatedDriver(simpy.Environment(), scenario)


def make_fake_libvirt(scenario: Scenario) -> Driver:
    """The real driver on the fake libvirt (``tests/fakelibvirt``): no root, no lab, and
    its clock ten times faster than real time; the inventory lives in a temporary
    directory removed with the driver."""
    import tempfile
    import weakref

    from fakelibvirt.driver import fake_driver, two_host_world

    tmp = tempfile.TemporaryDirectory(prefix="livemig-fakelibvirt-")
    driver = fake_driver(two_host_world(FAKE_HOSTS), scenario, Path(tmp.name))
    weakref.finalize(driver, tmp.cleanup)
    return driver


FAKE_HOSTS = ("lab1", "lab2")

TARGETS: dict[str, ContractTarget] = {
    "sim": ContractTarget(make=make_sim),
    "libvirt-fake": ContractTarget(make=make_fake_libvirt, hosts=FAKE_HOSTS, timeout=60.0),
}


@dataclass(frozen=True, kw_only=True)
class ContractLab:
    """A driver for the canonical scenario and the handles a contract test needs."""

    driver: Driver
    scenario: Scenario
    source: str  # the host the VM starts on
    dest: str  # the other host
    vm: str
    vm_ram_mb: int
    timeout: float

    @property
    def env(self) -> simpy.Environment:
        return self.driver.env

    @property
    def policy(self) -> MigrationPolicy:
        return self.scenario.policy.migration

    def uri(self, host: str) -> str:
        return self.policy.uri % host

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of the driver's clock pass."""
        self.env.run(until=self.env.now + seconds)

    def poll_until_ended(self, step: float = 0.5) -> tuple[JobInfo, list[JobType]]:
        """Poll ``job_info`` every ``step`` until the job leaves UNBOUNDED.

        Returns the last reading and the types seen on the way; fails after
        ``timeout``.
        """
        seen: list[JobType] = []
        deadline = self.env.now + self.timeout
        while True:
            info = self.driver.job_info(self.vm)
            seen.append(info.type)
            if info.type is not JobType.UNBOUNDED:
                return info, seen
            assert self.env.now < deadline, f"job still running after {self.timeout} s"
            self.wait(step)


@contextmanager
def open_contract_lab(target: ContractTarget) -> Iterator[ContractLab]:
    """A driver made by ``target`` for the canonical scenario, closed afterwards."""
    scenario = canonical_scenario(target.hosts)
    driver = target.make(scenario)
    try:
        yield ContractLab(
            driver=driver, scenario=scenario, source=target.hosts[0], dest=target.hosts[1],
            vm=VM, vm_ram_mb=VM_RAM // MiB, timeout=target.timeout,
        )  # fmt: skip
    finally:
        driver.close()
