"""The ``cloudsim`` migration-cost mode: CloudSim 5.0's dynamic-consolidation experiment.

This is a faithful *accounting engine*, not a run through the orchestrator's flow. CloudSim
starts every planned migration at once, with no checks, no per-host concurrency limit, no
link sharing and a fixed duration ``RAM / (BW / 2)``; its accounting (10 % degradation on
the source, 10 % reserved on the destination, energy as trapezoids between datacenter
updates, SLA histories as step functions) is tied to its event order. Replaying that
through Nova's flow would change what is being reproduced, so this module replays
CloudSim's own rules on its own event list (updates every interval, migration
completions) and writes the same metrics. The policies it calls are the shared pure
modules (:mod:`overload`, :mod:`selection`, :mod:`placement`).

Rules, as ``consolidation-reference.md`` describes them (quirks included):

* Initial placement in VM order at full MIPS, RAM and BW: PABFD (migration policies) or
  first fit (``dvfs``, ``npa``).
* Updates at 300.1, 600.1, ... (the creation delay of 0.1 s, then ``t + 300``) up to the
  limit, and at each migration completion (before and after it, same time).
* Per host and update: MIPS allocation with the per-PE cap, proportional scaling (floored)
  when oversubscribed; a VM migrating out gets 90 % (its host counts 100 %), a VM
  migrating in reserves 10 % on its destination (requested counts 100 %).
* Energy per interval ``(P(u0) + P(u1)) / 2 x dt``, 0 when the host was idle at its start.
* After each update, a VM whose request is exactly 0 (its trace at 0 on both sides of
  the current time) and that is not migrating is destroyed for good, as CloudSim's
  ``getCompletedVms`` does (a quirk the reference document does not list; it takes
  about a seventh of DVFS's energy away).
* Each update on the interval grid appends every VM's utilisation to its history (30
  values, newest first; nothing at creation, t = 0).
* The consolidation step: overloaded hosts, VM selection, PABFD with ``host.getPower()``
  as last measured, then the underloaded hosts in increasing utilisation with the
  reference's exclusions (step 3's destinations are not excluded).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livemig.consolidation import overload as overload_mod
from livemig.consolidation import reference as ref
from livemig.consolidation import selection as selection_mod
from livemig.consolidation.placement import PLACEMENT, least_utilised
from livemig.consolidation.power import MODELS, energy_joules, power_of
from livemig.consolidation.traces import Trace, block_types
from livemig.core.cpu_trace import utilisations_at

NORMAL, OUT, IN = 0, 1, 2
WATCHER = ("vm_workload_consolidation", "workload_balance")
MB_KBIT = 8000  # CloudSim: 1 MB = 8000 kbit


@dataclass(frozen=True)
class Experiment:
    """Hosts, VMs and their traces, and the clock of the experiment."""

    samples: np.ndarray  # (vms, samples + 1) utilisation fractions
    vm_mips: np.ndarray
    vm_ram: np.ndarray  # MB
    vm_bw: np.ndarray  # kbit/s
    host_pe_mips: np.ndarray
    host_pes: np.ndarray
    host_ram: np.ndarray  # MB
    host_bw: np.ndarray  # kbit/s
    host_tables: np.ndarray  # (hosts, 11) watts
    vm_names: tuple[str, ...] = ()
    host_names: tuple[str, ...] = ()  # () = host-0, host-1, ... (the default mode's names)
    interval: float = ref.INTERVAL
    limit: float = ref.LIMIT
    first_update: float = ref.FIRST_UPDATE
    history_length: int = 30


def reference_experiment(trace: Trace, hosts: int = ref.HOSTS) -> Experiment:
    """The reference setup: host i of type i mod 2, VM types by block (``i // ceil(N/4)``)."""
    types = block_types(len(trace.names), len(ref.VM_TYPES))
    host_types = [ref.HOST_TYPES[i % len(ref.HOST_TYPES)] for i in range(hosts)]
    return Experiment(
        samples=trace.samples,
        vm_mips=np.array([ref.VM_TYPES[t].mips for t in types], dtype=float),
        vm_ram=np.array([ref.VM_TYPES[t].ram_mb for t in types], dtype=float),
        vm_bw=np.array([ref.VM_TYPES[t].bw_kbit for t in types], dtype=float),
        host_pe_mips=np.array([h.mips for h in host_types], dtype=float),
        host_pes=np.array([h.pes for h in host_types], dtype=float),
        host_ram=np.array([h.ram_mb for h in host_types], dtype=float),
        host_bw=np.array([h.bw_kbit for h in host_types], dtype=float),
        host_tables=np.array([MODELS[h.power_model].watts for h in host_types], dtype=float),
        vm_names=trace.names,
    )


@dataclass(frozen=True)
class Policy:
    """``kind``: ``migration`` (overload + selection + PABFD), ``dvfs``, ``npa``, or one of
    Watcher's strategies, ``vm_workload_consolidation`` and ``workload_balance``
    (``parameter``: its threshold in %, 25 by default)."""

    kind: str = "migration"
    overload: str = "lr"
    parameter: float | None = None
    selection: str = "mmt"
    seed: int = 1
    placement: str = "pabfd"  # a key of placement.PLACEMENT (``migration`` only)

    @property
    def label(self) -> str:
        if self.kind in WATCHER:
            return f"watcher {self.kind}" + (
                f" {self.parameter:g} %" if self.parameter is not None else "")
        if self.kind != "migration":
            return self.kind.upper()
        param = "" if self.parameter is None else f" {self.parameter:g}"
        place = "" if self.placement == "pabfd" else f"-{self.placement.upper()}"
        return f"{self.overload.upper()}{param}-{self.selection.upper()}{place}"


@dataclass
class Outcome:
    """What a run reports (``metrics``), per-step series and every migration."""

    metrics: dict[str, Any]
    series: list[dict[str, Any]] = field(default_factory=list)
    migrations: list[tuple[int, int, int, float, float]] = field(default_factory=list)
    # (vm, source host, destination host, start, end)


class _Records:
    """Step-function records (time, allocated, requested, flag) whose durations are
    accounted when the next record of the same entity arrives (same time: replaced)."""

    def __init__(self, n: int) -> None:
        self.time = np.full(n, -1.0)
        self.alloc = np.zeros(n)
        self.req = np.zeros(n)
        self.flag = np.zeros(n, dtype=bool)

    def advance(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Durations of the current records until ``t`` (0 for none or same time)."""
        has = self.time >= 0
        return has, np.where(has, t - self.time, 0.0)

    def set(self, t: float, alloc: np.ndarray, req: np.ndarray, flag: np.ndarray) -> None:
        self.time[:] = t
        self.alloc = alloc
        self.req = req
        self.flag = flag


class Engine:
    """One run of the experiment under one policy (see the module doc)."""

    def __init__(self, exp: Experiment, policy: Policy) -> None:
        self.exp = exp
        self.policy = policy
        self.n_vms = len(exp.vm_mips)
        self.n_hosts = len(exp.host_pe_mips)
        self.total = exp.host_pes * exp.host_pe_mips
        self.overload = (overload_mod.make(policy.overload, policy.parameter)
                         if policy.kind == "migration" else None)
        self.selection = (selection_mod.make(policy.selection)
                          if policy.kind == "migration" else None)
        self.rng = random.Random(policy.seed)
        self.place = PLACEMENT[policy.placement]
        self.ram_binding = False  # RAM checked when moving (the default mode: Nova's check)
        self.destroy_idle_vms = True  # CloudSim's getCompletedVms (the cloudsim mode only)
        self.host_of = np.full(self.n_vms, -1, dtype=np.intp)
        self.alive = np.ones(self.n_vms, dtype=bool)
        self.removed = 0
        self.lists: list[list[int]] = [[] for _ in range(self.n_hosts)]
        self.in_flight: dict[int, list[int]] = {}
        width = exp.history_length
        self.hist = np.zeros((self.n_vms, width))
        self.hist_count = 0
        self.hist_time = 0.0
        self.util_mips = np.zeros(self.n_hosts)
        self.last_time = 0.0
        self.energy = 0.0
        self.req = np.zeros(self.n_vms)
        self.u = np.zeros(self.n_vms)
        self.alloc_sum = np.zeros(self.n_hosts)
        self.avail = self.total.copy()
        self.host_req = np.zeros(self.n_hosts)
        self.hosts_rec = _Records(self.n_hosts)
        self.vms_rec = _Records(self.n_vms)
        self.committed_active = np.ones(self.n_hosts, dtype=bool)
        self.active_time = 0.0
        self.violation_time = 0.0
        self.vm_alloc_total = 0.0
        self.vm_req_total = 0.0
        self.vm_under_migration = 0.0
        self.shortfalls_sum = 0.0
        self.shortfalls = 0
        self.shutdowns = 0
        self.events: list[tuple[float, int, int, int]] = []
        self.seq = 0
        self.migrations: list[list[Any]] = []
        self.series: list[dict[str, Any]] = []
        self.updates = 0
        self.observer: Callable[[Engine], dict[str, Any]] | None = None
        # called after each step's plan; its columns join the step's row (optimality gap)

    # -- setup ---------------------------------------------------------------
    def place_initial(self) -> None:
        exp = self.exp
        avail = self.total.copy()
        load = np.zeros(self.n_hosts)
        ram_free = exp.host_ram.copy()
        bw_free = exp.host_bw.copy()
        zero_power = power_of(np.zeros(self.n_hosts), exp.host_tables)
        empty_history = np.zeros((1, exp.history_length))
        for v in range(self.n_vms):
            mips = exp.vm_mips[v]
            fits = ((exp.host_pe_mips >= mips) & (avail >= mips)
                    & (ram_free >= exp.vm_ram[v]) & (bw_free >= exp.vm_bw[v]))
            if self.policy.kind == "migration":
                assert self.overload is not None

                def over_after(idx: np.ndarray, mips: float = mips) -> np.ndarray:
                    # created VMs request 0 until their cloudlets arrive; no history yet
                    return self.overload.overloaded(
                        mips / self.total[idx], np.repeat(empty_history, len(idx), axis=0),
                        np.ones(len(idx)))

                host = self.place(mips, ~fits, exp.host_pe_mips, avail, load, self.total,
                                  zero_power, exp.host_tables, over_after)
            else:
                found = np.flatnonzero(fits)
                host = int(found[0]) if found.size else -1
            if host < 0:
                raise ValueError(f"VM {v}: no host can take it at creation "
                                 f"({mips:g} MIPS, {exp.vm_ram[v]:g} MB)")
            self.lists[host].append(v)
            self.host_of[v] = host
            avail[host] -= mips
            load[host] += mips
            ram_free[host] -= exp.vm_ram[v]
            bw_free[host] -= exp.vm_bw[v]
        # created at t = 0: PowerVm records nothing then (clock 0, no cloudlet yet)
        self.hist_count = 0
        self.hist_time = 0.0

    # -- the datacenter update -------------------------------------------------
    def utilisation(self, t: float) -> np.ndarray:
        """Every VM's CPU utilisation at ``t`` (fractions): its trace here; the default
        mode asks a :class:`~livemig.consolidation.utilisation.UtilisationSource`."""
        return utilisations_at(self.exp.samples, t, self.exp.interval)

    def _placements(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vm, host, kind) of every live VM on its host, then of each migration's
        destination copy (kind IN)."""
        pv = np.flatnonzero(self.alive)
        ph = self.host_of[pv]
        kind = np.zeros(len(pv), dtype=np.int8)
        if self.in_flight:
            moving = np.fromiter(self.in_flight, dtype=np.intp)
            kind[np.searchsorted(pv, moving)] = OUT
            extra_v = [v for v, ds in self.in_flight.items() for _ in ds]
            extra_h = [d for ds in self.in_flight.values() for d in ds]
            pv = np.concatenate([pv, np.array(extra_v, dtype=np.intp)])
            ph = np.concatenate([ph, np.array(extra_h, dtype=np.intp)])
            kind = np.concatenate([kind, np.full(len(extra_v), IN, dtype=np.int8)])
        return pv, ph, kind

    def _utilisation(self, mips: np.ndarray) -> np.ndarray:
        u = mips / self.total
        u = np.where((u > 1) & (u < 1.01), 1.0, u)
        if np.any(u > 1):
            raise ValueError("a host's utilisation exceeds 100 % (CloudSim would stop here)")
        return u

    def update(self, t: float, with_energy: bool) -> None:
        """Every host's allocation at ``t`` (``updateVmsProcessing``), energy since the
        last update, and the state records."""
        exp, n_hosts = self.exp, self.n_hosts
        self.updates += 1
        u = self.utilisation(t)
        req = u * exp.vm_mips
        pv, ph, kind = self._placements()
        capped = np.minimum(req[pv], exp.host_pe_mips[ph])
        required = np.where(kind == IN, capped * 0.1, capped)
        reqsum = np.bincount(ph, required, n_hosts)
        over = reqsum > self.total
        scale = np.divide(self.total, reqsum, out=np.ones(n_hosts), where=over)[ph]
        normal = np.where(kind == OUT, capped * 0.9, np.where(kind == IN, capped * 0.1, capped))
        scaled = np.floor(np.where(kind == OUT, capped * scale * 0.9,
                                   np.where(kind == IN, capped * 0.1 * scale, capped * scale)))
        alloc = np.where(over[ph], scaled, normal)
        util_mips = np.bincount(ph, np.where(kind == OUT, alloc / 0.9, alloc), n_hosts)
        host_req = np.bincount(ph, req[pv], n_hosts)
        if with_energy and t > self.last_time:
            prev_u = self._utilisation(self.util_mips)
            cur_u = self._utilisation(util_mips)
            if self.policy.kind == "npa":
                self.energy += float(self.exp.host_tables[:, -1].sum()) * (t - self.last_time)
            else:
                p0 = power_of(prev_u, exp.host_tables)
                p1 = power_of(cur_u, exp.host_tables)
                self.energy += float(energy_joules(p0, p1, prev_u, t - self.last_time).sum())
        self.last_time = t
        self.util_mips = util_mips
        self._record_hosts(t, util_mips, host_req)
        live = len(np.flatnonzero(self.alive))
        primary = np.zeros(self.n_vms)
        primary[pv[:live]] = alloc[:live]
        migrating = np.zeros(self.n_vms, dtype=bool)
        migrating[pv[:live]] = kind[:live] == OUT
        self._record_vms(t, primary, req, migrating)
        self.req, self.u = req, u
        self.alloc_sum = np.bincount(ph, alloc, n_hosts)
        self.avail = np.where(over, 0.0, self.total - reqsum)
        self.host_req = host_req
        if self.destroy_idle_vms:
            self._remove_idle_vms(req)

    def _remove_idle_vms(self, req: np.ndarray) -> None:
        """CloudSim's ``getCompletedVms``: a live VM requesting exactly 0 MIPS that is
        not migrating is destroyed (its records stop; its host's books are freed)."""
        idle = np.flatnonzero(self.alive & (req == 0))
        for v in idle.tolist():
            if v in self.in_flight:
                continue
            h = int(self.host_of[v])
            self.lists[h].remove(v)
            self.alive[v] = False
            self.host_of[v] = -1
            self.vms_rec.time[v] = -1.0  # its last record has no successor: counts nothing
            self.removed += 1  # it requested 0: the host's MIPS books do not change

    def _record_hosts(self, t: float, alloc: np.ndarray, req: np.ndarray) -> None:
        rec = self.hosts_rec
        has, dt = rec.advance(t)
        counted = has & rec.flag
        self.active_time += float(dt[counted].sum())
        self.violation_time += float(dt[counted & (rec.alloc < rec.req)].sum())
        new_time = has & (t > rec.time)
        self.shutdowns += int((new_time & self.committed_active & ~rec.flag).sum())
        self.committed_active = np.where(new_time, rec.flag, self.committed_active)
        rec.set(t, alloc, req, alloc > 0)

    def _record_vms(self, t: float, alloc: np.ndarray, req: np.ndarray,
                    migrating: np.ndarray) -> None:
        rec = self.vms_rec
        has, dt = rec.advance(t)
        has &= self.alive
        dt = np.where(has, dt, 0.0)
        self.vm_alloc_total += float((rec.alloc * dt).sum())
        self.vm_req_total += float((rec.req * dt).sum())
        short = has & (dt > 0) & (rec.alloc < rec.req)
        if short.any():
            self.shortfalls += int(short.sum())
            self.shortfalls_sum += float(((rec.req[short] - rec.alloc[short])
                                          / rec.req[short]).sum())
            mig = short & rec.flag
            self.vm_under_migration += float(((rec.req[mig] - rec.alloc[mig]) * dt[mig]).sum())
        rec.time[:] = np.where(self.alive, t, rec.time)
        rec.alloc, rec.req, rec.flag = alloc.copy(), req.copy(), migrating.copy()

    def _append_history(self, t: float) -> None:
        """PowerVm's rule: on the interval grid (``(t - 0.1) % interval == 0``)."""
        exp = self.exp
        if t > self.hist_time and math.fmod(t - exp.first_update, exp.interval) == 0:
            self.hist[:, 1:] = self.hist[:, :-1]
            self.hist[:, 0] = self.u
            self.hist_count = min(self.hist_count + 1, exp.history_length)
            self.hist_time = t

    # -- the run ------------------------------------------------------------------
    def run(self) -> Outcome:
        exp = self.exp
        self.place_initial()
        next_step = exp.first_update + exp.interval
        while True:
            next_event = self.events[0][0] if self.events else math.inf
            if min(next_step, next_event) > exp.limit:
                break
            if next_event < next_step:
                self._complete(next_event)
            else:
                self._step(next_step)
                next_step = next_step + exp.interval
        return self._outcome()

    def _step(self, t: float) -> None:
        self.update(t, True)
        self._append_history(t)
        overloaded = 0
        plan: list[tuple[int, int]] = []
        if self.policy.kind == "migration":
            plan, overloaded = Planner(self, t).plan()
        elif self.policy.kind in WATCHER:
            plan = self._watcher_plan()
        for v, dest in plan:
            self._start(t, v, dest)
        if plan:
            self.update(t, False)
        row = {
            "time_s": t, "active_hosts": int((self.util_mips > 0).sum()),
            "overloaded_hosts": overloaded, "migrations_started": len(plan),
            "energy_kwh": self.energy / 3.6e6,
        }
        if self.observer is not None:
            row.update(self.observer(self))
        self.series.append(row)

    def _watcher_plan(self) -> list[tuple[int, int]]:
        from livemig.consolidation import watcher

        live = np.flatnonzero(self.alive)
        hosts = watcher.Hosts(mips=self.total, ram=self.exp.host_ram)
        vms = watcher.Vms(host=self.host_of[live], demand=self.req[live],
                          ram=self.exp.vm_ram[live])
        if self.policy.kind == "workload_balance":
            threshold = 25.0 if self.policy.parameter is None else self.policy.parameter
            moves = watcher.workload_balance(hosts, vms, threshold)
        else:
            moves = watcher.vm_workload_consolidation(hosts, vms)
        return [(int(live[i]), dest) for i, dest in moves]

    def _start(self, t: float, v: int, dest: int) -> None:
        exp = self.exp
        self.in_flight.setdefault(v, []).append(dest)
        self.lists[dest].append(v)
        duration = exp.vm_ram[v] / (exp.host_bw[dest] / (2 * MB_KBIT))
        heapq.heappush(self.events, (t + duration, self.seq, v, dest))
        self.migrations.append([v, int(self.host_of[v]), dest, t, t + duration])
        self.seq += 1

    def _complete(self, t: float) -> None:
        self.update(t, True)
        while self.events and self.events[0][0] == t:
            _, _, v, dest = heapq.heappop(self.events)
            self.lists[int(self.host_of[v])].remove(v)
            self.lists[dest].remove(v)
            dests = self.in_flight[v]
            dests.remove(dest)
            if not dests:
                del self.in_flight[v]
            self.lists[dest].append(v)
            self.host_of[v] = dest
        self.update(t, False)

    def _outcome(self) -> Outcome:
        # the last records are pending: a shutdown shows in them too
        rec = self.hosts_rec
        self.shutdowns += int((self.committed_active & ~rec.flag & (rec.time >= 0)).sum())
        energy_kwh = self.energy / 3.6e6
        slatah = self.violation_time / self.active_time if self.active_time else 0.0
        pdm = self.vm_under_migration / self.vm_req_total if self.vm_req_total else 0.0
        slav = slatah * pdm
        durations = [m[4] - m[3] for m in self.migrations]
        metrics = {
            "policy": self.policy.label,
            "energy_kwh": energy_kwh,
            "migrations": len(self.migrations),
            "slatah": slatah,
            "pdm": pdm,
            "slav": slav,
            "esv": energy_kwh * slav,
            "host_shutdowns": self.shutdowns,
            "sla_overall": ((self.vm_req_total - self.vm_alloc_total) / self.vm_req_total
                            if self.vm_req_total else 0.0),
            "sla_average": self.shortfalls_sum / self.shortfalls if self.shortfalls else 0.0,
            "migration_time_mean_s": float(np.mean(durations)) if durations else 0.0,
            "bytes_moved": int(sum(self.exp.vm_ram[m[0]] for m in self.migrations)) << 20,
            "downtime_ms_mean": 0.0,  # CloudSim models none
            "updates": self.updates,
            "vms_removed_idle": self.removed,
            "vms": self.n_vms,
            "hosts": self.n_hosts,
        }
        return Outcome(metrics, self.series, [tuple(m) for m in self.migrations])


class Planner:
    """One consolidation step on a copy of the allocation (CloudSim's
    ``optimizeAllocation``: the plan is undone in the model and returned)."""

    def __init__(self, engine: Engine, t: float) -> None:
        # In cloudsim mode every migration has ended by the next step; in the default mode
        # some may still be queued or running: they are never picked again, and a host
        # with one is not evacuated as underloaded.
        self.busy = set(engine.in_flight)
        self.e = engine
        exp = engine.exp
        self.t = t
        self.lists = [list(vms) for vms in engine.lists]
        self.alloc = engine.alloc_sum.copy()
        self.avail = engine.avail.copy()
        self.req_sum = engine.host_req.copy()
        total = engine.total
        self.contrib = engine.hist * exp.vm_mips[:, None]  # / host MIPS per host
        self.host_hist = np.zeros((engine.n_hosts, exp.history_length))
        live = np.flatnonzero(engine.alive)
        where = engine.host_of[live]
        np.add.at(self.host_hist, where, self.contrib[live] / total[where][:, None])
        self.max_ram = np.zeros(engine.n_hosts)
        np.maximum.at(self.max_ram, where, exp.vm_ram[live])
        policy = engine.overload
        self.by_features = hasattr(policy, "features")
        if self.by_features:  # additive: kept per host, a VM's added in O(1)
            self.vm_features = policy.features(self.contrib)  # type: ignore[union-attr]
            self.host_features = policy.features(self.host_hist)  # type: ignore[union-attr]
        self.util_now = engine._utilisation(engine.util_mips)
        self.power_now = power_of(self.util_now, exp.host_tables)
        self.facts = selection_mod.VmFacts(exp.vm_ram, engine.u, engine.hist,
                                           engine.hist_count, engine.rng)
        self.ram_free: np.ndarray | None = None
        if engine.ram_binding:  # Nova's destination check: free RAM > the VM's (strict)
            used = np.zeros(engine.n_hosts)
            for h, vms in enumerate(self.lists):
                used[h] = exp.vm_ram[vms].sum() if vms else 0.0
            self.ram_free = exp.host_ram - used

    def _intervals(self, max_ram: np.ndarray, hosts: np.ndarray) -> np.ndarray:
        exp = self.e.exp
        seconds = max_ram / (exp.host_bw[hosts] / (2 * MB_KBIT))
        return np.ceil(seconds / exp.interval)

    def _overloaded(self, hosts: np.ndarray) -> np.ndarray:
        assert self.e.overload is not None
        if self.by_features:
            return self.e.overload.overloaded_by_features(  # type: ignore[union-attr]
                self.req_sum[hosts] / self.e.total[hosts], self.host_features[hosts],
                self._intervals(self.max_ram[hosts], hosts))
        return self.e.overload.overloaded(self.req_sum[hosts] / self.e.total[hosts],
                                          self.host_hist[hosts],
                                          self._intervals(self.max_ram[hosts], hosts))

    def _recompute(self, h: int) -> None:
        e = self.e
        vms = self.lists[h]
        total = e.total[h]
        if not vms:
            self.alloc[h] = 0.0
            self.avail[h] = total
            self.req_sum[h] = 0.0
            self.host_hist[h] = 0.0
            self.max_ram[h] = 0.0
            if self.by_features:
                self.host_features[h] = 0.0
            return
        idx = np.array(vms, dtype=np.intp)
        capped = np.minimum(e.req[idx], e.exp.host_pe_mips[h])
        need = capped.sum()
        if need > total:
            self.alloc[h] = np.floor(capped * (total / need)).sum()
            self.avail[h] = 0.0
        else:
            self.alloc[h] = need
            self.avail[h] = total - need
        self.req_sum[h] = e.req[idx].sum()
        self.host_hist[h] = (self.contrib[idx] / total).sum(axis=0)
        self.max_ram[h] = e.exp.vm_ram[idx].max()
        if self.by_features:
            self.host_features[h] = (self.vm_features[idx] / total).sum(axis=0)

    def _create(self, h: int, v: int) -> None:
        e = self.e
        self.lists[h].append(v)
        if self.ram_free is not None:
            self.ram_free[h] -= e.exp.vm_ram[v]
        capped = min(e.req[v], e.exp.host_pe_mips[h])
        if self.avail[h] >= capped:
            self.alloc[h] += capped
            self.avail[h] -= capped
            self.req_sum[h] += e.req[v]
            self.host_hist[h] += self.contrib[v] / e.total[h]
            self.max_ram[h] = max(self.max_ram[h], e.exp.vm_ram[v])
            if self.by_features:
                self.host_features[h] += self.vm_features[v] / e.total[h]
        else:
            self._recompute(h)

    def _destroy(self, h: int, v: int) -> None:
        self.lists[h].remove(v)
        if self.ram_free is not None:
            self.ram_free[h] += self.e.exp.vm_ram[v]
        self._recompute(h)

    def _find_host(self, v: int, excluded: np.ndarray) -> int:
        e = self.e
        exp = e.exp
        request = float(e.req[v])

        def over_after(idx: np.ndarray) -> np.ndarray:
            assert e.overload is not None
            total = e.total[idx]
            if self.by_features:
                return e.overload.overloaded_by_features(  # type: ignore[union-attr]
                    (self.req_sum[idx] + request) / total,
                    self.host_features[idx] + self.vm_features[v][None, :] / total[:, None],
                    self._intervals(np.maximum(self.max_ram[idx], exp.vm_ram[v]), idx))
            return e.overload.overloaded(
                (self.req_sum[idx] + request) / total,
                self.host_hist[idx] + self.contrib[v][None, :] / total[:, None],
                self._intervals(np.maximum(self.max_ram[idx], exp.vm_ram[v]), idx))

        if self.ram_free is not None:
            excluded = excluded | (self.ram_free <= exp.vm_ram[v])
        return e.place(request, excluded, exp.host_pe_mips, self.avail, self.alloc,
                           e.total, self.power_now, exp.host_tables, over_after)

    def _by_demand(self, vms: list[int]) -> list[int]:
        req = self.e.req
        return sorted(vms, key=lambda v: -req[v])  # stable: list order on ties

    def plan(self) -> tuple[list[tuple[int, int]], int]:
        e = self.e
        assert e.selection is not None
        hosts = np.arange(e.n_hosts)
        over = self._overloaded(hosts)
        # 2. VM selection
        to_move: list[int] = []
        for h in np.flatnonzero(over):
            h = int(h)
            while True:
                movable = [v for v in self.lists[h] if v not in self.busy]
                v = e.selection.select(movable, self.facts)
                if v is None:
                    break
                to_move.append(v)
                self._destroy(h, v)
                if not self._overloaded(np.array([h]))[0]:
                    break
        # 3. PABFD of the selected VMs
        plan: list[tuple[int, int]] = []
        excluded = over.copy()
        for v in self._by_demand(to_move):
            dest = self._find_host(v, excluded)
            if dest >= 0:
                self._create(dest, v)
                plan.append((v, dest))
        # 4. underloaded hosts
        switched_off = self.util_now == 0
        not_underloaded = over | switched_off
        placement_excluded = over | switched_off
        nonempty = np.array([bool(vms) and not self.busy.intersection(vms)
                             for vms in self.lists])
        while not not_underloaded.all():
            h = least_utilised(self.util_now, ~not_underloaded & nonempty)
            if h < 0:
                break
            not_underloaded[h] = True
            placement_excluded[h] = True
            vms = list(self.lists[h])
            if not vms:
                continue
            moves: list[tuple[int, int]] = []
            for v in self._by_demand(vms):
                dest = self._find_host(v, placement_excluded)
                if dest < 0:
                    for v2, d2 in reversed(moves):
                        self._destroy(d2, v2)
                    moves = []
                    break
                self._create(dest, v)
                moves.append((v, dest))
            for _, dest in moves:
                not_underloaded[dest] = True
            plan.extend(moves)
        return plan, int(over.sum())


def run(exp: Experiment, policy: Policy,
        observer: Callable[[Engine], dict[str, Any]] | None = None) -> Outcome:
    """Run the experiment under ``policy`` (see the module doc); ``observer``: see
    :attr:`Engine.observer`."""
    engine = Engine(exp, policy)
    engine.observer = observer
    return engine.run()
