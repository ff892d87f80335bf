"""A VM's CPU utilisation from its scenario trace (``cpu_trace``, ``cpu_trace_interval``).

A trace is a list of percentages of the VM's vCPUs, one sample every ``interval`` seconds
from time 0; the utilisation is linear between samples and the last sample holds after the
end. A VM without a trace has no CPU demand modelled: 0. The lab guest burns the same trace
(``drivers/lab/guest/dirtier.c`` computes it the same way, from the moment its workload
starts).

>>> trace = (80.0, 20.0, 50.0)
>>> [utilisation_at(trace, 300.0, t) for t in (0, 150, 300, 450, 600, 9000)]
[0.8, 0.5, 0.2, 0.35, 0.5, 0.5]
>>> utilisation_at((), 300.0, 42.0), utilisation_at((35.0,), 300.0, 1e6)
(0.0, 0.35)
"""

from __future__ import annotations

from collections.abc import Sequence


def utilisation_at(trace: Sequence[float], interval: float, t: float) -> float:
    """The fraction of its vCPUs a VM with ``trace`` (percent samples every ``interval``
    seconds) uses at time ``t`` (seconds; before 0 the first sample holds)."""
    if not trace:
        return 0.0
    position = t / interval if interval > 0 and t > 0 else 0.0
    index = int(position)
    if index >= len(trace) - 1:
        return trace[-1] / 100.0
    share = position - index
    return (trace[index] + (trace[index + 1] - trace[index]) * share) / 100.0
