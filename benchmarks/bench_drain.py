"""Drain benchmark: a generated data centre, 100 hosts drained through the full core.

    python benchmarks/bench_drain.py            # 1,000 hosts, 20,000 VMs, ~2,000 migrations
    python benchmarks/bench_drain.py --scale 10 # 10,000 hosts, 200,000 VMs, ~20,000 migrations
    python benchmarks/bench_drain.py --drain-every 1s  # one drain a second (VMs then arrive
                                                       # at hosts being drained)

Prints wall time, simulated events per second, peak memory (the process's max
RSS; with --tracemalloc also Python's traced peak, at a large cost in speed),
and, in the same run, the events per second of a bare SimPy timeout loop on
this machine for comparison.
"""

from __future__ import annotations

import argparse
import random
import resource
import time
import tracemalloc
from collections import Counter

import simpy

from livemig.core.model import (
    DrainEvent,
    HostSpec,
    MigrationPolicy,
    NetworkSpec,
    Policy,
    Scenario,
    Storage,
    VmSpec,
)
from livemig.core.results import drains_block
from livemig.core.runner import run_scenario
from livemig.core.units import parse_duration

GiB = 1 << 30
MiB = 1 << 20


def data_centre(scale: int, seed: int = 1, drain_every: float = 0.0) -> Scenario:
    """``scale`` x (1,000 hosts in 50 racks, 20,000 VMs, 100 drained hosts), the drains
    ``drain_every`` seconds apart (0: all at once)."""
    rng = random.Random(seed)
    racks = 50 * scale
    per_rack = 20
    hosts = tuple(
        HostSpec(
            name=f"r{r:03d}h{h:02d}",
            ram=384 * GiB,
            vcpus=96,
            disk=4096 * GiB,
            storage=Storage.SHARED,
            rack=f"rack-{r:03d}",
        )
        for r in range(racks)
        for h in range(per_rack)
    )
    vms = []
    for i in range(20_000 * scale):
        ram = rng.choice((1, 2, 4, 8, 16)) * GiB
        used = int(ram * rng.uniform(0.5, 1.0))
        vms.append(
            VmSpec(
                name=f"vm{i:06d}",
                host=hosts[i % len(hosts)].name,
                ram=ram,
                vcpus=max(1, ram // (2 * GiB)),
                used_memory=used,
                working_set=int(used * rng.uniform(0.05, 0.25)),
                dirty_rate=rng.choice((0, 10, 50, 100, 200)) * MiB,
            )
        )
    drained = [hosts[r * per_rack + k].name for r in range(racks) for k in (0, 1)]
    return Scenario(
        name=f"bench-drain-x{scale}",
        seed=seed,
        hosts=hosts,
        vms=tuple(vms),
        network=NetworkSpec(host_link=1.25e9, uplink=5e9),
        policy=Policy(migration=MigrationPolicy(max_concurrent_per_host=2)),
        events=tuple(DrainEvent(at=i * drain_every, host=h) for i, h in enumerate(drained)),
    )


def bare_simpy_events_per_second(n: int = 500_000) -> float:
    env = simpy.Environment()

    def ticker() -> simpy.events.ProcessGenerator:
        for _ in range(n):
            yield env.timeout(0.5)

    env.process(ticker())
    start = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--drain-every", type=parse_duration, default=0.0,
                        help="time between two drains, e.g. 1s (default: all at 0 s)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations (slows the run ~4x; off by default "
                        "so the wall time is the real one; the max RSS is always shown)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    scenario = data_centre(args.scale, drain_every=args.drain_every)
    build = time.perf_counter() - t0
    if args.tracemalloc:
        tracemalloc.start()
    result = run_scenario(scenario)
    peak = tracemalloc.get_traced_memory()[1] if args.tracemalloc else 0
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    statuses = Counter(m.status.value for m in result.store.migrations())
    bare = bare_simpy_events_per_second()
    print(f"scenario              {scenario.name}: {len(scenario.hosts)} hosts, "
          f"{len(scenario.vms)} VMs, {len(scenario.events)} hosts drained")
    print(f"migrations            {sum(statuses.values())} {dict(sorted(statuses.items()))}")
    left = [d for d in drains_block(result) if not d["completed"]]
    print(f"drains incomplete     {len(left)} of {len(scenario.events)} "
          f"({sum(len(d['instances_left']) for d in left)} VMs left on drained hosts)")
    print(f"build scenario        {build:.2f} s wall")
    print(f"run (full core)       {result.wall_time:.2f} s wall"
          + ("  (under tracemalloc)" if args.tracemalloc else ""))
    print(f"simulated time        {result.sim_time:.1f} s")
    print(f"simulated events      {result.sim_events} "
          f"({result.sim_events / result.wall_time:,.0f} events/s)")
    if peak:
        print(f"peak traced memory    {peak / GiB:.3f} GiB")
    print(f"max RSS               {rss / GiB:.3f} GiB")
    print(f"bare SimPy timeouts   {bare:,.0f} events/s")


if __name__ == "__main__":
    main()
