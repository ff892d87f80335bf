"""The optimality gap as a consolidation metric: after each consolidation step (or every
``every``-th), the heuristic's placement against the fewest active hosts CP-SAT can prove
(:func:`livemig.analysis.optimum.gap`, deterministic mode: same run, same figures).

A scenario asks for it in its ``consolidation:`` section::

    optimality_gap: {time_limit: 1s, every: 1, max_utilization: 1.0}

``time_limit`` is CP-SAT's *deterministic* time per step (not wall time, see
:func:`~livemig.analysis.optimum.gap`); ``max_utilization`` the share of a host's MIPS the
optimum may use (1: the absolute minimum; a policy's own threshold is not imposed on it).

The heuristic's placement is the engine's after the step's plan: a VM being migrated counts
on its destination (where the heuristic put it), with its current CPU request
(:func:`~livemig.consolidation.snapshot.placement_snapshot`). RAM is a constraint of the
optimum when the run's mode checks RAM (``default``: Nova's check), not in ``cloudsim``
mode, whose placement ignores it. The per-step figures (``optimality_*`` columns of
``hosts.csv``): the heuristic's active hosts, the proven bound, the best placement found,
the gap (heuristic - bound: an upper bound on the hosts the heuristic wastes, exact when the
status is OPTIMAL) and CP-SAT's status. The run's metrics (:meth:`GapRecorder.metrics`):

>>> rec = GapRecorder(GapOption(every=2), ram=False)
>>> rec.record({"heuristic": 5, "bound": 3, "best": 3, "status": "OPTIMAL"})
>>> rec.record({"heuristic": 4, "bound": 4, "best": 4, "status": "OPTIMAL"})
>>> rec.record({"heuristic": 6, "bound": 4, "best": 5, "status": "FEASIBLE"})
>>> m = rec.metrics()
>>> m["optimality_gap_mean"], m["optimality_gap_max"], m["optimality_steps"]
(1.3333333333333333, 2, 3)
>>> round(m["optimality_gap_relative_mean"], 4), m["optimality_steps_not_optimal"]
(0.3889, 1)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livemig.analysis.snapshot import Snapshot
    from livemig.consolidation.cloudsim import Engine

COLUMNS = ("optimality_heuristic", "optimality_bound", "optimality_best", "optimality_gap",
           "optimality_status")
"""The per-step columns (empty on the steps not measured)."""
METRICS = ("optimality_gap_mean", "optimality_gap_max", "optimality_gap_relative_mean",
           "optimality_bound_mean", "optimality_heuristic_mean", "optimality_steps",
           "optimality_steps_not_optimal")
MB = 1 << 20


@dataclass(frozen=True)
class GapOption:
    """A scenario's ``optimality_gap:`` (see the module doc)."""

    time_limit: float = 1.0
    every: int = 1
    max_utilization: float = 1.0


def heuristic_snapshot(engine: Engine, *, ram: bool, max_utilization: float = 1.0) -> Snapshot:
    """The engine's placement after its plan, as the optimum's input (see the module doc).

    >>> import numpy as np
    >>> from livemig.consolidation.cloudsim import Engine, Experiment, Policy
    >>> g4 = [86, 89.4, 92.6, 96, 99.5, 102, 106, 108, 112, 114, 117]
    >>> exp = Experiment(samples=np.array([[0.5, 0.5], [0.2, 0.2]]),
    ...     vm_mips=np.array([1000.0, 1000.0]), vm_ram=np.array([613.0, 613.0]),
    ...     vm_bw=np.array([1e5, 1e5]), host_pe_mips=np.array([1860.0, 1860.0]),
    ...     host_pes=np.array([2.0, 2.0]), host_ram=np.array([4096.0, 4096.0]),
    ...     host_bw=np.array([1e6, 1e6]), host_tables=np.array([g4, g4], float))
    >>> engine = Engine(exp, Policy(kind="dvfs")); engine.place_initial()
    >>> engine.update(0.1, False); engine.in_flight[1] = [1]   # VM 1 on its way to host 1
    >>> snap = heuristic_snapshot(engine, ram=True)
    >>> [(v.name, v.cpu, v.host, v.ram // MB) for v in snap.vms], snap.active_hosts
    ([('0', 500.0, 'host-0', 613), ('1', 200.0, 'host-1', 613)], 2)
    """
    from livemig.analysis.snapshot import HostCapacity, Snapshot, VmDemand
    from livemig.consolidation.snapshot import placement_snapshot

    data = placement_snapshot(engine)
    hosts = tuple(HostCapacity(f"host-{h['id']}", h["capacity_mips"],
                               int(h["ram_mb"] * MB) if ram else None) for h in data["hosts"])
    vms = tuple(VmDemand(str(v["id"]), v["demand_mips"],
                         f"host-{(v['migrating_to'] or [v['host']])[-1]}",
                         int(v["ram_mb"] * MB) if ram else None) for v in data["vms"])
    return Snapshot(hosts, vms, max_utilization)


class GapRecorder:
    """Measures the gap at the engine's steps (an :class:`Engine` ``observer``)."""

    def __init__(self, option: GapOption, *, ram: bool) -> None:
        self.option = option
        self.ram = ram
        self.steps = 0
        self.rows: list[dict[str, Any]] = []
        self.wall_s = 0.0  # time spent measuring (not a metric: not deterministic)

    def __call__(self, engine: Engine) -> dict[str, Any]:
        """The step's columns: measured on steps 0, every, 2·every, ...; else empty."""
        step, self.steps = self.steps, self.steps + 1
        if step % self.option.every:
            return dict.fromkeys(COLUMNS, "")
        from livemig.analysis.optimum import gap

        started = time.perf_counter()
        snap = heuristic_snapshot(engine, ram=self.ram,
                                  max_utilization=self.option.max_utilization)
        result = gap(None, snap, time_limit=self.option.time_limit)
        row = {"heuristic": result.heuristic, "bound": result.bound, "best": result.best,
               "status": result.status}
        self.record(row)
        self.wall_s += time.perf_counter() - started
        return {"optimality_heuristic": result.heuristic, "optimality_bound": result.bound,
                "optimality_best": "" if result.best is None else result.best,
                "optimality_gap": result.hosts_over_bound, "optimality_status": result.status}

    def record(self, row: dict[str, Any]) -> None:
        """Keep one measured step (``heuristic``, ``bound``, ``best``, ``status``)."""
        self.rows.append(row)

    def metrics(self) -> dict[str, Any]:
        """Mean and max gap (hosts over the bound), the mean relative gap (over the bound),
        the mean bound and heuristic, how many steps were measured and how many of them
        CP-SAT did not prove optimal within its limit."""
        rows = self.rows
        gaps = [r["heuristic"] - r["bound"] for r in rows]
        relative = [(r["heuristic"] - r["bound"]) / r["bound"] if r["bound"] else 0.0
                    for r in rows]
        n = len(rows)
        return {
            "optimality_gap_mean": sum(gaps) / n if n else 0.0,
            "optimality_gap_max": max(gaps, default=0),
            "optimality_gap_relative_mean": sum(relative) / n if n else 0.0,
            "optimality_bound_mean": sum(r["bound"] for r in rows) / n if n else 0.0,
            "optimality_heuristic_mean": sum(r["heuristic"] for r in rows) / n if n else 0.0,
            "optimality_steps": n,
            "optimality_steps_not_optimal": sum(r["status"] != "OPTIMAL" for r in rows),
        }
