"""The real driver: libvirt-python against real libvirtd/QEMU hosts.

The only modules that import libvirt are this one, :mod:`livemig.drivers.libvirt_conn`
(connections, keepalive, the event loop), :mod:`livemig.drivers.libvirt_jobs` (a job's
record and readings) and :mod:`livemig.drivers.libvirt_domains` (what a host says about
its domains and capacity). Hosts come from an inventory (an Ansible inventory's group
``kvm_hosts``, see :mod:`livemig.drivers.hosts_inventory`; the one ``livemig lab up`` writes
is one too); the scenario's host names must be inventory host names. What it does,
Nova-style:

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
* the job: ``migrateToURI(uri, flags, None, bandwidth)`` in a worker thread, flags
  exactly as the core gives them (it adds ``POSTCOPY``, ``AUTO_CONVERGE``, ``TLS``);
  ``migrateSetMaxDowntime`` while it runs; polled through ``jobStats()`` (with
  auto-converge's ``auto_converge_throttle``); ``migrateStartPostCopy()`` to switch
  to post-copy, after which the statistics come from the source's ``JOB_COMPLETED``
  event; completed-job statistics from the destination; ``abortJob()`` to cancel;
* ``suspend``/``resume``: ``virDomainSuspend``/``virDomainResume`` where the guest runs
  now (libvirt keeps a paused guest paused across a migration);
* CPU (``cpu_utilisation``, ``cpu_usage``): libvirt's per-vCPU run time and run-queue
  delay (``domainListGetStats``) between two samples of the domain's QEMU process,
  :mod:`livemig.drivers.cpu_stats`; the scenario's ``cpu_trace`` is burnt by the lab guest;
* ``world()``: every scenario domain on every reachable host, the claims, the hosts
  that cannot be reached and those whose memory is overcommitted;
* faults (``inject_fault``): a capability of the target (:mod:`livemig.drivers.guests`):
  the namespace lab makes them, real hosts refuse them unless the inventory enables the
  Ansible method. Every call copes with a dead connection (see ``libvirt_conn``): reopened
  once, else :class:`HostUnreachable`; ``instance_host`` answers from reachable hosts.

A controller restart (``attach_job``). What libvirt does when the process that called
``migrateToURI`` dies, checked in the lab (libvirt 11.3, QEMU 10.0, PEER2PEER, a
128 MiB guest at 2 and 4 MiB/s, the caller killed with SIGKILL 4 s into the job): the
job **continues** in the source's libvirtd, which drives a peer-to-peer migration by
itself; ``jobStats()`` from a new connection keeps advancing, and the migration
completes (the domain runs on the destination, is gone from the source, and the
destination keeps completed-job statistics). So after ``livemig resume`` a new driver
(``boot=False``: it neither boots nor destroys anything at start) adopts the job with
``attach_job`` and watches it to its end; a job that ended while no controller watched
reads COMPLETED when the domain runs on the destination only, FAILED when it runs on the
source only (or nowhere). End to end: ``livemig run scenarios/lab-resume.yaml --driver
libvirt`` killed with SIGKILL 2 s into the job, then ``livemig resume RUN_DIR``: the job
was still running, was watched to completion on lab2, zero invariant violations.

The scenario's VMs are created as real domains when the driver starts (unless
``boot=False``): from a disk image (``image:``, a qcow2 overlay per VM, KVM where the host
offers it) or as the target's own guest (the lab's TCG test guest); ``adopt: true`` VMs are
existing domains, found running on their host. **livemig never destroys a domain it did not
create**: every domain it creates carries its mark (:func:`~livemig.drivers.guests.mark_owned`),
and only marked domains are destroyed or undefined (at start, leftovers of an earlier run;
when it closes unless ``keep_domains``); a domain of a scenario VM's name without the mark
stops the start. A rollback removes the destination's copy only when it is marked or is
the adopted domain's own (same UUID). With ``keep_domains``, ``close()`` leaves every
domain and every job as it is (no abort): a controller that dies must not take guests
with it, and closing our connection does not stop a peer-to-peer job.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import libvirt
import simpy
import simpy.rt

from livemig.core.errors import MigrationError
from livemig.core.model import FaultKind, Scenario, VmSpec
from livemig.core.units import GiB, MiB
from livemig.drivers.base import (
    DomainFact,
    DriverSetupError,
    HostFacts,
    HostTable,
    JobInfo,
    JobType,
    WorldFacts,
)
from livemig.drivers.cpu_stats import CpuSample, CpuUsage, usage
from livemig.drivers.guests import ImageGuests, Target, is_owned, mark_owned, target_for
from livemig.drivers.hosts_inventory import HostsInventory, InventoryError, load_hosts_inventory
from livemig.drivers.libvirt_conn import Connections, HostUnreachable, redact_uris
from livemig.drivers.libvirt_domains import (
    POOL,
    DomainInfo,
    abort_if_running,
    cpu_sample,
    domain_info,
    has_kvm,
    host_usage,
    ignore_vanished,
    lookup,
    remove_domain,
    source_reading,
)
from livemig.drivers.libvirt_jobs import (
    ACTIVE_JOB_TYPES,
    COMPLETED_STATS,
    DEST_POSTCOPY,
    MIGRATION_OUT,
    MIGRATION_SHADOWS,
    SOURCE_POSTCOPY,
    Job,
    ended_reading,
    job_info,
    with_,
)

__all__ = ["DriverSetupError", "HostUnreachable", "LibvirtDriver"]

CPU_WINDOW = 1.0  # seconds: the shortest window a CPU utilisation is measured over
CPU_ATTEMPTS = 3  # windows tried when the guest moves during one
BOOT_TIMEOUT = 90.0  # seconds for a guest to come up (the lab's: ticking on its console)
AMBIGUOUS_GRACE = 30.0  # seconds a domain may sit on both hosts with no job before FAILED
POSTCOPY_FAILED = libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors raise; don't print


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
        target: Target | None = None,
    ) -> None:
        self.env = env
        self._inventory_path = Path(inventory)
        try:
            self.inventory: HostsInventory = load_hosts_inventory(inventory)
            self._target = target if target is not None else target_for(self.inventory)
        except (InventoryError, RuntimeError, OSError) as exc:
            raise DriverSetupError(" ".join(str(exc).split())) from exc
        console_dir = self.inventory.var("livemig_console_dir")
        self._image_guests = ImageGuests(Path(console_dir) if console_dir else None)
        # VM -> its domain's UUID (created here, or adopted); a migrated domain keeps it
        self._uuids: dict[str, str] = {}
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
        self._events_lock = threading.Lock()
        self._completed: dict[tuple[str, str], dict[str, Any]] = {}  # (source, vm) -> stats
        self._conns = Connections(
            {h: self.inventory.host(h).uri for h in self._hosts},
            keepalive_interval=self._policy.keepalive_interval,
            keepalive_count=self._policy.keepalive_count,
            on_job_completed=self._job_completed,
        )
        self._heartbeat: dict[str, float | None] = {}
        for host in self._hosts:
            self._heartbeat[host] = float(env.now) if self._conns.reachable(host) else None
        self._claims: dict[str, tuple[str, VmSpec]] = {}
        self._jobs: dict[str, Job] = {}
        self._markers = 0
        self._cpu_samples: dict[str, CpuSample] = {}  # instance -> its latest CPU sample
        self.cpu_window = CPU_WINDOW
        if boot:
            self._boot(scenario)
        else:  # a controller restart: the adopted domains' UUIDs, where they run now
            for vm in scenario.vms:
                if vm.adopt:
                    self._remember_uuid(vm.name)
        if isinstance(env, simpy.rt.RealtimeEnvironment):
            # Booting took real time: without this, the scenario's clock would start behind
            # the wall clock and its timeouts (event times, the 0.5 s poll) fire back to back.
            env.sync()

    def _call(self, host: str, fn: Any) -> Any:
        """``fn(connection to host)``: reconnects once; KeyError, HostUnreachable."""
        return self._conns.call(host, fn)

    def _job_completed(self, host: str, name: str, stats: dict[str, Any]) -> None:
        """libvirt's JOB_COMPLETED event (event-loop thread): keep a migration's stats."""
        if stats.get("operation", MIGRATION_OUT) == MIGRATION_OUT and name in self._vms:
            with self._events_lock:
                self._completed[(host, name)] = stats

    # -- booting the scenario's guests -------------------------------------------
    def console_log(self, instance: str) -> Path | None:
        """The guest's console file, if its target writes one (the lab's guests)."""
        vm = self._vms[instance]
        if vm.image:
            return self._image_guests.console_log(instance)
        if vm.adopt or self._target.guests is None:
            return None
        return self._target.guests.console_log(instance)

    def disk_path(self, instance: str, host: str) -> Path:
        return Path(self.inventory.host(host).instances_path) / f"{instance}.qcow2"

    def _created(self, instance: str) -> bool:
        """Whether livemig creates (and may remove) this VM's domain and disk."""
        return not self._vms[instance].adopt

    def _guests(self, vm: VmSpec) -> Any:
        if vm.image:
            return self._image_guests
        if self._target.guests is None:
            raise DriverSetupError(
                f"VM {vm.name}: these hosts ({self._inventory_path}) have no guest of their "
                "own; expected image: VOLUME (a disk image in the instances pool) or adopt: "
                "true (an existing domain) on the VM"
            )
        return self._target.guests

    def _boot(self, scenario: Scenario) -> None:
        try:
            for vm in scenario.vms:
                if vm.adopt:
                    self._adopt(vm)
                    continue
                guests = self._guests(vm)
                self._remove_leftovers(vm.name)
                disk = self._create_disk(vm, vm.host)
                accel = self._accel(vm.host)
                try:
                    xml = mark_owned(guests.domain_xml(vm, disk=disk, accel=accel))
                except (ValueError, RuntimeError) as exc:
                    raise DriverSetupError(f"VM {vm.name}: {exc}") from exc
                dom = self._call(vm.host, lambda c, xml=xml: c.defineXML(xml))
                self._call(vm.host, lambda c, dom=dom: dom.create())
                self._uuids[vm.name] = dom.UUIDString()
        except HostUnreachable as exc:
            raise DriverSetupError(f"cannot boot the scenario's guests: {exc}") from exc
        except libvirt.libvirtError as exc:
            raise DriverSetupError(
                f"cannot boot the scenario's guests: {redact_uris(str(exc))}") from exc
        deadline = time.monotonic() + BOOT_TIMEOUT
        for vm in scenario.vms:
            if vm.adopt:
                continue
            while not self._guests(vm).booted(vm):
                if time.monotonic() > deadline:
                    raise DriverSetupError(
                        f"guest {vm.name} on {vm.host} did not come up within "
                        f"{BOOT_TIMEOUT:.0f} s (console: {self.console_log(vm.name)})"
                    )
                time.sleep(0.2)

    def _adopt(self, vm: VmSpec) -> None:
        """An existing domain becomes the scenario's VM: it must run on its host."""
        state = self._call(vm.host, lambda c: domain_info(c, vm.name))
        if state is None or not state.active:
            raise DriverSetupError(
                f"VM {vm.name} (adopt: true): no running domain {vm.name} on {vm.host}; "
                "expected the domain to adopt running on the VM's host"
            )
        self._uuids[vm.name] = state.dom.UUIDString()

    def _remember_uuid(self, name: str) -> None:
        for host in self._hosts:
            with contextlib.suppress(HostUnreachable, libvirt.libvirtError):
                state = self._call(host, lambda c: domain_info(c, name))
                if state is not None and state.active:
                    self._uuids[name] = state.dom.UUIDString()
                    return

    def _accel(self, host: str) -> str:
        """``kvm`` or ``qemu`` (TCG): the inventory's ``livemig_accel``, else what libvirt
        offers on the host (KVM where ``/dev/kvm`` is usable)."""
        accel = str(self.inventory.host(host).vars.get("livemig_accel", "auto"))
        if accel != "auto":
            return accel
        return "kvm" if self._call(host, lambda c: has_kvm(c.getCapabilities())) else "qemu"

    def _create_disk(self, vm: VmSpec, host: str) -> Path | None:
        """The VM's disk on ``host``'s instances pool: an overlay of its image, or a blank
        qcow2 of ``disk`` bytes (None: it has no local disk)."""
        if vm.image:
            image = vm.image

            def overlay(conn: libvirt.virConnect) -> None:
                pool = conn.storagePoolLookupByName(POOL)
                pool.refresh()
                try:
                    base = pool.storageVolLookupByName(image)
                except libvirt.libvirtError as exc:
                    if not conn.isAlive():
                        raise
                    raise DriverSetupError(
                        f"VM {vm.name}: no image {image!r} in the instances pool of {host}; "
                        "expected a volume of that name (copy the image into the pool's "
                        "directory, then virsh pool-refresh instances)") from exc
                fmt = ET.fromstring(base.XMLDesc(0)).find("target/format")
                kind = fmt.get("type", "raw") if fmt is not None else "raw"
                capacity = max(vm.disk, base.info()[1])
                name = self.disk_path(vm.name, host).name
                with contextlib.suppress(libvirt.libvirtError):
                    pool.storageVolLookupByName(name).delete(0)
                pool.createXML(
                    f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
                    f"<target><format type='qcow2'/></target><backingStore><path>"
                    f"{base.path()}</path><format type='{kind}'/></backingStore></volume>", 0)

            self._call(host, overlay)
            return self.disk_path(vm.name, host)
        if vm.disk > 0 and not vm.volume_backed:
            disk = self.disk_path(vm.name, host)
            self._create_volume(host, disk.name, vm.disk)
            return disk
        return None

    def _remove_leftovers(self, name: str) -> None:
        """Before creating ``name``: remove what an earlier livemig run left (marked);
        refuse to touch a domain of that name that livemig did not create."""
        for host in self._hosts:
            try:
                state = self._call(host, lambda c: domain_info(c, name))
            except HostUnreachable:
                continue
            if state is None:
                continue
            if not is_owned(ignore_vanished(state.dom.XMLDesc, 0) or ""):
                raise DriverSetupError(
                    f"VM {name}: a domain {name} that livemig did not create exists on "
                    f"{host}; livemig never destroys such a domain: expected adopt: true on "
                    "the VM to migrate it, or another VM name"
                )
            self._call(host, lambda c: remove_domain(domain_info(c, name)))

    def _remove_ours_everywhere(self, name: str) -> None:
        """Destroy and undefine ``name`` on every reachable host where livemig created it."""
        for host in self._hosts:
            with contextlib.suppress(HostUnreachable):
                self._call(host, lambda c: remove_domain(_owned(domain_info(c, name))))

    # -- facts ------------------------------------------------------------
    def host_names(self) -> list[str]:
        return list(self._hosts)

    def host_facts(self, host: str) -> HostFacts:
        if host not in self._heartbeat:
            raise KeyError(host)
        try:
            usage = self._call(host, lambda c: host_usage(c, with_pool=True))
        except (HostUnreachable, libvirt.libvirtError):
            return self._stale_facts(host)
        self._heartbeat[host] = float(self.env.now)  # HostFacts: a float
        used = self._policy.reserved_host_memory_mb * MiB + usage.domains_ram
        vcpus_used = usage.domains_vcpus
        for _, vm in self._claimed_on(host, usage.active):
            used += vm.ram
            vcpus_used += vm.vcpus
        return HostFacts(
            name=host,
            hypervisor_type=usage.hv_type,
            hypervisor_version=usage.hv_version,
            cpu_model=usage.cpu_model,
            memory_mb=usage.memory_mb,
            free_ram_mb=usage.memory_mb - used // MiB,
            vcpus=usage.vcpus,
            vcpus_used=vcpus_used,
            local_gb=usage.pool_capacity // GiB,
            disk_available_least=usage.pool_available // GiB,
            last_heartbeat=self._heartbeat[host],
        )

    def _claimed_on(self, host: str, active: frozenset[str]) -> list[tuple[str, VmSpec]]:
        """The claims held on ``host`` whose domain is not active there yet: once it is
        (the incoming side, then the migrated guest) the domain itself is counted."""
        return [(dest, vm) for name, (dest, vm) in self._claims.items()
                if dest == host and name not in active]

    def _stale_facts(self, host: str) -> HostFacts:
        """A host whose libvirtd does not answer: no capacity, heartbeat unchanged."""
        return HostFacts(
            name=host, hypervisor_type="", hypervisor_version=0, cpu_model="", memory_mb=0,
            free_ram_mb=0, vcpus=0, vcpus_used=0, local_gb=0, disk_available_least=0,
            last_heartbeat=self._heartbeat.get(host),
        )

    def host_table(self) -> HostTable:
        return HostTable.from_facts([self.host_facts(h) for h in self._hosts])

    def _placement(self, instance: str) -> dict[str, DomainInfo]:
        """Where ``instance`` has an active domain, among the reachable hosts."""
        found: dict[str, DomainInfo] = {}
        for host in self._hosts:
            try:
                state = self._call(host, lambda c: domain_info(c, instance))
            except HostUnreachable:
                continue
            if state is not None and state.active:
                found[host] = state
        return found

    def instance_host(self, instance: str) -> str | None:
        """The one reachable host where the guest runs; during a migration the side whose
        vCPUs run (the source in pre-copy, the destination in post-copy)."""
        active = self._placement(instance)
        # a shadow alone is no home either: an incoming shell whose source died never ran
        # the guest; a post-copy source whose destination died holds a lost guest
        active = {h: s for h, s in active.items() if s.key not in MIGRATION_SHADOWS}
        return next(iter(active)) if len(active) == 1 else None

    def instance_running_on(self, instance: str, host: str) -> bool:
        """Is the domain active on ``host``? :class:`HostUnreachable` if it cannot be asked."""
        state = self._call(host, lambda c: domain_info(c, instance))
        return state is not None and state.active

    # -- CPU ------------------------------------------------------------------
    def cpu_utilisation(self, instance: str) -> float:
        """The share of its vCPUs the guest used since the previous call (see
        :meth:`cpu_usage`)."""
        return self.cpu_usage(instance).utilisation

    def cpu_usage(self, instance: str) -> CpuUsage:
        """The guest's CPU over the window since the previous reading of its QEMU process:
        libvirt's vCPU run time and run-queue delay (:mod:`livemig.drivers.cpu_stats`),
        read where its vCPUs run (:meth:`instance_host`).

        The window is at least ``cpu_window`` seconds: the first reading of a process (the
        first call, or the first after a migration: the counters start again on the
        destination) waits that long between its two samples, and so does a call that
        comes sooner after the previous one. A guest that runs nowhere reads 0 over no
        window. ``KeyError`` if it is no scenario VM; :class:`HostUnreachable` if its host
        cannot be asked.
        """
        if instance not in self._vms:
            raise KeyError(instance)
        for _ in range(CPU_ATTEMPTS):
            host = self.instance_host(instance)
            if host is None:
                self._cpu_samples.pop(instance, None)
                return CpuUsage(utilisation=0.0, waiting=None, window=0.0)
            latest = self._call(host, lambda c, h=host: cpu_sample(c, instance, h))
            if latest is None:
                continue  # it left the host between the two questions
            base = self._cpu_samples.get(instance)
            if base is None or base.process != latest.process:
                base = self._cpu_samples[instance] = latest  # a new QEMU process
            wait = base.at + self.cpu_window - latest.at
            if wait > 0:
                time.sleep(wait)
                latest = self._call(host, lambda c, h=host: cpu_sample(c, instance, h))
                if latest is None or latest.process != base.process:
                    continue  # it moved during the window: read the new process
            self._cpu_samples[instance] = latest
            return usage(base, latest)
        raise MigrationError(
            reason=f"{instance} moved during each of {CPU_ATTEMPTS} CPU sample windows")

    def world(self) -> WorldFacts:
        domains: list[DomainFact] = []
        unreachable: list[str] = []
        overcommitted: list[str] = []
        names = set(self._vms)
        reserved = self._policy.reserved_host_memory_mb * MiB
        for host in self._hosts:
            try:
                usage = self._call(host, lambda c: host_usage(c, names=names))
            except (HostUnreachable, libvirt.libvirtError):
                unreachable.append(host)
                continue
            self._heartbeat[host] = float(self.env.now)
            domains.extend(
                DomainFact(instance=name, host=host, state=state)
                for name, state in sorted(usage.scenario_domains.items())
            )
            claimed = sum(vm.ram for _, vm in self._claimed_on(host, usage.active))
            if reserved + usage.domains_ram + claimed > usage.memory_mb * MiB:
                overcommitted.append(host)
        return WorldFacts(
            domains=tuple(domains),
            claims={name: dest for name, (dest, _) in self._claims.items()},
            unreachable=tuple(unreachable),
            overcommitted=tuple(overcommitted),
        )

    def compare_cpu(self, source: str, dest: str) -> bool:
        caps = ET.fromstring(self._call(source, lambda c: c.getCapabilities()))
        cpu = caps.find("host/cpu")
        if cpu is None:
            return False
        xml = ET.tostring(cpu, encoding="unicode")
        try:
            result = self._call(dest, lambda c: c.compareCPU(xml, 0))
        except libvirt.libvirtError:
            return False
        return result in (libvirt.VIR_CPU_COMPARE_IDENTICAL, libvirt.VIR_CPU_COMPARE_SUPERSET)

    def create_shared_storage_test_file(self, dest: str) -> str:
        self._markers += 1
        name = f"livemig-shared-test-{time.time_ns():x}-{self._markers}"
        self._create_volume(dest, name, 0, fmt="raw")
        return name

    def check_shared_storage_test_file(self, source: str, name: str) -> bool:
        def check(conn: libvirt.virConnect) -> bool:
            pool = conn.storagePoolLookupByName(POOL)
            pool.refresh()
            try:
                pool.storageVolLookupByName(name)
            except libvirt.libvirtError:
                if not conn.isAlive():
                    raise
                return False
            return True

        return bool(self._call(source, check))

    def cleanup_shared_storage_test_file(self, dest: str, name: str) -> None:
        self._delete_volume(dest, name)

    def _create_volume(self, host: str, name: str, capacity: int, fmt: str = "qcow2") -> None:
        self._delete_volume(host, name)
        xml = (
            f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
            f"<target><format type='{fmt}'/></target></volume>"
        )

        def create(conn: libvirt.virConnect) -> None:
            pool = conn.storagePoolLookupByName(POOL)
            pool.refresh()
            pool.createXML(xml, 0)

        self._call(host, create)

    def _delete_volume(self, host: str, name: str) -> None:
        def delete(conn: libvirt.virConnect) -> None:
            pool = conn.storagePoolLookupByName(POOL)
            pool.refresh()
            try:
                pool.storageVolLookupByName(name).delete(0)
            except libvirt.libvirtError:
                if not conn.isAlive():
                    raise

        self._call(host, delete)

    # -- actions ----------------------------------------------------------
    def pre_live_migration(self, instance: str, dest: str, block_migration: bool) -> None:
        vm = self._vms[instance]
        if not self._conns.reachable(dest):
            self._call(dest, lambda c: None)  # raises HostUnreachable, with the reason
        facts = self.host_facts(dest)
        if facts.free_ram_mb < vm.ram // MiB:
            raise MigrationError(
                reason=f"{dest} cannot hold {instance}: {vm.ram // MiB} MiB requested, "
                f"{facts.free_ram_mb} MiB free"
            )
        self._claims[instance] = (dest, vm)
        if block_migration and self._created(instance):
            try:
                self._create_disk(vm, dest)  # an image VM: an overlay of dest's own image
            except DriverSetupError as exc:
                raise MigrationError(reason=str(exc)) from exc

    def start_migration(
        self, instance: str, dest: str, *, uri: str, flags: int, bandwidth_mib: int
    ) -> None:
        source = self.instance_host(instance)
        if source is None:
            raise MigrationError(reason=f"{instance} is not running on exactly one host")
        downtime_ms = max(1, round(self._policy.max_downtime * 1000))

        def lookup(conn: libvirt.virConnect) -> libvirt.virDomain:
            dom = conn.lookupByName(instance)
            dom.migrateSetMaxDowntime(downtime_ms, 0)
            return dom

        self._call(source, lookup)
        vm = self._vms.get(instance)
        if vm is not None and vm.adopt:  # its definition goes with it (as Nova always asks)
            flags |= libvirt.VIR_MIGRATE_PERSIST_DEST
        # migrateToURI blocks for the whole job: on a connection of its own, so that the
        # polls' calls never share one with it (see Connections.open_private)
        conn = self._conns.open_private(source)
        with self._events_lock:
            self._completed.pop((source, instance), None)
        job = Job(source=source, dest=dest, started=time.monotonic(), flags=flags)

        def migrate() -> None:
            try:
                conn.lookupByName(instance).migrateToURI(uri, flags, None, bandwidth_mib)
            except libvirt.libvirtError as exc:
                job.error = redact_uris(str(exc))
            finally:
                job.returned = True
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()

        job.thread = threading.Thread(target=migrate, name=f"migrate-{instance}", daemon=True)
        self._jobs[instance] = job
        job.thread.start()

    def _job(self, instance: str) -> Job:
        job = self._jobs.get(instance)
        if job is None:
            raise MigrationError(reason=f"{instance} has no migration job in this driver")
        return job

    def _on_source(self, instance: str, what: str, act: Any) -> Any:
        """``act(domain)`` on the job's source domain; libvirt errors as MigrationError."""
        job = self._job(instance)
        try:
            return self._call(job.source, lambda c: act(c.lookupByName(instance)))
        except libvirt.libvirtError as exc:
            raise MigrationError(
                reason=f"{what} {instance} on {job.source}: {redact_uris(str(exc))}") from exc

    def set_max_downtime(self, instance: str, seconds: float) -> None:
        ms = max(1, round(seconds * 1000))
        self._on_source(instance, "cannot set the max downtime of",
                        lambda dom: dom.migrateSetMaxDowntime(ms, 0))

    def start_postcopy(self, instance: str) -> None:
        """``migrateStartPostCopy``. Until QEMU's migration has begun (libvirt is still
        starting the destination) QEMU refuses the switch: it is then made at the first
        reading of the job that finds it under way."""
        job = self._job(instance)
        if job.flags is not None and not job.flags & libvirt.VIR_MIGRATE_POSTCOPY:
            raise MigrationError(
                reason=f"cannot switch {instance} to post-copy: its job was started without "
                "VIR_MIGRATE_POSTCOPY"
            )
        try:
            self._switch_to_postcopy(instance, job)
        except MigrationError:
            if job.flags is None:
                raise
            job.postcopy_requested = True

    def _switch_to_postcopy(self, instance: str, job: Job) -> None:
        self._on_source(instance, "cannot switch to post-copy:",
                        lambda dom: dom.migrateStartPostCopy(0))
        job.postcopy = True

    def abort_job(self, instance: str) -> None:
        self._on_source(instance, "cannot abort the job of", lambda dom: dom.abortJob())

    def attach_job(self, instance: str, source: str, dest: str) -> None:
        for host in (source, dest):
            if host not in self._heartbeat:
                raise KeyError(host)
        # A JOB_COMPLETED event already received is kept: within one process (a restart
        # event of a scenario) it is the only record of a post-copy job that just ended.
        self._jobs[instance] = Job(source=source, dest=dest, started=time.monotonic(),
                                   attached=True)

    def suspend(self, instance: str) -> None:
        host, state = self._home(instance)
        if state.state != libvirt.VIR_DOMAIN_PAUSED:
            self._call(host, lambda c: c.lookupByName(instance).suspend())

    def resume(self, instance: str) -> None:
        host, state = self._home(instance)
        if state.state == libvirt.VIR_DOMAIN_PAUSED:
            self._call(host, lambda c: c.lookupByName(instance).resume())

    def _home(self, instance: str) -> tuple[str, DomainInfo]:
        host = self.instance_host(instance)
        if host is None:
            raise MigrationError(reason=f"{instance} does not run on exactly one reachable host")
        state = self._call(host, lambda c: domain_info(c, instance))
        if state is None:
            raise MigrationError(reason=f"{instance} left {host} while being asked")
        return host, state

    # -- the job's readings ----------------------------------------------------
    def job_info(self, instance: str) -> JobInfo:
        job = self._jobs.get(instance)
        if job is None:
            return JobInfo(type=JobType.NONE)
        if job.final is not None:
            return job.final
        returned = self._call_returned(job)
        if returned is not None:
            return returned
        try:
            return self._read_job(instance, job)
        except HostUnreachable as exc:
            if job.call_pending:  # our migrateToURI fails once the keepalive gives up
                return with_(job.last, type=JobType.UNBOUNDED, postcopy=job.postcopy)
            return self._end(job, ended_reading(job, JobType.FAILED, str(exc)))

    def _call_returned(self, job: Job) -> JobInfo | None:
        """The job's end when our ``migrateToURI`` returned its error, else None."""
        if not job.returned or job.error is None:
            return None
        kind = JobType.CANCELLED if "canceled by client" in job.error else JobType.FAILED
        return self._end(job, ended_reading(job, kind, job.error))

    def _end(self, job: Job, info: JobInfo) -> JobInfo:
        job.final = info
        return info

    def _read_job(self, instance: str, job: Job) -> JobInfo:
        # migrateToURI may return while we read: decide on what was true before reading
        # (the next poll sees its error, if any)
        pending = job.call_pending
        if not pending:  # it may have returned since job_info looked: its error decides
            returned = self._call_returned(job)
            if returned is not None:
                return returned
        src, stats = self._call(job.source, lambda c: source_reading(c, instance))
        if src is not None and src.key in SOURCE_POSTCOPY:
            job.postcopy = True
        if stats is not None and stats.get("type") in ACTIVE_JOB_TYPES:
            if job.postcopy_requested and not job.postcopy and stats.get("memory_processed"):
                with contextlib.suppress(MigrationError, HostUnreachable):
                    self._switch_to_postcopy(instance, job)
            job.last = job_info(stats, JobType.UNBOUNDED, postcopy=job.postcopy)
            return job.last
        try:
            dst = self._call(job.dest, lambda c: domain_info(c, instance))
        except HostUnreachable:
            dst = None
        if dst is not None and dst.key in DEST_POSTCOPY:
            job.postcopy = True
        running = with_(job.last, type=JobType.UNBOUNDED, postcopy=job.postcopy)
        for side, host in ((src, job.source), (dst, job.dest)):
            if side is not None and side.key == (libvirt.VIR_DOMAIN_PAUSED, POSTCOPY_FAILED):
                return self._end(job, ended_reading(
                    job, JobType.FAILED, f"post-copy failed: {instance} is paused on {host}"))
        on_src = src is not None and src.active
        on_dest = dst is not None and dst.active
        if on_src and src.key in SOURCE_POSTCOPY:
            return running  # the guest runs on dest, pulling pages; stats come at the end
        if on_dest and not on_src:
            done = self._completed_stats(instance, job)
            if done is not None:
                return self._end(job, done)
            if pending or dst.key in DEST_POSTCOPY:
                return running  # the event or migrateToURI's return is on its way
            return self._end(job, ended_reading(job, JobType.COMPLETED, None))
        if pending:
            return running  # ended (aborted?) or not begun: migrateToURI will say
        if on_src and on_dest:
            job.ambiguous_since = job.ambiguous_since or time.monotonic()
            if time.monotonic() - job.ambiguous_since < AMBIGUOUS_GRACE:
                return running
            return self._end(job, ended_reading(
                job, JobType.FAILED, f"{instance} is on {job.source} and {job.dest} and no "
                f"job runs"))
        if on_src:
            why = ("the job ended while the controller was away" if job.attached
                   else "migrateToURI returned and the domain still runs on the source")
            return self._end(job, ended_reading(job, JobType.FAILED, f"{why} ({job.source})"))
        return self._end(job, ended_reading(
            job, JobType.FAILED, f"{instance} runs on neither {job.source} nor {job.dest}"))

    def _completed_stats(self, instance: str, job: Job) -> JobInfo | None:
        """The ended job's statistics: the destination's completed-job stats, else the
        source's JOB_COMPLETED event (the only record of a post-copy migration)."""

        def completed(conn: libvirt.virConnect) -> dict[str, Any] | None:
            dom = lookup(conn, instance)
            if dom is None:
                return None
            try:
                return dom.jobStats(COMPLETED_STATS)
            except libvirt.libvirtError:
                if not conn.isAlive():
                    raise
                return None

        with contextlib.suppress(HostUnreachable):
            stats = self._call(job.dest, completed)
            if stats is not None and stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED:
                return job_info(stats, JobType.COMPLETED, postcopy=job.postcopy)
        with self._events_lock:
            event = self._completed.get((job.source, instance))
        if event is not None:
            return job_info(event, JobType.COMPLETED, postcopy=job.postcopy)
        return None

    # -- after the job -----------------------------------------------------------
    def post_live_migration(self, instance: str, source: str, dest: str) -> None:
        """Clean the source: the domain's leftovers and, on local storage, its disk."""
        self._claims.pop(instance, None)
        state = self._call(source, lambda c: domain_info(c, instance))
        if state is not None:
            if state.active:
                raise MigrationError(reason=f"{instance} still runs on {source} after migration")
            if state.persistent and self._mine(instance, state) is not None:
                # libvirt may undefine it itself (VIR_MIGRATE_UNDEFINE_SOURCE) meanwhile
                self._call(source, lambda c: ignore_vanished(
                    lambda: (dom := lookup(c, instance)) is None or dom.undefine()))
        if self.inventory.host(source).storage == "local" and self._created(instance):
            self._delete_volume(source, self.disk_path(instance, source).name)
        self._join(instance)

    def rollback_live_migration(
        self, instance: str, source: str, dest: str, block_migration: bool
    ) -> None:
        """Clean the destination: any domain left there, the disk pre-created for it."""
        self._claims.pop(instance, None)
        self._join(instance)
        try:
            on_source = self.instance_running_on(instance, source)
        except HostUnreachable:
            on_source = False  # the guest may be anywhere: leave a running domain alone
        if on_source:
            self._call(dest, lambda c: remove_domain(
                self._mine(instance, domain_info(c, instance))))
        else:  # only the paused incoming shell of a pre-copy, which never ran the guest
            self._call(dest, lambda c: remove_domain(
                self._mine(instance, _incoming_shell(c, instance))))
        if (block_migration and self.inventory.host(dest).storage == "local"
                and self._created(instance)):
            self._delete_volume(dest, self.disk_path(instance, dest).name)

    def _mine(self, instance: str, state: DomainInfo | None) -> DomainInfo | None:
        """``state`` if livemig may remove that domain: the scenario VM's own domain (its
        UUID, known from the boot or the adoption), or, for a VM livemig creates whose UUID
        is not known (after a controller restart), a domain carrying livemig's mark; else
        None (left alone).

        The UUID comes first because it needs no domain job: during a failed migration the
        destination's incoming domain can hold its state lock for a long time, and reading
        its XML then times out ("cannot acquire state change lock").
        """
        if state is None:
            return None
        uuid = self._uuids.get(instance)
        if uuid is not None and ignore_vanished(state.dom.UUIDString) == uuid:
            return state
        if self._vms[instance].adopt:
            return None
        return _owned(state)

    def _join(self, instance: str, timeout: float = 30.0) -> None:
        """Wait for migrateToURI to return (it returns 1-2 s after the job ended)."""
        job = self._jobs.get(instance)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)

    # -- faults -----------------------------------------------------------------
    def inject_fault(self, kind: FaultKind, host: str) -> None:
        """Make the fault happen through the target's fault method (the lab's own, or
        Ansible's when the inventory enables it); refused where the target has none."""
        faults = self._target.faults
        if faults is None:
            raise DriverSetupError(
                f"{self._inventory_path}: these hosts make no faults (the namespace lab "
                "does; on real hosts set livemig_faults: ansible in the inventory)"
            )
        if host not in self._heartbeat:
            raise KeyError(host)
        faults.inject(kind, host)
        self._conns.forget_failure(host)

    # -- the end ------------------------------------------------------------------
    def close(self) -> None:
        """Release the connections. With ``keep_domains`` every domain and every job is
        left as it is (a peer-to-peer job goes on in the source's libvirtd); else running
        jobs are aborted and the scenario's domains and disks removed."""
        if not self._keep:
            for name, job in self._jobs.items():
                if job.call_pending or job.attached:
                    with contextlib.suppress(libvirt.libvirtError, HostUnreachable):
                        self._call(job.source, lambda c, n=name: abort_if_running(c, n))
                self._join(name)
            for name, vm in self._vms.items():
                if not self._created(name):
                    continue  # adopted: never destroyed, its disks never deleted
                self._remove_ours_everywhere(name)
                if vm.disk > 0 or vm.image:
                    for host in self._hosts:
                        with contextlib.suppress(HostUnreachable, libvirt.libvirtError):
                            self._delete_volume(host, self.disk_path(name, host).name)
        self._conns.close()


def _owned(state: DomainInfo | None) -> DomainInfo | None:
    """``state`` if its domain carries livemig's mark (livemig created it), else None."""
    if state is None:
        return None
    xml = ignore_vanished(state.dom.XMLDesc, 0)
    return state if xml is not None and is_owned(xml) else None


def _incoming_shell(conn: libvirt.virConnect, name: str) -> DomainInfo | None:
    """``name``'s domain on ``conn`` if it is the paused incoming side of a migration."""
    info = domain_info(conn, name)
    incoming = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION)
    return info if info is not None and info.key == incoming else None
