"""The default migration-cost mode: the consolidation controller as a SimPy process beside
the orchestrator. Every planned move is a live-migration request with an explicit
destination (``os-migrateLive`` with ``host``), so it goes through Nova's flow as
:mod:`livemig.core.orchestrator` plays it on the simulated data centre: the destination's
checks (RAM, strict), one migration at a time per source host (Nova's default), pre-copy
with dirty pages on shared 1 Gbit/s links, the 0.5 s poll, rollback on failure.

The same books as the ``cloudsim`` mode (:class:`~livemig.consolidation.cloudsim.Engine`:
energy, SLA records, the policies) are updated at every consolidation step and whenever a
migration ends (the orchestrator's ``on_finish``); a VM counts as migrating (10 %
degradation on its source, 10 % reserved on its destination) from its request to its end,
queueing included. What differs from CloudSim is only what a migration costs: its time
(queueing, pre-copy rounds, link sharing), and that Nova may refuse it.

Unlike the ``cloudsim`` mode, a VM whose CPU request is 0 is not destroyed (it still holds
its RAM), and a VM planned twice in one step (CloudSim chains the two moves) gets its first
move only: Nova takes one migration per instance at a time.

Each VM's dirty rate is ``dirty_rate_max`` x its mean CPU utilisation over the trace (a busy
VM dirties more), or, with ``dirty_rate_follows_cpu``, x its utilisation at each moment
(in the simulator; a lab guest would dirty at ``dirty_rate_max``, its dirtier has a fixed
rate), its working set a quarter of its RAM, its non-zero memory that plus 64 MiB.
Its ``cpu_trace`` is its trace row (percent, one sample per interval): the simulated driver
answers it, the lab guest burns it. The controller plans with RAM as Nova will check it
(free RAM > the VM's).

One code path, two drivers: the run builds a core :class:`Scenario` (hosts named by the
scenario's ``host_names``: on real hosts, inventory names), gives it to the driver class
``driver`` names on its clock (``REALTIME`` drivers: SimPy's real-time environment, as
:mod:`livemig.core.runner` does), and the same controller process, policy code and
orchestrator run on it. Only where utilisation comes from differs
(:mod:`~livemig.consolidation.utilisation`): the trace in the simulator (what its driver
answers, for all VMs at once), the driver's measurements on real hosts (read at most every
half interval). At the limit the orchestrator is halted (queued migrations cancelled,
running ones aborted: ``HorizonReached``) and the run waits for every migration to end,
so no real migration is left running when the driver closes; what ends after the limit
changes none of the books. The invariants (no VM lost or duplicated) are checked against
the driver's world at the end (``invariant_violations``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import simpy
import simpy.rt

from livemig.consolidation.cloudsim import Engine, Experiment, Outcome, Policy
from livemig.consolidation.utilisation import DriverUtilisation, TraceUtilisation
from livemig.core.invariants import check
from livemig.core.model import (
    HostSpec,
    MigrationPolicy,
    MigrationStatus,
    NetworkSpec,
    Scenario,
    VmSpec,
)
from livemig.core.model import Policy as NovaPolicy
from livemig.core.orchestrator import Orchestrator
from livemig.core.state import MigrationRecord, StateStore

MiB = 1 << 20
GBIT = 1.25e8  # bytes/s


class FlowEngine(Engine):
    """:class:`Engine` whose migrations are requests to the orchestrator."""

    def __init__(self, exp: Experiment, policy: Policy, *, dirty_rate_max: float = 100 * MiB,
                 host_link: float = GBIT, max_concurrent_per_host: int = 1,
                 initial_hosts: list[int] | None = None, driver: str = "sim",
                 driver_options: dict[str, Any] | None = None,
                 dirty_rate_follows_cpu: bool = False) -> None:
        super().__init__(exp, policy)
        self.dirty_follows_cpu = dirty_rate_follows_cpu
        self.driver_name = driver
        self.driver_options = driver_options or {}
        self.host_names = exp.host_names or tuple(f"host-{h}" for h in range(self.n_hosts))
        self.vm_index = {f"vm-{v}": v for v in range(self.n_vms)}
        self.source: TraceUtilisation | DriverUtilisation = TraceUtilisation(
            tuple(self.vm_index), exp.samples, exp.interval)
        self.processes: list[simpy.Process] = []
        self.measured: list[dict[str, Any]] = []  # per step, on real hosts
        self.initial_hosts = initial_hosts  # a given start (else the policy's placement)
        self.ram_binding = True
        self.destroy_idle_vms = False  # a VM at 0 % CPU is still there, holding its RAM
        self.dirty_rate_max = dirty_rate_max
        self.host_link = host_link
        self.max_concurrent = max_concurrent_per_host
        self.pending: dict[int, int] = {}  # vm -> index in self.migrations
        self.records: list[MigrationRecord] = []
        self.orch: Orchestrator | None = None

    def scenario(self) -> Scenario:
        exp = self.exp
        mean_util = exp.samples[:, :-1].mean(axis=1)
        hosts = tuple(HostSpec(name=self.host_names[h], ram=int(exp.host_ram[h]) * MiB,
                               vcpus=int(exp.host_pes[h]), disk=1 << 40)
                      for h in range(self.n_hosts))
        vms = []
        percent = np.round(exp.samples[:, :-1] * 100, 9)  # the trace's own percentages
        for v in range(self.n_vms):
            ram = int(exp.vm_ram[v]) * MiB
            working_set = ram // 4
            vms.append(VmSpec(name=f"vm-{v}", host=self.host_names[int(self.host_of[v])],
                              ram=ram, used_memory=min(ram, working_set + 64 * MiB),
                              working_set=working_set,
                              dirty_rate=float(self.dirty_rate_max * (
                                  1.0 if self.dirty_follows_cpu else mean_util[v])),
                              dirty_rate_follows_cpu=self.dirty_follows_cpu,
                              cpu_trace=tuple(float(p) for p in percent[v]),
                              cpu_trace_interval=exp.interval))
        migration = MigrationPolicy(reserved_host_memory_mb=0,
                                    max_concurrent_per_host=self.max_concurrent)
        return Scenario(name="consolidation", seed=self.policy.seed, hosts=hosts,
                        vms=tuple(vms), network=NetworkSpec(host_link=self.host_link),
                        policy=NovaPolicy(migration=migration), until=exp.limit)

    def utilisation(self, t: float) -> np.ndarray:
        return self.source.every(t)

    def _step(self, t: float) -> None:
        super()._step(t)
        if isinstance(self.source, DriverUtilisation):  # measured: keep what was read
            got = [round(self.source.got[name], 4) for name in self.vm_index]
            self.measured.append({"time_s": t, "vms": [round(float(u), 4) for u in self.u],
                                  "got": got, "hosts": self.host_of.tolist()})

    def run(self) -> Outcome:
        from livemig.drivers import driver_class

        cls = driver_class(self.driver_name)
        realtime = bool(getattr(cls, "REALTIME", False))
        self.place_initial()
        if self.initial_hosts is not None:
            self.host_of[:] = self.initial_hosts
            self.lists = [[v for v in range(self.n_vms) if self.initial_hosts[v] == h]
                          for h in range(self.n_hosts)]
        env: simpy.Environment = (simpy.rt.RealtimeEnvironment(strict=False) if realtime
                                  else simpy.Environment())
        self.env = env
        scenario = self.scenario()
        driver = cls(env, scenario, **self.driver_options)
        try:
            if realtime:  # measured: start every VM's first window now
                self.source = DriverUtilisation(driver, tuple(self.vm_index),
                                                refresh=self.exp.interval / 2)
                self.source.every(0.0)
                env.sync()  # type: ignore[attr-defined]
            store = StateStore(lambda: env.now, ":memory:")
            store.add_instances(scenario.vms)
            self.orch = Orchestrator(driver, store, scenario.policy,
                                     random.Random(self.policy.seed), on_finish=self._finished)
            self.orch.spawn_hooks.append(self.processes.append)
            env.process(self._controller())
            env.run(until=self.exp.limit)
            self.orch.halt(self.exp.limit)
            while alive := [p for p in self.processes if p.is_alive]:
                env.run(until=env.all_of(alive))
            report = check(store.instances(), store.migrations(), driver.world())
            outcome = self._outcome()
            outcome.metrics.update(_migration_stats(self.records))
            outcome.metrics["invariant_violations"] = len(report.violations)
            outcome.metrics["invariant_details"] = [str(v) for v in report.violations]
            outcome.metrics["final_hosts"] = {name: driver.instance_host(name)
                                              for name in self.vm_index}
            if isinstance(self.source, DriverUtilisation):
                outcome.metrics["utilisation_reads"] = self.source.reads
                outcome.metrics["utilisation_by_step"] = self.measured
            store.close()
            return outcome
        finally:
            driver.close()

    def _controller(self) -> Any:
        exp = self.exp
        t = exp.first_update + exp.interval
        while t <= exp.limit:
            yield self.env.timeout(t - self.env.now)
            self._step(t)
            t = t + exp.interval

    def _start(self, t: float, v: int, dest: int) -> None:
        assert self.orch is not None
        if v in self.in_flight:  # planned twice in one step (CloudSim would chain them):
            return  # Nova takes one migration per instance at a time; the first stands
        self.in_flight[v] = [dest]
        self.lists[dest].append(v)
        self.pending[v] = len(self.migrations)
        self.migrations.append([v, int(self.host_of[v]), dest, t, None])
        self.processes.append(self.orch.live_migrate(
            f"vm-{v}", {"host": self.host_names[dest], "block_migration": False,
                        "disk_over_commit": False}))

    def _finished(self, record: MigrationRecord) -> None:
        t = self.env.now
        if t > self.exp.limit:  # ended by the halt: cut at the limit, the books are closed
            return
        v = self.vm_index[record.instance]
        index = self.pending.pop(v, None)
        if index is None:
            return
        self.records.append(record)
        self.update(t, True)
        dest = self.in_flight.pop(v)[0]
        self.lists[dest].remove(v)
        if record.status is MigrationStatus.COMPLETED:
            self.lists[int(self.host_of[v])].remove(v)
            self.lists[dest].append(v)
            self.host_of[v] = dest
        self.migrations[index][4] = t
        self.update(t, False)

    def _outcome(self) -> Outcome:
        # migrations still running at the limit: cut there
        for m in self.migrations:
            if m[4] is None:
                m[4] = self.exp.limit
        return super()._outcome()


def _migration_stats(records: list[MigrationRecord]) -> dict[str, Any]:
    done = [r for r in records if r.status is MigrationStatus.COMPLETED]
    by_status: dict[str, int] = {}
    for r in records:
        by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
    downtimes = [r.downtime for r in done if r.downtime is not None]
    times = [r.finished_at - r.requested_at for r in done if r.finished_at is not None]
    return {
        "migrations_by_status": by_status,
        "migrations_completed": len(done),
        "downtime_ms_mean": float(np.mean(downtimes) * 1000) if downtimes else 0.0,
        "downtime_ms_max": float(np.max(downtimes) * 1000) if downtimes else 0.0,
        "migration_time_s_mean": float(np.mean(times)) if times else 0.0,
        "bytes_moved": int(sum(r.data_transferred or 0 for r in records)),
    }


def run(exp: Experiment, policy: Policy, observer: Any = None, **options: Any) -> Outcome:
    engine = FlowEngine(exp, policy, **options)
    engine.observer = observer
    return engine.run()
