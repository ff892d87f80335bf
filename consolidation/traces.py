"""CPU-utilisation traces: one VM per row, one sample per interval (PlanetLab: 288 x 5 min).

A trace file is CSV, ``vm,u0,u1,...`` with integer percentages. Utilisation at time t is
linear between samples ``k = floor(t / interval)`` and ``k + 1``; the last sample is
repeated to cover the last interval (as CloudSim reads the traces):
:func:`livemig.core.cpu_trace.utilisations_at`, the one implementation.

>>> import io
>>> trace = read_trace_csv(io.StringIO("vm,u0,u1\\na,10,30\\nb,0,100\\n"), "x.csv")
>>> trace.names, trace.samples.shape
(('a', 'b'), (2, 3))
>>> from livemig.core.cpu_trace import utilisations_at
>>> utilisations_at(trace.samples, 150.0, 300.0).tolist()
[0.2, 0.5]
>>> utilisations_at(trace.samples, 450.0, 300.0).tolist()   # beyond the last: repeated
[0.3, 1.0]
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np


class TraceError(ValueError):
    """A trace file that cannot be read: ``FILE:LINE: problem; expected ...``."""


@dataclass(frozen=True)
class Trace:
    names: tuple[str, ...]
    samples: np.ndarray  # (vms, samples + 1) fractions in [0, 1]; last sample repeated


def read_trace_csv(stream: IO[str], source: str) -> Trace:
    """Parse a whole trace file (see the module doc); errors name the file and line."""
    reader = csv.reader(stream)
    header = next(reader, None)
    if not header or header[0] != "vm" or len(header) < 2:
        raise TraceError(f"{source}:1: header: expected 'vm,u0,u1,...'")
    width = len(header) - 1
    names: list[str] = []
    rows: list[list[int]] = []
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != width + 1:
            raise TraceError(f"{source}:{line}: row: expected {width + 1} fields "
                             f"(name and {width} samples), got {len(row)}")
        try:
            values = [int(v) for v in row[1:]]
        except ValueError:
            raise TraceError(f"{source}:{line}: samples: expected integer percentages") from None
        if min(values) < 0 or max(values) > 100:
            raise TraceError(f"{source}:{line}: samples: expected percentages in 0..100")
        names.append(row[0])
        rows.append(values)
    if not rows:
        raise TraceError(f"{source}:2: rows: expected at least one VM")
    data = np.array(rows, dtype=float) / 100.0
    return Trace(tuple(names), np.concatenate([data, data[:, -1:]], axis=1))


def load_trace(path: str | Path) -> Trace:
    """:func:`read_trace_csv` of a file (``TraceError`` when it cannot be read)."""
    try:
        with open(path, newline="") as stream:
            return read_trace_csv(stream, str(path))
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def block_types(count: int, types: int = 4) -> np.ndarray:
    """The reference's VM type of each of ``count`` VMs: ``i // ceil(count / types)``.

    >>> block_types(10).tolist()
    [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    """
    return np.arange(count) // math.ceil(count / types)


def synthetic_trace(vms: int, samples: int, seed: int) -> list[list[int]]:
    """A PlanetLab-like trace for small scenarios: each VM a random walk around its own
    mean (mostly low, a few busy ones), integer percent in 0..100, some idle stretches.

    >>> rows = synthetic_trace(3, 5, seed=1)
    >>> len(rows), len(rows[0]), all(0 <= v <= 100 for row in rows for v in row)
    (3, 5, True)
    >>> synthetic_trace(3, 5, seed=1) == rows
    True
    """
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(vms):
        mean = rng.choice([5, 10, 20, 40, 70], p=[0.3, 0.3, 0.2, 0.15, 0.05])
        level = float(mean)
        row = []
        for _ in range(samples):
            level = min(100.0, max(0.0, level + rng.normal(0, 6) + 0.2 * (mean - level)))
            row.append(0 if rng.random() < 0.03 else int(round(level)))
        rows.append(row)
    return rows


def write_trace_csv(path: str | Path, rows: list[list[int]], prefix: str = "vm") -> None:
    """Write ``rows`` in the trace format (see the module doc)."""
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["vm", *(f"u{k}" for k in range(len(rows[0])))])
        for i, row in enumerate(rows):
            writer.writerow([f"{prefix}-{i:04d}", *row])
