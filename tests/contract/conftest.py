"""The ``contract_driver`` fixture: the canonical scenario on every driver of
:data:`contract.harness.TARGETS` (register new drivers there, see its docstring)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract.harness import TARGETS, VM, VM_RAM, ContractLab, MiB, canonical_scenario


@pytest.fixture(
    params=[pytest.param(name, marks=target.marks, id=name) for name, target in TARGETS.items()]
)
def contract_driver(request: pytest.FixtureRequest) -> Iterator[ContractLab]:
    target = TARGETS[request.param]
    scenario = canonical_scenario(target.hosts)
    driver = target.make(scenario)
    try:
        yield ContractLab(
            driver=driver, scenario=scenario, source=target.hosts[0], dest=target.hosts[1],
            vm=VM, vm_ram_mb=VM_RAM // MiB, timeout=target.timeout,
        )
    finally:
        driver.close()
