"""Host overload detection: THR, IQR, MAD, LR and LRR, as CloudSim 5.0 computes them.

Every test is vectorised over hosts. Inputs for k hosts:

* ``u``: current CPU demand / capacity (uncapped requests), shape (k,);
* ``history``: the host's utilisation history, newest first, shape (k, W), zero-padded.
  Like CloudSim, the history is trimmed of its trailing zeros (at least one value kept),
  so its length is that of the last non-zero value;
* ``intervals``: for LR/LRR, ``ceil(T_max / interval)`` with T_max the migration time of
  the host's largest-RAM VM.

The adaptive tests fall back to THR 0.7 when the history is too short (IQR, MAD: < 12
values; LR, LRR: < 10). LRR is LR: CloudSim applies its robust weights only when 40 % of
them are <= 0, which never happens.

>>> h = np.array([[0.5] * 12, [0.9, 0.1] + [0.0] * 10])
>>> OVERLOAD["thr"](threshold=0.8).overloaded(np.array([0.85, 0.5]), h, np.ones(2)).tolist()
[True, False]
>>> OVERLOAD["iqr"](safety=1.5).overloaded(np.array([0.99, 0.75]), h, np.ones(2)).tolist()
[False, True]

Adding a policy: a class with ``name`` and ``overloaded(u, history, intervals)``,
decorated with :func:`register`. A policy whose test depends on the history only through
*additive* features (sums over the host's VMs) may also offer ``features(history)`` and
``overloaded_by_features(u, features, intervals)``: the controller then keeps the features
per host instead of re-reading whole histories (LR does: its prediction is linear).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

FALLBACK_THRESHOLD = 0.7


class OverloadPolicy(Protocol):
    name: str

    def overloaded(self, u: np.ndarray, history: np.ndarray,
                   intervals: np.ndarray) -> np.ndarray: ...


OVERLOAD: dict[str, Callable[..., OverloadPolicy]] = {}


def register(cls: Any) -> Any:
    OVERLOAD[cls.name] = cls
    return cls


def history_length(history: np.ndarray) -> np.ndarray:
    """Length after trimming trailing zeros, at least 1 (CloudSim's ``trimZeroTail``).

    >>> history_length(np.array([[0.2, 0.0, 0.3, 0.0], [0.0] * 4])).tolist()
    [3, 1]
    """
    nonzero = history != 0
    width = history.shape[1]
    last = width - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 1)


def java_round(x: np.ndarray) -> np.ndarray:
    """Java's ``Math.round``: halves go up.

    >>> java_round(np.array([3.5, 2.5, -0.5])).tolist()
    [4, 3, 0]
    """
    return np.floor(x + 0.5).astype(np.intp)


def _sorted_prefix(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row's first ``length`` values sorted, +inf after them."""
    cols = np.arange(values.shape[1])[None, :]
    return np.sort(np.where(cols < lengths[:, None], values, np.inf), axis=1)


def median_prefix(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Median of each row's first ``length`` values (mean of the middle two when even).

    >>> median_prefix(np.array([[3.0, 1.0, 2.0, 9.0], [4.0, 1.0, 0.0, 0.0]]),
    ...               np.array([3, 2])).tolist()
    [2.0, 2.5]
    """
    ordered = _sorted_prefix(values, lengths)
    rows = np.arange(len(lengths))
    low = ordered[rows, (lengths - 1) // 2]
    high = ordered[rows, lengths // 2]
    return low + 0.5 * (high - low)


def iqr(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CloudSim's interquartile range: sorted h, ``q1 = h[round(0.25 (n+1)) - 1]``, ``q3`` at 0.75
    (n = 12: the 3rd and the 10th values).

    >>> iqr(np.array([[float(i) for i in range(1, 13)]]), np.array([12])).tolist()
    [7.0]
    """
    ordered = _sorted_prefix(values, lengths)
    rows = np.arange(len(lengths))
    q1 = java_round(0.25 * (lengths + 1)) - 1
    q3 = java_round(0.75 * (lengths + 1)) - 1
    return ordered[rows, q3] - ordered[rows, q1]


def mad(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Median absolute deviation from the median, over each row's first ``length`` values.

    >>> mad(np.array([[1.0, 2.0, 3.0, 4.0, 100.0]]), np.array([5])).tolist()
    [1.0]
    """
    med = median_prefix(values, lengths)
    return median_prefix(np.abs(values - med[:, None]), lengths)


def _above_robust_threshold(
    u: np.ndarray, history: np.ndarray, safety: float,
    spread: Callable[[np.ndarray, np.ndarray], np.ndarray], minimum: int,
) -> np.ndarray:
    """``u > 1 - safety x spread(h)`` where the history has ``minimum`` values, else THR
    0.7: the rule IQR and MAD share, each with its own measure of spread."""
    lengths = history_length(history)
    threshold = 1 - safety * spread(history, lengths)
    return np.where(lengths >= minimum, u > threshold, _fallback(u))


def _fallback(u: np.ndarray) -> np.ndarray:
    return u > FALLBACK_THRESHOLD


@register
@dataclass(frozen=True)
class Thr:
    """Static threshold: overloaded when ``u > threshold``."""

    threshold: float = 0.8
    name = "thr"

    def overloaded(self, u: np.ndarray, history: np.ndarray,
                   intervals: np.ndarray) -> np.ndarray:
        return u > self.threshold


@register
@dataclass(frozen=True)
class Iqr:
    """``u > 1 - safety x IQR(h)`` with >= 12 history values, else THR 0.7.

    >>> h = np.array([[0.1, 0.3] * 6])
    >>> Iqr(1.5).overloaded(np.array([0.71, 0.69]), h[[0, 0]], np.ones(2)).tolist()
    [True, False]
    """

    safety: float = 1.5
    name = "iqr"
    minimum = 12

    def overloaded(self, u: np.ndarray, history: np.ndarray,
                   intervals: np.ndarray) -> np.ndarray:
        return _above_robust_threshold(u, history, self.safety, iqr, self.minimum)


@register
@dataclass(frozen=True)
class Mad:
    """``u > 1 - safety x MAD(h)`` with >= 12 history values, else THR 0.7.

    >>> h = np.array([[0.2, 0.4] * 6])
    >>> Mad(2.5).overloaded(np.array([0.76, 0.74]), h[[0, 0]], np.ones(2)).tolist()
    [True, False]
    """

    safety: float = 2.5
    name = "mad"
    minimum = 12

    def overloaded(self, u: np.ndarray, history: np.ndarray,
                   intervals: np.ndarray) -> np.ndarray:
        return _above_robust_threshold(u, history, self.safety, mad, self.minimum)


def lr_prediction(history: np.ndarray, intervals: np.ndarray, points: int = 10) -> np.ndarray:
    """OLS line through the ``points`` newest values (x = 1..points, oldest first),
    evaluated at ``points + intervals``. The prediction is linear in the values:
    ``y . a + intervals x (y . b)``.

    >>> lr_prediction(np.array([[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]),
    ...               np.array([1])).round(12).tolist()
    [1.1]
    """
    a, b = _lr_weights(points)
    y = history[:, :points]  # newest first: weights reversed in _lr_weights
    return y @ a + intervals * (y @ b)


_LR_WEIGHTS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _lr_weights(points: int) -> tuple[np.ndarray, np.ndarray]:
    if points not in _LR_WEIGHTS:
        x = np.arange(1, points + 1, dtype=float)
        centred = x - x.mean()
        sxx = (centred ** 2).sum()
        a = 1 / points + centred * (points - x.mean()) / sxx
        b = centred / sxx
        _LR_WEIGHTS[points] = (a[::-1].copy(), b[::-1].copy())
    return _LR_WEIGHTS[points]


@register
@dataclass(frozen=True)
class Lr:
    """Local regression: ``safety x prediction >= 1`` with >= 10 values, else THR 0.7.

    A rising host is overloaded before it reaches 100 %:

    >>> rising = np.array([[0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35]])
    >>> Lr(1.2).overloaded(np.array([0.8]), rising, np.array([1])).tolist()
    [True]
    >>> Lr(1.2).overloaded(np.array([0.8]), rising[:, ::-1], np.array([1])).tolist()
    [False]
    """

    safety: float = 1.2
    name = "lr"
    points = 10

    def overloaded(self, u: np.ndarray, history: np.ndarray,
                   intervals: np.ndarray) -> np.ndarray:
        enough = history[:, self.points - 1:].any(axis=1)  # >= points values after trim
        predicted = self.safety * lr_prediction(history, intervals, self.points)
        return np.where(enough, predicted >= 1, _fallback(u))


    def features(self, history: np.ndarray) -> np.ndarray:
        """Additive features: the prediction's two dot products, and the sum of the values
        from the ``points``-th on (> 0 exactly when the trimmed history is long enough).

        >>> h = np.array([[0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35]])
        >>> lr = Lr(1.2)
        >>> bool(lr.overloaded_by_features(np.array([0.8]), lr.features(h), np.array([1]))[0])
        True
        """
        a, b = _lr_weights(self.points)
        y = history[:, : self.points]
        return np.column_stack([y @ a, y @ b, history[:, self.points - 1:].sum(axis=1)])

    def overloaded_by_features(self, u: np.ndarray, features: np.ndarray,
                               intervals: np.ndarray) -> np.ndarray:
        predicted = self.safety * (features[:, 0] + intervals * features[:, 1])
        return np.where(features[:, 2] > 0, predicted >= 1, _fallback(u))


@register
@dataclass(frozen=True)
class Lrr(Lr):
    """Robust local regression; in CloudSim it computes exactly LR (see the module doc)."""

    name = "lrr"


def make(name: str, parameter: float | None = None) -> OverloadPolicy:
    """A policy by name with its parameter (threshold or safety), or its default.

    >>> make("lr", 1.2)
    Lr(safety=1.2)
    """
    try:
        cls = OVERLOAD[name]
    except KeyError:
        raise KeyError(f"unknown overload policy {name!r}; expected one of "
                       f"{', '.join(sorted(OVERLOAD))}") from None
    return cls() if parameter is None else cls(parameter)
