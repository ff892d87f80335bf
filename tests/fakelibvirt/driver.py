"""livemig's real driver (``drivers/libvirt_*.py``) running on the fake libvirt.

:func:`driver_modules` imports the driver's four modules afresh with
:mod:`fakelibvirt.libvirt` standing in for ``libvirt``, then puts ``sys.modules`` back as
it was: the real driver (for the lab tests) and the faked one live side by side in one
process, and the real libvirt-python need not be installed. :func:`fake_inventory` writes
the inventory file the driver reads (in a temporary directory: console logs, the guest
"image"), :func:`fake_driver` builds a ``LibvirtDriver`` on a :class:`World`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import simpy.rt

import livemig.drivers
from fakelibvirt import libvirt as fake_libvirt
from fakelibvirt.world import World
from livemig.core.model import Scenario
from livemig.drivers.lab.inventory import HostEntry, Inventory, write_inventory

MODULES = ("libvirt_jobs", "libvirt_domains", "libvirt_conn", "libvirt_real")
_loaded: SimpleNamespace | None = None


@contextmanager
def _modules_swapped(modules: dict[str, ModuleType | None]) -> Iterator[None]:
    """``sys.modules`` (and ``livemig.drivers``' attributes) with ``modules`` in place
    (None: absent), put back as they were afterwards."""
    names = ["libvirt", *(f"livemig.drivers.{m}" for m in MODULES)]
    saved = {n: sys.modules.get(n) for n in names}
    attrs = {m: getattr(livemig.drivers, m, None) for m in MODULES}
    try:
        for name in names:
            _set(name, modules.get(name))
        yield
    finally:
        for name, module in saved.items():
            _set(name, module)
        for m, module in attrs.items():
            if module is None:
                if hasattr(livemig.drivers, m):
                    delattr(livemig.drivers, m)
            else:
                setattr(livemig.drivers, m, module)


def _set(name: str, module: ModuleType | None) -> None:
    if module is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = module


def driver_modules() -> SimpleNamespace:
    """The driver's modules bound to the fake (``.jobs``, ``.domains``, ``.conn``,
    ``.real``), imported once per process."""
    global _loaded
    if _loaded is None:
        with _modules_swapped({"libvirt": fake_libvirt}):
            mods = {m: importlib.import_module(f"livemig.drivers.{m}") for m in MODULES}
        _loaded = SimpleNamespace(jobs=mods["libvirt_jobs"], domains=mods["libvirt_domains"],
                                  conn=mods["libvirt_conn"], real=mods["libvirt_real"])
    return _loaded


@contextmanager
def fake_bound_modules() -> Iterator[SimpleNamespace]:
    """:func:`driver_modules`, also in ``sys.modules`` for the duration (tools that find a
    function's module by its ``__module__``, like ``doctest``, then find these)."""
    mods = driver_modules()
    with _modules_swapped({"libvirt": fake_libvirt, **{
            f"livemig.drivers.{m}": getattr(mods, m.removeprefix("libvirt_")) for m in MODULES}}):
        yield mods


def fake_inventory(world: World, directory: Path, *, storage: str = "shared") -> Path:
    """An inventory of ``world``'s hosts in ``directory`` (no lab name, no namespaces:
    the driver refuses ``inject_fault``; faults go through :meth:`World.fault`)."""
    consoles = directory / "consoles"
    consoles.mkdir(parents=True, exist_ok=True)
    instances = directory / "instances"
    inv = Inventory(
        lab="", lab_dir=str(directory), storage=storage, instances_path=str(instances),
        console_dir=str(consoles), storage_pool="instances", network="198.18.0.0/24",
        bridge={"name": "fake-br", "address": "198.18.0.1"},
        image={"kernel": str(directory / "vmlinuz"), "initrd": str(directory / "initrd.img")},
        hosts=[HostEntry(name=h.name, address=h.address, uri=h.uri, netns="",
                         host_uuid=h.uuid, instances_dir=str(instances))
               for h in world.hosts.values()],
    )
    return write_inventory(inv, directory / "inventory.yaml")


def fake_ansible_inventory(world: World, directory: Path, *, storage: str = "shared",
                           group_vars: dict[str, str] | None = None) -> Path:
    """An Ansible inventory (INI) of ``world``'s hosts, as for real KVM hosts: group
    ``kvm_hosts``, each host's ``libvirt_uri``, the pool path and storage as group vars."""
    lines = ["[kvm_hosts]"]
    lines += [f"{h.name} ansible_host={h.address} libvirt_uri={h.uri}"
              for h in world.hosts.values()]
    variables = {"instances_path": "/var/lib/libvirt/instances", "storage": storage,
                 **(group_vars or {})}
    lines += ["", "[kvm_hosts:vars]", *(f"{k}={v}" for k, v in variables.items())]
    path = directory / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return path


def fake_driver(world: World, scenario: Scenario, directory: Path, *, factor: float = 0.1,
                storage: str = "shared", inventory: Path | None = None, **kwargs: Any) -> Any:
    """A ``LibvirtDriver`` (bound to the fake) for ``scenario`` on ``world``, whose clock
    runs ``1 / factor`` times faster than real time (``RealtimeEnvironment(factor)``);
    ``inventory``: that file instead of the lab-style one written here."""
    world.install()
    path = inventory or directory / "inventory.yaml"
    if not path.exists():
        fake_inventory(world, directory, storage=storage)
    env = simpy.rt.RealtimeEnvironment(factor=factor, strict=False)
    return driver_modules().real.LibvirtDriver(env, scenario, inventory=path, **kwargs)


def two_host_world(hosts: tuple[str, str] = ("lab1", "lab2"), **options: Any) -> World:
    """Two 4 GiB, 4-CPU hosts of the same CPU on one shared ``instances`` pool."""
    from fakelibvirt.world import Pool

    world = World(**options)
    pool = Pool()
    for name in hosts:
        world.add_host(name, pool=pool)
    return world
