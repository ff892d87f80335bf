"""VM selection from an overloaded host: MMT, MU, MC and RS, as CloudSim 5.0 picks.

A policy gets the host's migratable VMs in the host's list order and a
:class:`VmFacts` view, and returns the VM to move, or None when there is none.

>>> facts = VmFacts(ram=np.array([870.0, 613.0, 613.0]), utilisation=np.array([0.5, 0.2, 0.1]),
...                 history=np.zeros((3, 30)), history_size=0, rng=random.Random(1))
>>> SELECTION["mmt"]().select([0, 1, 2], facts), SELECTION["mu"]().select([0, 1, 2], facts)
(1, 2)

Adding a policy: a class with ``name`` and ``select(vms, facts)``, decorated with
:func:`register`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class VmFacts:
    ram: np.ndarray  # MB per VM
    utilisation: np.ndarray  # current CPU utilisation, fraction of the VM's MIPS
    history: np.ndarray  # (vms, W) utilisation history, newest first
    history_size: int  # how many history values every VM has (<= W)
    rng: random.Random


class SelectionPolicy(Protocol):
    name: str

    def select(self, vms: Sequence[int], facts: VmFacts) -> int | None: ...


SELECTION: dict[str, Callable[[], SelectionPolicy]] = {}


def register(cls: Any) -> Any:
    SELECTION[cls.name] = cls
    return cls


def _first_min(vms: Sequence[int], metric: np.ndarray) -> int | None:
    if not vms:
        return None
    values = metric[list(vms)]
    return vms[int(np.argmin(values))]  # argmin: the first on ties


@register
class Mmt:
    """Minimum migration time: the smallest RAM, the first in the list on ties."""

    name = "mmt"

    def select(self, vms: Sequence[int], facts: VmFacts) -> int | None:
        return _first_min(vms, facts.ram)


@register
class Mu:
    """Minimum utilisation (fraction of the VM's MIPS), the first on ties."""

    name = "mu"

    def select(self, vms: Sequence[int], facts: VmFacts) -> int | None:
        return _first_min(vms, facts.utilisation)


@register
class Rs:
    """Random selection, from the run's seeded generator (CloudSim's is unseeded).

    >>> f = VmFacts(np.ones(3), np.ones(3), np.zeros((3, 1)), 0, random.Random(7))
    >>> Rs().select([4, 5, 6], f) in (4, 5, 6), Rs().select([], f)
    (True, None)
    """

    name = "rs"

    def select(self, vms: Sequence[int], facts: VmFacts) -> int | None:
        return facts.rng.choice(list(vms)) if vms else None


def r_squared(y: np.ndarray, others: np.ndarray) -> float | None:
    """R^2 of an OLS fit (with intercept) of ``y`` on the columns of ``others``; None when
    it cannot be fitted (fewer samples than parameters, or an exactly singular design).

    >>> round(r_squared(np.array([1.0, 2.0, 3.0, 5.0]), np.array([[2.0], [4.0], [6.0], [9.0]])), 4)
    0.9936
    >>> r_squared(np.array([1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 4.0]])) is None
    True
    """
    samples, predictors = others.shape
    if predictors + 1 > samples:
        return None
    design = np.column_stack([np.ones(samples), others])
    q, r = np.linalg.qr(design)
    if np.any(np.diag(r) == 0):
        return None
    beta = np.linalg.solve(r, q.T @ y)
    residuals = y - design @ beta
    ssr = float(residuals @ residuals)
    sst = float(((y - y.mean()) ** 2).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(1 - np.float64(ssr) / np.float64(sst))


@register
class Mc:
    """Maximum correlation: the VM whose history the others' histories explain best
    (largest R^2); MMT when a regression cannot be fitted; the first VM when no R^2 > 0.

    >>> h = np.array([[0.1, 0.2, 0.3, 0.4], [0.2, 0.4, 0.6, 0.8], [0.5, 0.1, 0.4, 0.2]])
    >>> f = VmFacts(np.array([3.0, 2.0, 1.0]), np.ones(3), h, 4, random.Random(0))
    >>> Mc().select([0, 1, 2], f)
    0
    >>> f.history_size = 2   # 2 samples for 3 parameters: MMT
    >>> Mc().select([0, 1, 2], f)
    2
    """

    name = "mc"

    def select(self, vms: Sequence[int], facts: VmFacts) -> int | None:
        if not vms:
            return None
        data = facts.history[list(vms), : facts.history_size]
        best, best_metric = 0, 5e-324  # Java's Double.MIN_VALUE
        for i in range(len(vms)):
            metric = r_squared(data[i], np.delete(data, i, axis=0).T)
            if metric is None:
                return Mmt().select(vms, facts)
            if metric > best_metric:
                best, best_metric = i, metric
        return vms[best]


def make(name: str) -> SelectionPolicy:
    try:
        return SELECTION[name]()
    except KeyError:
        raise KeyError(f"unknown selection policy {name!r}; expected one of "
                       f"{', '.join(sorted(SELECTION))}") from None
