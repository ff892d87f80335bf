"""How good is a placement heuristic? The fewest active hosts a snapshot could use.

:func:`solve` finds, with OR-Tools CP-SAT, the minimum number of active hosts that can
hold every VM of a :class:`~livemig.analysis.snapshot.Snapshot` (bin packing over CPU and,
when given, RAM; a host may use ``max_utilization`` of its CPU), and optionally, as a second
objective, the fewest migrations that reach such a placement. Under a time limit it returns
the best placement found and the *proven lower bound*: ``status`` ``OPTIMAL`` when the two
meet, ``FEASIBLE`` when they do not. :func:`gap` compares a heuristic's count with it, for
a controller to call once per interval.

The model: ``x[v,h]`` (VM ``v`` on host ``h``, only where it fits alone), ``y[h]`` (host
``h`` active); each VM on exactly one host; per host ``sum cpu[v]·x[v,h] <= cap[h]·y[h]``
(and RAM); ``sum y >= capacity_bound`` (redundant, helps the search). Identical hosts are
interchangeable, so their symmetry is broken by ordering: in a class of hosts with the same
capacity, loads are non-increasing and active hosts come first. For the migration count the
current hosts are no longer interchangeable; only identical hosts that are empty now are.

CP-SAT needs integers. CPU and RAM values with at most :data:`MAX_DECIMALS` decimals (MIPS
times a utilisation in percent, bytes) are made integers exactly (times a power of ten,
over their common divisor). Other values are scaled so that the largest usable capacity is
:data:`RESOLUTION` units, demands rounded down and capacities up: a relaxation, so the
bound stays a true lower bound, and a reported placement may exceed a host by at most a
millionth of the largest host per VM on it.

>>> from livemig.analysis.snapshot import HostCapacity, Snapshot, VmDemand
>>> hosts = tuple(HostCapacity(f"h{i}", 100.0) for i in range(4))
>>> vms = tuple(VmDemand(f"v{i}", 40.0, f"h{i}") for i in range(4))
>>> result = solve(Snapshot(hosts, vms), time_limit=10, min_migrations=True)
>>> result.status, result.active_hosts, result.bound, result.migrations
('OPTIMAL', 2, 2, 2)
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from livemig.analysis.snapshot import Snapshot

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

RESOLUTION = 1_000_000
"""Integer units of the largest usable host capacity (CPU and RAM each)."""
DEFAULT_TIME_LIMIT = 10.0
MAX_DECIMALS = 6
MAX_EXACT = 2**40


@dataclass(frozen=True)
class Optimum:
    """What :func:`solve` found.

    ``status``: ``OPTIMAL`` (``active_hosts == bound``), ``FEASIBLE`` (a placement, not
    proven minimal), ``INFEASIBLE`` (some VM fits on no host) or ``UNKNOWN`` (no placement
    within the time limit). ``bound`` is a proven lower bound on the active hosts;
    ``capacity_bound`` the simple one (:func:`capacity_bound`). With ``min_migrations``:
    ``migrations`` (the fewest found to reach ``active_hosts`` hosts),
    ``migrations_bound`` (proven lower bound) and ``migrations_status``.
    """

    status: str
    active_hosts: int | None
    bound: int
    capacity_bound: int
    wall_s: float
    placement: dict[str, str] | None = field(default=None, repr=False)
    migrations: int | None = None
    migrations_bound: int | None = None
    migrations_status: str | None = None

    @property
    def optimal(self) -> bool:
        return self.status == "OPTIMAL"

    def as_dict(self) -> dict[str, Any]:
        """The result as plain data (for JSON)."""
        return {
            "status": self.status, "active_hosts": self.active_hosts, "bound": self.bound,
            "capacity_bound": self.capacity_bound, "wall_s": self.wall_s,
            "migrations": self.migrations, "migrations_bound": self.migrations_bound,
            "migrations_status": self.migrations_status, "placement": self.placement,
        }


@dataclass(frozen=True)
class Gap:
    """A heuristic's active hosts against the optimum of the same snapshot.

    ``hosts_over_bound`` = heuristic − proven bound: the heuristic uses at most this many
    hosts more than the optimum (exact when ``status`` is ``OPTIMAL``); ``relative`` is that
    over the bound. ``hosts_over_best`` = heuristic − best placement found: at least this
    many (negative when the heuristic beat the solver within its time limit, or
    overcommits a host beyond what the snapshot allows).

    >>> g = Gap(heuristic=12, best=10, bound=9, status="FEASIBLE")
    >>> g.hosts_over_bound, g.hosts_over_best, round(g.relative, 3)
    (3, 2, 0.333)
    """

    heuristic: int
    best: int | None
    bound: int
    status: str

    @property
    def hosts_over_bound(self) -> int:
        return self.heuristic - self.bound

    @property
    def hosts_over_best(self) -> int | None:
        return None if self.best is None else self.heuristic - self.best

    @property
    def relative(self) -> float:
        return self.hosts_over_bound / self.bound if self.bound else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"heuristic": self.heuristic, "best": self.best, "bound": self.bound,
                "status": self.status, "hosts_over_bound": self.hosts_over_bound,
                "hosts_over_best": self.hosts_over_best, "relative": self.relative}


def capacity_bound(snapshot: Snapshot) -> int:
    """The fewest hosts whose usable capacities add up to the VMs' demand (CPU and RAM
    each; the larger count): a lower bound on the active hosts, no solver needed.

    >>> from livemig.analysis.snapshot import HostCapacity, Snapshot, VmDemand
    >>> hosts = (HostCapacity("big", 200.0), HostCapacity("a", 100.0), HostCapacity("b", 100.0))
    >>> capacity_bound(Snapshot(hosts, (VmDemand("v", 250.0, None),)))
    2
    >>> capacity_bound(Snapshot(hosts, ()))
    0
    """
    def fewest(capacities: list[float], demand: float) -> int:
        if demand <= 0:
            return 0
        total = 0.0
        for count, cap in enumerate(sorted(capacities, reverse=True), start=1):
            total += cap
            if total >= demand * (1 - 1e-12):
                return count
        return len(capacities) + 1  # more than every host: infeasible

    if not snapshot.vms:
        return 0
    bound = fewest([h.cpu * snapshot.max_utilization for h in snapshot.hosts],
                   snapshot.total_cpu)
    if snapshot.has_ram:
        bound = max(bound, fewest([float(h.ram or 0) for h in snapshot.hosts],
                                  float(sum(v.ram or 0 for v in snapshot.vms))))
    return max(bound, 1)


@dataclass(frozen=True)
class _Scaled:
    """The snapshot in CP-SAT's integers (see the module docstring)."""

    cap_cpu: list[int]
    cap_ram: list[int] | None
    cpu: list[int]
    ram: list[int] | None
    current: list[int | None]  # the VM's host index now

    @classmethod
    def of(cls, snapshot: Snapshot) -> _Scaled:
        index = {h.name: i for i, h in enumerate(snapshot.hosts)}
        cap_cpu, cpu = _integers([h.cpu * snapshot.max_utilization for h in snapshot.hosts],
                                 [v.cpu for v in snapshot.vms])
        cap_ram = ram = None
        if snapshot.has_ram:
            cap_ram, ram = _integers([float(h.ram or 0) for h in snapshot.hosts],
                                     [float(v.ram or 0) for v in snapshot.vms])
        return cls(
            cap_cpu=cap_cpu, cap_ram=cap_ram, cpu=cpu, ram=ram,
            current=[None if v.host is None else index[v.host] for v in snapshot.vms],
        )

    def fits(self, v: int, h: int) -> bool:
        return self.cpu[v] <= self.cap_cpu[h] and (
            self.ram is None or self.cap_ram is None or self.ram[v] <= self.cap_ram[h])

    def host_class(self, h: int) -> tuple[int, int]:
        return self.cap_cpu[h], (self.cap_ram[h] if self.cap_ram is not None else 0)


def _integers(capacities: list[float], demands: list[float]) -> tuple[list[int], list[int]]:
    """Capacities and demands as integers of one scale (see the module docstring).

    >>> _integers([0.3, 2128.0000000000005], [0.1, 0.2])  # exact: times 10
    ([3, 21280], [1, 2])
    >>> _integers([4 * 2**30], [870 * 10**6, 2**30])      # exact: over the gcd (2**7)
    ([33554432], [6796875, 8388608])
    >>> _integers([3.0], [1 / 3, 2 / 3])                  # relaxed: demands down, caps up
    ([1000000], [111111, 222222])
    """
    values = capacities + demands
    for decimals in range(MAX_DECIMALS + 1):
        factor = 10**decimals
        ints = [round(v * factor) for v in values]
        if all(abs(v * factor - i) <= 1e-9 * max(1.0, abs(v * factor))
               for v, i in zip(values, ints, strict=True)):
            divisor = math.gcd(*ints) or 1
            ints = [i // divisor for i in ints]
            if max(ints) <= MAX_EXACT:
                return ints[:len(capacities)], ints[len(capacities):]
            break
    scale = RESOLUTION / max(capacities)
    return ([math.ceil(c * scale - 1e-9) for c in capacities],
            [math.floor(d * scale + 1e-9) for d in demands])


class _Model:
    """The CP-SAT model of one phase (see the module docstring)."""

    def __init__(self, s: _Scaled, *, lower: int, empty_symmetry_only: bool) -> None:
        from ortools.sat.python import cp_model

        self.model = m = cp_model.CpModel()
        n_hosts, n_vms = len(s.cap_cpu), len(s.cpu)
        self.y = [m.new_bool_var(f"y{h}") for h in range(n_hosts)]
        self.x: dict[tuple[int, int], cp_model.IntVar] = {}
        on_host: dict[int, list[int]] = defaultdict(list)
        for v in range(n_vms):
            choices = []
            for h in range(n_hosts):
                if s.fits(v, h):
                    var = m.new_bool_var(f"x{v}_{h}")
                    self.x[v, h] = var
                    on_host[h].append(v)
                    choices.append(var)
                    m.add_implication(var, self.y[h])
            m.add_exactly_one(choices)
        loads = []
        for h in range(n_hosts):
            load = sum(s.cpu[v] * self.x[v, h] for v in on_host[h])
            loads.append(load)
            m.add(load <= s.cap_cpu[h] * self.y[h])
            if s.ram is not None and s.cap_ram is not None:
                m.add(sum(s.ram[v] * self.x[v, h] for v in on_host[h])
                      <= s.cap_ram[h] * self.y[h])
        m.add(sum(self.y) >= lower)
        occupied = {h for h in s.current if h is not None}
        classes: dict[tuple[int, int], list[int]] = defaultdict(list)
        for h in range(n_hosts):
            if not empty_symmetry_only or h not in occupied:
                classes[s.host_class(h)].append(h)
        for members in classes.values():
            for a, b in zip(members, members[1:], strict=False):
                m.add(self.y[a] >= self.y[b])
                m.add(loads[a] >= loads[b])

    def placement(self, solver: cp_model.CpSolver, snapshot: Snapshot) -> dict[str, str]:
        return {snapshot.vms[v].name: snapshot.hosts[h].name
                for (v, h), var in self.x.items() if solver.value(var)}


def _solver(time_limit: float, *, deterministic: bool, workers: int | None) -> Any:
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    params = solver.parameters
    params.random_seed = 0
    if deterministic:
        params.num_workers = 1
        params.max_deterministic_time = max(time_limit, 0.001)
    else:
        params.max_time_in_seconds = max(time_limit, 0.001)
        if workers is not None:
            params.num_workers = workers
    return solver


def _status_name(code: int) -> str:
    from ortools.sat.python import cp_model

    return {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE",
            cp_model.INFEASIBLE: "INFEASIBLE"}.get(code, "UNKNOWN")


def _current_if_fits(s: _Scaled) -> list[int] | None:
    """The current placement, if every VM is placed and it respects the capacities."""
    cpu: dict[int, int] = defaultdict(int)
    ram: dict[int, int] = defaultdict(int)
    placed: list[int] = []
    for v, h in enumerate(s.current):
        if h is None:
            return None
        placed.append(h)
        cpu[h] += s.cpu[v]
        if s.ram is not None:
            ram[h] += s.ram[v]
    fits = all(load <= s.cap_cpu[h] for h, load in cpu.items()) and (
        s.cap_ram is None or all(load <= s.cap_ram[h] for h, load in ram.items()))
    return placed if fits else None


def solve(snapshot: Snapshot, *, time_limit: float = DEFAULT_TIME_LIMIT,
          min_migrations: bool = False, deterministic: bool = False,
          workers: int | None = None) -> Optimum:
    """The fewest active hosts for ``snapshot`` (and the fewest migrations to get there).

    ``time_limit`` is in seconds for the whole call (with ``min_migrations``, the first
    objective may use half of it; the second gets what is left). ``deterministic`` uses one
    worker and CP-SAT's deterministic time instead of the wall clock, so that the same
    snapshot always gives the same answer (for a simulation's metric); ``workers`` sets the
    number of parallel workers otherwise (default: CP-SAT's, one per core).
    """
    start = time.perf_counter()
    lower = capacity_bound(snapshot)
    if not snapshot.vms:
        return Optimum("OPTIMAL", 0, 0, 0, time.perf_counter() - start, {},
                       0 if min_migrations else None, 0 if min_migrations else None,
                       "OPTIMAL" if min_migrations else None)
    s = _Scaled.of(snapshot)
    homeless = [v for v in range(len(s.cpu)) if not any(s.fits(v, h)
                                                       for h in range(len(s.cap_cpu)))]
    if homeless or lower > len(snapshot.hosts):
        return Optimum("INFEASIBLE", None, lower, lower, time.perf_counter() - start)

    starts: list[list[int]] = [a for a in (first_fit_decreasing(s), _current_if_fits(s))
                               if a is not None]
    quick = min(starts, key=lambda a: (len(set(a)), starts.index(a)), default=None)
    if quick is not None and len(set(quick)) == lower and not min_migrations:
        placement = {snapshot.vms[v].name: snapshot.hosts[h].name for v, h in enumerate(quick)}
        return Optimum("OPTIMAL", lower, lower, lower, time.perf_counter() - start, placement)
    first = _Model(s, lower=lower, empty_symmetry_only=False)
    first.model.minimize(sum(first.y))
    if quick is not None:  # a first solution, permuted to obey the symmetry breaking
        _hint_sorted(first, s, quick)
    budget = time_limit / 2 if min_migrations else time_limit
    solver = _solver(budget, deterministic=deterministic, workers=workers)
    status = _status_name(solver.solve(first.model))
    bound = lower
    if status in ("OPTIMAL", "FEASIBLE", "UNKNOWN"):
        bound = max(lower, math.ceil(solver.best_objective_bound - 1e-6))
    if status in ("OPTIMAL", "FEASIBLE"):
        best = round(solver.objective_value)
        placement = first.placement(solver, snapshot)
    elif quick is not None:  # CP-SAT found nothing in time: the quick placement stands
        status, best = "FEASIBLE", len(set(quick))
        placement = {snapshot.vms[v].name: snapshot.hosts[h].name for v, h in enumerate(quick)}
    else:
        return Optimum(status, None, bound, lower, time.perf_counter() - start)
    if best == bound:
        status = "OPTIMAL"
    if not min_migrations:
        return Optimum(status, best, bound, lower, time.perf_counter() - start, placement)

    second = _Model(s, lower=lower, empty_symmetry_only=True)
    second.model.add(sum(second.y) <= best)
    stays = [second.x[v, h] for v, h in enumerate(s.current)
             if h is not None and (v, h) in second.x]
    placed_now = sum(1 for h in s.current if h is not None)
    second.model.maximize(sum(stays))
    by_name = {h.name: i for i, h in enumerate(snapshot.hosts)}
    for (v, h), var in second.x.items():
        second.model.add_hint(var, by_name[placement[snapshot.vms[v].name]] == h)
    left = max(time_limit - (time.perf_counter() - start), 0.001)
    solver2 = _solver(left if not deterministic else time_limit / 2,
                      deterministic=deterministic, workers=workers)
    status2 = _status_name(solver2.solve(second.model))
    if status2 not in ("OPTIMAL", "FEASIBLE"):  # cannot happen: the hint is a solution
        return Optimum(status, best, bound, lower, time.perf_counter() - start, placement,
                       migrations_status=status2)
    migrations = placed_now - round(solver2.objective_value)
    migrations_bound = max(0, placed_now - math.floor(solver2.best_objective_bound + 1e-6))
    if migrations == migrations_bound:
        status2 = "OPTIMAL"
    return Optimum(status, best, bound, lower, time.perf_counter() - start,
                   second.placement(solver2, snapshot), migrations, migrations_bound, status2)


def first_fit_decreasing(s: _Scaled) -> list[int] | None:
    """A quick placement: VMs by decreasing size (the larger of their CPU and RAM shares of
    the largest host), each on the first host, largest hosts first, where it fits; ``None``
    when one fits nowhere. Its host count is the solver's first upper bound.

    >>> s = _Scaled(cap_cpu=[10, 10, 10], cap_ram=None, cpu=[4, 6, 5, 5],
    ...             ram=None, current=[0, 1, 2, 0])
    >>> first_fit_decreasing(s)
    [0, 0, 1, 1]
    """
    def size(v: int) -> float:
        share = s.cpu[v] / RESOLUTION
        return max(share, s.ram[v] / RESOLUTION) if s.ram is not None else share

    hosts = sorted(range(len(s.cap_cpu)), key=lambda h: (-s.host_class(h)[0], h))
    cpu_left = list(s.cap_cpu)
    ram_left = list(s.cap_ram) if s.cap_ram is not None else None
    where: list[int] = [-1] * len(s.cpu)
    for v in sorted(range(len(s.cpu)), key=lambda v: (-size(v), v)):
        for h in hosts:
            if cpu_left[h] >= s.cpu[v] and (ram_left is None or s.ram is None
                                             or ram_left[h] >= s.ram[v]):
                cpu_left[h] -= s.cpu[v]
                if ram_left is not None and s.ram is not None:
                    ram_left[h] -= s.ram[v]
                where[v] = h
                break
        else:
            return None
    return where


def _hint_sorted(model: _Model, s: _Scaled, assignment: list[int]) -> None:
    """Hint ``assignment``, its hosts permuted within each class so that it obeys the
    symmetry-breaking order (most loaded first)."""
    load: dict[int, int] = defaultdict(int)
    for v, h in enumerate(assignment):
        load[h] += s.cpu[v]
    classes: dict[tuple[int, int], list[int]] = defaultdict(list)
    for h in range(len(s.cap_cpu)):
        classes[s.host_class(h)].append(h)
    moved: dict[int, int] = {}
    for members in classes.values():
        ranked = sorted(members, key=lambda h: (-load.get(h, 0), h))
        moved.update(zip(ranked, members, strict=True))
    target = {v: moved[h] for v, h in enumerate(assignment)}
    for (v, h), var in model.x.items():
        model.model.add_hint(var, target[v] == h)
    used = set(target.values())
    for h, var in enumerate(model.y):
        model.model.add_hint(var, h in used)


def gap(heuristic_active_hosts: int | None, snapshot: Snapshot, *,
        time_limit: float = DEFAULT_TIME_LIMIT, deterministic: bool = True) -> Gap:
    """How far a heuristic's active hosts are from the optimum of ``snapshot``.

    ``heuristic_active_hosts`` defaults to the hosts the snapshot's VMs occupy (a
    consolidation controller passes the snapshot of its own placement at each interval).
    Deterministic by default (see :func:`solve`), so a simulation's metric is repeatable;
    ``time_limit`` is then CP-SAT's deterministic time, which is not wall time: on 100 hosts
    and 300 RAM-bound VMs, 1 unit took 6.5 s of wall time on a loaded machine (the model's
    construction included), while a snapshot where first-fit-decreasing meets the capacity
    bound takes milliseconds. A controller calling it at each interval picks the limit.

    >>> from livemig.analysis.snapshot import HostCapacity, Snapshot, VmDemand
    >>> hosts = tuple(HostCapacity(f"h{i}", 100.0) for i in range(3))
    >>> snap = Snapshot(hosts, tuple(VmDemand(f"v{i}", 30.0, f"h{i}") for i in range(3)))
    >>> gap(None, snap).as_dict()["hosts_over_bound"]
    2
    """
    result = solve(snapshot, time_limit=time_limit, deterministic=deterministic)
    heuristic = snapshot.active_hosts if heuristic_active_hosts is None \
        else int(heuristic_active_hosts)
    return Gap(heuristic=heuristic, best=result.active_hosts, bound=result.bound,
               status=result.status)
