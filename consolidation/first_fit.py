"""Placement: first fit, the baseline PABFD is measured against.

A VM goes on the lowest-numbered host that PABFD would accept (not excluded, a PE at least
as fast as the VM's request, enough free MIPS, and, when the host already carries load, not
overloaded by the policy's test with the VM added); power is not looked at. Same arguments
as :func:`~livemig.consolidation.placement.choose_host`, so the two are interchangeable
(:data:`~livemig.consolidation.placement.PLACEMENT`, a policy's ``placement: ff``).

Host 0 is excluded and host 1 lacks the free MIPS, so host 2 wins, although PABFD would
take host 3 (the G4 table is flat between 80 and 90 %: adding the VM there costs nothing):

>>> import numpy as np
>>> from livemig.consolidation.power import power_of
>>> tables = np.array([[86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]] * 4, float)
>>> total = np.full(4, 3720.0)
>>> load = np.array([0.0, 3500.0, 1000.0, 3000.0])
>>> args = (np.array([True, False, False, False]), np.full(4, 1860.0), total - load, load,
...         total, power_of(load / total, tables), tables)
>>> first_fit(500.0, *args, lambda idx: np.zeros(len(idx), bool))
2
>>> from livemig.consolidation.placement import choose_host
>>> choose_host(500.0, *args, lambda idx: np.zeros(len(idx), bool))
3

A loaded host the overload test refuses is skipped; nothing left gives -1:

>>> first_fit(500.0, *args, lambda idx: idx == 2)
3
>>> first_fit(5000.0, *args, lambda idx: np.zeros(len(idx), bool))
-1
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def first_fit(
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
    """The first host that can take a VM requesting ``request`` MIPS (see the module doc),
    or -1. ``total_mips``, ``power_now`` and ``tables`` are unused (PABFD's signature)."""
    from livemig.consolidation.placement import candidate_hosts

    idx = candidate_hosts(request, excluded, pe_mips, available, load_mips, overloaded_after)
    return int(idx[0]) if idx.size else -1
