"""Where a guest's non-zero memory lies, and what QEMU's round 0 has left to walk.

QEMU's round 0 walks guest RAM in address order. A zero page costs it next to nothing (a
few header bytes), a non-zero page its 4 KiB on the wire, so round 0's time goes by the
non-zero bytes sent. But until round 0 has walked past a page, zero or not, the page is
in the dirty bitmap, and QEMU's pending estimate (what it compares with its switchover
threshold) counts it. How much of the estimate is left after ``s`` non-zero bytes depends
on where they lie:

* **spread evenly** (no layout known; the default), ``s`` bytes take round 0
  ``s x RAM / used`` into RAM: each unsent non-zero byte stands for ``RAM / used`` bytes
  of the estimate (:attr:`RamLayout.even_weight`);
* **a layout**, the share of non-zero pages in each of ``N`` equal slices of RAM, lowest
  address first (``memory_layout`` of a VM; the lab guest reports its own,
  ``docs/guest-ram-layout.md``): the non-zero bytes fill the slices in order, the walk
  crosses a slice of zero pages at once, and the estimate is the RAM not walked yet.

A layout gives the shape only: it is scaled so that its slices hold the VM's
``used_memory``.

A 512 MiB guest with 196 MiB non-zero, most of it low in RAM (a lab guest's dump): with
100 MiB left to send, spread evenly the estimate is 261 MiB, with its layout 397 MiB (the
walk has passed 115 MiB of RAM). With 12 MiB left (the block at the top of its RAM) the
layout still counts 241 MiB, nearly all zero pages, where evenly spread would count 31
MiB: QEMU's trace of this guest paused at an estimate of 255 MiB with little non-zero
data left, which only the layout explains.

>>> MiB = 2**20
>>> even = RamLayout.of(512 * MiB, 196 * MiB)
>>> low = RamLayout.of(512 * MiB, 196 * MiB, (0.65, 0.75, 1, 1, 1, 0.08, 0.85, 0.42,
...                                           0.03, 0, 0, 0, 0, 0, 0, 0.36))
>>> [round(lay.estimate(100 * MiB) / MiB, 1) for lay in (even, low)]
[261.2, 396.6]
>>> [round(lay.estimate(12 * MiB) / MiB, 1) for lay in (even, low)]
[31.3, 241.0]

The other way round: how much non-zero data can be left when the estimate is at most 255
MiB.

>>> [round(lay.unsent_within(255 * MiB) / MiB, 1) for lay in (even, low)]
[97.6, 12.4]
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from itertools import accumulate


@dataclass(frozen=True)
class RamLayout:
    """Round 0's pending estimate as a function of its unsent non-zero bytes.

    ``ram`` bytes walked (None: not known, the estimate is the unsent bytes themselves),
    ``used`` of them non-zero, laid out by ``shares`` (one per equal slice of ``ram``,
    lowest address first; () = evenly). Build it with :meth:`of`.
    """

    ram: float | None
    used: float
    shares: tuple[float, ...] = ()
    # non-zero bytes below each slice boundary, scaled to ``used`` (len(shares) + 1 values)
    _bounds: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, ram: float | None, used: float, shares: tuple[float, ...] = ()) -> RamLayout:
        """The layout of ``used`` non-zero bytes in ``ram`` (shares as in the class doc;
        ignored without a RAM size, no used memory, or no share above 0).

        >>> RamLayout.of(4.0, 2.0, (1, 0, 0, 1))._bounds
        (0.0, 1.0, 1.0, 1.0, 2.0)
        >>> RamLayout.of(None, 2.0, (1, 0)).shares, RamLayout.of(4.0, 2.0, (0, 0)).shares
        ((), ())
        """
        total = math.fsum(shares)
        if not ram or used <= 0 or total <= 0:
            return cls(ram, used)
        bounds = tuple(used * c / total for c in accumulate(shares, initial=0.0))
        return cls(ram, used, tuple(shares), bounds[:-1] + (float(used),))

    @property
    def even_weight(self) -> float:
        """Bytes of estimate per unsent non-zero byte when spread evenly: RAM / used, at
        least 1 (1 when the RAM is not known or nothing is used)."""
        if not self.ram or self.used <= 0:
            return 1.0
        return max(1.0, self.ram / self.used)

    def estimate(self, unsent: float) -> float:
        """Bytes of round 0 still in QEMU's bitmap when ``unsent`` non-zero bytes are left.

        >>> lay = RamLayout.of(4.0, 2.0, (1, 0, 0, 1))  # 4 slices of 1: full, zero, zero, full
        >>> [lay.estimate(u) for u in (2.0, 1.5, 1.0, 0.5, 0.0)]
        [4.0, 3.5, 1.0, 0.5, 0.0]
        >>> RamLayout.of(4.0, 2.0).estimate(1.5), RamLayout.of(None, 2.0).estimate(1.5)
        (3.0, 1.5)
        """
        if not self.shares:
            return self.even_weight * unsent
        assert self.ram is not None
        sent = self.used - unsent
        # a whisker over what was sent: a walk that has just sent a slice's last non-zero
        # byte is past the zero slices after it, whatever the rounding of ``unsent``
        k = bisect.bisect_right(self._bounds, sent + self.used * 1e-12) - 1
        n = len(self.shares)
        if k >= n:
            return 0.0
        lo, hi = self._bounds[k], self._bounds[k + 1]
        walked = (k + max(0.0, sent - lo) / (hi - lo)) * self.ram / n
        return max(0.0, self.ram - walked)

    def unsent_within(self, estimate: float) -> float:
        """The most non-zero bytes round 0 can have left when its estimate is at most
        ``estimate`` (0 when it must have sent everything).

        >>> lay = RamLayout.of(4.0, 2.0, (1, 0, 0, 1))
        >>> [lay.unsent_within(e) for e in (4.0, 3.5, 2.5, 1.0, 0.5, -1.0)]
        [2.0, 1.5, 1.0, 1.0, 0.5, 0.0]
        >>> RamLayout.of(4.0, 2.0).unsent_within(3.0)
        1.5
        """
        if estimate <= 0:
            return 0.0
        if not self.shares:
            return min(self.used, estimate / self.even_weight)
        assert self.ram is not None
        if estimate >= self.ram:
            return self.used
        n = len(self.shares)
        at = (self.ram - estimate) / self.ram * n  # the walk's position, in slices
        k = min(int(at), n - 1)
        below = self._bounds[k] + (at - k) * (self._bounds[k + 1] - self._bounds[k])
        return max(0.0, self.used - below)
