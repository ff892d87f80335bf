"""What one host's libvirt says about domains and capacity, asked through a connection.

Every helper takes a ``virConnect`` and is meant to run through
:meth:`livemig.drivers.libvirt_conn.Connections.call`, which reopens a dead connection
once; a libvirt error on a live connection is an answer and is raised as such, except
"no such domain", which means the domain left (a migrating domain leaves its source at a
moment of libvirt's choosing) and reads as None.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import libvirt

from livemig.drivers.base import DomainState
from livemig.drivers.cpu_stats import CpuSample, sample_from_stats
from livemig.drivers.libvirt_jobs import ACTIVE_JOB_TYPES, domain_state

POOL = "instances"


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    return ignore_vanished(conn.lookupByName, name)


def ignore_vanished(call: Any, *args: Any) -> Any:
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
class DomainInfo:
    dom: libvirt.virDomain
    active: bool
    persistent: bool
    state: int  # virDomainState
    reason: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.state, self.reason)


def domain_info(conn: libvirt.virConnect, name: str) -> DomainInfo | None:
    """What ``conn`` knows of domain ``name`` now; None if it has none (or it just left)."""
    dom = lookup(conn, name)
    if dom is None:
        return None
    active = ignore_vanished(dom.isActive)
    persistent = ignore_vanished(dom.isPersistent)
    state = ignore_vanished(dom.state)
    if active is None or persistent is None or state is None:
        return None
    return DomainInfo(dom=dom, active=bool(active), persistent=bool(persistent),
                        state=state[0], reason=state[1])


def source_reading(
    conn: libvirt.virConnect, name: str
) -> tuple[DomainInfo | None, dict[str, Any] | None]:
    """The source's domain state and its running job's stats (None when it has none:
    "domain is not running" during post-copy)."""
    dom = lookup(conn, name)
    stats = None
    if dom is not None:
        try:
            stats = dom.jobStats(0)
        except libvirt.libvirtError:
            if not conn.isAlive():
                raise
    return domain_info(conn, name), stats


CPU_STATS = libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_VCPU


def cpu_sample(conn: libvirt.virConnect, name: str, host: str) -> CpuSample | None:
    """The CPU counters of ``name``'s QEMU process on ``host`` now (see
    :mod:`livemig.drivers.cpu_stats`); None if the domain is not active there."""
    dom = lookup(conn, name)
    if dom is None or not ignore_vanished(dom.isActive):
        return None
    records = ignore_vanished(conn.domainListGetStats, [dom], CPU_STATS)
    at = time.monotonic()
    domain_id = ignore_vanished(dom.ID)
    if not records or domain_id is None or domain_id < 0:
        return None
    return sample_from_stats(records[0][1], at, (host, domain_id))


def abort_if_running(conn: libvirt.virConnect, name: str) -> None:
    dom = lookup(conn, name)
    if dom is not None and dom.jobStats(0).get("type") in ACTIVE_JOB_TYPES:
        dom.abortJob()


def remove_domain(state: DomainInfo | None) -> None:
    """Destroy and undefine a domain (a transient one vanishes once destroyed)."""
    if state is None:
        return
    if state.active:
        ignore_vanished(state.dom.destroy)
    if state.persistent:
        ignore_vanished(state.dom.undefine)


@dataclass(frozen=True, kw_only=True)
class HostUsage:
    """One host's capacity and what its active domains use (bytes, counts)."""

    memory_mb: int
    vcpus: int
    domains_ram: int
    domains_vcpus: int
    scenario_domains: dict[str, DomainState]  # name ->, every scenario domain defined
    active: frozenset[str] = frozenset()  # names of the active domains (counted above)
    hv_type: str = ""
    hv_version: int = 0
    cpu_model: str = ""
    pool_capacity: int = 0
    pool_available: int = 0


def host_usage(
    conn: libvirt.virConnect, *, with_pool: bool = False, names: set[str] | None = None
) -> HostUsage:
    info = conn.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    ram = vcpus = 0
    scenario: dict[str, DomainState] = {}
    active: set[str] = set()
    for dom in conn.listAllDomains(0):
        state = ignore_vanished(dom.info)  # [state, max KiB, KiB, vcpus, cpu time]
        if state is None:
            continue
        if names is not None and dom.name() in names:
            scenario[dom.name()] = domain_state(state[0])
        if state[0] not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
            active.add(dom.name())
            ram += state[1] * 1024
            vcpus += state[3]
    extra: dict[str, Any] = {}
    if with_pool:
        pool = conn.storagePoolLookupByName(POOL)
        pool.refresh()
        _, capacity, _, available = pool.info()
        extra = {
            "hv_type": conn.getType(), "hv_version": conn.getVersion(),
            "cpu_model": host_cpu_model(conn.getCapabilities()),
            "pool_capacity": capacity, "pool_available": available,
        }
    return HostUsage(memory_mb=info[1], vcpus=info[2], domains_ram=ram, domains_vcpus=vcpus,
                  scenario_domains=scenario, active=frozenset(active), **extra)


def host_cpu_model(capabilities: str) -> str:
    model = ET.fromstring(capabilities).find("host/cpu/model")
    return model.text or "" if model is not None else ""


def has_kvm(capabilities: str) -> bool:
    """Whether libvirt offers KVM for x86_64 guests on the host (``/dev/kvm`` usable).

    >>> caps = ("<capabilities><guest><arch name='x86_64'><domain type='qemu'/>"
    ...         "<domain type='kvm'/></arch></guest></capabilities>")
    >>> has_kvm(caps), has_kvm(caps.replace("'kvm'", "'xen'"))
    (True, False)
    """
    root = ET.fromstring(capabilities)
    return any(d.get("type") == "kvm" for arch in root.iterfind("guest/arch")
               if arch.get("name") == "x86_64" for d in arch.iterfind("domain"))
