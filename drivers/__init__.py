"""Drivers: the simulated data centre and real libvirt hosts.

Drivers are chosen by name; heavy imports (libvirt) stay inside their module.

>>> sorted(DRIVERS)
['libvirt', 'sim']
"""

from __future__ import annotations

import importlib
from typing import Any

DRIVERS = {
    "sim": ("livemig.drivers.simulated", "SimulatedDriver"),
    "libvirt": ("livemig.drivers.libvirt_real", "LibvirtDriver"),
}


def driver_class(name: str) -> Any:
    """The driver class registered as ``name``; ValueError for an unknown name."""
    try:
        module, attr = DRIVERS[name]
    except KeyError:
        raise ValueError(
            f"unknown driver {name!r}; expected one of {', '.join(sorted(DRIVERS))}"
        ) from None
    return getattr(importlib.import_module(module), attr)
