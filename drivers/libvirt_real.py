"""The real driver: libvirt-python against real libvirtd/QEMU hosts.

The only module that imports libvirt. Hosts come from an inventory file (the
one ``livemig lab up`` writes, or one written by hand for real KVM hosts); the
scenario's host names must be inventory host names. What it does, Nova-style:

* facts: total memory, CPU model and hypervisor type/version from libvirt;
  used memory from the domains each host runs plus incoming claims (Nova's
  resource tracker); disk from the ``instances`` storage pool; the heartbeat
  is the last time the host's libvirtd answered;
* CPU compatibility: the source's host CPU given to the destination's
  ``compareCPU``;
* shared-storage test: a marker volume created in the destination's pool,
  looked up through the source's pool, deleted in every case;
* ``pre_live_migration``: claim, and for block migration the destination's
  qcow2 disk (same path, same virtual size);
* the job: ``migrateToURI(uri, flags, None, bandwidth)`` in a worker thread,
  polled through ``jobStats()``; completed-job statistics from the
  destination; ``abortJob()`` to cancel.

The scenario's VMs are booted as real domains (TCG guests from the lab image)
when the driver starts, and destroyed when it closes unless ``keep_domains``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt
import simpy
import simpy.rt

from livemig.core.errors import MigrationError
from livemig.core.model import Scenario, VmSpec
from livemig.core.units import GiB, MiB
from livemig.drivers.base import HostFacts, HostTable, JobInfo, JobType
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.inventory import Inventory, load_inventory

POOL = "instances"
BOOT_TIMEOUT = 90.0  # seconds for a TCG guest to start ticking on its console
_JOB_TYPES = {
    libvirt.VIR_DOMAIN_JOB_NONE: JobType.NONE,
    libvirt.VIR_DOMAIN_JOB_BOUNDED: JobType.UNBOUNDED,
    libvirt.VIR_DOMAIN_JOB_UNBOUNDED: JobType.UNBOUNDED,
    libvirt.VIR_DOMAIN_JOB_COMPLETED: JobType.COMPLETED,
    libvirt.VIR_DOMAIN_JOB_FAILED: JobType.FAILED,
    libvirt.VIR_DOMAIN_JOB_CANCELLED: JobType.CANCELLED,
}

_ACTIVE_JOB_TYPES = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors raise; don't print


class DriverSetupError(RuntimeError):
    """The scenario cannot run on these hosts (named host missing, guest won't boot)."""


@dataclass(kw_only=True)
class _Job:
    source: str
    dest: str
    started: float  # monotonic seconds
    thread: threading.Thread | None = None
    error: str | None = None
    returned: bool = False
    cancelled: bool = False
    last: JobInfo = field(default_factory=lambda: JobInfo(type=JobType.UNBOUNDED))
    final: JobInfo | None = None


class LibvirtDriver:
    """A :class:`~livemig.drivers.base.Driver` over real libvirt hosts."""

    REALTIME = True

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        *,
        inventory: str | Path,
        keep_domains: bool = False,
        boot: bool = True,
    ) -> None:
        self.env = env
        self.inventory: Inventory = load_inventory(inventory)
        self._policy = scenario.policy.migration
        self._keep = keep_domains
        self._vms = {vm.name: vm for vm in scenario.vms}
        known = {h.name for h in self.inventory.hosts}
        missing = [h.name for h in scenario.hosts if h.name not in known]
        if missing:
            raise DriverSetupError(
                f"{scenario.source}: hosts {', '.join(missing)} are not in the inventory "
                f"{inventory} (it has {', '.join(sorted(known))})"
            )
        self._hosts = [h.name for h in scenario.hosts if h.service]
        self._conns: dict[str, libvirt.virConnect] = {}
        self._heartbeat: dict[str, float | None] = {}
        for host in self._hosts:
            self._conns[host] = libvirt.open(self.inventory.host(host).uri)
            self._heartbeat[host] = float(env.now)
        self._claims: dict[str, tuple[str, VmSpec]] = {}
        self._jobs: dict[str, _Job] = {}
        self._markers = 0
        if boot:
            self._boot(scenario)
        if isinstance(env, simpy.rt.RealtimeEnvironment):
            # Booting took real time: without this, the scenario's clock would start behind
            # the wall clock and its timeouts (event times, the 0.5 s poll) fire back to back.
            env.sync()

    # -- booting the scenario's guests -------------------------------------------
    def console_log(self, instance: str) -> Path:
        return Path(self.inventory.console_dir) / f"{instance}.log"

    def disk_path(self, instance: str) -> Path:
        return Path(self.inventory.instances_path) / f"{instance}.qcow2"

    def _boot(self, scenario: Scenario) -> None:
        image = self.inventory.image
        if not image:
            raise DriverSetupError(f"inventory {self.inventory.lab_dir} names no guest image")
        for vm in scenario.vms:
            conn = self._conns[vm.host]
            self._remove_domain_everywhere(vm.name)
            disk = None
            if vm.disk > 0 and not vm.volume_backed:
                disk = self.disk_path(vm.name)
                self._create_volume(vm.host, disk.name, vm.disk)
            log = self.console_log(vm.name)
            log.unlink(missing_ok=True)
            xml = domain_xml(
                vm.name, vm.ram // MiB, vm.vcpus, Path(image["kernel"]), Path(image["initrd"]),
                max(1, round(vm.working_set / MiB)), vm.dirty_rate / MiB, log, disk,
            )
            conn.defineXML(xml).create()
        deadline = time.monotonic() + BOOT_TIMEOUT
        for vm in scenario.vms:
            while "tick" not in _read(self.console_log(vm.name)):
                if time.monotonic() > deadline:
                    raise DriverSetupError(
                        f"guest {vm.name} on {vm.host} did not start ticking on its console "
                        f"within {BOOT_TIMEOUT:.0f} s ({self.console_log(vm.name)})"
                    )
                time.sleep(0.2)

    def _remove_domain_everywhere(self, name: str) -> None:
        for conn in self._conns.values():
            _remove_domain(_domain_state(conn, name))

    # -- facts ------------------------------------------------------------
    def host_names(self) -> list[str]:
        return list(self._hosts)

    def _conn(self, host: str) -> libvirt.virConnect:
        try:
            return self._conns[host]
        except KeyError:
            raise KeyError(host) from None

    def host_facts(self, host: str) -> HostFacts:
        conn = self._conn(host)
        try:
            info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
            domains = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            pool = conn.storagePoolLookupByName(POOL)
            pool.refresh()
            _, capacity, _, available = pool.info()
            hv_type, hv_version = conn.getType(), conn.getVersion()
            cpu_model = _host_cpu_model(conn.getCapabilities())
        except libvirt.libvirtError:
            return self._stale_facts(host)
        self._heartbeat[host] = float(self.env.now)  # HostFacts: a float
        used = self._policy.reserved_host_memory_mb * MiB
        vcpus_used = 0
        for dom in domains:
            _, max_kib, _, vcpus, _ = dom.info()
            used += max_kib * 1024
            vcpus_used += vcpus
        for dest, vm in self._claims.values():
            if dest == host:
                used += vm.ram
                vcpus_used += vm.vcpus
        return HostFacts(
            name=host,
            hypervisor_type=hv_type,
            hypervisor_version=hv_version,
            cpu_model=cpu_model,
            memory_mb=info[1],
            free_ram_mb=info[1] - used // MiB,
            vcpus=info[2],
            vcpus_used=vcpus_used,
            local_gb=capacity // GiB,
            disk_available_least=available // GiB,
            last_heartbeat=self._heartbeat[host],
        )

    def _stale_facts(self, host: str) -> HostFacts:
        """A host whose libvirtd does not answer: no capacity, heartbeat unchanged."""
        return HostFacts(
            name=host, hypervisor_type="", hypervisor_version=0, cpu_model="", memory_mb=0,
            free_ram_mb=0, vcpus=0, vcpus_used=0, local_gb=0, disk_available_least=0,
            last_heartbeat=self._heartbeat.get(host),
        )

    def host_table(self) -> HostTable:
        return HostTable.from_facts([self.host_facts(h) for h in self._hosts])

    def instance_host(self, instance: str) -> str | None:
        running = [h for h in self._hosts if self.instance_running_on(instance, h)]
        return running[0] if len(running) == 1 else None

    def instance_running_on(self, instance: str, host: str) -> bool:
        state = _domain_state(self._conn(host), instance)
        return state is not None and state.active

    def compare_cpu(self, source: str, dest: str) -> bool:
        caps = ET.fromstring(self._conn(source).getCapabilities())
        cpu = caps.find("host/cpu")
        if cpu is None:
            return False
        try:
            result = self._conn(dest).compareCPU(ET.tostring(cpu, encoding="unicode"), 0)
        except libvirt.libvirtError:
            return False
        return result in (libvirt.VIR_CPU_COMPARE_IDENTICAL, libvirt.VIR_CPU_COMPARE_SUPERSET)

    def create_shared_storage_test_file(self, dest: str) -> str:
        self._markers += 1
        name = f"livemig-shared-test-{time.time_ns():x}-{self._markers}"
        self._create_volume(dest, name, 0, fmt="raw")
        return name

    def check_shared_storage_test_file(self, source: str, name: str) -> bool:
        pool = self._conn(source).storagePoolLookupByName(POOL)
        pool.refresh()
        try:
            pool.storageVolLookupByName(name)
        except libvirt.libvirtError:
            return False
        return True

    def cleanup_shared_storage_test_file(self, dest: str, name: str) -> None:
        self._delete_volume(dest, name)

    def _create_volume(self, host: str, name: str, capacity: int, fmt: str = "qcow2") -> None:
        pool = self._conn(host).storagePoolLookupByName(POOL)
        pool.refresh()
        self._delete_volume(host, name)
        xml = (
            f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
            f"<target><format type='{fmt}'/></target></volume>"
        )
        pool.createXML(xml, 0)

    def _delete_volume(self, host: str, name: str) -> None:
        pool = self._conn(host).storagePoolLookupByName(POOL)
        pool.refresh()
        with contextlib.suppress(libvirt.libvirtError):
            pool.storageVolLookupByName(name).delete(0)

    # -- actions ----------------------------------------------------------
    def pre_live_migration(self, instance: str, dest: str, block_migration: bool) -> None:
        vm = self._vms[instance]
        facts = self.host_facts(dest)
        if facts.free_ram_mb < vm.ram // MiB:
            raise MigrationError(
                reason=f"{dest} cannot hold {instance}: {vm.ram // MiB} MiB requested, "
                f"{facts.free_ram_mb} MiB free"
            )
        self._claims[instance] = (dest, vm)
        if block_migration and vm.disk > 0 and not vm.volume_backed:
            self._create_volume(dest, self.disk_path(instance).name, vm.disk)

    def start_migration(
        self, instance: str, dest: str, *, uri: str, flags: int, bandwidth_mib: int
    ) -> None:
        source = self.instance_host(instance)
        if source is None:
            raise MigrationError(reason=f"{instance} is not running on exactly one host")
        dom = self._conn(source).lookupByName(instance)
        dom.migrateSetMaxDowntime(max(1, round(self._policy.max_downtime * 1000)), 0)
        job = _Job(source=source, dest=dest, started=time.monotonic())

        def migrate() -> None:
            try:
                dom.migrateToURI(uri, flags, None, bandwidth_mib)
            except libvirt.libvirtError as exc:
                job.error = str(exc)
            finally:
                job.returned = True

        job.thread = threading.Thread(target=migrate, name=f"migrate-{instance}", daemon=True)
        self._jobs[instance] = job
        job.thread.start()

    def set_max_downtime(self, instance: str, seconds: float) -> None:
        job = self._jobs[instance]
        dom = self._conn(job.source).lookupByName(instance)
        dom.migrateSetMaxDowntime(max(1, round(seconds * 1000)), 0)

    def job_info(self, instance: str) -> JobInfo:
        job = self._jobs.get(instance)
        if job is None:
            return JobInfo(type=JobType.NONE)
        if job.final is not None:
            return job.final
        if job.returned and job.error is not None:
            kind = JobType.CANCELLED if "canceled by client" in job.error else JobType.FAILED
            # a running job's "downtime" is libvirt's estimate; an unfinished job paused nothing
            job.final = _with(job.last, type=kind, error=job.error, downtime=None)
            return job.final
        on_dest = self.instance_running_on(instance, job.dest)
        if on_dest and not self.instance_running_on(instance, job.source):
            stats = self._completed_stats(instance, job)
            if stats is not None:
                job.final = stats
                return stats
        dom = _lookup(self._conn(job.source), instance)
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError):
                stats = dom.jobStats(0)
                # Once the job has ended (e.g. aborted) and before migrateToURI returns, the
                # source answers {'type': NONE}: keep the last reading of the running job,
                # which is all there is of a cancelled job's statistics.
                if stats.get("type") in _ACTIVE_JOB_TYPES:
                    job.last = _job_info(stats, JobType.UNBOUNDED)
        return _with(job.last, type=JobType.UNBOUNDED)

    def _completed_stats(self, instance: str, job: _Job) -> JobInfo | None:
        for host in (job.dest, job.source):
            dom = _lookup(self._conn(host), instance)
            if dom is None:
                continue
            try:
                # KEEP_COMPLETED: reading them must not erase them for anyone else
                stats = dom.jobStats(
                    libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                    | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
                )
            except libvirt.libvirtError:
                continue
            if stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED:
                return _job_info(stats, JobType.COMPLETED)
        return None

    def abort_job(self, instance: str) -> None:
        job = self._jobs[instance]
        self._conn(job.source).lookupByName(instance).abortJob()

    def post_live_migration(self, instance: str, source: str, dest: str) -> None:
        """Clean the source: the domain's leftovers and, on local storage, its disk."""
        self._claims.pop(instance, None)
        state = _domain_state(self._conn(source), instance)
        if state is not None:
            if state.active:
                raise MigrationError(reason=f"{instance} still runs on {source} after migration")
            if state.persistent:
                _ignore_vanished(state.dom.undefine)
        if self.inventory.storage == "local":
            self._delete_volume(source, self.disk_path(instance).name)
        self._join(instance)

    def rollback_live_migration(
        self, instance: str, source: str, dest: str, block_migration: bool
    ) -> None:
        """Clean the destination: any domain left there, the disk pre-created for it."""
        self._claims.pop(instance, None)
        self._join(instance)
        if self.instance_running_on(instance, source):
            _remove_domain(_domain_state(self._conn(dest), instance))
        if block_migration and self.inventory.storage == "local":
            self._delete_volume(dest, self.disk_path(instance).name)

    def _join(self, instance: str, timeout: float = 30.0) -> None:
        """Wait for migrateToURI to return (it returns 1-2 s after the job ended)."""
        job = self._jobs.get(instance)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)

    def close(self) -> None:
        for name, job in self._jobs.items():
            if not job.returned:
                dom = _lookup(self._conn(job.source), name)
                if dom is not None:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.abortJob()
            self._join(name)
        if not self._keep:
            for name in self._vms:
                self._remove_domain_everywhere(name)
                if self._vms[name].disk > 0:
                    for host in self._hosts:
                        self._delete_volume(host, self.disk_path(name).name)
        for conn in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    return _ignore_vanished(conn.lookupByName, name)


def _ignore_vanished(call: Any, *args: Any) -> Any:
    """``call(*args)``, or None when the domain does not exist (any more).

    A migrating domain leaves its source at a moment of libvirt's choosing: a
    handle looked up a moment ago may answer "no domain" to the next question.
    """
    try:
        return call(*args)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


@dataclass(frozen=True)
class _DomainState:
    dom: libvirt.virDomain
    active: bool
    persistent: bool


def _domain_state(conn: libvirt.virConnect, name: str) -> _DomainState | None:
    """What ``conn`` knows of domain ``name`` now; None if it has none (or it just left)."""
    dom = _lookup(conn, name)
    if dom is None:
        return None
    active = _ignore_vanished(dom.isActive)
    persistent = _ignore_vanished(dom.isPersistent)
    if active is None or persistent is None:
        return None
    return _DomainState(dom=dom, active=bool(active), persistent=bool(persistent))


def _remove_domain(state: _DomainState | None) -> None:
    """Destroy and undefine a domain (a transient one vanishes once destroyed)."""
    if state is None:
        return
    if state.active:
        _ignore_vanished(state.dom.destroy)
    if state.persistent:
        _ignore_vanished(state.dom.undefine)


def _host_cpu_model(capabilities: str) -> str:
    model = ET.fromstring(capabilities).find("host/cpu/model")
    return model.text or "" if model is not None else ""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _job_info(stats: dict[str, Any], kind: JobType) -> JobInfo:
    """libvirt's typed job parameters (ms, bytes, pages/s) in base units."""
    page = stats.get("memory_page_size", 4096)
    downtime = stats.get("downtime")
    return JobInfo(
        type=kind,
        time_elapsed=stats.get("time_elapsed", 0) / 1000.0,
        data_total=stats.get("data_total", 0),
        data_processed=stats.get("data_processed", 0),
        data_remaining=stats.get("data_remaining", 0),
        memory_total=stats.get("memory_total", 0),
        memory_processed=stats.get("memory_processed", 0),
        memory_remaining=stats.get("memory_remaining", 0),
        disk_total=stats.get("disk_total", 0),
        disk_processed=stats.get("disk_processed", 0),
        disk_remaining=stats.get("disk_remaining", 0),
        memory_iteration=stats.get("memory_iteration", 0),
        memory_dirty_rate=stats.get("memory_dirty_rate", 0) * page,
        downtime=None if downtime is None else downtime / 1000.0,
    )


def _with(info: JobInfo, **changes: Any) -> JobInfo:
    return dataclasses.replace(info, **changes)
