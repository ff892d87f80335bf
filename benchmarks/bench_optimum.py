"""How long CP-SAT takes to bound a consolidation snapshot (livemig.analysis.optimum).

    .venv/bin/python benchmarks/bench_optimum.py [--hosts 100] [--vms 300] [--seeds 3]
        [--time-limit 30] [--min-migrations] [--deterministic] [--write SNAPSHOT.json]

The instance is CloudSim's PlanetLab set-up (the hosts of Beloglazov's experiments, half
HP ProLiant ML110 G4 with 2 x 1860 MIPS, half G5 with 2 x 2660 MIPS, 4 GiB each; VMs of the
four EC2-like types, 2500/2000/1000/500 MIPS with 870/1740/1740/613 MB), each VM's demand a
utilisation drawn from a Beta(2, 5) distribution (mean 29 %, the shape of PlanetLab's CPU
traces), placed first-fit in a random order on hosts taken at random. Prints, per seed,
the status, active hosts now / best found / proven bound / capacity bound, the migrations
when asked, and the wall time.
"""

from __future__ import annotations

import argparse
import random
import time

from livemig.analysis.optimum import solve
from livemig.analysis.snapshot import HostCapacity, Snapshot, VmDemand, dump_snapshot

HOST_TYPES = ((3720.0, 4 * 2**30), (5320.0, 4 * 2**30))
VM_TYPES = ((2500.0, 870 * 10**6), (2000.0, 1740 * 10**6), (1000.0, 1740 * 10**6),
            (500.0, 613 * 10**6))


def planetlab_like(n_hosts: int, n_vms: int, seed: int, *, ram: bool = True) -> Snapshot:
    """A random snapshot shaped like CloudSim's PlanetLab experiments (see above)."""
    rng = random.Random(seed)
    hosts = [HostCapacity(f"host-{i:03d}", HOST_TYPES[i % 2][0],
                          HOST_TYPES[i % 2][1] if ram else None) for i in range(n_hosts)]
    cpu_left = {h.name: h.cpu for h in hosts}
    ram_left = {h.name: float(h.ram or 0) for h in hosts}
    vms = []
    for i in range(n_vms):
        mips, vm_ram = VM_TYPES[i % len(VM_TYPES)]
        demand = round(mips * rng.betavariate(2, 5), 1)
        order = list(cpu_left)
        rng.shuffle(order)
        host = next((h for h in order if cpu_left[h] >= demand
                     and (not ram or ram_left[h] >= vm_ram)), None)
        if host is not None:
            cpu_left[host] -= demand
            ram_left[host] -= vm_ram
        vms.append(VmDemand(f"vm-{i:03d}", demand, host, vm_ram if ram else None))
    return Snapshot(tuple(hosts), tuple(vms))


def first_fit(snap: Snapshot, *, decreasing: bool = False, best: bool = False) -> int:
    """Hosts a static heuristic activates (CPU only, the snapshot's max_utilization): VMs
    in index order (or by decreasing demand), each on the first host in name order with
    room (or, ``best``, the fullest host with room: best fit, PABFD's choice when the hosts
    draw the same power)."""
    left = {h.name: h.cpu * snap.max_utilization for h in snap.hosts}
    used: set[str] = set()
    vms = sorted(snap.vms, key=lambda v: -v.cpu) if decreasing else list(snap.vms)
    for vm in vms:
        fits = [h for h in left if left[h] >= vm.cpu]
        if not fits:
            raise ValueError(f"{vm.name} fits nowhere")
        host = min(fits, key=lambda h: (left[h], h)) if best else fits[0]
        left[host] -= vm.cpu
        used.add(host)
    return len(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--vms", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=30.0)
    parser.add_argument("--min-migrations", action="store_true")
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--no-ram", action="store_true", help="CPU only")
    parser.add_argument("--write", metavar="FILE", help="write the first seed's snapshot")
    parser.add_argument("--heuristics", action="store_true",
                        help="also the gap of first fit and best fit decreasing (CPU only)")
    parser.add_argument("--max-utilization", type=float, default=1.0)
    args = parser.parse_args()
    for seed in range(args.seeds):
        snap = planetlab_like(args.hosts, args.vms, seed, ram=not args.no_ram)
        if args.max_utilization != 1.0:
            snap = Snapshot(snap.hosts, snap.vms, args.max_utilization)
        if args.write and seed == 0:
            dump_snapshot(snap, args.write)
        start = time.perf_counter()
        r = solve(snap, time_limit=args.time_limit, min_migrations=args.min_migrations,
                  deterministic=args.deterministic)
        wall = time.perf_counter() - start
        text = (f"seed {seed}: {r.status:<9} active now {snap.active_hosts:3d}, best "
                f"{r.active_hosts}, bound {r.bound}, capacity bound {r.capacity_bound}")
        if args.min_migrations:
            text += (f"; migrations {r.migrations} ({r.migrations_status}, bound "
                     f"{r.migrations_bound})")
        if args.heuristics:
            ff, bfd = first_fit(snap), first_fit(snap, decreasing=True, best=True)
            text += (f"; first fit {ff} (gap <= {ff - r.bound}), best fit decreasing {bfd} "
                     f"(gap <= {bfd - r.bound})")
        print(f"{text}; {wall:.2f} s", flush=True)


if __name__ == "__main__":
    main()
