"""A VM's CPU utilisation from its trace: one implementation for the simulator, the fake
libvirt, the lab's checks and the consolidation controller.

A trace is a list of samples of the VM's vCPU utilisation, one every ``interval`` seconds
from time 0; the utilisation is linear between samples ``k = floor(t / interval)`` and
``k + 1`` and the last sample holds after the end (CloudSim's
``UtilizationModelPlanetLab``, whose arithmetic :func:`utilisations_at` follows, so the
``cloudsim`` mode stays CloudSim's to the bit). Before 0 the first sample holds. A VM
without a trace has no CPU demand modelled: 0. The lab guest burns the same trace
(``drivers/lab/guest/dirtier.c`` computes it the same way, from the moment its workload
starts).

* :func:`utilisations_at`: many VMs at once, fractions (a NumPy row per VM, its last
  sample repeated once: the consolidation traces);
* :func:`utilisation_at`: one VM's ``cpu_trace`` (percent, as scenarios give it), built on
  the former, so a VM reads the same bits both ways.

>>> trace = (80.0, 20.0, 50.0)
>>> [round(utilisation_at(trace, 300.0, t), 12) for t in (0, 150, 300, 450, 600, 9000)]
[0.8, 0.5, 0.2, 0.35, 0.5, 0.5]
>>> utilisation_at((), 300.0, 42.0), utilisation_at((35.0,), 300.0, 1e6)
(0.0, 0.35)
>>> rows = np.array([[0.1, 0.3, 0.3], [0.0, 1.0, 1.0]])
>>> utilisations_at(rows, 150.0, 300.0).tolist(), utilisations_at(rows, 450.0, 300.0).tolist()
([0.2, 0.5], [0.3, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def utilisations_at(samples: np.ndarray, t: float, interval: float) -> np.ndarray:
    """Every row's utilisation at ``t`` (fractions; ``samples`` is (VMs, samples + 1), the
    last sample repeated; ``interval`` > 0)."""
    t = max(t, 0.0)
    last = samples.shape[1] - 1
    if t % interval == 0:
        return samples[:, min(int(t // interval), last)].copy()
    k1 = min(math.floor(t / interval), last)
    k2 = min(math.ceil(t / interval), last)
    u1 = samples[:, k1]
    if k2 == k1:
        return u1.copy()
    delta = (samples[:, k2] - u1) / ((k2 - k1) * interval)
    return u1 + delta * (t - k1 * interval)


def utilisation_at(trace: Sequence[float], interval: float, t: float) -> float:
    """The fraction of its vCPUs a VM with ``trace`` (percent samples every ``interval``
    seconds) uses at time ``t`` (seconds)."""
    if not trace:
        return 0.0
    row = np.array([*trace, trace[-1]], dtype=float) / 100.0
    return float(utilisations_at(row[None, :], t, interval if interval > 0 else math.inf)[0])
