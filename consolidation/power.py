"""Host power models given as a table of watts at 0 %, 10 %, ..., 100 % CPU utilisation.

Between two table points power is linear in utilisation. A utilisation outside [0, 1]
is an error (CloudSim's model throws there too). The two SPECpower servers of the
reference experiment ship as named models:

>>> g4 = MODELS["hp-ml110-g4"]
>>> g4.power(0.0), g4.power(0.45), g4.power(1.0)
(86.0, 100.75, 117.0)
>>> float(g4.power_array([0.0, 0.05])[1])
87.7
>>> g4.power(1.2)
Traceback (most recent call last):
ValueError: utilisation 1.2 outside [0, 1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerModel:
    """Watts at utilisation 0, 0.1, ..., 1 (11 values, non-decreasing not required)."""

    name: str
    watts: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.watts) != 11:
            raise ValueError(f"power model {self.name!r}: expected 11 watt values "
                             f"(0 %, 10 %, ..., 100 %), got {len(self.watts)}")
        if any(w < 0 for w in self.watts):
            raise ValueError(f"power model {self.name!r}: watts must be >= 0")

    @property
    def max_power(self) -> float:
        return self.watts[-1]

    def power(self, utilisation: float) -> float:
        """Watts at ``utilisation`` in [0, 1], linear between table points."""
        if not 0.0 <= utilisation <= 1.0:
            raise ValueError(f"utilisation {utilisation:g} outside [0, 1]")
        return float(self.power_array(np.array([utilisation]))[0])

    def power_array(self, utilisation: Sequence[float] | np.ndarray) -> np.ndarray:
        """:meth:`power` over an array (no range check: clip first if needed)."""
        return power_of(np.asarray(utilisation, dtype=float), np.asarray(self.watts)[None, :])


def power_of(utilisation: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Watts for each utilisation in [0, 1] with the table of its row (``tables``:
    (n, 11), or (1, 11) for one table for all).

    >>> float(power_of(np.array([0.25]), np.array([MODELS["hp-ml110-g5"].watts]))[0])
    103.0
    """
    scaled = utilisation * 10.0
    low = np.minimum(scaled.astype(np.intp), 9)
    if tables.shape[0] == 1:
        p_low = tables[0, low]
        p_high = tables[0, low + 1]
    else:
        rows = np.arange(len(utilisation))
        p_low = tables[rows, low]
        p_high = tables[rows, low + 1]
    return p_low + (p_high - p_low) * (scaled - low)


def power_at(utilisation: np.ndarray, tables: np.ndarray, hosts: np.ndarray) -> np.ndarray:
    """:func:`power_of` for the hosts ``hosts`` (rows of ``tables``), without copying rows.

    >>> t = np.array([MODELS["hp-ml110-g4"].watts, MODELS["hp-ml110-g5"].watts])
    >>> power_at(np.array([0.25, 1.0]), t, np.array([1, 0])).tolist()
    [103.0, 117.0]
    """
    scaled = utilisation * 10.0
    low = np.minimum(scaled.astype(np.intp), 9)
    p_low = tables[hosts, low]
    return p_low + (tables[hosts, low + 1] - p_low) * (scaled - low)


MODELS: dict[str, PowerModel] = {
    "hp-ml110-g4": PowerModel("hp-ml110-g4", (86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112,
                                              114, 117)),
    "hp-ml110-g5": PowerModel("hp-ml110-g5", (93.7, 97, 101, 105, 110, 116, 121, 125, 129,
                                              133, 135)),
}


def model(name: str) -> PowerModel:
    """A named model; ``KeyError`` listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown power model {name!r}; expected one of "
                       f"{', '.join(sorted(MODELS))}") from None


def energy_joules(p_from: np.ndarray, p_to: np.ndarray, u_from: np.ndarray,
                  seconds: float) -> np.ndarray:
    """Energy of each host over an interval: the trapezoid of its power at both ends,
    0 for a host idle at the start (an idle host counts as switched off).

    >>> energy_joules(np.array([100.0, 86.0]), np.array([110.0, 99.0]),
    ...               np.array([0.5, 0.0]), 10.0).tolist()
    [1050.0, 0.0]
    """
    return np.where(u_from == 0, 0.0, (p_from + (p_to - p_from) / 2) * seconds)
