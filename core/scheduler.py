"""Choosing a destination: Nova's filters and RAM weigher, placement heuristics,
and the destination loop that retries with ``ignore_hosts``.

Only filters whose constraint a scenario can express do real work here
(RAM, compute service, cores, disk). The others look at request properties a
scenario never sets (availability zone, image properties, flavor extra specs,
server groups, retries of a build), so for a live migration they pass every
host, exactly as Nova's do for such a request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from livemig.core.checks import service_is_up
from livemig.core.errors import RETRYABLE, MaxRetriesExceeded, NoValidHost
from livemig.core.model import Heuristic, SchedulerPolicy
from livemig.core.state import InstanceRecord
from livemig.core.units import MiB
from livemig.drivers.base import HostFacts, HostTable

if TYPE_CHECKING:  # imported where used: loading a scenario (FILTERS) needs no NumPy
    import numpy as np

CPU_ALLOCATION_RATIO = 16.0
DISK_ALLOCATION_RATIO = 1.0


Hosts = HostTable | Sequence[HostFacts]


@dataclass(frozen=True, kw_only=True)
class Request:
    """What the filters see: the instance's flavor and the clock."""

    instance: InstanceRecord
    now: float
    service_down_time: float
    ram_allocation_ratio: float


# Each filter answers for one host (HostFacts -> bool) or for every host of a
# HostTable at once (-> bool array): the same arithmetic, broadcast by numpy.


def ram_filter(host: HostFacts | HostTable, req: Request) -> Any:
    """RamFilter: ``total * ram_allocation_ratio - used >= requested``.

    Example: 4096 MiB total, 3072 used, ratio 1.5: 6144 - 3072 = 3072 MiB usable,
    so a 3 GiB instance passes and a 3.5 GiB one does not.
    """
    used = host.memory_mb - host.free_ram_mb
    usable = host.memory_mb * req.ram_allocation_ratio - used
    return usable >= req.instance.ram / MiB


def compute_filter(host: HostFacts | HostTable, req: Request) -> Any:
    """ComputeFilter: the host's compute service is up."""
    return service_is_up(host, req.now, req.service_down_time)


def core_filter(host: HostFacts | HostTable, req: Request) -> Any:
    """CoreFilter: ``vcpus * 16 - vcpus_used >= requested``."""
    return host.vcpus * CPU_ALLOCATION_RATIO - host.vcpus_used >= req.instance.vcpus


def disk_filter(host: HostFacts | HostTable, req: Request) -> Any:
    """DiskFilter: free disk (``disk_available_least``) covers the instance's disk."""
    if req.instance.volume_backed:
        return True
    return host.disk_available_least * 1024 * DISK_ALLOCATION_RATIO >= req.instance.disk / MiB


def _no_constraint(host: HostFacts | HostTable, req: Request) -> Any:
    """A filter whose request property (AZ, image, extra specs, group) is unset."""
    return True


FILTERS: dict[str, Callable[[HostFacts | HostTable, Request], Any]] = {
    "RetryFilter": _no_constraint,
    "AvailabilityZoneFilter": _no_constraint,
    "RamFilter": ram_filter,
    "ComputeFilter": compute_filter,
    "ComputeCapabilitiesFilter": _no_constraint,
    "ImagePropertiesFilter": _no_constraint,
    "ServerGroupAntiAffinityFilter": _no_constraint,
    "ServerGroupAffinityFilter": _no_constraint,
    "CoreFilter": core_filter,
    "DiskFilter": disk_filter,
}


def ram_weights(hosts: Hosts, multiplier: float) -> list[float]:
    """Nova's RAMWeigher: free RAM normalised to [0, 1] over the hosts, times the multiplier.

    >>> hs = [HostFacts(name=n, hypervisor_type="QEMU", hypervisor_version=1, cpu_model="x",
    ...                 memory_mb=8192, free_ram_mb=f, vcpus=1, vcpus_used=0, local_gb=1,
    ...                 disk_available_least=1, last_heartbeat=0.0)
    ...       for n, f in [("a", 1024), ("b", 5120), ("c", 3072)]]
    >>> ram_weights(hs, 1.0), ram_weights(hs, -1.0)
    ([0.0, 1.0, 0.5], [-0.0, -1.0, -0.5])
    """
    table = _as_table(hosts)
    return [float(w) for w in _normalised(table.free_ram_mb, multiplier)]


def _normalised(values: np.ndarray, multiplier: float) -> np.ndarray:
    import numpy as np

    low, high = values.min(), values.max()
    if high == low:
        return np.zeros(len(values))
    return multiplier * (values - low) / (high - low)


def _as_table(hosts: Hosts) -> HostTable:
    return hosts if isinstance(hosts, HostTable) else HostTable.from_facts(list(hosts))


def select_host(
    hosts: Hosts,
    instance: InstanceRecord,
    ignore_hosts: Sequence[str],
    policy: SchedulerPolicy,
    *,
    now: float,
    service_down_time: float,
    rng: random.Random,
    disabled_hosts: Collection[str] = (),
) -> str:
    """Filter the hosts not ignored, then pick one by the policy's heuristic.

    ComputeFilter also refuses hosts whose service an operator disabled
    (``disabled_hosts``, e.g. hosts being drained).

    Ties go to the host listed first. Raises ``NoValidHost`` when no host
    passes every filter.
    """
    import numpy as np

    table = _as_table(hosts)
    req = Request(
        instance=instance,
        now=now,
        service_down_time=service_down_time,
        ram_allocation_ratio=policy.ram_allocation_ratio,
    )
    mask = np.ones(len(table), dtype=bool)
    for name in ignore_hosts:
        row = table.index.get(name)
        if row is not None:
            mask[row] = False
    for name in policy.filters:
        mask &= FILTERS[name](table, req)
        if name == "ComputeFilter":
            for disabled in disabled_hosts:
                row = table.index.get(disabled)
                if row is not None:
                    mask[row] = False
    passed = np.flatnonzero(mask)
    if len(passed) == 0:
        raise NoValidHost(
            reason=f"No host passed the filters for {instance.name} "
            f"(ignored: {', '.join(ignore_hosts) or 'none'})."
        )
    free = table.free_ram_mb[passed]
    match policy.heuristic:
        case Heuristic.WEIGHED:
            pick = int(np.argmax(_normalised(free, policy.ram_weight_multiplier)))
        case Heuristic.FIRST_FIT:
            pick = 0
        case Heuristic.BEST_FIT:
            pick = int(np.argmin(free))
        case Heuristic.WORST_FIT:
            pick = int(np.argmax(free))
        case Heuristic.RANDOM:
            pick = rng.randrange(len(passed))
        case _:
            raise AssertionError(policy.heuristic)
    return table.names[int(passed[pick])]


def find_destination(
    source: str,
    select: Callable[[list[str]], str],
    verify: Callable[[str], None],
    max_retries: int,
) -> tuple[str, list[str]]:
    """The scheduler's destination loop.

    ``select(ignore_hosts)`` proposes a host (or raises ``NoValidHost``);
    ``verify(host)`` runs the common and driver checks. A host failing with a
    retryable error (``Invalid``, ``MigrationPreCheckError``) joins
    ``ignore_hosts`` and the loop asks again; ``max_retries = -1`` retries until
    no host is left. Returns the host and the hosts rejected on the way.
    """
    ignore_hosts = [source]
    rejected: list[str] = []
    while True:
        if max_retries >= 0 and len(rejected) > max_retries:
            raise MaxRetriesExceeded(
                reason=f"Tried {len(rejected)} hosts: {', '.join(rejected)}."
            )
        host = select(ignore_hosts)
        try:
            verify(host)
        except RETRYABLE:
            ignore_hosts.append(host)
            rejected.append(host)
            continue
        return host, rejected
