"""A fake ``libvirt`` module: exactly the part of libvirt-python that livemig's real driver
(``drivers/libvirt_*.py``) calls, backed by a :class:`fakelibvirt.world.World`.

:func:`fakelibvirt.driver.driver_modules` imports the driver with this module in the place
of ``libvirt``. Constant values are those of libvirt-python 12.8; error codes, error
domains and messages are libvirt's own (``str(exc)`` is the message, like the real
``libvirtError``). Every call on a connection first asks the world whether the host can
answer (see :meth:`World.connection_error`): a stopped libvirtd breaks the connection at
once, a cut link makes the call wait for the keepalive to give up.

>>> err = libvirtError("Domain not found: no domain with matching name 'x'",
...                    code=VIR_ERR_NO_DOMAIN, domain=VIR_FROM_QEMU)
>>> err.get_error_code(), err.get_error_domain(), str(err)
(42, 10, "Domain not found: no domain with matching name 'x'")
"""

from __future__ import annotations

import queue
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakelibvirt.world import DomainRecord, Host, Pool, World

# -- constants (values of libvirt-python 12.8) ------------------------------------------------
VIR_CPU_COMPARE_ERROR = -1
VIR_CPU_COMPARE_INCOMPATIBLE = 0
VIR_CPU_COMPARE_IDENTICAL = 1
VIR_CPU_COMPARE_SUPERSET = 2

VIR_DOMAIN_NOSTATE = 0
VIR_DOMAIN_RUNNING = 1
VIR_DOMAIN_BLOCKED = 2
VIR_DOMAIN_PAUSED = 3
VIR_DOMAIN_SHUTDOWN = 4
VIR_DOMAIN_SHUTOFF = 5
VIR_DOMAIN_CRASHED = 6
VIR_DOMAIN_PMSUSPENDED = 7

VIR_DOMAIN_RUNNING_BOOTED = 1
VIR_DOMAIN_RUNNING_MIGRATED = 2
VIR_DOMAIN_RUNNING_UNPAUSED = 5
VIR_DOMAIN_RUNNING_MIGRATION_CANCELED = 6
VIR_DOMAIN_RUNNING_POSTCOPY = 10
VIR_DOMAIN_PAUSED_USER = 1
VIR_DOMAIN_PAUSED_MIGRATION = 2
VIR_DOMAIN_PAUSED_POSTCOPY = 12
VIR_DOMAIN_PAUSED_POSTCOPY_FAILED = 13
VIR_DOMAIN_SHUTOFF_UNKNOWN = 0
VIR_DOMAIN_SHUTOFF_DESTROYED = 2
VIR_DOMAIN_SHUTOFF_MIGRATED = 4

VIR_DOMAIN_EVENT_ID_JOB_COMPLETED = 21

VIR_DOMAIN_STATS_CPU_TOTAL = 2
VIR_DOMAIN_STATS_VCPU = 8

VIR_DOMAIN_JOB_NONE = 0
VIR_DOMAIN_JOB_BOUNDED = 1
VIR_DOMAIN_JOB_UNBOUNDED = 2
VIR_DOMAIN_JOB_COMPLETED = 3
VIR_DOMAIN_JOB_FAILED = 4
VIR_DOMAIN_JOB_CANCELLED = 5
VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN = 4
VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT = 5
VIR_DOMAIN_JOB_STATS_COMPLETED = 1
VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED = 2

VIR_MIGRATE_LIVE = 1
VIR_MIGRATE_PEER2PEER = 2
VIR_MIGRATE_PERSIST_DEST = 8
VIR_MIGRATE_UNDEFINE_SOURCE = 16
VIR_MIGRATE_PAUSED = 32
VIR_MIGRATE_NON_SHARED_INC = 128
VIR_MIGRATE_AUTO_CONVERGE = 8192
VIR_MIGRATE_POSTCOPY = 32768
VIR_MIGRATE_TLS = 65536

VIR_STORAGE_POOL_RUNNING = 2

VIR_ERR_NONE = 0
VIR_ERR_WARNING = 1
VIR_ERR_ERROR = 2

VIR_ERR_OK = 0
VIR_ERR_INTERNAL_ERROR = 1
VIR_ERR_NO_SUPPORT = 3
VIR_ERR_NO_CONNECT = 5
VIR_ERR_INVALID_CONN = 6
VIR_ERR_INVALID_ARG = 8
VIR_ERR_OPERATION_FAILED = 9
VIR_ERR_XML_ERROR = 27
VIR_ERR_SYSTEM_ERROR = 38
VIR_ERR_NO_DOMAIN = 42
VIR_ERR_NO_STORAGE_POOL = 49
VIR_ERR_NO_STORAGE_VOL = 50
VIR_ERR_OPERATION_INVALID = 55
VIR_ERR_OPERATION_ABORTED = 78
VIR_ERR_STORAGE_VOL_EXIST = 90

VIR_FROM_NONE = 0
VIR_FROM_RPC = 7
VIR_FROM_QEMU = 10
VIR_FROM_REMOTE = 13
VIR_FROM_STORAGE = 18
VIR_FROM_DOMAIN = 20
VIR_FROM_CPU = 31


class libvirtError(Exception):  # noqa: N801 - libvirt's name
    """libvirt's error: the message, and ``err`` = (code, domain, message, level, ...)."""

    def __init__(self, defmsg: str, *, code: int = VIR_ERR_INTERNAL_ERROR,
                 domain: int = VIR_FROM_NONE) -> None:
        super().__init__(defmsg)
        self.err = (code, domain, defmsg, VIR_ERR_ERROR, None, None, None, -1, -1)

    def get_error_code(self) -> int:
        return self.err[0]

    def get_error_domain(self) -> int:
        return self.err[1]

    def get_error_message(self) -> str:
        return self.err[2]

    def get_error_level(self) -> int:
        return self.err[3]


# -- the world this module talks to, and the event loop ------------------------------------------
_world: World | None = None
_events: queue.Queue[Callable[[], None]] = queue.Queue()
_event_impl = False


def registerErrorHandler(f: Any, ctx: Any) -> int:  # noqa: N802 - libvirt's name
    """Accepted and ignored: the fake never prints errors."""
    return 0


def virEventRegisterDefaultImpl() -> int:  # noqa: N802 - libvirt's name
    """From now on keepalives can be set and events are queued for the event loop."""
    global _event_impl
    _event_impl = True
    return 0


def virEventRunDefaultImpl() -> int:  # noqa: N802 - libvirt's name
    """Run one queued event callback (waits up to 0.1 s for one)."""
    try:
        callback = _events.get(timeout=0.1)
    except queue.Empty:
        return 0
    callback()
    return 0


def dispatch(callback: Callable[[], None]) -> None:
    """Queue an event callback for the event loop (dropped when none is registered)."""
    if _event_impl:
        _events.put(callback)


def open(name: str | None = None) -> virConnect:  # noqa: A001 - libvirt's name
    """A connection to the world's host that ``name`` (a libvirt URI) designates."""
    if _world is None:
        raise libvirtError(f"no connection driver available for {name}",
                           code=VIR_ERR_NO_CONNECT, domain=VIR_FROM_NONE)
    return _world.connect(name or "")


# -- the API objects ------------------------------------------------------------------------------
class virConnect:  # noqa: N801 - libvirt's name
    """A connection to one host's libvirtd."""

    def __init__(self, world: World, host: Host) -> None:
        self._world = world
        self._host = host
        self.epoch = host.service_epoch  # the libvirtd this connection reached
        self.closed = False
        self.dead: libvirtError | None = None
        self.keepalive: tuple[int, int] | None = None
        self.callbacks: dict[int, tuple[int, Callable[..., None], Any]] = {}

    # the world decides whether the host answers; every call starts here
    def _enter(self) -> Host:
        self._world.wait_usable(self)
        return self._host

    def isAlive(self) -> int:  # noqa: N802
        with self._world.cond:
            return int(self._world.connection_error(self) is None)

    def close(self) -> int:
        with self._world.cond:
            self.closed = True
            self._world.cond.notify_all()
        return 0

    def setKeepAlive(self, interval: int, count: int) -> int:  # noqa: N802
        self._enter()
        if not _event_impl:
            raise libvirtError("internal error: keepalive requires an event loop",
                               code=VIR_ERR_INTERNAL_ERROR, domain=VIR_FROM_RPC)
        self.keepalive = (interval, count)
        return 0

    def domainEventRegisterAny(  # noqa: N802
        self, dom: virDomain | None, eventID: int, cb: Callable[..., None], opaque: Any  # noqa: N803
    ) -> int:
        self._enter()
        if eventID != VIR_DOMAIN_EVENT_ID_JOB_COMPLETED:
            raise libvirtError(f"unsupported configuration: event {eventID} is not faked",
                               code=VIR_ERR_NO_SUPPORT)
        callback_id = len(self.callbacks) + 1
        self.callbacks[callback_id] = (eventID, cb, opaque)
        return callback_id

    # -- host facts
    def getInfo(self) -> list[Any]:  # noqa: N802
        h = self._enter()
        return ["x86_64", h.memory_mib, h.cpus, 2400, 1, 1, h.cpus, 1]

    def getType(self) -> str:  # noqa: N802
        self._enter()
        return "QEMU"

    def getVersion(self) -> int:  # noqa: N802
        return self._enter().hv_version

    def getCapabilities(self) -> str:  # noqa: N802
        h = self._enter()
        kvm = "<domain type='kvm'/>" if h.kvm else ""
        return (f"<capabilities><host><uuid>{h.uuid}</uuid><cpu><arch>x86_64</arch>"
                f"<model>{h.cpu_model}</model><vendor>Intel</vendor>"
                f"<topology sockets='1' dies='1' cores='{h.cpus}' threads='1'/></cpu></host>"
                f"<guest><arch name='x86_64'><domain type='qemu'/>"
                f"{kvm}</arch></guest></capabilities>")

    def compareCPU(self, xmlDesc: str, flags: int = 0) -> int:  # noqa: N802, N803
        h = self._enter()
        try:
            model = ET.fromstring(xmlDesc).findtext("model")
        except ET.ParseError as exc:
            raise libvirtError(f"XML error: {exc}", code=VIR_ERR_XML_ERROR,
                               domain=VIR_FROM_CPU) from exc
        return self._world.compare_cpu(h.cpu_model, model or "")

    # -- domains
    def lookupByName(self, name: str) -> virDomain:  # noqa: N802
        h = self._enter()
        with self._world.cond:
            rec = h.domains.get(name)
            if rec is None:
                raise no_domain(name)
            return virDomain(self, rec)

    def listAllDomains(self, flags: int = 0) -> list[virDomain]:  # noqa: N802
        h = self._enter()
        with self._world.cond:
            return [virDomain(self, rec) for rec in h.domains.values()]

    def domainListGetStats(  # noqa: N802
        self, doms: list[virDomain], stats: int = 0, flags: int = 0
    ) -> list[tuple[virDomain, dict[str, Any]]]:
        """The ``CPU_TOTAL`` and ``VCPU`` groups of each active domain (others: nothing)."""
        self._enter()
        with self._world.cond:
            out = []
            for dom in doms:
                rec = dom._rec()
                if rec.active:
                    out.append((dom, self._world.cpu_stats(rec, stats)))
            return out

    def defineXML(self, xml: str) -> virDomain:  # noqa: N802
        h = self._enter()
        return virDomain(self, self._world.define(h, xml))

    # -- storage
    def storagePoolLookupByName(self, name: str) -> virStoragePool:  # noqa: N802
        h = self._enter()
        pool = h.pools.get(name)
        if pool is None:
            raise libvirtError(f"Storage pool not found: no storage pool with matching name "
                               f"'{name}'", code=VIR_ERR_NO_STORAGE_POOL, domain=VIR_FROM_STORAGE)
        return virStoragePool(self, pool)


def no_domain(name: str) -> libvirtError:
    return libvirtError(f"Domain not found: no domain with matching name '{name}'",
                        code=VIR_ERR_NO_DOMAIN, domain=VIR_FROM_QEMU)


class virDomain:  # noqa: N801 - libvirt's name
    """A handle on a domain (by UUID, like libvirt's): it answers "no domain" once the
    domain left the host, even if another domain of the same name came."""

    def __init__(self, conn: virConnect, rec: DomainRecord) -> None:
        self._conn = conn
        self._name = rec.name
        self._uuid = rec.uuid

    def _rec(self) -> DomainRecord:
        host = self._conn._enter()
        rec = host.domains.get(self._name)
        if rec is None or rec.uuid != self._uuid:
            raise no_domain(self._name)
        return rec

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:  # noqa: N802
        return self._uuid

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        return self._rec().xml

    def ID(self) -> int:  # noqa: N802
        with self._conn._world.cond:
            rec = self._rec()
            return rec.domain_id if rec.active else -1

    def isActive(self) -> int:  # noqa: N802
        with self._conn._world.cond:
            return int(self._rec().active)

    def isPersistent(self) -> int:  # noqa: N802
        with self._conn._world.cond:
            return int(self._rec().persistent)

    def state(self, flags: int = 0) -> list[int]:
        with self._conn._world.cond:
            rec = self._rec()
            return [rec.state, rec.reason]

    def info(self) -> list[int]:
        with self._conn._world.cond:
            rec = self._rec()
            return [rec.state, rec.memory_kib, rec.memory_kib, rec.vcpus, 0]

    def create(self) -> int:
        with self._conn._world.cond:
            self._conn._world.start(self._rec())
        return 0

    def destroy(self) -> int:
        with self._conn._world.cond:
            self._conn._world.destroy(self._conn._host, self._rec())
        return 0

    def undefine(self) -> int:
        with self._conn._world.cond:
            self._conn._world.undefine(self._conn._host, self._rec())
        return 0

    def suspend(self) -> int:
        with self._conn._world.cond:
            self._conn._world.suspend(self._rec())
        return 0

    def resume(self) -> int:
        with self._conn._world.cond:
            self._conn._world.resume(self._rec())
        return 0

    # -- migration
    def jobStats(self, flags: int = 0) -> dict[str, Any]:  # noqa: N802
        with self._conn._world.cond:
            return self._conn._world.job_stats(self._rec(), flags)

    def abortJob(self) -> int:  # noqa: N802
        with self._conn._world.cond:
            self._conn._world.abort_job(self._rec())
        return 0

    def migrateSetMaxDowntime(self, downtime: int, flags: int = 0) -> int:  # noqa: N802
        with self._conn._world.cond:
            rec = self._rec()
            if not rec.active:
                raise libvirtError("Requested operation is not valid: domain is not running",
                                   code=VIR_ERR_OPERATION_INVALID, domain=VIR_FROM_QEMU)
            rec.max_downtime_ms = downtime
        return 0

    def migrateStartPostCopy(self, flags: int = 0) -> int:  # noqa: N802
        with self._conn._world.cond:
            self._conn._world.start_postcopy(self._rec())
        return 0

    def migrateToURI(self, duri: str, flags: int = 0, dname: str | None = None,  # noqa: N802
                     bandwidth: int = 0) -> int:
        """Blocks until the migration ended (raises its error) or this connection broke."""
        self._conn._world.migrate(self._conn, self._rec, duri, flags, bandwidth)
        return 0


class virStoragePool:  # noqa: N801 - libvirt's name
    def __init__(self, conn: virConnect, pool: Pool) -> None:
        self._conn = conn
        self._pool = pool

    def refresh(self, flags: int = 0) -> int:
        self._conn._enter()
        return 0

    def info(self) -> list[int]:
        self._conn._enter()
        p = self._pool
        return [VIR_STORAGE_POOL_RUNNING, p.capacity, p.allocation, p.capacity - p.allocation]

    def createXML(self, xmlDesc: str, flags: int = 0) -> virStorageVol:  # noqa: N802, N803
        self._conn._enter()
        vol = ET.fromstring(xmlDesc)
        name = vol.findtext("name") or ""
        capacity = int(vol.findtext("capacity") or 0)
        fmt = vol.find("target/format")
        thin = fmt is not None and fmt.get("type") == "qcow2"
        with self._conn._world.cond:
            if name in self._pool.volumes:
                raise libvirtError(f"storage volume '{name}' exists already",
                                   code=VIR_ERR_STORAGE_VOL_EXIST, domain=VIR_FROM_STORAGE)
            self._pool.volumes[name] = 0 if thin else capacity
            self._pool.xml[name] = xmlDesc
        return virStorageVol(self._conn, self._pool, name)

    def storageVolLookupByName(self, name: str) -> virStorageVol:  # noqa: N802
        self._conn._enter()
        with self._conn._world.cond:
            if name not in self._pool.volumes:
                raise libvirtError(f"Storage volume not found: no storage vol with matching "
                                   f"name '{name}'", code=VIR_ERR_NO_STORAGE_VOL,
                                   domain=VIR_FROM_STORAGE)
        return virStorageVol(self._conn, self._pool, name)


class virStorageVol:  # noqa: N801 - libvirt's name
    def __init__(self, conn: virConnect, pool: Pool, name: str) -> None:
        self._conn = conn
        self._pool = pool
        self._name = name

    def name(self) -> str:
        return self._name

    def path(self) -> str:
        return f"{self._pool.path}/{self._name}"

    def info(self) -> list[int]:
        """[type, capacity, allocation] (bytes)."""
        self._conn._enter()
        xml = self._pool.xml.get(self._name)
        capacity = int(ET.fromstring(xml).findtext("capacity") or 0) if xml else 0
        return [0, capacity, self._pool.volumes.get(self._name, 0)]

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        self._conn._enter()
        return self._pool.xml.get(self._name) or f"<volume><name>{self._name}</name></volume>"

    def delete(self, flags: int = 0) -> int:
        self._conn._enter()
        with self._conn._world.cond:
            self._pool.xml.pop(self._name, None)
            if self._pool.volumes.pop(self._name, None) is None:
                raise libvirtError(f"Storage volume not found: no storage vol with matching "
                                   f"name '{self._name}'", code=VIR_ERR_NO_STORAGE_VOL,
                                   domain=VIR_FROM_STORAGE)
        return 0
