"""Where the controller gets CPU utilisation: a small driver-facing interface.

The consolidation policies need, per VM, its CPU utilisation now (a fraction of its
vCPUs' capacity). In the simulator a trace gives it (:class:`TraceUtilisation`); a
real driver provides it from libvirt's CPU statistics by implementing
:class:`UtilisationSource` (one method), so the same controller can run on real hosts.

>>> import numpy as np
>>> source = TraceUtilisation(("a", "b"), np.array([[0.1, 0.3, 0.3], [0.0, 1.0, 1.0]]), 300.0)
>>> [round(source.cpu_utilisation(name, 150.0), 3) for name in ("a", "b")]
[0.2, 0.5]
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from livemig.consolidation.traces import utilisation_at


class UtilisationSource(Protocol):
    def cpu_utilisation(self, instance: str, now: float) -> float:
        """The instance's CPU utilisation at ``now``, in [0, 1] of its vCPUs."""
        ...


class TraceUtilisation:
    """Utilisation from traces, linear between samples (see :mod:`traces`)."""

    def __init__(self, names: tuple[str, ...], samples: np.ndarray, interval: float) -> None:
        self.index = {name: i for i, name in enumerate(names)}
        self.samples = samples
        self.interval = interval

    def cpu_utilisation(self, instance: str, now: float) -> float:
        row = self.samples[self.index[instance]: self.index[instance] + 1]
        return float(utilisation_at(row, now, self.interval)[0])
