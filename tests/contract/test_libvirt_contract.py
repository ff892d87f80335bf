"""The driver contract suite (``test_driver_contract.py``) on the real libvirt driver.

Every contract test is collected here a second time, with this module's
``contract_driver`` fixture (a module fixture overrides the one of ``conftest.py``),
which gives each test a :class:`~livemig.drivers.libvirt_real.LibvirtDriver` built for
the canonical scenario on a two-host, shared-storage namespace lab. The target is
described by a :class:`ContractTarget` exactly as ``harness.py`` documents; registering
it in ``harness.TARGETS`` instead would run the same tests from
``test_driver_contract.py`` itself.

The lab is the one ``LIVEMIG_INVENTORY`` names, or else lab ``tcontract``, brought up
for this module and taken down after it; a lab that cannot start fails the tests. To keep
the machine's load down the canonical guest is booted only when it does not already run
on the first host (the first test, and after the test that migrates it away): each test
still starts with the VM on the first host and a new driver, so no claims and no markers.
The lab is held under an exclusive ``flock`` while it is up, so that a second test run in
the same checkout waits instead of taking it down under the first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import simpy.rt
from contract import test_driver_contract as suite
from contract.harness import (
    VM,
    ContractLab,
    ContractTarget,
    canonical_scenario,
    open_contract_lab,
)
from lablock import lab_lock

from livemig.core.model import Scenario
from livemig.drivers.base import Driver
from livemig.drivers.lab.inventory import load_inventory
from livemig.drivers.lab.lab import lab_down, lab_status, lab_up
from livemig.drivers.libvirt_real import LibvirtDriver

pytestmark = pytest.mark.lab

LAB = "tcontract"
HOSTS = ("lab1", "lab2")

# every test of the contract suite, collected in this module too
globals().update({n: f for n, f in vars(suite).items() if n.startswith("test_")})


def _runs_only_on_first_host(inventory: Path) -> bool:
    """Is the canonical VM active on the first host and known to no other (fresh conns)?"""
    inv = load_inventory(inventory)
    for host in inv.hosts:
        conn = libvirt.open(host.uri)
        try:
            names = {d.name(): d.isActive() for d in conn.listAllDomains()}
        finally:
            conn.close()
        if (host.name == HOSTS[0]) != bool(names.get(VM)):
            return False
        if host.name != HOSTS[0] and VM in names:
            return False
    return True


@pytest.fixture(scope="module")
def contract_inventory() -> Iterator[Path]:
    given = os.environ.get("LIVEMIG_INVENTORY")
    if given:
        yield Path(given)
        return
    if os.geteuid() != 0:
        pytest.fail("the libvirt contract tests need root (a namespace lab)")
    with lab_lock(LAB):
        try:
            if lab_status(LAB)["state"] != "down":
                lab_down(LAB)
            path = lab_up(LAB, hosts=2, storage="shared")
        except Exception as exc:  # noqa: BLE001 - a lab that cannot start is a failure
            pytest.fail(f"lab {LAB!r} could not start: {exc}")
        try:
            yield path
        finally:
            try:  # the driver removes the canonical guest; the lab goes in any case
                env = simpy.rt.RealtimeEnvironment(strict=False)
                LibvirtDriver(env, canonical_scenario(HOSTS), inventory=path, boot=False).close()
            finally:
                lab_down(LAB)


@pytest.fixture
def contract_driver(contract_inventory: Path) -> Iterator[ContractLab]:
    def make_libvirt(scenario: Scenario) -> Driver:
        env = simpy.rt.RealtimeEnvironment(strict=False)
        boot = not _runs_only_on_first_host(contract_inventory)
        return LibvirtDriver(
            env, scenario, inventory=contract_inventory, keep_domains=True, boot=boot
        )

    target = ContractTarget(make=make_libvirt, hosts=HOSTS, timeout=120.0,
                            marks=(pytest.mark.lab,))  # fmt: skip
    with open_contract_lab(target) as lab:
        yield lab
