"""Real-lab fixtures of ``test_lab_scenarios.py``: one namespace lab per storage mode.

``shared_lab`` and ``local_lab`` are class-scoped, so only one of the two labs is up at a
time (the machine has 2 cores). Each brings its lab up under its own name (never the
default ``livemig``), after taking down whatever an earlier run left, and takes it down
again at the end. A lab that cannot start FAILS the tests (never a skip).

The checkout is shared: another pytest run of the same tests would take this lab down
under our feet (``lab_up`` first removes a lab of the same name). So a lab is held under an
exclusive ``flock`` (``/tmp/livemig-test-lab-NAME.lock``) from before it comes up until it
is down; a second run waits for the first instead of breaking it.

The figures the scenario tests measure (lab up/down times, real and simulated results)
are collected in ``lab_figures`` and printed at the end of the session.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lablock import lab_lock

from livemig.drivers.lab.inventory import Inventory, load_inventory
from livemig.drivers.lab.lab import lab_down, lab_status, lab_up

SHARED_LAB = "tshared"
LOCAL_LAB = "tlocal"
FAULT_LAB = "tfail"  # test_lab_failures.py: faults and policies, shared storage
TLS_SCENARIO_LAB = "tfailtls"  # test_lab_failures.py: a scenario over a TLS lab


_FIGURES: dict[str, dict[str, Any]] = {}


@dataclass(kw_only=True)
class LabUnderTest:
    """A lab that is up: its name, inventory and how long ``lab_up`` took."""

    name: str
    storage: str
    inventory_path: Path
    inventory: Inventory
    up_s: float
    leftovers: bool  # an earlier run's lab was found (and taken down) first
    down_s: float | None = None


def _start(name: str, storage: str, tls: bool = False) -> LabUnderTest:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (run them as root after scripts/setup-lab)")
    leftovers = lab_status(name)["state"] != "down"
    try:
        if leftovers:
            lab_down(name)
        t0 = time.monotonic()
        path = lab_up(name, hosts=2, storage=storage, tls=tls)
        up_s = time.monotonic() - t0
    except Exception as exc:  # noqa: BLE001 - any failure to start is a test failure
        pytest.fail(f"lab {name!r} ({storage} storage) could not start: {exc}")
    inv = load_inventory(path)
    assert inv.storage == storage and [h.name for h in inv.hosts] == ["lab1", "lab2"]
    return LabUnderTest(
        name=name, storage=storage, inventory_path=path, inventory=inv, up_s=up_s,
        leftovers=leftovers,
    )


def _lab(name: str, storage: str, tls: bool = False) -> Iterator[LabUnderTest]:
    with lab_lock(name):
        lab = _start(name, storage, tls)
        _FIGURES[f"lab {name} ({storage})"] = {"up_s": lab.up_s, "leftovers": lab.leftovers}
        try:
            yield lab
        finally:
            t0 = time.monotonic()
            lab_down(name)  # idempotent: a test may have taken it down already
            if lab.down_s is None:
                lab.down_s = time.monotonic() - t0
            _FIGURES[f"lab {name} ({storage})"]["down_s"] = lab.down_s


@pytest.fixture(scope="class")
def shared_lab() -> Iterator[LabUnderTest]:
    yield from _lab(SHARED_LAB, "shared")


@pytest.fixture(scope="class")
def local_lab() -> Iterator[LabUnderTest]:
    yield from _lab(LOCAL_LAB, "local")


@pytest.fixture(scope="module")
def fault_lab() -> Iterator[LabUnderTest]:
    yield from _lab(FAULT_LAB, "shared")


@pytest.fixture(scope="module")
def tls_lab() -> Iterator[LabUnderTest]:
    yield from _lab(TLS_SCENARIO_LAB, "shared", tls=True)


@pytest.fixture(scope="session")
def lab_figures() -> dict[str, dict[str, Any]]:
    """Figures by key (a scenario or a lab), printed in the terminal summary."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("lab figures")
    for key, values in _FIGURES.items():
        cells = ", ".join(
            f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )
        terminalreporter.write_line(f"{key}: {cells}")
