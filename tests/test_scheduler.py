"""Scheduler: filters, RAM weigher, placement heuristics and the destination loop."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from fakes import GiB, MiB, facts, instance

from livemig.core.checks import check_common
from livemig.core.errors import (
    ComputeServiceUnavailable,
    DestinationHypervisorTooOld,
    InvalidCPUInfo,
    InvalidHypervisorType,
    InvalidSharedStorage,
    MaxRetriesExceeded,
    MigrationPreCheckError,
    NovaException,
    NoValidHost,
    UnableToMigrateToSelf,
)
from livemig.core.model import Heuristic, SchedulerPolicy
from livemig.core.scheduler import (
    FILTERS,
    Request,
    compute_filter,
    core_filter,
    disk_filter,
    find_destination,
    ram_filter,
    ram_weights,
    select_host,
)
from livemig.core.state import InstanceRecord
from livemig.drivers.base import HostFacts


def request(inst: InstanceRecord | None = None, *, now: float = 0.0,
            ratio: float = 1.5) -> Request:
    return Request(instance=inst or instance(), now=now, service_down_time=60.0,
                   ram_allocation_ratio=ratio)


# -- RamFilter ------------------------------------------------------------------------

# 4096 MiB total, 3072 used: with ratio 1.5, 4096 * 1.5 - 3072 = 3072 MiB usable.
BUSY = facts("h2", memory_mb=4096, free_ram_mb=1024)


@pytest.mark.parametrize(
    "ram, ratio, passes",
    [
        (3 * GiB, 1.5, True),  # exactly the usable 3072 MiB
        (3 * GiB + MiB, 1.5, False),
        (3 * GiB + GiB // 2, 1.5, False),
        (GiB, 1.0, True),  # no over-commit: usable = free = 1024 MiB
        (GiB + MiB, 1.0, False),
        (5 * GiB, 2.0, True),  # 8192 - 3072 = 5120
        (5 * GiB + 1, 2.0, False),  # compared in exact MiB, no rounding down of the request
    ],
)
def test_ram_filter_worked_example(ram: int, ratio: float, passes: bool) -> None:
    assert ram_filter(BUSY, request(instance(ram=ram), ratio=ratio)) is passes


def test_ram_filter_counts_used_memory_not_free_memory() -> None:
    """Over-commit: an instance larger than the free RAM passes when the ratio allows."""
    assert ram_filter(facts("h2", memory_mb=8192, free_ram_mb=512),
                      request(instance(ram=4 * GiB)))


# -- ComputeFilter, CoreFilter, DiskFilter ----------------------------------------------


@pytest.mark.parametrize(
    "heartbeat, now, passes",
    [(0.0, 0.0, True), (0.0, 60.0, True), (0.0, 60.5, False), (None, 0.0, False)],
)
def test_compute_filter(heartbeat: float | None, now: float, passes: bool) -> None:
    assert compute_filter(facts("h2", last_heartbeat=heartbeat), request(now=now)) is passes


@pytest.mark.parametrize("vcpus, passes", [(1, True), (2, True), (3, False)])
def test_core_filter_allows_16x_over_commit(vcpus: int, passes: bool) -> None:
    host = facts("h2", vcpus=2, vcpus_used=30)  # 2 * 16 - 30 = 2 free
    assert core_filter(host, request(instance(vcpus=vcpus))) is passes


@pytest.mark.parametrize(
    "disk, passes", [(10 * GiB, True), (10 * GiB + MiB, False), (0, True)]
)
def test_disk_filter_uses_disk_available_least(disk: int, passes: bool) -> None:
    host = facts("h2", local_gb=500, disk_available_least=10)  # 10240 MiB
    assert disk_filter(host, request(instance(disk=disk))) is passes


def test_disk_filter_passes_volume_backed_instances() -> None:
    host = facts("h2", disk_available_least=0)
    assert disk_filter(host, request(instance(disk=100 * GiB, volume_backed=True)))
    assert not disk_filter(host, request(instance(disk=100 * GiB)))


def test_nova_default_filters_are_all_known() -> None:
    assert set(SchedulerPolicy().filters) <= set(FILTERS)
    assert {"RamFilter", "ComputeFilter", "CoreFilter", "DiskFilter"} <= set(FILTERS)


@pytest.mark.parametrize(
    "name",
    ["RetryFilter", "AvailabilityZoneFilter", "ComputeCapabilitiesFilter",
     "ImagePropertiesFilter", "ServerGroupAntiAffinityFilter", "ServerGroupAffinityFilter"],
)
def test_filters_without_a_request_property_pass_every_host(name: str) -> None:
    hopeless = facts("h2", memory_mb=1, free_ram_mb=0, vcpus=0, vcpus_used=99,
                     disk_available_least=0, last_heartbeat=None)
    assert FILTERS[name](hopeless, request(instance(ram=64 * GiB, disk=GiB)))


# -- RAM weigher --------------------------------------------------------------------------


def hosts_with_free(*free: int) -> list[HostFacts]:
    return [facts(f"h{i + 2}", memory_mb=65536, free_ram_mb=f) for i, f in enumerate(free)]


def test_ram_weights_are_normalised_to_unit_range() -> None:
    assert ram_weights(hosts_with_free(1000, 3000, 2000, 5000), 1.0) == [0.0, 0.5, 0.25, 1.0]


def test_negative_multiplier_inverts_the_order() -> None:
    assert ram_weights(hosts_with_free(1000, 3000, 5000), -1.0) == [0.0, -0.5, -1.0]


def test_multiplier_scales_weights() -> None:
    assert ram_weights(hosts_with_free(1000, 3000, 5000), 2.5) == [0.0, 1.25, 2.5]


def test_equal_free_ram_weighs_zero() -> None:
    assert ram_weights(hosts_with_free(2048, 2048), 1.0) == [0.0, 0.0]
    assert ram_weights(hosts_with_free(2048), -1.0) == [0.0]


# -- select_host --------------------------------------------------------------------------


def pick(hosts: Sequence[HostFacts], heuristic: Heuristic = Heuristic.WEIGHED, *,
         multiplier: float = 1.0, ignore: Sequence[str] = ("h1",), seed: int = 0,
         rng: random.Random | None = None, filters: Sequence[str] | None = None,
         inst: InstanceRecord | None = None) -> str:
    policy = SchedulerPolicy(heuristic=heuristic, ram_weight_multiplier=multiplier,
                             **({} if filters is None else {"filters": tuple(filters)}))
    return select_host(hosts, inst or instance(), ignore, policy, now=0.0,
                       service_down_time=60.0, rng=rng or random.Random(seed))


# free RAM: h2 4096, h3 8192 (most), h4 3072 (least that fits), h5 fails RamFilter
POOL = [
    facts("h1", memory_mb=16384, free_ram_mb=16384),  # the source, ignored
    facts("h2", memory_mb=8192, free_ram_mb=4096),
    facts("h3", memory_mb=16384, free_ram_mb=8192),
    facts("h4", memory_mb=8192, free_ram_mb=3072),
    facts("h5", memory_mb=1024, free_ram_mb=0),  # 1536 usable < 2048 MiB instance
]


def test_positive_multiplier_spreads_to_most_free_ram() -> None:
    assert pick(POOL, multiplier=1.0) == "h3"


def test_negative_multiplier_stacks_on_least_free_ram() -> None:
    assert pick(POOL, multiplier=-1.0) == "h4"  # h5 has less but fails RamFilter


def test_weighed_ties_go_to_the_first_host() -> None:
    hosts = [facts("h2", free_ram_mb=4096), facts("h3", free_ram_mb=4096)]
    assert pick(hosts) == "h2"
    assert pick(list(reversed(hosts))) == "h3"


def test_first_fit_takes_the_first_passing_host_in_order() -> None:
    assert pick([POOL[4], POOL[3], POOL[1]], Heuristic.FIRST_FIT) == "h4"


def test_best_fit_takes_least_free_ram_that_fits() -> None:
    assert pick(POOL, Heuristic.BEST_FIT) == "h4"


def test_worst_fit_takes_most_free_ram() -> None:
    assert pick(POOL, Heuristic.WORST_FIT) == "h3"


def random_picks(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [pick(POOL, Heuristic.RANDOM, rng=rng) for _ in range(count)]


def test_random_is_seeded_and_reproducible() -> None:
    first = random_picks(7, 40)
    assert first == random_picks(7, 40)
    assert set(first) == {"h2", "h3", "h4"}  # only passing hosts, each of them sometimes


def test_random_depends_on_the_seed() -> None:
    assert len({tuple(random_picks(seed, 20)) for seed in range(5)}) > 1


@pytest.mark.parametrize("heuristic", list(Heuristic))
def test_ignore_hosts_are_never_chosen(heuristic: Heuristic) -> None:
    for seed in range(10):
        chosen = pick(POOL, heuristic, ignore=["h1", "h3", "h4"], seed=seed)
        assert chosen == "h2"


@pytest.mark.parametrize("heuristic", list(Heuristic))
def test_hosts_failing_a_filter_are_never_chosen(heuristic: Heuristic) -> None:
    down = facts("h6", memory_mb=65536, free_ram_mb=65536, last_heartbeat=-1000.0)
    for seed in range(10):
        assert pick([*POOL, down], heuristic, seed=seed) != "h6"
    assert pick([down], heuristic, filters=["RamFilter"]) == "h6"


def test_disabled_hosts_fail_the_compute_filter() -> None:
    policy = SchedulerPolicy()
    chosen = select_host(POOL, instance(), ["h1"], policy, now=0.0, service_down_time=60.0,
                         rng=random.Random(0), disabled_hosts={"h3"})
    assert chosen == "h2"  # h3 has the most free RAM but is disabled
    with pytest.raises(NoValidHost):
        select_host(POOL, instance(), ["h1"], policy, now=0.0, service_down_time=60.0,
                    rng=random.Random(0), disabled_hosts={"h2", "h3", "h4", "nope"})


def test_disabled_hosts_pass_without_the_compute_filter() -> None:
    """Nova: only ComputeFilter looks at the service's disabled flag."""
    policy = SchedulerPolicy(filters=("RamFilter",))
    chosen = select_host(POOL, instance(), ["h1"], policy, now=0.0, service_down_time=60.0,
                         rng=random.Random(0), disabled_hosts={"h3"})
    assert chosen == "h3"


def test_no_passing_host_is_no_valid_host() -> None:
    with pytest.raises(NoValidHost) as err:
        pick(POOL, ignore=["h1", "h2", "h3", "h4"])
    assert "vm1" in str(err.value) and "h1, h2, h3, h4" in str(err.value)


def test_no_host_at_all_is_no_valid_host() -> None:
    with pytest.raises(NoValidHost):
        pick([])


def test_core_and_disk_filters_take_part_when_configured() -> None:
    hosts = [facts("h2", free_ram_mb=8000, disk_available_least=1),
             facts("h3", free_ram_mb=4000, disk_available_least=50)]
    inst = instance(disk=20 * GiB)
    assert pick(hosts, inst=inst) == "h2"
    assert pick(hosts, inst=inst, filters=["RamFilter", "DiskFilter"]) == "h3"
    cramped = [facts("h2", free_ram_mb=8000, vcpus=1, vcpus_used=16), hosts[1]]
    assert pick(cramped, inst=inst, filters=["CoreFilter"]) == "h3"


# -- the destination loop ------------------------------------------------------------------


class Loop:
    """Scripted ``select`` / ``verify`` for :func:`find_destination`."""

    def __init__(self, hosts: Sequence[str], failures: dict[str, NovaException]) -> None:
        self.hosts = list(hosts)
        self.failures = failures
        self.asked: list[list[str]] = []  # ignore_hosts at each select (copied)
        self.verified: list[str] = []

    def select(self, ignore_hosts: list[str]) -> str:
        self.asked.append(list(ignore_hosts))
        assert len(self.asked) <= 100, "the destination loop does not end"
        for h in self.hosts:
            if h not in ignore_hosts:
                return h
        raise NoValidHost(reason="none left")

    def verify(self, host: str) -> None:
        self.verified.append(host)
        if host in self.failures:
            raise self.failures[host]

    def run(self, max_retries: int = -1) -> tuple[str, list[str]]:
        return find_destination("h1", self.select, self.verify, max_retries)


def test_first_choice_passing_is_returned_at_once() -> None:
    loop = Loop(["h2", "h3"], {})
    assert loop.run() == ("h2", [])
    assert loop.asked == [["h1"]]


@pytest.mark.parametrize(
    "failure",
    [InvalidHypervisorType(), DestinationHypervisorTooOld(), InvalidCPUInfo(reason="x"),
     UnableToMigrateToSelf(instance="vm1", host="h2"), MigrationPreCheckError(reason="x")],
    ids=lambda e: type(e).__name__,
)
def test_retryable_failure_ignores_the_host_and_asks_again(failure: NovaException) -> None:
    loop = Loop(["h2", "h3", "h4"], {"h2": failure})
    assert loop.run() == ("h3", ["h2"])
    assert loop.asked == [["h1"], ["h1", "h2"]]
    assert loop.verified == ["h2", "h3"]


@pytest.mark.parametrize(
    "failure",
    [ComputeServiceUnavailable(host="h2"),
     InvalidSharedStorage(path="h1", reason="no"),
     RuntimeError("driver exploded")],
    ids=lambda e: type(e).__name__,
)
def test_non_retryable_failure_propagates_at_once(failure: Exception) -> None:
    loop = Loop(["h2", "h3"], {"h2": failure})  # type: ignore[dict-item]
    with pytest.raises(type(failure)):
        loop.run()
    assert loop.asked == [["h1"]]


@pytest.mark.parametrize("max_retries, attempts", [(0, 1), (1, 2), (3, 4)])
def test_max_retries_exceeded(max_retries: int, attempts: int) -> None:
    hosts = [f"h{i}" for i in range(2, 10)]
    loop = Loop(hosts, {h: InvalidHypervisorType() for h in hosts})
    with pytest.raises(MaxRetriesExceeded) as err:
        loop.run(max_retries)
    assert loop.verified == hosts[:attempts]
    assert f"Tried {attempts} hosts" in str(err.value)
    assert isinstance(err.value, NoValidHost)


def test_last_allowed_retry_may_succeed() -> None:
    loop = Loop(["h2", "h3", "h4"], {"h2": InvalidCPUInfo(reason="x"),
                                      "h3": InvalidCPUInfo(reason="x")})
    assert loop.run(max_retries=2) == ("h4", ["h2", "h3"])


def test_unlimited_retries_run_until_no_valid_host() -> None:
    hosts = [f"h{i}" for i in range(2, 30)]
    loop = Loop(hosts, {h: DestinationHypervisorTooOld() for h in hosts})
    with pytest.raises(NoValidHost) as err:
        loop.run(-1)
    assert not isinstance(err.value, MaxRetriesExceeded)
    assert loop.verified == hosts
    assert loop.asked[-1] == ["h1", *hosts]


def test_loop_over_the_real_scheduler() -> None:
    """select_host + find_destination: the most-free host is too old, the next one wins."""
    hosts = [facts("h1", free_ram_mb=2000), facts("h2", free_ram_mb=9000,
                                                  hypervisor_version=1),
             facts("h3", free_ram_mb=6000), facts("h4", free_ram_mb=3000)]
    by_name = {h.name: h for h in hosts}
    rng = random.Random(0)

    def select(ignore: list[str]) -> str:
        return select_host(hosts, instance(), ignore, SchedulerPolicy(), now=0.0,
                           service_down_time=60.0, rng=rng)

    def verify(name: str) -> None:
        check_common(by_name["h1"], by_name[name])

    assert find_destination("h1", select, verify, -1) == ("h3", ["h2"])
