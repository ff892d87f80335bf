"""Speed of the fluid network model: flows simulated per wall-clock second.

    python benchmarks/bench_network.py [--hosts 1000] [--racks 50] [--flows 2000]
                                       [--concurrent 200] [--seed 1]

A data centre of ``--hosts`` hosts in ``--racks`` racks (10 Gbit/s host links,
40 Gbit/s rack uplinks, each direction) runs ``--flows`` transfers of 1-16 GiB
between random distinct hosts, at most ``--concurrent`` at a time: a new flow
starts whenever one completes. For comparison the same arrival pattern is run
as a bare SimPy loop where every flow is one ``env.timeout`` at the host-link
rate (no sharing): that is the floor any SimPy model pays per flow.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator

import simpy

from livemig.drivers.network import FluidNetwork, build_topology

GiB = 2**30
HOST_LINK = 1.25e9  # 10 Gbit/s
UPLINK = 5e9  # 40 Gbit/s


def _workload(hosts: int, flows: int, seed: int) -> list[tuple[str, str, int]]:
    rng = random.Random(seed)
    names = [f"h{i:04d}" for i in range(hosts)]
    jobs = []
    for _ in range(flows):
        src, dst = rng.sample(names, 2)
        jobs.append((src, dst, rng.randint(1, 16) * GiB))
    return jobs


def _run(
    env: simpy.Environment,
    jobs: list[tuple[str, str, int]],
    concurrent: int,
    start: Callable[[str, str, int], simpy.Event],
) -> None:
    pending: Iterator[tuple[str, str, int]] = iter(jobs)

    def worker() -> simpy.events.ProcessGenerator:
        for src, dst, size in pending:
            yield start(src, dst, size)

    for _ in range(concurrent):
        env.process(worker())
    env.run()


def bench_fluid(hosts: int, racks: int, flows: int, concurrent: int, seed: int) -> dict:
    per_rack = -(-hosts // racks)
    names = [(f"h{i:04d}", f"r{i // per_rack:02d}") for i in range(hosts)]
    graph = build_topology(names, host_link=HOST_LINK, uplink=UPLINK)
    jobs = _workload(hosts, flows, seed)
    env = simpy.Environment()
    net = FluidNetwork(env, graph)
    began = time.perf_counter()
    _run(env, jobs, concurrent, lambda s, d, n: net.transfer(s, d, n).done)
    wall = time.perf_counter() - began
    return {
        "wall": wall,
        "flows_per_s": flows / wall,
        "sim_end": env.now,
        "recomputations": net.recomputations,
    }


def bench_bare(hosts: int, flows: int, concurrent: int, seed: int) -> dict:
    jobs = _workload(hosts, flows, seed)
    env = simpy.Environment()
    began = time.perf_counter()
    _run(env, jobs, concurrent, lambda s, d, n: env.timeout(n / HOST_LINK))
    wall = time.perf_counter() - began
    return {"wall": wall, "flows_per_s": flows / wall, "sim_end": env.now}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--racks", type=int, default=50)
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    fluid = bench_fluid(args.hosts, args.racks, args.flows, args.concurrent, args.seed)
    bare = bench_bare(args.hosts, args.flows, args.concurrent, args.seed)
    print(
        f"{args.hosts} hosts in {args.racks} racks, {args.flows} flows of 1-16 GiB, "
        f"at most {args.concurrent} concurrent"
    )
    print(
        f"fluid network : {fluid['flows_per_s']:10.0f} flows/s  "
        f"({fluid['wall']:.2f} s wall, {fluid['sim_end']:.0f} s simulated, "
        f"{fluid['recomputations']} rate recomputations)"
    )
    print(
        f"bare SimPy    : {bare['flows_per_s']:10.0f} flows/s  "
        f"({bare['wall']:.3f} s wall, {bare['sim_end']:.0f} s simulated, no sharing)"
    )
    print(f"slowdown      : {bare['flows_per_s'] / fluid['flows_per_s']:10.1f}x")


if __name__ == "__main__":
    main()
