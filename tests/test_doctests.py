"""Every doctest of ``livemig.core``, ``livemig.drivers`` (with ``drivers.lab``),
``livemig.calibration``, ``livemig.analysis``, ``livemig.consolidation`` and
``livemig.sweep`` run here.

pytest's ``--doctest-modules`` only collects modules under ``testpaths`` (``tests/``), so the
package's own examples would not run without this module. Each module is imported by
name and its doctests run with :func:`doctest.testmod`, one test per module. The modules
that import libvirt-python (``drivers/libvirt_*.py``) are taken bound to the fake libvirt
(``tests/fakelibvirt``), so they run in the sim lane without libvirt-python.
:data:`WITH_DOCTESTS` lists the modules that have examples: a module that loses them, or
gains them, fails :func:`test_the_modules_with_doctests_are_the_expected_ones` until the
list is updated.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from fakelibvirt.driver import MODULES as LIBVIRT_MODULES
from fakelibvirt.driver import fake_bound_modules

import livemig.analysis
import livemig.calibration
import livemig.consolidation
import livemig.core
import livemig.drivers
import livemig.hosts
import livemig.sweep

#: ``python -m livemig.drivers.lab`` runs the lab command when imported.
NOT_IMPORTED = {"livemig.drivers.lab.__main__"}
WITH_DOCTESTS = {
    *(f"livemig.core.{m}" for m in (
        "check_suite", "checks", "cli", "cpu_trace", "expectations", "flags", "invariants",
        "orchestrator", "plots", "policy", "profile", "progress", "results", "scenario",
        "scenario_events", "scheduler", "state", "units", "yaml_nodes")),
    *(f"livemig.drivers.{m}" for m in (
        "ansible_faults", "cpu_stats", "guests", "libvirt_conn", "libvirt_domains",
        "libvirt_jobs", "network", "precopy", "ram_layout", "sim_hosts")),
    "livemig.drivers",
    *(f"livemig.drivers.lab.{m}" for m in (
        "ansible_inventory", "boot_disk", "daemons", "firewall", "guest", "hugepages", "lab",
        "layout", "pki", "sshd", "statedir")),
    *(f"livemig.calibration.{m}" for m in (
        "compare", "fit", "matrix", "models", "qemu_trace", "repeats", "run", "truth")),
    *(f"livemig.analysis.{m}" for m in ("load", "optimum", "report", "snapshot")),
    *(f"livemig.consolidation.{m}" for m in (
        "commands", "first_fit", "optimality", "overload", "placement", "power", "reference",
        "run", "scenario",
        "selection", "snapshot", "traces", "utilisation", "watcher")),
    *(f"livemig.hosts.{m}" for m in ("commands", "inventory_check", "playbook_run")),
    *(f"livemig.sweep.{m}" for m in ("cells", "kinds", "paths", "progress", "spec", "table")),
}


PACKAGES = (livemig.core, livemig.drivers, livemig.calibration, livemig.analysis,
            livemig.consolidation, livemig.hosts, livemig.sweep)


def module_names() -> list[str]:
    """The packages and every module under them, by name."""
    names = ["livemig.core", "livemig.drivers", "livemig.calibration", "livemig.analysis",
             "livemig.consolidation", "livemig.hosts", "livemig.sweep"]
    for package in PACKAGES:
        names += [m.name for m in pkgutil.walk_packages(package.__path__,
                                                        package.__name__ + ".")]
    return sorted(set(names) - NOT_IMPORTED)


@contextmanager
def loaded(name: str) -> Iterator[ModuleType]:
    """The module ``name``; a libvirt one bound to the fake, and in ``sys.modules`` while
    used (doctest finds a function's module by its ``__module__``)."""
    short = name.rpartition(".")[2]
    if name.startswith("livemig.drivers.") and short in LIBVIRT_MODULES:
        with fake_bound_modules() as mods:
            yield getattr(mods, short.removeprefix("libvirt_"))
    else:
        yield importlib.import_module(name)


def doctest_count(module: ModuleType) -> int:
    return sum(len(t.examples) for t in doctest.DocTestFinder().find(module))


@pytest.mark.parametrize("name", module_names())
def test_doctests_pass(name: str) -> None:
    with loaded(name) as module:
        result = doctest.testmod(module, name=name, report=True)
        examples = doctest_count(module)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
    assert result.attempted == examples


def test_the_modules_with_doctests_are_the_expected_ones() -> None:
    found = set()
    for name in module_names():
        with loaded(name) as module:
            if doctest_count(module) > 0:
                found.add(name)
    assert found == WITH_DOCTESTS


def test_every_module_is_visited() -> None:
    """Each ``.py`` file of the packages (but ``__main__``) is one module name above."""
    expected = set()
    for package in PACKAGES:
        root = Path(package.__path__[0])
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            expected.add(".".join((package.__name__, *parts)))
    assert set(module_names()) == expected - NOT_IMPORTED
    assert len(expected) > 40
