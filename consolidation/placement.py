"""Placement: power-aware best fit decreasing (PABFD) and the underloaded-host pick.

PABFD puts a VM on the host whose power grows least, ``P(u_after) - P(u_now)``, among the
hosts that are not excluded, have a PE at least as fast as the VM's request and enough free
MIPS, and, when they already carry load, would not become overloaded by the policy's test
with the VM added. The first host wins ties. ``P(u_now)`` is the host's power as last
measured (CloudSim reads ``host.getPower()``, which a plan does not update).

The host at 81 % grows least (the G4 table is flat between 80 and 90 %); without it, the
idle host beats the one at 50 %; a host the test calls overloaded after is skipped:

>>> tables = np.array([[86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]] * 3, float)
>>> total = np.full(3, 3720.0)
>>> load = np.array([0.0, 1860.0, 3000.0])
>>> choose_host(500.0, np.zeros(3, bool), np.full(3, 1860.0), total - load, load, total,
...             power_of(load / total, tables), tables, lambda idx: np.zeros(len(idx), bool))
2
>>> choose_host(500.0, np.array([False, False, True]), np.full(3, 1860.0), total - load,
...             load, total, power_of(load / total, tables), tables,
...             lambda idx: np.zeros(len(idx), bool))
0
>>> choose_host(500.0, np.zeros(3, bool), np.full(3, 1860.0), total - load, load, total,
...             power_of(load / total, tables), tables, lambda idx: idx == 2)
0

:data:`PLACEMENT` names the placements a policy can choose (``placement:``), PABFD by default:

>>> sorted(PLACEMENT)
['ff', 'pabfd']

The underloaded host is the least utilised eligible host with utilisation in (0, 1):

>>> least_utilised(np.array([0.3, 0.0, 0.2, 0.2]), np.array([True, True, True, True]))
2
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from livemig.consolidation.power import power_at, power_of  # noqa: F401 - doctest


def choose_host(
    request: float,
    excluded: np.ndarray,
    pe_mips: np.ndarray,
    available: np.ndarray,
    load_mips: np.ndarray,
    total_mips: np.ndarray,
    power_now: np.ndarray,
    tables: np.ndarray,
    overloaded_after: Callable[[np.ndarray], np.ndarray],
) -> int:
    """PABFD's host for one VM requesting ``request`` MIPS (see the module doc), or -1.

    ``overloaded_after(idx)`` tells, for the hosts ``idx``, whether the policy's test says
    overloaded with the VM added; it is asked only for hosts that carry load.
    """
    idx = candidate_hosts(request, excluded, pe_mips, available, load_mips, overloaded_after)
    if idx.size == 0:
        return -1
    u_after = (load_mips[idx] + request) / total_mips[idx]
    if np.any(u_after > 1):
        raise ValueError("PABFD: a candidate host would exceed 100 % (free MIPS inconsistent)")
    diff = power_at(u_after, tables, idx) - power_now[idx]
    return int(idx[int(np.argmin(diff))])


def candidate_hosts(
    request: float,
    excluded: np.ndarray,
    pe_mips: np.ndarray,
    available: np.ndarray,
    load_mips: np.ndarray,
    overloaded_after: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """The hosts (ascending indices) that may take a VM requesting ``request`` MIPS: not
    excluded, a PE at least that fast, enough free MIPS, and, for a host that carries load,
    not overloaded by the policy's test with the VM added (PABFD and first fit alike).

    >>> import numpy as np
    >>> candidate_hosts(500.0, np.array([True, False, False, False]), np.full(4, 1860.0),
    ...                 np.array([720.0, 220.0, 2720.0, 0.0]), np.array([0.0, 3500, 1000, 0]),
    ...                 lambda idx: idx == 2).tolist()
    []
    >>> candidate_hosts(500.0, np.zeros(3, bool), np.full(3, 1860.0), np.full(3, 1000.0),
    ...                 np.array([0.0, 10, 10]), lambda idx: idx == 1).tolist()
    [0, 2]
    """
    idx = np.flatnonzero(~excluded & (pe_mips >= request) & (available >= request))
    loaded = load_mips[idx] != 0
    if loaded.any():
        bad = np.zeros(idx.size, dtype=bool)
        bad[loaded] = overloaded_after(idx[loaded])
        idx = idx[~bad]
    return idx


PLACEMENT: dict[str, Callable[..., int]] = {}
"""Placement name -> function with :func:`choose_host`'s arguments (filled below)."""


def least_utilised(utilisation: np.ndarray, eligible: np.ndarray) -> int:
    """Index of the eligible host with the lowest utilisation in (0, 1), first on ties; -1."""
    mask = eligible & (utilisation > 0) & (utilisation < 1)
    if not mask.any():
        return -1
    values = np.where(mask, utilisation, np.inf)
    return int(np.argmin(values))


def _register() -> None:
    from livemig.consolidation.first_fit import first_fit

    PLACEMENT.update({"pabfd": choose_host, "ff": first_fit})


_register()
