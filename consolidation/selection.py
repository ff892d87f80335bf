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


def r_squared_each(data: np.ndarray) -> np.ndarray | None:
    """For each row of ``data`` (one VM's history per row), R^2 of an OLS fit with
    intercept of that row on the other rows; None when the fits cannot be made (fewer
    samples than parameters, or an exactly singular design, e.g. an all-zero history),
    where commons-math throws and CloudSim falls back.

    >>> r2 = r_squared_each(np.array([[1.0, 2.0, 3.0, 5.0], [2.0, 4.0, 6.0, 9.0]]))
    >>> [round(float(x), 4) for x in r2]
    [0.9936, 0.9936]
    >>> r_squared_each(np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]])) is None
    True
    """
    n, m = data.shape
    if n > m:  # n - 1 predictors + intercept
        return None
    others = np.array([[j for j in range(n) if j != i] for i in range(n)], dtype=np.intp)
    design = np.empty((n, m, n))
    design[:, :, 0] = 1.0
    if n > 1:
        design[:, :, 1:] = data[others].transpose(0, 2, 1)
    q, r = np.linalg.qr(design)
    if np.any(np.diagonal(r, axis1=1, axis2=2) == 0):
        return None
    beta = np.linalg.solve(r, np.einsum("kmj,km->kj", q, data)[..., None])[..., 0]
    residuals = data - np.einsum("kmj,kj->km", design, beta)
    ssr = (residuals ** 2).sum(axis=1)
    sst = ((data - data.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1 - ssr / sst


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
        metrics = r_squared_each(facts.history[list(vms), : facts.history_size])
        if metrics is None:
            return Mmt().select(vms, facts)
        best, best_metric = 0, 5e-324  # Java's Double.MIN_VALUE; NaN never wins
        for i, metric in enumerate(metrics.tolist()):
            if metric > best_metric:
                best, best_metric = i, metric
        return vms[best]


def make(name: str) -> SelectionPolicy:
    try:
        return SELECTION[name]()
    except KeyError:
        raise KeyError(f"unknown selection policy {name!r}; expected one of "
                       f"{', '.join(sorted(SELECTION))}") from None
