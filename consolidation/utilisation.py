"""Where the controller gets CPU utilisation: a small driver-facing interface.

The consolidation policies need, per VM, its CPU utilisation now (a fraction of its
vCPUs' capacity). In the simulator a trace gives it (:class:`TraceUtilisation`: the same
numbers the simulated driver's ``cpu_utilisation`` answers, read for all VMs at once); on
real hosts the driver measures it (:class:`DriverUtilisation`, from libvirt's CPU
statistics), so the same controller runs on both.

What a real host measures is the CPU the guest *got*. On a contended host that is less
than it *wanted*: its vCPU waits in the host's run queue (libvirt's ``vcpu.N.delay``). On
this 2-core machine, shared with other work, an 80 % guest got 17-33 % and waited 49-68 %,
while got + waited stayed within 0.02-0.05 of its 80 % (README, "CPU utilisation on real
hosts"). A consolidation policy asks whether a host can serve its VMs' demand, so
:class:`DriverUtilisation` uses got + waited (``cpu_usage``'s ``utilisation +
waiting``) where the driver reports waiting, and the plain utilisation otherwise.

>>> import numpy as np
>>> source = TraceUtilisation(("a", "b"), np.array([[0.1, 0.3, 0.3], [0.0, 1.0, 1.0]]), 300.0)
>>> [round(source.cpu_utilisation(name, 150.0), 3) for name in ("a", "b")]
[0.2, 0.5]
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

import numpy as np

from livemig.core.cpu_trace import utilisations_at


class UtilisationSource(Protocol):
    def cpu_utilisation(self, instance: str, now: float) -> float:
        """The instance's CPU utilisation at ``now``, in [0, 1] of its vCPUs."""
        ...


class TraceUtilisation:
    """Utilisation from traces, linear between samples
    (:func:`livemig.core.cpu_trace.utilisations_at`)."""

    def __init__(self, names: tuple[str, ...], samples: np.ndarray, interval: float) -> None:
        self.index = {name: i for i, name in enumerate(names)}
        self.samples = samples
        self.interval = interval

    def cpu_utilisation(self, instance: str, now: float) -> float:
        row = self.samples[self.index[instance]: self.index[instance] + 1]
        return float(utilisations_at(row, now, self.interval)[0])

    def every(self, now: float) -> np.ndarray:
        """Every VM's utilisation at ``now``, in ``names`` order."""
        return utilisations_at(self.samples, now, self.interval)


class DriverUtilisation:
    """Utilisation as a driver measures it (see the module doc): each VM's demand,
    ``cpu_usage(name).utilisation + .waiting`` capped at 1 when the driver has
    ``cpu_usage``, else ``cpu_utilisation(name)``. All VMs are read together, at most
    once every ``refresh`` seconds of ``now`` (a real reading is a window since the
    previous one; sooner calls get the last readings). A VM that cannot be read keeps
    its last reading (0 before any).

    >>> from types import SimpleNamespace
    >>> class Fake:
    ...     def cpu_usage(self, name):
    ...         return SimpleNamespace(utilisation=0.25, waiting=0.5 if name == "a" else None)
    >>> source = DriverUtilisation(Fake(), ("a", "b"), refresh=10.0)
    >>> source.every(0.0).tolist(), source.cpu_utilisation("b", 5.0)
    ([0.75, 0.25], 0.25)
    """

    def __init__(self, driver: Any, names: tuple[str, ...], refresh: float) -> None:
        self.driver = driver
        self.names = names
        self.refresh = refresh
        self.readings = dict.fromkeys(names, 0.0)
        self.got = dict.fromkeys(names, 0.0)  # the utilisation alone (what the VM got)
        self.read_at: float | None = None
        self.reads = 0  # how many times every VM was read

    def _demand(self, name: str) -> float:
        usage = getattr(self.driver, "cpu_usage", None)
        if usage is None:
            self.got[name] = float(self.driver.cpu_utilisation(name))
            return self.got[name]
        used = usage(name)
        self.got[name] = used.utilisation
        return min(1.0, used.utilisation + (used.waiting or 0.0))

    def every(self, now: float) -> np.ndarray:
        if self.read_at is None or now - self.read_at >= self.refresh:
            for name in self.names:
                # an unreachable host, a lost guest: keep the last reading
                with contextlib.suppress(Exception):
                    self.readings[name] = self._demand(name)
            self.read_at = now
            self.reads += 1
        return np.array([self.readings[name] for name in self.names])

    def cpu_utilisation(self, instance: str, now: float) -> float:
        self.every(now)
        return self.readings[instance]
