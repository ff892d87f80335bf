"""Shared fixtures of the unit, orchestrator and simulator tests.

* ``tests/`` is put on ``sys.path`` so that tests can ``import fakes``
  (pytest runs with ``--import-mode=importlib``, which adds nothing itself).
* ``sim_drivers``: every :class:`SimulatedDriver` built during the test, so a
  test that goes through :func:`run_scenario` can inspect the driver's facts
  afterwards, or register ``sim_drivers.on_start`` hooks that get each new
  driver (e.g. to start a SimPy process that aborts a job at a given time).
* without libvirt-python, lab modules that import it are collected as one ``lab`` item
  each (``needs_libvirt.py``), so ``-m "not lab"`` collects without errors.
* ``status_history``: every status each migration record went through, in
  order (``accepted`` first), observed by wrapping the state store.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from needs_libvirt import pytest_collect_file  # noqa: E402, F401 - a collection hook

from livemig.core.model import MigrationStatus  # noqa: E402
from livemig.core.state import StateStore  # noqa: E402
from livemig.drivers.simulated import SimulatedDriver  # noqa: E402


class SimDrivers(list):
    """The simulated drivers built so far; ``on_start`` hooks run on each new one."""

    def __init__(self) -> None:
        super().__init__()
        self.on_start: list[Callable[[SimulatedDriver], None]] = []


@pytest.fixture
def sim_drivers(monkeypatch: pytest.MonkeyPatch) -> SimDrivers:
    built = SimDrivers()
    original = SimulatedDriver.__init__

    def init(self: SimulatedDriver, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        built.append(self)
        for hook in built.on_start:
            hook(self)

    monkeypatch.setattr(SimulatedDriver, "__init__", init)
    return built


@pytest.fixture
def status_history(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[MigrationStatus]]:
    history: dict[int, list[MigrationStatus]] = defaultdict(list)
    add, update = StateStore.add_migration, StateStore.update_migration

    def add_migration(self: StateStore, **fields: Any) -> Any:
        record = add(self, **fields)
        history[record.id].append(record.status)
        return record

    def update_migration(self: StateStore, migration_id: int, **changes: Any) -> Any:
        record = update(self, migration_id, **changes)
        if history[migration_id][-1] != record.status:
            history[migration_id].append(record.status)
        return record

    monkeypatch.setattr(StateStore, "add_migration", add_migration)
    monkeypatch.setattr(StateStore, "update_migration", update_migration)
    return history
