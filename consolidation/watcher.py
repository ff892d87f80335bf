"""OpenStack Watcher's strategies as the "Nova today" alternatives, as pure planners over a
placement: ``vm_workload_consolidation`` and ``workload_balance`` (facts read from
Watcher's source; CPU is counted in MIPS here where Watcher counts vCPUs x cpu_util).

A placement is ``hosts`` (capacity MIPS and RAM MB per host) and ``vms`` (host, CPU demand
in MIPS, RAM in MB per VM). A planner returns the moves ``[(vm, destination), ...]`` in
order; it never moves a VM to the host it is on.

**vm_workload_consolidation** (capacity coefficients 1): offload phase, then consolidation
phase, then chains collapsed (A->B->C is A->C, A->B->A nothing):

* offload: hosts sorted by CPU use once; from the most used, an overloaded host (use >
  capacity) sends its VMs, least CPU first, each to the first host in decreasing use
  order where it fits (CPU and RAM), until it is not overloaded;
* consolidation: hosts re-sorted by CPU use; from the least used (index ``asc``), each
  VM, most CPU first, goes to the first host in decreasing use order where it fits,
  looking only at hosts above ``asc`` in the order.

>>> hosts = Hosts(mips=np.array([1000.0, 1000.0, 1000.0]), ram=np.array([4096.0] * 3))
>>> vms = Vms(host=np.array([0, 1, 1, 2]), demand=np.array([100.0, 500.0, 300.0, 100.0]),
...           ram=np.array([512.0] * 4))
>>> vm_workload_consolidation(hosts, vms)
[(0, 1), (3, 1)]

**workload_balance** (threshold 25 % by default): one move per run. Hosts at or above the
threshold are sources (most used first); the VM moved is the largest whose removal keeps
the source at or above the cluster's average load; the destination is the least used
host below the threshold where the VM fits and stays under it.

>>> workload_balance(hosts, vms, threshold=25.0)   # 300 MIPS would take a target over 25 %
[]
>>> workload_balance(hosts, vms, threshold=50.0)
[(2, 0)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Hosts:
    mips: np.ndarray  # CPU capacity
    ram: np.ndarray  # MB


@dataclass
class Vms:
    host: np.ndarray
    demand: np.ndarray  # CPU MIPS now
    ram: np.ndarray  # MB (the flavor's)


def _loads(hosts: Hosts, where: np.ndarray, vms: Vms) -> tuple[np.ndarray, np.ndarray]:
    n = len(hosts.mips)
    return (np.bincount(where, vms.demand, n), np.bincount(where, vms.ram, n))


def vm_workload_consolidation(hosts: Hosts, vms: Vms) -> list[tuple[int, int]]:
    """Watcher's ``vm_workload_consolidation`` (see the module doc)."""
    where = vms.host.copy()
    cpu, ram = _loads(hosts, where, vms)
    moves: list[tuple[int, int]] = []

    def fits(v: int, h: int) -> bool:
        return bool(cpu[h] + vms.demand[v] <= hosts.mips[h]
                    and ram[h] + vms.ram[v] <= hosts.ram[h])

    def move(v: int, h: int) -> None:
        src = int(where[v])
        if src == h:
            return
        cpu[src] -= vms.demand[v]
        ram[src] -= vms.ram[v]
        cpu[h] += vms.demand[v]
        ram[h] += vms.ram[v]
        where[v] = h
        moves.append((v, h))

    def on(h: int) -> list[int]:
        return [int(v) for v in np.flatnonzero(where == h)]

    order = [int(h) for h in np.argsort(cpu, kind="stable")]
    for h in reversed(order):  # offload
        if cpu[h] > hosts.mips[h]:
            for v in sorted(on(h), key=lambda v: vms.demand[v]):
                for dest in reversed(order):
                    if fits(v, dest):
                        move(v, dest)
                        break
                if cpu[h] <= hosts.mips[h]:
                    break
    order = [int(h) for h in np.argsort(cpu, kind="stable")]
    for asc, h in enumerate(order):  # consolidation
        for v in sorted(on(h), key=lambda v: vms.demand[v], reverse=True):
            dsc = len(order) - 1
            for dest in reversed(order):
                if asc >= dsc:
                    break
                if fits(v, dest):
                    move(v, dest)
                    break
                dsc -= 1
    return _collapse(moves, vms.host)


def _collapse(moves: list[tuple[int, int]], start: np.ndarray) -> list[tuple[int, int]]:
    """One move per VM, to its last destination; none if it ends where it began.

    >>> _collapse([(0, 1), (1, 2), (0, 2), (1, 0)], np.array([0, 0]))
    [(0, 2)]
    """
    final: dict[int, int] = {}
    for v, dest in moves:
        final[v] = dest
    seen: list[int] = []
    for v, _ in moves:
        if v not in seen:
            seen.append(v)
    return [(v, final[v]) for v in seen if final[v] != int(start[v])]


def workload_balance(hosts: Hosts, vms: Vms, threshold: float = 25.0) -> list[tuple[int, int]]:
    """Watcher's ``workload_balance`` on CPU (see the module doc): at most one move."""
    cpu, ram = _loads(hosts, vms.host, vms)
    util = cpu / hosts.mips * 100
    average = cpu.sum() / len(cpu)
    sources = sorted((int(h) for h in np.flatnonzero(util >= threshold)),
                     key=lambda h: util[h], reverse=True)
    targets = [int(h) for h in np.flatnonzero(util < threshold)]
    if not sources or not targets:
        return []
    chosen: tuple[int, int] | None = None
    for h in sources:
        delta = cpu[h] - average
        best, best_delta = None, 1_000_000.0
        for v in np.flatnonzero(vms.host == h):
            remaining = delta - vms.demand[v]
            if 0 <= remaining < best_delta:
                best, best_delta = int(v), remaining
        if best is not None:
            chosen = (h, best)
            break
    if chosen is None:
        return []
    _, v = chosen
    fitting = [h for h in targets
               if ram[h] + vms.ram[v] <= hosts.ram[h]
               and vms.demand[v] + cpu[h] < threshold / 100 * hosts.mips[h]]
    if not fitting:
        return []
    dest = min(fitting, key=lambda h: util[h])
    return [(v, dest)]
