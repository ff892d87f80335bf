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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from livemig.core.checks import MiB, service_is_up
from livemig.core.errors import RETRYABLE, MaxRetriesExceeded, NoValidHost
from livemig.core.model import Heuristic, SchedulerPolicy
from livemig.core.state import InstanceRecord
from livemig.drivers.base import HostFacts

CPU_ALLOCATION_RATIO = 16.0
DISK_ALLOCATION_RATIO = 1.0


@dataclass(frozen=True, kw_only=True)
class Request:
    """What the filters see: the instance's flavor and the clock."""

    instance: InstanceRecord
    now: float
    service_down_time: float
    ram_allocation_ratio: float


def ram_filter(host: HostFacts, req: Request) -> bool:
    """RamFilter: ``total * ram_allocation_ratio - used >= requested``.

    Example: 4096 MiB total, 3072 used, ratio 1.5: 6144 - 3072 = 3072 MiB usable,
    so a 3 GiB instance passes and a 3.5 GiB one does not.
    """
    used = host.memory_mb - host.free_ram_mb
    usable = host.memory_mb * req.ram_allocation_ratio - used
    return usable >= req.instance.ram / MiB


def compute_filter(host: HostFacts, req: Request) -> bool:
    """ComputeFilter: the host's compute service is up."""
    return service_is_up(host, req.now, req.service_down_time)


def core_filter(host: HostFacts, req: Request) -> bool:
    """CoreFilter: ``vcpus * 16 - vcpus_used >= requested``."""
    return host.vcpus * CPU_ALLOCATION_RATIO - host.vcpus_used >= req.instance.vcpus


def disk_filter(host: HostFacts, req: Request) -> bool:
    """DiskFilter: free disk (``disk_available_least``) covers the instance's disk."""
    if req.instance.volume_backed:
        return True
    return host.disk_available_least * 1024 * DISK_ALLOCATION_RATIO >= req.instance.disk / MiB


def _no_constraint(host: HostFacts, req: Request) -> bool:
    """A filter whose request property (AZ, image, extra specs, group) is unset."""
    return True


FILTERS: dict[str, Callable[[HostFacts, Request], bool]] = {
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


def ram_weights(hosts: Sequence[HostFacts], multiplier: float) -> list[float]:
    """Nova's RAMWeigher: free RAM normalised to [0, 1] over the hosts, times the multiplier.

    >>> hs = [HostFacts(name=n, hypervisor_type="QEMU", hypervisor_version=1, cpu_model="x",
    ...                 memory_mb=8192, free_ram_mb=f, vcpus=1, vcpus_used=0, local_gb=1,
    ...                 disk_available_least=1, last_heartbeat=0.0)
    ...       for n, f in [("a", 1024), ("b", 5120), ("c", 3072)]]
    >>> ram_weights(hs, 1.0), ram_weights(hs, -1.0)
    ([0.0, 1.0, 0.5], [-0.0, -1.0, -0.5])
    """
    free = [h.free_ram_mb for h in hosts]
    low, high = min(free), max(free)
    if high == low:
        return [0.0 for _ in hosts]
    return [multiplier * (f - low) / (high - low) for f in free]


def select_host(
    hosts: Sequence[HostFacts],
    instance: InstanceRecord,
    ignore_hosts: Sequence[str],
    policy: SchedulerPolicy,
    *,
    now: float,
    service_down_time: float,
    rng: random.Random,
) -> str:
    """Filter the hosts not ignored, then pick one by the policy's heuristic.

    Raises ``NoValidHost`` when no host passes every filter.
    """
    req = Request(
        instance=instance,
        now=now,
        service_down_time=service_down_time,
        ram_allocation_ratio=policy.ram_allocation_ratio,
    )
    ignored = set(ignore_hosts)
    filters = [FILTERS[name] for name in policy.filters]
    passed = [
        h for h in hosts if h.name not in ignored and all(f(h, req) for f in filters)
    ]
    if not passed:
        raise NoValidHost(
            reason=f"No host passed the filters for {instance.name} "
            f"(ignored: {', '.join(ignore_hosts) or 'none'})."
        )
    match policy.heuristic:
        case Heuristic.WEIGHED:
            weights = ram_weights(passed, policy.ram_weight_multiplier)
            best = max(range(len(passed)), key=lambda i: weights[i])  # first of ties
            return passed[best].name
        case Heuristic.FIRST_FIT:
            return passed[0].name
        case Heuristic.BEST_FIT:
            return min(passed, key=lambda h: h.free_ram_mb).name
        case Heuristic.WORST_FIT:
            return max(passed, key=lambda h: h.free_ram_mb).name
        case Heuristic.RANDOM:
            return rng.choice(passed).name
    raise AssertionError(policy.heuristic)


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
