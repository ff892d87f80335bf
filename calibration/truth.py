"""The guest's own truth, read from the lab guest's serial console.

The lab's dirtier (``drivers/lab/guest/dirtier.c``) prints once a second::

    tick N uptime=S dirtied_mib=D behind_ms=B rate_mibps=W nonzero_mib=Z memfree_mib=F

``rate_mibps`` is what it really wrote over the last second; ``nonzero_mib`` is
MemTotal - MemFree, the memory the guest kernel has in use. Pages the kernel reserved
before MemTotal (its image, the page structures) are outside both; the calibration
measures that hidden part from idle cases (see :mod:`livemig.calibration.run`).

Free pages are not zero pages, though (old contents of the unpacked initramfs, dropped
page cache): QEMU sends them too. So before its first tick the dirtier reads its RAM once
through ``/proc/kcore`` and prints the non-zero 4 KiB pages it found::

    scan nonzero_mib=Z scanned_mib=S segments=N took_s=T

``scan_nonzero_mib`` is that Z (None when the log has no scan line, or
``scan error=WHAT ...`` when the guest could not read ``/proc/kcore``: then
``scan_error`` is WHAT). The same scan tells where in RAM those pages lie, in the order
QEMU's round 0 walks them (the share of non-zero pages in each of N equal slices of RAM,
lowest address first)::

    layout slices=N nonzero=S1,S2,...,SN

``scan_layout`` is that list (empty when the log has none; a line whose count does not
match ``slices`` is ignored).

>>> log = '''livemig-dirtier: ready ws_mib=16 rate_mib=8 pages=4096
... tick 1 uptime=1.00 dirtied_mib=8.0 behind_ms=1 rate_mibps=7.99 nonzero_mib=90.7 memfree_mib=115
... tick 2 uptime=2.00 dirtied_mib=16.0 behind_ms=1 rate_mibps=8.00 nonzero_mib=90.7 memfree_mib=115
... tick 3 uptime=3.00 dirtied_mib=23.0 behind_ms=0 rate_mibps=7.00 nonzero_mib=90.9 memfree_mib=114
... '''
>>> t = guest_truth(log)
>>> t.ticks, t.rate_mibps, t.nonzero_mib, t.memfree_mib, t.scan_nonzero_mib
(3, 7.99, 90.7, 115.0, None)
>>> guest_truth(log + "scan nonzero_mib=101.3 scanned_mib=126.9 segments=2 took_s=0.84\\n"
...             ).scan_nonzero_mib
101.3
>>> guest_truth("scan error=open-proc-kcore errno=2\\n").scan_error
'open-proc-kcore'
>>> guest_truth("layout slices=4 nonzero=0.750,0.580,0.650,0.420\\n").scan_layout
(0.75, 0.58, 0.65, 0.42)
>>> guest_truth("layout slices=4 nonzero=0.750,0.580\\n").scan_layout  # cut short
()

Ticks of the old format (no truth fields) count, but give no figures:

>>> guest_truth("tick 1 uptime=1.00 dirtied_mib=0.0 behind_ms=0\\n")
GuestTruth(ticks=1, rate_mibps=None, nonzero_mib=None, memfree_mib=None, \
scan_nonzero_mib=None, scan_error=None, scan_layout=())
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from statistics import median

TICK_RE = re.compile(r"^tick (\d+) (.*)$", re.MULTILINE)
FIELD_RE = re.compile(r"(\w+)=(-?[0-9.]+)")
SCAN_RE = re.compile(r"^scan nonzero_mib=([0-9.]+)\b", re.MULTILINE)
SCAN_ERROR_RE = re.compile(r"^scan error=(\S+)", re.MULTILINE)
LAYOUT_RE = re.compile(r"^layout slices=(\d+) nonzero=([0-9.,]+)\s*$", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class GuestTruth:
    """Medians over the tick lines (robust to the second of the switchover, when the
    paused guest writes less)."""

    ticks: int
    rate_mibps: float | None
    nonzero_mib: float | None
    memfree_mib: float | None
    scan_nonzero_mib: float | None = None  # non-zero pages found in RAM (module docstring)
    scan_error: str | None = None  # why the guest could not scan its RAM
    scan_layout: tuple[float, ...] = ()  # non-zero share per equal slice of RAM, low first


def _median(values: list[float]) -> float | None:
    return round(median(values), 3) if values else None


def guest_truth(console: str, *, first_tick: int = 1, last_tick: int | None = None) -> GuestTruth:
    """Medians of the truth fields over the tick lines numbered ``first_tick..last_tick``."""
    fields: dict[str, list[float]] = {"rate_mibps": [], "nonzero_mib": [], "memfree_mib": []}
    ticks = 0
    for number, rest in TICK_RE.findall(console):
        n = int(number)
        if n < first_tick or (last_tick is not None and n > last_tick):
            continue
        ticks += 1
        for key, value in FIELD_RE.findall(rest):
            if key in fields and float(value) >= 0:  # -1: /proc/meminfo unreadable
                fields[key].append(float(value))
    scans = SCAN_RE.findall(console)
    layouts = [shares for count, text in LAYOUT_RE.findall(console)
               if len(shares := parse_shares(text, ",")) == int(count)]
    errors = SCAN_ERROR_RE.findall(console)
    return GuestTruth(ticks=ticks, **{k: _median(v) for k, v in fields.items()},
                      scan_nonzero_mib=float(scans[-1]) if scans else None,
                      scan_error=None if scans or not errors else errors[-1],
                      scan_layout=layouts[-1] if layouts else ())


def parse_shares(text: str, sep: str | None) -> tuple[float, ...]:
    """Numbers from 0 to 1 separated by ``sep`` (None: white space), () when ``text`` is
    not that (a layout line's shares, a ``cases.csv`` cell).

    >>> parse_shares("0.75,0.5", ","), parse_shares("0.75 0.5", None), parse_shares("1,x", ",")
    ((0.75, 0.5), (0.75, 0.5), ())
    """
    try:
        shares = tuple(float(v) for v in text.split(sep))
    except ValueError:
        return ()
    return shares if all(0.0 <= v <= 1.0 for v in shares) else ()
