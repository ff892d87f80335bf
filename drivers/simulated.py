"""The simulated data centre: a SimPy driver with hosts, VMs, migration jobs and faults.

What it models:

* **Hosts** (:mod:`livemig.drivers.sim_hosts`): RAM / vCPU / disk capacity,
  resident usage, the claims ``pre_live_migration`` takes on a destination
  (refused if they would not fit), up / service / link status and computed
  heartbeats. No process runs per host. The source's share of a migrated
  guest is released by post-migration, the claim by rollback.
* **Storage**: hosts with ``storage: shared`` see one common instances path,
  each ``local`` host its own; the shared-storage test file lands there.
* **CPU compatibility**: models ordered :data:`CPU_MODELS`; a source CPU runs on
  a destination of the same or a newer model (unknown models: same name only).
* **Migration jobs** (:mod:`livemig.drivers.sim_jobs`): disk copy, pre-copy
  rounds with auto-converge, switchover or post-copy, every transfer a fluid
  flow on :mod:`livemig.drivers.network`.
* **Guests** run, or are paused (``suspend``, or by their job), on one host, or
  are lost when a fault kills them.
* **Faults** (:meth:`SimulatedDriver.inject_fault`), effective at once:

  - ``host_down``: heartbeats stop, every guest on the host dies (its usage
    there is released), every job from or to it fails; a guest in post-copy is
    lost. ``host_up``: heartbeats and libvirtd are back, no guest restarts.
  - ``link_down`` / ``link_up``: the host's link carries nothing / its
    capacity again, both directions; its flows stall and its heartbeats stop.
    A job whose source or destination stays cut off for ``keepalive_timeout``
    seconds fails (libvirt's keepalive); pre-copy leaves the guest on its
    source, post-copy loses it.
  - ``service_down`` / ``service_up``: libvirtd stops / starts. Guests keep
    running; heartbeats stop; jobs from or to the host fail at once (a guest
    in post-copy is lost). The controller's questions to that host
    (``job_info`` of a running job it is the source of, ``abort_job``,
    ``suspend``, ``resume``, ``start_postcopy``, ``set_max_downtime``) raise
    :class:`HypervisorUnavailable`, as the real driver does. A job that has
    ended can always be read: the controller's own ``migrateToURI`` call
    returned its error when the connection broke.

  Nothing starts towards a host that is down, cut off or without libvirtd:
  ``pre_live_migration`` and ``start_migration`` raise. ``rollback`` towards a
  destination that cannot be reached releases the claim, then raises
  :class:`HypervisorUnavailable` (nothing there could be cleaned).

A VM that is not migrating costs nothing per simulated second.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simpy

from livemig.core.cpu_trace import utilisation_at
from livemig.core.errors import HypervisorUnavailable, MigrationError
from livemig.core.flags import NON_SHARED_DISK, NON_SHARED_INC, POSTCOPY
from livemig.core.model import CPU_MODELS, FaultKind, Scenario, Storage, VmSpec
from livemig.core.policy import keepalive_timeout
from livemig.core.profile import model_params
from livemig.core.units import GiB, MiB
from livemig.drivers.base import (
    DomainFact,
    DomainState,
    HostFacts,
    HostTable,
    JobInfo,
    JobType,
    WorldFacts,
)
from livemig.drivers.network import FluidNetwork, build_topology
from livemig.drivers.sim_hosts import Claim, HostBooks
from livemig.drivers.sim_jobs import Guest, MigrationJob

ABORTED = "operation aborted: job 'migration out' canceled by client"
POSTCOPY_FLAG_NEEDED = (
    "switching to post-copy requires migration to be started with VIR_MIGRATE_POSTCOPY flag"
)
NOT_MIGRATING = "post-copy can only be started while outgoing migration is in progress"
NO_ABORT_IN_POSTCOPY = "cannot abort migration in post-copy mode"


def _allocated(vm: VmSpec) -> int:
    return vm.disk if vm.disk_allocated is None else vm.disk_allocated


class SimulatedDriver:
    """A :class:`~livemig.drivers.base.Driver` over a simulated data centre."""

    def __init__(self, env: simpy.Environment, scenario: Scenario) -> None:
        self.env = env
        self._policy = scenario.policy.migration
        self._model = model_params(self._policy)
        specs = scenario.hosts
        self._specs = {h.name: h for h in specs}
        self._books = books = HostBooks(specs, self._policy)
        self._row = books.row
        self._left_behind: dict[str, tuple[int, int]] = {}  # instance -> (source row, disk)
        service = [i for i, h in enumerate(specs) if h.service]
        # every host has a service in most scenarios: a slice then gives views, not copies
        self._service_rows: Any = (
            slice(None) if len(service) == len(specs) else np.array(service, dtype=np.int64)
        )
        self._service_names = tuple(specs[i].name for i in service)
        self._service_index = {name: i for i, name in enumerate(self._service_names)}
        self._vms: dict[str, Guest] = {}
        rows, ram, vcpus, disk = [], [], [], []
        for vm in scenario.vms:
            local = _allocated(vm) if self._counts_local_disk(vm, vm.host) else 0
            rows.append(self._row[vm.host])
            ram.append(vm.ram)
            vcpus.append(vm.vcpus)
            disk.append(local)
            self._vms[vm.name] = Guest(spec=vm, host=vm.host, local_disk=local)
        books.use_many(rows, ram, vcpus, disk)
        self._jobs: dict[str, MigrationJob] = {}
        self._markers: dict[str, set[str]] = {}  # storage pool -> marker names
        self._marker_count = 0
        net = scenario.network
        graph = build_topology(
            [(h.name, h.rack) for h in specs],
            host_link=net.host_link,
            uplink=net.uplink,
            hosts_per_rack=net.hosts_per_rack,
        )
        self.network = FluidNetwork(env, graph)

    # -- facts ------------------------------------------------------------
    def host_names(self) -> list[str]:
        return list(self._service_names)

    def host_facts(self, host: str) -> HostFacts:
        spec = self._specs.get(host)
        if spec is None or not spec.service:
            raise KeyError(host)
        b, i = self._books, self._row[host]
        return HostFacts(
            name=host,
            hypervisor_type=spec.hypervisor_type,
            hypervisor_version=spec.hypervisor_version,
            cpu_model=spec.cpu_model,
            memory_mb=int(b.ram[i] // MiB),
            free_ram_mb=int(b.free_ram(i) // MiB),
            vcpus=int(b.vcpus[i]),
            vcpus_used=int(b.vcpus_used[i] + b.claim_vcpus[i]),
            local_gb=int(b.disk[i] // GiB),
            disk_available_least=int(b.free_disk(i) // GiB),
            last_heartbeat=float(b.last_heartbeat(i, self.env.now)),
        )

    def host_table(self) -> HostTable:
        b, rows = self._books, self._service_rows
        return HostTable(
            self._service_names,
            index=self._service_index,
            memory_mb=b.ram[rows] // MiB,
            free_ram_mb=b.free_ram(rows) // MiB,
            vcpus=b.vcpus[rows],
            vcpus_used=(b.vcpus_used + b.claim_vcpus)[rows],
            disk_available_least=b.free_disk(rows) // GiB,
            last_heartbeat=b.last_heartbeat(rows, self.env.now),
        )

    def _counts_local_disk(self, vm: VmSpec, host: str) -> bool:
        return self._specs[host].storage is Storage.LOCAL and not vm.volume_backed

    def instance_host(self, instance: str) -> str | None:
        vm = self._vms.get(instance)
        return None if vm is None else vm.host

    def instance_running_on(self, instance: str, host: str) -> bool:
        vm = self._vms.get(instance)
        return vm is not None and vm.host == host

    def cpu_utilisation(self, instance: str) -> float:
        """The VM's scenario trace at the simulated now (:mod:`livemig.core.cpu_trace`):
        no trace, no CPU demand modelled (0); a paused or lost guest uses none (0)."""
        vm = self._vms[instance]  # KeyError: not a scenario VM
        if vm.host is None or vm.paused:
            return 0.0
        spec = vm.spec
        return utilisation_at(spec.cpu_trace, spec.cpu_trace_interval, float(self.env.now))

    def compare_cpu(self, source: str, dest: str) -> bool:
        src, dst = self._specs[source].cpu_model, self._specs[dest].cpu_model
        if src in CPU_MODELS and dst in CPU_MODELS:
            return CPU_MODELS.index(src) <= CPU_MODELS.index(dst)
        return src == dst

    def _pool(self, host: str) -> str:
        spec = self._specs[host]
        return "shared" if spec.storage is Storage.SHARED else f"local:{host}"

    def create_shared_storage_test_file(self, dest: str) -> str:
        self._marker_count += 1
        name = f"livemig-shared-test-{self._marker_count}"
        self._markers.setdefault(self._pool(dest), set()).add(name)
        return name

    def check_shared_storage_test_file(self, source: str, name: str) -> bool:
        return name in self._markers.get(self._pool(source), set())

    def cleanup_shared_storage_test_file(self, dest: str, name: str) -> None:
        self._markers.get(self._pool(dest), set()).discard(name)

    def world(self) -> WorldFacts:
        """Every live guest on a reachable host, open claims, unreachable and
        overcommitted hosts (a running job's guest is reported where it runs), and the
        hosts that are down (powered off: the simulator knows they run nothing)."""
        b = self._books
        unreachable = tuple(n for i, n in enumerate(b.names) if not b.reachable(i))
        hidden = set(unreachable)
        running, paused = DomainState.RUNNING, DomainState.PAUSED
        domains = tuple(
            DomainFact(instance=name, host=g.host,
                       state=paused if g.user_paused or g.held else running)
            for name, g in self._vms.items()
            if g.host is not None and g.host not in hidden  # None: lost, runs nowhere
        )
        return WorldFacts(
            domains=domains,
            claims={name: b.names[c.row] for name, c in b.claims.items()},
            unreachable=unreachable,
            overcommitted=tuple(b.names[i] for i in b.overcommitted()),
            powered_off=tuple(n for i, n in enumerate(b.names) if not b.up[i]),
        )

    # -- actions ----------------------------------------------------------
    def _ask(self, host: str) -> None:
        """The controller talks to ``host``'s libvirtd: it must be up and running."""
        if not self._books.reachable(self._row[host]):
            raise HypervisorUnavailable(host=host, reason=self._why(host))

    def _why(self, host: str) -> str:
        b, i = self._books, self._row[host]
        if not b.up[i]:
            return "host down"
        if not b.service[i]:
            return "libvirtd not running"
        return "link down"

    def _guest(self, instance: str) -> Guest:
        vm = self._vms.get(instance)
        if vm is None or vm.host is None:
            raise MigrationError(reason=f"Domain not found: no domain with name {instance!r}")
        return vm

    def _job(self, instance: str) -> MigrationJob:
        job = self._jobs.get(instance)
        if job is None:
            raise MigrationError(reason=f"{instance} has no migration job")
        return job

    def pre_live_migration(self, instance: str, dest: str, block_migration: bool) -> None:
        """Claim the instance's RAM, vCPUs (and disk for block migration) on dest."""
        vm = self._vms[instance].spec
        b, i = self._books, self._row[dest]
        if not b.connected(i):
            raise HypervisorUnavailable(host=dest, reason=self._why(dest))
        free_ram = b.free_ram(i)
        if free_ram < vm.ram:
            raise MigrationError(
                reason=f"{dest} cannot hold {instance}: {vm.ram // MiB} MiB requested, "
                f"{free_ram // MiB} MiB free"
            )
        claim = self._claim_for(vm, dest)
        if claim.disk > b.free_disk(i):
            raise MigrationError(reason=f"{dest} has no room for the disk of {instance}")
        b.claim(instance, claim)

    def _claim_for(self, vm: VmSpec, dest: str) -> Claim:
        """What ``vm`` needs on ``dest`` (its disk only on dest's own local storage)."""
        disk = _allocated(vm) if self._counts_local_disk(vm, dest) else 0
        return Claim(row=self._row[dest], ram=vm.ram, vcpus=vm.vcpus, disk=disk)

    def start_migration(
        self, instance: str, dest: str, *, uri: str, flags: int, bandwidth_mib: int
    ) -> None:
        vm = self._guest(instance)
        assert vm.host is not None
        self._ask(vm.host)
        old = self._jobs.get(instance)
        if old is not None and old.running:
            raise MigrationError(reason=f"{instance} already has a migration job")
        b = self._books
        if not b.connected(self._row[dest]) or not b.link[self._row[vm.host]]:
            raise MigrationError(reason=f"unable to connect to server at {uri}")
        block = bool(flags & (NON_SHARED_INC | NON_SHARED_DISK))
        self._jobs[instance] = MigrationJob(
            env=self.env,
            network=self.network,
            guest=vm,
            dest=dest,
            flags=flags,
            cap=bandwidth_mib * MiB if bandwidth_mib > 0 else None,
            max_downtime=self._policy.max_downtime,
            switchover_cost=self._model.switchover_cost,
            params=self._model,
            disk_total=_allocated(vm.spec) if block and not vm.spec.volume_backed else 0,
            switch_over=self._switch_over,
            source_row=self._row[vm.host],
        )

    def set_max_downtime(self, instance: str, seconds: float) -> None:
        job = self._job(instance)
        self._ask(job.source)
        job.set_max_downtime(seconds)

    def job_info(self, instance: str) -> JobInfo:
        job = self._jobs.get(instance)
        if job is None:
            return JobInfo(type=JobType.NONE)
        b, i = self._books, job.source_row
        if job.running and not (b.up[i] and b.service[i]):
            raise HypervisorUnavailable(host=job.source, reason=self._why(job.source))
        return job.info()

    def abort_job(self, instance: str) -> None:
        job = self._jobs.get(instance)
        if job is not None:
            self._ask(job.source)
        if job is None or not job.running:
            raise MigrationError(reason=f"{instance} has no migration job to abort")
        if job.in_postcopy:
            raise MigrationError(reason=NO_ABORT_IN_POSTCOPY)
        job.end(JobType.CANCELLED, ABORTED)

    def start_postcopy(self, instance: str) -> None:
        job = self._jobs.get(instance)
        if job is not None:
            self._ask(job.source)
        if job is None or not job.running:
            raise MigrationError(reason=NOT_MIGRATING)
        if not job.flags & POSTCOPY:
            raise MigrationError(reason=POSTCOPY_FLAG_NEEDED)
        job.request_postcopy()

    def suspend(self, instance: str) -> None:
        vm = self._guest(instance)
        assert vm.host is not None
        self._ask(vm.host)
        vm.set_paused(self.env.now, user=True)
        self._recheck(instance)

    def resume(self, instance: str) -> None:
        vm = self._guest(instance)
        assert vm.host is not None
        self._ask(vm.host)
        vm.set_paused(self.env.now, user=False)
        self._recheck(instance)

    def _recheck(self, instance: str) -> None:
        """The guest's dirtying changed: its job's switchover check must know."""
        job = self._jobs.get(instance)
        if job is not None and job.running:
            job.recheck()

    def attach_job(self, instance: str, source: str, dest: str) -> None:
        """The job of an earlier controller: the simulated world kept it going."""
        job = self._jobs.get(instance)
        if job is None or job.source != source or job.dest != dest:
            raise MigrationError(
                reason=f"no migration job of {instance} from {source} to {dest}"
            )

    def post_live_migration(self, instance: str, source: str, dest: str) -> None:
        """Release the instance's share of the source host (unless a fault did)."""
        left = self._left_behind.pop(instance, None)
        if left is not None:
            spec = self._vms[instance].spec
            self._books.use(left[0], spec.ram, spec.vcpus, left[1], sign=-1)

    def rollback_live_migration(
        self, instance: str, source: str, dest: str, block_migration: bool
    ) -> None:
        """Release the destination's claim (if the job did not switch over); raise if
        the destination cannot be reached to clean it up."""
        self._books.release_claim(instance)
        if not self._books.connected(self._row[dest]):
            raise HypervisorUnavailable(host=dest, reason=self._why(dest))

    def close(self) -> None:
        for job in self._jobs.values():
            if job.flow is not None:
                job.flow.cancel()

    # -- what happens to guests -------------------------------------------------------
    def _switch_over(self, job: MigrationJob) -> None:
        """The guest now runs on dest; dest's claim becomes resident usage."""
        vm = job.guest
        claim = self._books.release_claim(vm.spec.name) or self._claim_for(vm.spec, job.dest)
        assert vm.host is not None
        self._books.use(claim.row, claim.ram, claim.vcpus, claim.disk)
        self._left_behind[vm.spec.name] = (self._row[vm.host], vm.local_disk)
        vm.local_disk = claim.disk
        vm.host = job.dest
        vm.set_paused(self.env.now, held=False)

    def _lose(self, vm: Guest) -> None:
        """The guest dies: it runs nowhere, and no host counts it any more."""
        if vm.host is None:
            return
        spec = vm.spec
        self._books.use(self._row[vm.host], spec.ram, spec.vcpus, vm.local_disk, sign=-1)
        left = self._left_behind.pop(spec.name, None)
        if left is not None:
            self._books.use(left[0], spec.ram, spec.vcpus, left[1], sign=-1)
        vm.host = None
        vm.local_disk = 0
        vm.set_paused(self.env.now, held=False)

    def _fail(self, job: MigrationJob, error: str) -> None:
        """End a running job: pre-copy leaves the guest where it ran, post-copy loses it."""
        lost = job.in_postcopy
        job.end(JobType.FAILED, error)
        if lost:
            self._lose(job.guest)

    # -- faults -----------------------------------------------------------------------
    def inject_fault(self, kind: FaultKind, host: str) -> None:
        if host not in self._row:
            raise ValueError(f"inject_fault: unknown host {host!r}")
        handler = {
            FaultKind.HOST_DOWN: self._host_down,
            FaultKind.HOST_UP: self._host_up,
            FaultKind.LINK_DOWN: self._link_down,
            FaultKind.LINK_UP: self._link_up,
            FaultKind.SERVICE_DOWN: self._service_down,
            FaultKind.SERVICE_UP: self._service_up,
        }[FaultKind(kind)]
        handler(host, self._row[host])

    def _jobs_of(self, host: str) -> list[MigrationJob]:
        """Running jobs from or to ``host``, in the order they started."""
        return [j for j in self._jobs.values() if j.running and host in (j.source, j.dest)]

    def _host_down(self, host: str, row: int) -> None:
        b = self._books
        if not b.up[row]:
            return
        b.set_status(row, now=self.env.now, up=False)
        for job in self._jobs_of(host):
            self._fail(job, f"operation failed: job 'migration out' failed: {host} went down")
        for vm in self._vms.values():
            if vm.host == host:
                self._lose(vm)
        for instance, (left_row, disk) in list(self._left_behind.items()):
            if left_row == row:  # the source copy of a migrated guest went with the host
                spec = self._vms[instance].spec
                b.use(row, spec.ram, spec.vcpus, disk, sign=-1)
                del self._left_behind[instance]

    def _host_up(self, host: str, row: int) -> None:
        if not self._books.up[row]:
            self._books.set_status(row, now=self.env.now, up=True, service=True)

    def _service_down(self, host: str, row: int) -> None:
        b = self._books
        if not b.service[row]:
            return
        b.set_status(row, now=self.env.now, service=False)
        for job in self._jobs_of(host):
            self._fail(job, f"internal error: connection to {host}'s libvirtd closed "
                            "(End of file while reading data)")

    def _service_up(self, host: str, row: int) -> None:
        self._books.set_status(row, now=self.env.now, service=True)

    def _link(self, host: str) -> tuple[str, str]:
        """The host's own link (to its switch)."""
        return host, next(iter(self.network.graph.successors(host)))

    def _link_down(self, host: str, row: int) -> None:
        b = self._books
        if not b.link[row]:
            return
        b.set_status(row, now=self.env.now, link=False)
        self.network.set_link_capacity(*self._link(host), 0.0, both_ways=True)
        for job in self._jobs_of(host):
            if job.silent_since is None:
                self._go_silent(job)

    def _link_up(self, host: str, row: int) -> None:
        b = self._books
        if b.link[row]:
            return
        b.set_status(row, now=self.env.now, link=True)
        self.network.set_link_capacity(*self._link(host), None, both_ways=True)
        for job in self._jobs_of(host):
            if b.link[self._row[job.source]] and b.link[self._row[job.dest]]:
                job.silent_since = None
                job.silence += 1

    def _go_silent(self, job: MigrationJob) -> None:
        """The peers cannot hear each other from now: libvirt's keepalive counts."""
        job.silent_since = self.env.now
        job.silence += 1
        silence = job.silence
        limit = keepalive_timeout(self._policy)

        def expired(_event: simpy.Event) -> None:
            if job.running and job.silence == silence:
                self._fail(job, "operation failed: connection to peer lost: no keepalive "
                                f"response in {limit:g} s (internal error: connection "
                                "closed due to keepalive timeout)")

        self.env.timeout(limit).callbacks.append(expired)
