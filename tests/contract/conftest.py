"""The ``contract_driver`` fixture: the canonical scenario on every driver of
:data:`contract.harness.TARGETS` (register new drivers there, see its docstring)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from contract.harness import TARGETS, ContractLab, open_contract_lab


@pytest.fixture(
    params=[pytest.param(name, marks=target.marks, id=name) for name, target in TARGETS.items()]
)
def contract_driver(request: pytest.FixtureRequest) -> Iterator[ContractLab]:
    with open_contract_lab(TARGETS[request.param]) as lab:
        yield lab
