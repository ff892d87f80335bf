"""The fake hypervisor world behind :mod:`fakelibvirt.libvirt`: hosts, their domains and
storage pools, their libvirtd and network link, and the migrations between them.

A :class:`World` holds hosts by name (each with a URI, an address, a host UUID, memory,
CPUs and a CPU model); hosts on shared storage hold the same :class:`Pool`. Faults are
those of :class:`livemig.core.model.FaultKind` (:meth:`World.fault`):

* ``service_down``: the host's libvirtd stops. Open connections break at once ("End of
  file while reading data", ``VIR_ERR_SYSTEM_ERROR``), ``open`` is refused; guests keep
  running. A migration from or to the host fails (pre-copy: the guest stays on its source).
* ``link_down``: nothing reaches the host. ``open`` fails after ``connect_timeout``; a call
  on an open connection waits until the link is back or until the connection's keepalive
  (``interval * (count + 1)`` seconds times ``keepalive_scale``) gives up: "internal error:
  connection closed due to keepalive timeout" (``VIR_ERR_INTERNAL_ERROR``, ``VIR_FROM_RPC``)
  and the connection is dead. A migration whose peer is silent for ``p2p_keepalive`` seconds
  fails the same way (post-copy: both sides end paused ``POSTCOPY_FAILED``).
* ``host_down``: both, and the host's guests die.

A migration (:class:`Migration`) runs in its own thread, as a peer-to-peer job runs in the
source's libvirtd, on real time: ``setup_seconds`` of setup, then pre-copy passes over the
guest's RAM at the job's bandwidth (MiB/s; 0 is the link's ``link_mib_s``) while the guest
dirties its working set at its rate (``livemig.ws_mib`` / ``livemig.rate_mib`` of the domain
XML's kernel command line), then switchover when what is left fits in the domain's max
downtime (QEMU's rule), or post-copy once asked. ``migrateToURI`` waits for it and returns
``return_delay`` seconds after the job ended (or raises its error); the caller may go away,
a ``PEER2PEER`` job goes on.

>>> w = World()
>>> _ = w.add_host("a"), w.add_host("b")
>>> sorted(w.hosts), w.host_for_uri("qemu+tcp://b/system").name, w.host_for_uri("x://c/") is None
(['a', 'b'], 'b', True)
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fakelibvirt import libvirt as lv
from livemig.core.cpu_trace import utilisation_at

MiB = 1 << 20
#: CPU models, oldest first: a host's CPU is a superset of the models before its own.
CPU_MODELS = ("Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell", "Skylake-Client")
ENDED = ("completed", "failed", "cancelled")


@dataclass(eq=False)
class Pool:
    """A storage pool (``instances``); hosts on shared storage hold the same one."""

    capacity: int = 100 << 30
    volumes: dict[str, int] = field(default_factory=dict)  # name -> allocated bytes
    xml: dict[str, str] = field(default_factory=dict)  # name -> the volume's XML
    path: str = "/var/lib/libvirt/instances"

    @property
    def allocation(self) -> int:
        return sum(self.volumes.values())


@dataclass(eq=False)
class DomainRecord:
    """A domain as one host's libvirtd knows it."""

    name: str
    uuid: str
    xml: str
    memory_kib: int
    vcpus: int
    ws_bytes: float = 8 * MiB
    dirty_rate: float = 0.0  # bytes/s
    console: Path | None = None
    state: int = lv.VIR_DOMAIN_SHUTOFF
    reason: int = lv.VIR_DOMAIN_SHUTOFF_UNKNOWN
    persistent: bool = False
    max_downtime_ms: int = 300  # libvirt's default
    job: Migration | None = None  # outgoing migration
    incoming: Migration | None = None  # this is the incoming side of that migration
    completed_stats: dict[str, Any] | None = None
    # CPU: the guest burns its trace (percent, livemig.cpu_trace / livemig.cpu_interval;
    # none: 100 %, as the lab guest's busy-waiting dirtier) while RUNNING, counted in
    # cpu_ns since this QEMU process started (a migrated domain starts again at 0)
    cpu_trace: tuple[float, ...] = ()
    cpu_interval: float = 0.0
    guest_started: float = 0.0  # monotonic time the guest booted: the trace's time 0
    domain_id: int = -1
    cpu_ns: float = 0.0
    cpu_mark: float = 0.0  # when cpu_ns was last brought up to date

    @property
    def active(self) -> bool:
        return self.state not in (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_CRASHED)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "state" and "state" in self.__dict__:
            self.count_cpu(time.monotonic())  # what it burnt in the state it leaves
        object.__setattr__(self, name, value)

    def cpu_load(self, at: float) -> float:
        """The share of its vCPUs the guest burns at monotonic time ``at``."""
        if not self.cpu_trace:
            return 1.0
        return utilisation_at(self.cpu_trace, self.cpu_interval, at - self.guest_started)

    def count_cpu(self, now: float) -> None:
        """Add the CPU burnt since ``cpu_mark`` (at the load of the interval's middle)."""
        if self.state == lv.VIR_DOMAIN_RUNNING and now > self.cpu_mark:
            load = self.cpu_load((self.cpu_mark + now) / 2)
            self.cpu_ns += load * (now - self.cpu_mark) * self.vcpus * 1e9
        self.cpu_mark = now

    def copy_for(self, **changes: Any) -> DomainRecord:
        fields = {k: getattr(self, k) for k in ("name", "uuid", "xml", "memory_kib", "vcpus",
                                                "ws_bytes", "dirty_rate", "console",
                                                "max_downtime_ms", "cpu_trace", "cpu_interval",
                                                "guest_started")}
        return DomainRecord(**{**fields, **changes})


@dataclass(eq=False)
class Host:
    """One hypervisor host: its libvirtd, its link, its domains and pools."""

    name: str
    uri: str
    address: str
    uuid: str
    memory_mib: int
    cpus: int
    cpu_model: str
    pools: dict[str, Pool]
    hv_version: int = 10_000_000  # QEMU 10.0.0
    kvm: bool = False  # libvirt offers domain type kvm (/dev/kvm)
    domains: dict[str, DomainRecord] = field(default_factory=dict)
    service_up: bool = True
    service_epoch: int = 0  # +1 each time libvirtd starts again
    link_up: bool = True
    link_down_at: float = 0.0
    conns: weakref.WeakSet[lv.virConnect] = field(default_factory=weakref.WeakSet)


def parse_domain(xml: str) -> DomainRecord:
    """The facts of a domain XML (name, memory, vCPUs, the lab guest's dirtier, console).

    >>> rec = parse_domain("<domain><name>g</name><memory unit='MiB'>128</memory>"
    ...     "<vcpu>2</vcpu><os><cmdline>livemig.ws_mib=16 livemig.rate_mib=4</cmdline></os>"
    ...     "</domain>")
    >>> rec.name, rec.memory_kib, rec.vcpus, rec.ws_bytes / MiB, rec.dirty_rate / MiB
    ('g', 131072, 2, 16.0, 4.0)
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise lv.libvirtError(f"XML error: {exc}", code=lv.VIR_ERR_XML_ERROR,
                              domain=lv.VIR_FROM_DOMAIN) from exc
    name = root.findtext("name")
    if not name:
        raise lv.libvirtError("XML error: missing domain name", code=lv.VIR_ERR_XML_ERROR,
                              domain=lv.VIR_FROM_DOMAIN)
    memory = root.find("memory")
    units = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1 << 20, "G": 1 << 20}
    memory_kib = 0 if memory is None else int(memory.text or 0) * units.get(
        memory.get("unit", "KiB"), 1)
    params = dict(word.partition("=")[::2] for word in (root.findtext("os/cmdline") or "").split())
    console = root.find("devices/serial/source")
    trace = params.get("livemig.cpu_trace", "")
    return DomainRecord(
        name=name, uuid=root.findtext("uuid") or str(uuid.uuid4()), xml=xml,
        memory_kib=memory_kib, vcpus=int(root.findtext("vcpu") or 1),
        ws_bytes=float(params.get("livemig.ws_mib", 8)) * MiB,
        dirty_rate=float(params.get("livemig.rate_mib", 0)) * MiB,
        console=Path(console.get("path", "")) if console is not None else None,
        cpu_trace=tuple(float(p) for p in trace.split(",") if p),
        cpu_interval=float(params.get("livemig.cpu_interval", 0)),
    )


def op_invalid(what: str) -> lv.libvirtError:
    return lv.libvirtError(f"Requested operation is not valid: {what}",
                           code=lv.VIR_ERR_OPERATION_INVALID, domain=lv.VIR_FROM_QEMU)


def keepalive_error() -> lv.libvirtError:
    return lv.libvirtError("internal error: connection closed due to keepalive timeout",
                           code=lv.VIR_ERR_INTERNAL_ERROR, domain=lv.VIR_FROM_RPC)


def eof_error() -> lv.libvirtError:
    return lv.libvirtError("End of file while reading data: Input/output error",
                           code=lv.VIR_ERR_SYSTEM_ERROR, domain=lv.VIR_FROM_RPC)


class World:
    """Hosts keyed by name, their domains and migrations; the fake's single source of truth.

    Times are real seconds. ``install()`` makes ``fakelibvirt.libvirt.open`` use this world.
    """

    def __init__(
        self,
        *,
        link_mib_s: float = 256.0,
        setup_seconds: float = 0.05,
        tick: float = 0.01,
        return_delay: float = 0.05,
        keepalive_scale: float = 0.05,
        p2p_keepalive: float = 0.3,
        connect_timeout: float = 0.05,
    ) -> None:
        self.cond = threading.Condition(threading.RLock())
        self.hosts: dict[str, Host] = {}
        self.migrations: list[Migration] = []
        self.link_mib_s = link_mib_s
        self.setup_seconds = setup_seconds
        self.tick = tick
        self.return_delay = return_delay
        self.keepalive_scale = keepalive_scale
        self.p2p_keepalive = p2p_keepalive
        self.connect_timeout = connect_timeout
        self._ids = itertools.count(1)

    def install(self) -> World:
        lv._world = self
        return self

    # -- building and inspecting ------------------------------------------------------------
    def add_host(self, name: str, *, address: str | None = None, uri: str | None = None,
                 memory_mib: int = 4096, cpus: int = 4, cpu_model: str = "Westmere",
                 pool: Pool | None = None) -> Host:
        """A host; ``uri`` defaults to ``qemu+fake://NAME/system`` (not probed by the driver)."""
        host = Host(name=name, uri=uri or f"qemu+fake://{name}/system",
                    address=address or f"198.18.0.{10 + len(self.hosts) + 1}",
                    uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), memory_mib=memory_mib,
                    cpus=cpus, cpu_model=cpu_model, pools={"instances": pool or Pool()})
        self.hosts[name] = host
        return host

    def host_for_uri(self, uri: str) -> Host | None:
        """The host a URI designates: by exact URI, else by host name or address."""
        for host in self.hosts.values():
            if host.uri == uri:
                return host
        wanted = urlsplit(uri).hostname
        for host in self.hosts.values():
            if wanted in (host.name, host.address, urlsplit(host.uri).hostname):
                return host
        return None

    def where(self, name: str) -> dict[str, tuple[int, int]]:
        """Every host that knows domain ``name``, with its (state, reason)."""
        with self.cond:
            return {h.name: (d.state, d.reason) for h in self.hosts.values()
                    if (d := h.domains.get(name)) is not None}

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Wait (real time) until ``predicate()`` holds under the world's lock."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                assert left > 0, "the fake world never reached the awaited state"
                self.cond.wait(min(left, self.tick))

    # -- faults -----------------------------------------------------------------------------
    def fault(self, kind: str, name: str) -> None:
        """Apply a :class:`~livemig.core.model.FaultKind` (its value) to host ``name``."""
        host = self.hosts[name]
        with self.cond:
            if kind in ("service_down", "host_down"):
                host.service_up = False
            if kind in ("link_down", "host_down") and host.link_up:
                host.link_up = False
                host.link_down_at = time.monotonic()
            if kind == "host_down":
                for rec in list(host.domains.values()):
                    if rec.active:
                        self._stop(host, rec, lv.VIR_DOMAIN_SHUTOFF_UNKNOWN)
            if kind in ("service_up", "host_up") and not host.service_up:
                host.service_up = True
                host.service_epoch += 1
            if kind in ("link_up", "host_up") and not host.link_up:
                host.link_up = True
                outage = time.monotonic() - host.link_down_at
                for conn in list(host.conns):  # the keepalive gave up during the outage
                    timeout = self.keepalive_timeout(conn)
                    if conn.dead is None and timeout is not None and outage >= timeout:
                        conn.dead = keepalive_error()
            self.cond.notify_all()

    # -- connections ------------------------------------------------------------------------
    def connect(self, uri: str) -> lv.virConnect:
        host = self.host_for_uri(uri)
        where = urlsplit(uri).hostname or uri
        if host is None:
            raise lv.libvirtError(f"unable to connect to server at '{where}:16509': Name or "
                                  f"service not known", code=lv.VIR_ERR_SYSTEM_ERROR,
                                  domain=lv.VIR_FROM_RPC)
        if not host.link_up:
            time.sleep(self.connect_timeout)
            raise lv.libvirtError(f"unable to connect to server at '{where}:16509': Connection "
                                  f"timed out", code=lv.VIR_ERR_SYSTEM_ERROR,
                                  domain=lv.VIR_FROM_RPC)
        if not host.service_up:
            raise lv.libvirtError(f"unable to connect to server at '{where}:16509': Connection "
                                  f"refused", code=lv.VIR_ERR_SYSTEM_ERROR,
                                  domain=lv.VIR_FROM_RPC)
        conn = lv.virConnect(self, host)
        with self.cond:
            host.conns.add(conn)
        return conn

    def keepalive_timeout(self, conn: lv.virConnect) -> float | None:
        if conn.keepalive is None:
            return None
        interval, count = conn.keepalive
        return interval * (count + 1) * self.keepalive_scale

    def connection_error(self, conn: lv.virConnect) -> lv.libvirtError | None:
        """Why ``conn`` cannot be used now (marking it dead), or None. Caller holds the lock."""
        if conn.closed:
            return lv.libvirtError("internal error: client socket is closed",
                                   code=lv.VIR_ERR_INTERNAL_ERROR, domain=lv.VIR_FROM_RPC)
        if conn.dead is not None:
            return conn.dead
        host = conn._host
        if not host.service_up or host.service_epoch != conn.epoch:
            conn.dead = eof_error()
            return conn.dead
        timeout = self.keepalive_timeout(conn)
        if not host.link_up and timeout is not None and (
                time.monotonic() - host.link_down_at >= timeout):
            conn.dead = keepalive_error()
            return conn.dead
        return None

    def wait_usable(self, conn: lv.virConnect) -> None:
        """Return when ``conn``'s host answers; raise when the connection broke (a call on
        a host whose link is down waits for the link or for the keepalive to give up)."""
        with self.cond:
            while True:
                error = self.connection_error(conn)
                if error is not None:
                    raise error
                if conn._host.link_up:
                    return
                self.cond.wait(self.tick)

    # -- domains ------------------------------------------------------------------------------
    def compare_cpu(self, host_model: str, guest_model: str) -> int:
        if guest_model == host_model:
            return lv.VIR_CPU_COMPARE_IDENTICAL
        if guest_model in CPU_MODELS and host_model in CPU_MODELS and (
                CPU_MODELS.index(guest_model) < CPU_MODELS.index(host_model)):
            return lv.VIR_CPU_COMPARE_SUPERSET
        return lv.VIR_CPU_COMPARE_INCOMPATIBLE

    def define(self, host: Host, xml: str) -> DomainRecord:
        new = parse_domain(xml)
        with self.cond:
            rec = host.domains.get(new.name)
            if rec is None:
                rec = host.domains[new.name] = new
            else:
                rec.xml = xml
            rec.persistent = True
            return rec

    def start(self, rec: DomainRecord) -> None:
        """``create``: the guest boots and prints its first tick on its console."""
        if rec.active:
            raise op_invalid("domain is already running")
        rec.domain_id, rec.cpu_ns = next(self._ids), 0.0
        rec.guest_started = rec.cpu_mark = time.monotonic()
        rec.state, rec.reason = lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_BOOTED
        if rec.console is not None and rec.console.parent.is_dir():
            with rec.console.open("a") as log:
                log.write("tick 1 (fakelibvirt)\n")

    def _stop(self, host: Host, rec: DomainRecord, reason: int) -> None:
        """The domain's QEMU is gone: any migration it was part of fails."""
        for mig in (rec.job, rec.incoming):
            if mig is not None and mig.phase not in ENDED:
                mig.broken = lv.libvirtError(
                    "operation failed: job 'migration out' unexpectedly failed",
                    code=lv.VIR_ERR_OPERATION_FAILED, domain=lv.VIR_FROM_QEMU)
        rec.job = rec.incoming = None
        rec.state, rec.reason = lv.VIR_DOMAIN_SHUTOFF, reason
        if not rec.persistent:
            host.domains.pop(rec.name, None)
        self.cond.notify_all()

    def destroy(self, host: Host, rec: DomainRecord) -> None:
        if not rec.active:
            raise op_invalid("domain is not running")
        self._stop(host, rec, lv.VIR_DOMAIN_SHUTOFF_DESTROYED)

    def undefine(self, host: Host, rec: DomainRecord) -> None:
        if not rec.persistent:
            raise op_invalid("cannot undefine transient domain")
        rec.persistent = False
        if not rec.active:
            host.domains.pop(rec.name, None)

    def suspend(self, rec: DomainRecord) -> None:
        if not rec.active:
            raise op_invalid("domain is not running")
        if rec.state != lv.VIR_DOMAIN_PAUSED:
            rec.state, rec.reason = lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_USER

    def resume(self, rec: DomainRecord) -> None:
        if not rec.active:
            raise op_invalid("domain is not running")
        if rec.state != lv.VIR_DOMAIN_PAUSED or rec.reason != lv.VIR_DOMAIN_PAUSED_USER:
            raise op_invalid("domain is not paused by the user")
        rec.state, rec.reason = lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_UNPAUSED

    def cpu_stats(self, rec: DomainRecord, groups: int) -> dict[str, Any]:
        """libvirt's ``CPU_TOTAL`` / ``VCPU`` statistics of an active domain: its vCPUs
        share the burnt CPU time evenly; no run-queue delay (the fake's host is idle)."""
        rec.count_cpu(time.monotonic())
        stats: dict[str, Any] = {}
        if groups & lv.VIR_DOMAIN_STATS_CPU_TOTAL:
            stats["cpu.time"] = int(rec.cpu_ns)
        if groups & lv.VIR_DOMAIN_STATS_VCPU:
            stats["vcpu.current"] = stats["vcpu.maximum"] = rec.vcpus
            for n in range(rec.vcpus):
                stats[f"vcpu.{n}.state"] = 1
                stats[f"vcpu.{n}.time"] = int(rec.cpu_ns / rec.vcpus)
                stats[f"vcpu.{n}.delay"] = 0
        return stats

    # -- jobs ---------------------------------------------------------------------------------
    def job_stats(self, rec: DomainRecord, flags: int) -> dict[str, Any]:
        if flags & lv.VIR_DOMAIN_JOB_STATS_COMPLETED:
            stats = rec.completed_stats
            if not flags & lv.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED:
                rec.completed_stats = None
            return dict(stats) if stats else {"type": lv.VIR_DOMAIN_JOB_NONE}
        if rec.incoming is not None:
            raise op_invalid("migration statistics are available only on the source host")
        mig = rec.job
        if mig is None or mig.phase in ENDED:
            return {"type": lv.VIR_DOMAIN_JOB_NONE}
        if mig.phase == "postcopy":
            raise op_invalid("domain is not running")
        return mig.stats(lv.VIR_DOMAIN_JOB_UNBOUNDED)

    def abort_job(self, rec: DomainRecord) -> None:
        mig = rec.job
        if mig is None or mig.phase in ENDED:
            raise op_invalid("no job is active on the domain")
        if mig.phase == "postcopy":
            raise op_invalid("cannot abort migration in post-copy mode")
        mig.abort_requested = True
        self.cond.notify_all()

    def start_postcopy(self, rec: DomainRecord) -> None:
        mig = rec.job
        if mig is None or mig.phase in ENDED:
            raise op_invalid("no job is active on the domain")
        if not mig.flags & lv.VIR_MIGRATE_POSTCOPY:
            raise op_invalid("switching to post-copy requires migration to be started with "
                             "VIR_MIGRATE_POSTCOPY flag")
        if mig.phase != "precopy":
            raise op_invalid("post-copy can only be started while outgoing migration is in "
                             "progress")
        mig.switch_to_postcopy()

    def migrate(self, conn: lv.virConnect, rec_of: Any, duri: str, flags: int,
                bandwidth: int) -> None:
        """``migrateToURI``: start the job in the source's "libvirtd", wait for its end."""
        source = conn._host
        with self.cond:
            rec: DomainRecord = rec_of()
            if not rec.active:
                raise op_invalid("domain is not running")
            if rec.job is not None and rec.job.phase not in ENDED:
                raise op_invalid(f"another migration job is already running for domain "
                                 f"'{rec.name}'")
            if rec.incoming is not None:
                raise op_invalid("domain is being migrated in")
        dest = self.host_for_uri(duri)
        if dest is None or not dest.service_up or not dest.link_up or not source.link_up:
            why = "Name or service not known" if dest is None else (
                "Connection refused" if dest.link_up and source.link_up and not dest.service_up
                else "Connection timed out")
            if dest is not None and why != "Connection refused":
                time.sleep(self.connect_timeout)
            raise lv.libvirtError(
                f"unable to connect to server at '{urlsplit(duri).hostname}:16509': {why}",
                code=lv.VIR_ERR_SYSTEM_ERROR, domain=lv.VIR_FROM_RPC)
        with self.cond:
            if dest is source:
                raise lv.libvirtError(f"internal error: Attempt to migrate guest to the same "
                                      f"host {source.uuid}", code=lv.VIR_ERR_INTERNAL_ERROR,
                                      domain=lv.VIR_FROM_QEMU)
            there = dest.domains.get(rec.name)
            if there is not None and there.active:
                raise lv.libvirtError(f"operation failed: domain '{rec.name}' is already "
                                      f"active", code=lv.VIR_ERR_OPERATION_FAILED,
                                      domain=lv.VIR_FROM_QEMU)
            mig = Migration(self, source, dest, rec, flags, bandwidth, conn)
            self.migrations.append(mig)
            mig.thread.start()
            while True:
                if mig.phase in ENDED and time.monotonic() >= mig.returns_at:
                    if mig.error is not None:
                        raise mig.error
                    return
                error = self.connection_error(conn)
                if error is not None:
                    if not flags & lv.VIR_MIGRATE_PEER2PEER:  # the job dies with its client
                        mig.broken = mig.broken or error
                    raise error
                self.cond.wait(self.tick)

    def emit_job_completed(self, host: Host, rec: DomainRecord, params: dict[str, Any]) -> None:
        """Queue JOB_COMPLETED callbacks of every live connection to ``host``."""
        for conn in list(host.conns):
            if self.connection_error(conn) is not None:
                continue
            dom = lv.virDomain(conn, rec)
            for event_id, cb, opaque in conn.callbacks.values():
                if event_id == lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED:
                    lv.dispatch(lambda c=conn, d=dom, cb=cb, o=opaque: cb(c, d, dict(params), o))


class Migration:
    """One migration job, run by its own thread on real time (see the module docstring)."""

    def __init__(self, world: World, source: Host, dest: Host, rec: DomainRecord, flags: int,
                 bandwidth_mib: int, client: lv.virConnect) -> None:
        self.world, self.source, self.dest, self.rec = world, source, dest, rec
        self.flags = flags
        link = world.link_mib_s * MiB
        self.rate = min(link, bandwidth_mib * MiB) if bandwidth_mib > 0 else link
        self.client = client
        self.src_epoch, self.dest_epoch = source.service_epoch, dest.service_epoch
        self.phase = "setup"
        self.started = time.monotonic()
        self.error: lv.libvirtError | None = None
        self.broken: lv.libvirtError | None = None  # set from outside: the job must fail
        self.returns_at = 0.0
        self.abort_requested = False
        self.silent_since: float | None = None
        self.switch_until = 0.0
        self.was_paused = rec.state == lv.VIR_DOMAIN_PAUSED
        self.total = rec.memory_kib * 1024
        self.processed = 0.0
        self.remaining = float(self.total)
        self.dirty = 0.0
        self.iteration = 0
        self.throttle = 0
        self.downtime_ms = 0
        self.incoming = rec.copy_for(state=lv.VIR_DOMAIN_PAUSED,
                                     reason=lv.VIR_DOMAIN_PAUSED_MIGRATION, incoming=self,
                                     domain_id=next(world._ids), cpu_mark=time.monotonic())
        dest.domains[rec.name] = self.incoming
        rec.job = self
        self.thread = threading.Thread(target=self._run, name=f"fake-migration-{rec.name}",
                                       daemon=True)

    # -- readings
    def stats(self, kind: int) -> dict[str, Any]:
        """libvirt's typed job parameters (ms, bytes, pages/s)."""
        dirty_pages = (0.0 if self.was_paused else self.rec.dirty_rate) / 4096
        expected = int(1000 * (self.remaining + self.dirty) / self.rate)
        stats = {
            "type": kind,
            "operation": lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT,
            "time_elapsed": int(1000 * (time.monotonic() - self.started)),
            "data_total": self.total, "data_processed": int(self.processed),
            "data_remaining": int(self.remaining),
            "memory_total": self.total, "memory_processed": int(self.processed),
            "memory_remaining": int(self.remaining),
            "memory_bps": int(self.rate), "memory_page_size": 4096,
            "memory_dirty_rate": int(dirty_pages * (1 - self.throttle / 100)),
            "memory_iteration": self.iteration,
            "downtime": self.downtime_ms if self.phase in ENDED else expected,
        }
        if self.flags & lv.VIR_MIGRATE_AUTO_CONVERGE:
            stats["auto_converge_throttle"] = self.throttle
        return stats

    # -- the job's thread
    def _run(self) -> None:
        last = time.monotonic()
        while True:
            with self.world.cond:
                now = time.monotonic()
                ended = self._step(now, now - last)
                last = now
                self.world.cond.notify_all()
                if ended:
                    return
            time.sleep(self.world.tick)

    def _step(self, now: float, dt: float) -> bool:
        src, dst = self.source, self.dest
        if self.broken is not None:
            return self._fail(self.broken)
        if not src.service_up or src.service_epoch != self.src_epoch:
            return self._fail(eof_error())  # the job died with the source's libvirtd
        if not dst.service_up or dst.service_epoch != self.dest_epoch:
            return self._fail(eof_error())
        if not (src.link_up and dst.link_up):
            self.silent_since = self.silent_since or now
            if now - self.silent_since >= self.world.p2p_keepalive:
                return self._fail(keepalive_error())
            return False  # nothing moves while the peer is silent
        self.silent_since = None
        if self.abort_requested and self.phase in ("setup", "precopy"):
            return self._cancel()
        if self.phase == "setup":
            if now - self.started >= self.world.setup_seconds:
                self.phase, self.iteration = "precopy", 1
            return False
        if self.phase == "precopy":
            return self._precopy(now, dt)
        if self.phase == "switchover":
            if now >= self.switch_until:
                return self._complete(now)
            return False
        if self.phase == "postcopy":
            pulled = min(self.world.link_mib_s * MiB * dt, self.remaining)
            self.remaining -= pulled
            self.processed += pulled
            if self.remaining <= 0:
                return self._complete(now)
        return False

    def switch_to_postcopy(self) -> None:
        """QEMU's switch: the guest's vCPUs run on the destination from now on."""
        self.phase = "postcopy"
        self.remaining += self.dirty
        self.dirty = 0.0
        self.downtime_ms = 10
        self.rec.state, self.rec.reason = lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_POSTCOPY
        self.incoming.state = lv.VIR_DOMAIN_RUNNING
        self.incoming.reason = lv.VIR_DOMAIN_RUNNING_POSTCOPY
        self.world.cond.notify_all()

    def _precopy(self, now: float, dt: float) -> bool:
        """``dt`` seconds of pre-copy, pass after pass (a slow tick may span passes)."""
        rec = self.rec
        while True:
            dirtying = 0.0 if rec.state == lv.VIR_DOMAIN_PAUSED else rec.dirty_rate
            dirtying *= 1 - self.throttle / 100
            sending = min(dt, self.remaining / self.rate)
            dt -= sending
            self.dirty = min(rec.ws_bytes, self.dirty + dirtying * sending)
            sent = min(self.rate * sending, self.remaining)
            self.remaining -= sent
            self.processed += sent
            pending = self.remaining + self.dirty
            if pending <= self.rate * rec.max_downtime_ms / 1000:  # QEMU's switchover rule
                downtime = pending / self.rate + 0.005
                self.downtime_ms = max(1, round(downtime * 1000))
                self.processed += pending
                self.remaining = self.dirty = 0.0
                self.phase, self.switch_until = "switchover", now + downtime
                if rec.state != lv.VIR_DOMAIN_PAUSED:
                    rec.state, rec.reason = lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_MIGRATION
                return False
            if self.remaining > 1e-6:
                return False
            # a pass ended: the next one sends what was dirtied during it
            self.iteration += 1
            self.remaining, self.dirty = self.dirty, 0.0
            if self.flags & lv.VIR_MIGRATE_AUTO_CONVERGE and self.iteration >= 2:
                self.throttle = min(99, 20 if self.throttle == 0 else self.throttle + 10)
            if dt <= 1e-9:
                return False

    def _end(self, phase: str, error: lv.libvirtError | None) -> bool:
        self.phase, self.error = phase, error
        self.returns_at = time.monotonic() + self.world.return_delay
        if self.rec.job is self:
            self.rec.job = None
        self.incoming.incoming = None
        return True

    def _complete(self, now: float) -> bool:
        rec, inc = self.rec, self.incoming
        final = self.stats(lv.VIR_DOMAIN_JOB_COMPLETED)
        final.update(memory_remaining=0, data_remaining=0, downtime=self.downtime_ms)
        postcopy = self.phase == "postcopy"
        if self.was_paused:
            inc.state, inc.reason = lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_USER
        else:
            inc.state, inc.reason = lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_MIGRATED
        inc.persistent = bool(self.flags & lv.VIR_MIGRATE_PERSIST_DEST)
        # after post-copy only the source's event carries the statistics
        inc.completed_stats = None if postcopy else {
            **final, "operation": lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN}
        if rec.persistent and not self.flags & lv.VIR_MIGRATE_UNDEFINE_SOURCE:
            rec.state, rec.reason = lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_MIGRATED
        elif self.source.domains.get(rec.name) is rec:
            del self.source.domains[rec.name]
        self._end("completed", None)
        self.world.emit_job_completed(self.source, rec, {k: v for k, v in final.items()
                                                         if k != "type"})
        if not postcopy:
            self.world.emit_job_completed(self.dest, inc, {
                **{k: v for k, v in final.items() if k != "type"},
                "operation": lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN})
        return True

    def _undo_precopy(self) -> None:
        """The guest goes on on its source; the incoming domain goes."""
        rec = self.rec
        if rec.active and rec.reason == lv.VIR_DOMAIN_PAUSED_MIGRATION:
            rec.state, rec.reason = (lv.VIR_DOMAIN_RUNNING,
                                     lv.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED)
        if self.dest.domains.get(rec.name) is self.incoming:
            del self.dest.domains[rec.name]
        self.incoming.state = lv.VIR_DOMAIN_SHUTOFF

    def _cancel(self) -> bool:
        self._undo_precopy()
        return self._end("cancelled", lv.libvirtError(
            "operation aborted: migration out: canceled by client",
            code=lv.VIR_ERR_OPERATION_ABORTED, domain=lv.VIR_FROM_QEMU))

    def _fail(self, error: lv.libvirtError) -> bool:
        if self.phase == "postcopy":
            for side in (self.rec, self.incoming):
                if side.active:
                    side.state = lv.VIR_DOMAIN_PAUSED
                    side.reason = lv.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED
        else:
            self._undo_precopy()
        return self._end("failed", error)
