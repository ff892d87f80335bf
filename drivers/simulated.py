"""The simulated data centre: a SimPy driver with hosts, VMs, pre-copy and failures.

What it models:

* **Hosts** with RAM / vCPU / disk capacity. Nova's ``memory_mb_used`` starts at
  ``reserved_host_memory_mb``; a migration claims RAM, vCPUs and disk on its
  destination in ``pre_live_migration`` (refused if it would not fit) and the
  source's share is released by post-migration, the claim by rollback.
* **Compute-service heartbeats**, computed rather than simulated: an up host
  reported at every multiple of ``report_interval``; a down host's last report
  is the last multiple before it went down. No process runs per host.
* **Storage**: hosts with ``storage: shared`` see one common instances path,
  each ``local`` host its own; the shared-storage test file lands there.
* **CPU compatibility**: models ordered :data:`CPU_MODELS`; a source CPU runs on
  a destination of the same or a newer model (unknown models: same name only).
* **Migration jobs**: block migration copies the allocated disk first, then
  pre-copy rounds as in :mod:`livemig.drivers.precopy`, every transfer a fluid
  flow on :mod:`livemig.drivers.network`. A round's bytes are delivered at
  whatever rate the network gives while it runs; the switchover decision uses
  the bandwidth measured over the round just sent (as QEMU does), and the
  downtime is the time to send the final remainder plus ``switchover_cost``.
  Without ``VIR_MIGRATE_LIVE`` the guest is paused for the whole job.

A VM that is not migrating costs nothing per simulated second.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from livemig.core.errors import ComputeServiceUnavailable, MigrationError
from livemig.core.flags import LIVE, NON_SHARED_DISK, NON_SHARED_INC
from livemig.core.model import CPU_MODELS, MigrationPolicy, Scenario, Storage, VmSpec
from livemig.core.units import GiB, MiB
from livemig.drivers.base import HostFacts, HostTable, JobInfo, JobType
from livemig.drivers.network import FluidNetwork, build_topology
from livemig.drivers.precopy import can_switch_over, dirty_after

ABORTED = "operation aborted: job 'migration out' canceled by client"


@dataclass(kw_only=True)
class _Vm:
    spec: VmSpec
    host: str  # where its domain is defined and running
    paused: bool = False
    local_disk: int = 0  # bytes counted on its host's local disk (0: shared or volume)


@dataclass(kw_only=True)
class _Job:
    """One migration job; its counters are what ``jobStats()`` would report."""

    vm: _Vm
    source: str
    dest: str
    flags: int
    cap: float | None  # bytes/s
    max_downtime: float
    started: float
    type: JobType = JobType.UNBOUNDED
    ended: float | None = None
    memory_total: int = 0
    disk_total: int = 0
    memory_done: float = 0.0  # bytes of finished memory transfers
    disk_done: float = 0.0
    iteration: int = 0
    downtime: float | None = None
    error: str | None = None
    flow: Any = None  # the transfer under way
    flow_is_disk: bool = False
    dirty: float = 0.0  # bytes dirty after the last round
    process: simpy.Process | None = None


def _allocated(vm: VmSpec) -> int:
    return vm.disk if vm.disk_allocated is None else vm.disk_allocated


class SimulatedDriver:
    """A :class:`~livemig.drivers.base.Driver` over a simulated data centre."""

    def __init__(self, env: simpy.Environment, scenario: Scenario) -> None:
        self.env = env
        self._policy: MigrationPolicy = scenario.policy.migration
        specs = scenario.hosts
        self._specs = {h.name: h for h in specs}
        self._row = {h.name: i for i, h in enumerate(specs)}
        # Host accounting, one row per host (bytes, counts, times), updated in place.
        self._ram = np.array([h.ram for h in specs], dtype=np.int64)
        self._ram_used = np.full(len(specs), self._policy.reserved_host_memory_mb * MiB,
                                 dtype=np.int64)
        self._vcpus = np.array([h.vcpus for h in specs], dtype=np.int64)
        self._vcpus_used = np.zeros(len(specs), dtype=np.int64)
        self._disk = np.array([h.disk for h in specs], dtype=np.int64)
        self._disk_used = np.zeros(len(specs), dtype=np.int64)
        self._claim_ram = np.zeros(len(specs), dtype=np.int64)
        self._claim_vcpus = np.zeros(len(specs), dtype=np.int64)
        self._claim_disk = np.zeros(len(specs), dtype=np.int64)
        self._up_since = np.zeros(len(specs), dtype=np.float64)  # NaN while down
        self._last_report = np.zeros(len(specs), dtype=np.float64)
        self._claims: dict[str, tuple[int, VmSpec, int]] = {}  # instance -> (row, flavor, disk)
        self._left_behind: dict[str, int] = {}  # instance -> source disk bytes until post
        service = [i for i, h in enumerate(specs) if h.service]
        # every host has a service in most scenarios: a slice then gives views, not copies
        self._service_rows: Any = (
            slice(None) if len(service) == len(specs) else np.array(service, dtype=np.int64)
        )
        self._service_names = tuple(specs[i].name for i in service)
        self._service_index = {name: i for i, name in enumerate(self._service_names)}
        self._vms: dict[str, _Vm] = {}
        for vm in scenario.vms:
            row = self._row[vm.host]
            self._ram_used[row] += vm.ram
            self._vcpus_used[row] += vm.vcpus
            local = _allocated(vm) if self._counts_local_disk(vm, vm.host) else 0
            self._disk_used[row] += local
            self._vms[vm.name] = _Vm(spec=vm, host=vm.host, local_disk=local)
        self._jobs: dict[str, _Job] = {}
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
        i = self._row[host]
        return HostFacts(
            name=host,
            hypervisor_type=spec.hypervisor_type,
            hypervisor_version=spec.hypervisor_version,
            cpu_model=spec.cpu_model,
            memory_mb=int(self._ram[i] // MiB),
            free_ram_mb=int(self._free_ram(i) // MiB),
            vcpus=int(self._vcpus[i]),
            vcpus_used=int(self._vcpus_used[i] + self._claim_vcpus[i]),
            local_gb=int(self._disk[i] // GiB),
            disk_available_least=int(self._free_disk(i) // GiB),
            last_heartbeat=float(self._last_heartbeat(i)),
        )

    def host_table(self) -> HostTable:
        rows = self._service_rows
        return HostTable(
            self._service_names,
            index=self._service_index,
            memory_mb=self._ram[rows] // MiB,
            free_ram_mb=self._free_ram(rows) // MiB,
            vcpus=self._vcpus[rows],
            vcpus_used=(self._vcpus_used + self._claim_vcpus)[rows],
            disk_available_least=self._free_disk(rows) // GiB,
            last_heartbeat=self._last_heartbeat(rows),
        )

    # The three derived facts below are computed for ``rows`` only: one host (an int,
    # giving a scalar) for a check, every host with a service for the scheduler's table.

    def _free_ram(self, rows: Any) -> Any:
        """Bytes: total - reserved - resident instances - claims (Nova's free_ram_mb)."""
        return self._ram[rows] - self._ram_used[rows] - self._claim_ram[rows]

    def _free_disk(self, rows: Any) -> Any:
        return np.maximum(0, self._disk[rows] - self._disk_used[rows] - self._claim_disk[rows])

    def _last_heartbeat(self, rows: Any) -> Any:
        """Report times: an up host reported at every multiple of ``report_interval``
        since it came up; a down host's last report stands.

        Example: up since 0 s, interval 10 s, now 25 s -> last heartbeat 20 s.
        """
        interval = self._policy.report_interval
        tick = math.floor(self.env.now / interval) * interval
        up_since = self._up_since[rows]
        return np.where(np.isnan(up_since), self._last_report[rows],
                        np.maximum(up_since, tick))

    def _counts_local_disk(self, vm: VmSpec, host: str) -> bool:
        return self._specs[host].storage is Storage.LOCAL and not vm.volume_backed

    def _is_up(self, host: str) -> bool:
        return not math.isnan(self._up_since[self._row[host]])

    def instance_host(self, instance: str) -> str | None:
        vm = self._vms.get(instance)
        return None if vm is None else vm.host

    def instance_running_on(self, instance: str, host: str) -> bool:
        vm = self._vms.get(instance)
        return vm is not None and vm.host == host and self._is_up(host)

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

    # -- actions ----------------------------------------------------------
    def pre_live_migration(self, instance: str, dest: str, block_migration: bool) -> None:
        """Claim the instance's RAM, vCPUs (and disk for block migration) on dest."""
        vm = self._vms[instance].spec
        if not self._is_up(dest):
            raise ComputeServiceUnavailable(host=dest)
        i = self._row[dest]
        free_ram = self._free_ram(i)
        if free_ram < vm.ram:
            raise MigrationError(
                reason=f"{dest} cannot hold {instance}: {vm.ram // MiB} MiB requested, "
                f"{free_ram // MiB} MiB free"
            )
        disk = _allocated(vm) if self._counts_local_disk(vm, dest) else 0
        if disk > self._free_disk(i):
            raise MigrationError(reason=f"{dest} has no room for the disk of {instance}")
        self._claim_ram[i] += vm.ram
        self._claim_vcpus[i] += vm.vcpus
        self._claim_disk[i] += disk
        self._claims[instance] = (i, vm, disk)

    def start_migration(
        self, instance: str, dest: str, *, uri: str, flags: int, bandwidth_mib: int
    ) -> None:
        vm = self._vms[instance]
        if instance in self._jobs and self._jobs[instance].type is JobType.UNBOUNDED:
            raise MigrationError(reason=f"{instance} already has a migration job")
        if not self._is_up(dest):
            raise MigrationError(reason=f"unable to connect to {uri}")
        block = bool(flags & (NON_SHARED_INC | NON_SHARED_DISK))
        job = _Job(
            vm=vm,
            source=vm.host,
            dest=dest,
            flags=flags,
            cap=bandwidth_mib * MiB if bandwidth_mib > 0 else None,
            max_downtime=self._policy.max_downtime,
            started=self.env.now,
            memory_total=vm.spec.used_memory,
            disk_total=_allocated(vm.spec) if block and not vm.spec.volume_backed else 0,
        )
        self._jobs[instance] = job
        job.process = self.env.process(self._run(job))

    def set_max_downtime(self, instance: str, seconds: float) -> None:
        self._jobs[instance].max_downtime = seconds

    def job_info(self, instance: str) -> JobInfo:
        job = self._jobs.get(instance)
        if job is None:
            return JobInfo(type=JobType.NONE)
        in_flight = job.flow.delivered() if job.flow is not None else 0.0
        memory = job.memory_done + (0.0 if job.flow_is_disk else in_flight)
        disk = job.disk_done + (in_flight if job.flow_is_disk else 0.0)
        end = job.ended if job.ended is not None else self.env.now
        spec = job.vm.spec
        if job.type is JobType.COMPLETED:
            memory_remaining = 0
        elif job.flow is not None and not job.flow_is_disk:
            memory_remaining = int(job.flow.nbytes - in_flight)  # this round's pages left
        elif job.iteration == 0:
            memory_remaining = job.memory_total  # still copying the disk
        else:
            memory_remaining = int(job.dirty)  # between rounds: what is dirty now
        disk_remaining = max(0, job.disk_total - int(disk))
        return JobInfo(
            type=job.type,
            time_elapsed=end - job.started,
            data_total=job.memory_total + job.disk_total,
            data_processed=int(memory) + int(disk),
            data_remaining=memory_remaining + disk_remaining,
            memory_total=job.memory_total,
            memory_processed=int(memory),
            memory_remaining=memory_remaining,
            disk_total=job.disk_total,
            disk_processed=int(disk),
            disk_remaining=disk_remaining,
            memory_iteration=job.iteration,
            memory_dirty_rate=spec.dirty_rate,
            downtime=job.downtime,
            error=job.error,
        )

    def abort_job(self, instance: str) -> None:
        job = self._jobs.get(instance)
        if job is None or job.type is not JobType.UNBOUNDED or job.process is None:
            raise MigrationError(reason=f"{instance} has no migration job to abort")
        job.process.interrupt(ABORTED)

    def post_live_migration(self, instance: str, source: str, dest: str) -> None:
        """Release the instance's share of the source host."""
        spec = self._vms[instance].spec
        i = self._row[source]
        self._ram_used[i] -= spec.ram
        self._vcpus_used[i] -= spec.vcpus
        self._disk_used[i] -= self._left_behind.pop(instance, 0)

    def rollback_live_migration(
        self, instance: str, source: str, dest: str, block_migration: bool
    ) -> None:
        """Release the destination's claim (if the job did not switch over)."""
        self._release_claim(instance)

    def _release_claim(self, instance: str) -> tuple[int, VmSpec, int] | None:
        claim = self._claims.pop(instance, None)
        if claim is None:
            return None
        i, vm, disk = claim
        self._claim_ram[i] -= vm.ram
        self._claim_vcpus[i] -= vm.vcpus
        self._claim_disk[i] -= disk
        return i, vm, disk

    def close(self) -> None:
        for job in self._jobs.values():
            if job.flow is not None:
                job.flow.cancel()

    # -- the job ----------------------------------------------------------
    def _send(self, job: _Job, nbytes: float, *, disk: bool = False) -> Generator[
        simpy.Event, Any, float
    ]:
        """Send ``nbytes`` source -> dest as one flow; returns the seconds it took."""
        start = self.env.now
        if nbytes <= 0:
            return 0.0
        job.flow = self.network.transfer(job.source, job.dest, nbytes, cap=job.cap)
        job.flow_is_disk = disk
        yield job.flow.done
        job.flow = None
        if disk:
            job.disk_done += nbytes
        else:
            job.memory_done += nbytes
        return self.env.now - start

    def _run(self, job: _Job) -> Generator[simpy.Event, Any, None]:
        spec = job.vm.spec
        live = bool(job.flags & LIVE)
        try:
            if not live:
                job.vm.paused = True
            if job.disk_total:
                yield from self._send(job, job.disk_total, disk=True)
            job.iteration = 1
            t = yield from self._send(job, spec.used_memory)
            sent = spec.used_memory
            while True:
                dirty = dirty_after(t, spec.working_set, spec.dirty_rate) if live else 0.0
                job.dirty = dirty
                if t == 0 or not live or can_switch_over(dirty, sent / t, job.max_downtime):
                    break
                job.iteration += 1
                t = yield from self._send(job, dirty)
                sent = dirty
            job.vm.paused = True
            pause = self.env.now
            yield from self._send(job, dirty)
            job.downtime = self.env.now - pause + self._policy.switchover_cost
            if self._policy.switchover_cost:
                yield self.env.timeout(self._policy.switchover_cost)
            self._switch_over(job)
        except simpy.Interrupt as stop:
            if job.flow is not None:
                if job.flow_is_disk:
                    job.disk_done += job.flow.delivered()
                else:
                    job.memory_done += job.flow.delivered()
                job.flow.cancel()
                job.flow = None
            job.vm.paused = False
            job.type = JobType.CANCELLED
            job.error = str(stop.cause)
            job.ended = self.env.now

    def _switch_over(self, job: _Job) -> None:
        """The guest now runs on dest; dest's claim becomes resident usage."""
        released = self._release_claim(job.vm.spec.name)
        assert released is not None, "a migration switched over without a claim"
        i, vm, disk = released
        self._ram_used[i] += vm.ram
        self._vcpus_used[i] += vm.vcpus
        self._disk_used[i] += disk
        self._left_behind[vm.name] = job.vm.local_disk
        job.vm.local_disk = disk
        job.vm.host = job.dest
        job.vm.paused = False
        job.type = JobType.COMPLETED
        job.ended = self.env.now
