"""The lab's public API: :func:`lab_up`, :func:`lab_down`, :func:`lab_status`.

A lab is N libvirt hosts on this machine, each a network + mount + UTS namespace with its
own virtlogd and libvirtd, joined by a bridge in 198.18.0.0/15. ``lab_up`` writes an
inventory (see :mod:`livemig.drivers.lab.inventory`); ``lab_down`` removes everything the
lab made, found by name and pid (it also works after a crash, without any state file).
Both refuse a state directory that anyone but root could have written (its pid files
would choose what root kills): :mod:`livemig.drivers.lab.statedir`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livemig.drivers.lab import (
    daemons,
    firewall,
    hugepages,
    machine,
    netns,
    pki,
    records,
    sshd,
    statedir,
)
from livemig.drivers.lab.ansible_inventory import write_lab_hosts_yml
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.image import DEFAULT_CACHE_DIR, build_image
from livemig.drivers.lab.inventory import HostEntry, Inventory, write_inventory
from livemig.drivers.lab.layout import (
    DEFAULT_BASE_DIR,
    DEFAULT_LAB,
    INSTANCES_PATH,
    STORAGE_MODES,
    HostLayout,
    LabLayout,
    lab_layout,
)
from livemig.drivers.lab.proc import Tracked, ns_id, pids_in_namespaces, start_time, terminate

Shaping = float | Mapping[str, float] | None
#: libvirt's QEMU capabilities cache, kept across labs (see :func:`daemons.seed_qemu_caps`).
QEMU_CAPS_SEED = DEFAULT_CACHE_DIR / "qemu-caps"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (namespaces, bridge, libvirtd)")


def _shaping_for(shaping_mbit: Shaping, host: HostLayout) -> float | None:
    if shaping_mbit is None:
        return None
    if isinstance(shaping_mbit, Mapping):
        value = shaping_mbit.get(host.name)
        return None if value is None else float(value)
    return float(shaping_mbit)


def lab_up(
    name: str = DEFAULT_LAB,
    hosts: int = 2,
    storage: str = "shared",
    shaping_mbit: Shaping = None,
    base_dir: Path | str = DEFAULT_BASE_DIR,
    subnet: str | None = None,
    tls: bool = False,
    ssh: bool = False,
    unconfigured: bool = False,
    hugepages_mib: int = 0,
) -> Path:
    """Bring lab ``name`` up with ``hosts`` hosts and return the inventory path.

    ``storage``: ``shared`` (one instances directory for all hosts) or ``local`` (one per
    host, at the same path). ``shaping_mbit``: cap every host's link (a number) or some
    hosts' links (``{"lab2": 100}``) in Mbit/s. ``subnet``: a /24 in 198.18.0.0/15 (default
    derived from the name). ``tls``: libvirtd listens on TLS only (certificates made for
    the lab, see :mod:`livemig.drivers.lab.pki`) and QEMU migration TLS is set up.
    An Ansible inventory is written beside the lab's
    (:mod:`livemig.drivers.lab.ansible_inventory`); ``ssh``: each host also runs sshd
    (:mod:`livemig.drivers.lab.sshd`) and that inventory reaches it (SSH variables).
    ``unconfigured`` (with ``ssh``): no libvirt configuration, daemon, certificate or pool
    at all, for ``livemig hosts provision`` to set up (with ``tls``, the playbook makes the
    CA and certificates); the lab's inventory then names the URIs provisioning will give.
    ``hugepages_mib`` (> 0): guests take their RAM from the machine's hugetlb pool, grown
    to have that much free and written once (:mod:`livemig.drivers.lab.hugepages`: on a
    virtual machine whose hypervisor reclaims free memory, fresh pages are slow to write
    and an uncapped migration goes at that speed).
    Leftovers of an earlier run of the same lab are removed first.
    """
    if unconfigured and not ssh:
        raise LabError("an unconfigured lab is configured over SSH: give ssh=True (--ssh)")
    _require_root()
    if storage not in STORAGE_MODES:
        raise LabError(f"storage(={storage!r}) must be one of {', '.join(STORAGE_MODES)}")
    if hugepages_mib < 0:
        raise LabError(f"hugepages_mib(={hugepages_mib}) must be >= 0 (0: no huge pages)")
    lab = lab_layout(name, hosts, base_dir, subnet, tls=tls, hugepages=hugepages_mib > 0)
    statedir.require_trusted(lab.lab_dir, strict_levels=2)  # the lab's and the base dir
    lab_down(name, base_dir)  # whatever an earlier (maybe killed) run left
    image = build_image()
    machine.prepare(lab.base_dir, tls=tls or ssh)
    if hugepages_mib > 0:
        hugepages.ensure_pool(hugepages_mib)
        hugepages.warm_pool()
    try:
        return _up(lab, storage, shaping_mbit, image.kernel, image.initrd, ssh, unconfigured)
    except BaseException as exc:
        try:
            lab_down(name, base_dir)
        except Exception as cleanup:  # keep the original error; say cleanup failed too
            exc.add_note(f"cleaning up lab {name!r} failed as well: {cleanup}")
        raise


def _up(
    lab: LabLayout,
    storage: str,
    shaping_mbit: Shaping,
    kernel: Path,
    initrd: Path,
    ssh: bool = False,
    unconfigured: bool = False,
) -> Path:
    lab.lab_dir.mkdir(mode=statedir.DIR_MODE)
    os.chmod(lab.lab_dir, statedir.DIR_MODE)
    meta = {"hosts": len(lab.hosts), "subnet": str(lab.network), "storage": storage}
    meta |= {"ssh": ssh, "unconfigured": unconfigured}
    meta |= {"tls": lab.tls, "hugepages": lab.hugepages}
    (lab.lab_dir / "lab.json").write_text(json.dumps(meta))
    lab.console_dir.mkdir()
    if lab.tls and not unconfigured:
        pki.make_lab_pki(lab)
    if ssh:
        sshd.make_keys(lab)
    netns.check_subnet_free(lab)
    for host in lab.hosts:
        netns.write_hosts_file(lab, host)
    netns.create_bridge(lab)
    firewall.install_root(lab)  # before any daemon listens: only root reaches the lab
    for host in lab.hosts:
        netns.create_host_network(lab, host)
        firewall.install_host(lab, host)
        mbit = _shaping_for(shaping_mbit, host)
        if mbit is not None:
            netns.shape(host, mbit)

    libvirtds: dict[str, Tracked] = {}
    holders: dict[str, Tracked] = {}
    for host in lab.hosts:
        holder = netns.start_holder(host)
        holders[host.name] = holder
        records.save_pid(host, "holder", holder)
        netns.setup_host_mounts(lab, host, holder.pid, lab.instances_dir(host, storage),
                                private_pki=ssh)  # fmt: skip
        daemons.seed_qemu_caps(host, QEMU_CAPS_SEED)
        if ssh:
            records.save_pid(host, "sshd", sshd.start_sshd(lab, host, holder.pid))
        if unconfigured:
            continue
        daemons.write_configs(host)
        records.save_pid(host, "virtlogd", daemons.start_virtlogd(host, holder.pid))
        libvirtds[host.name] = daemons.start_libvirtd(host, holder.pid)
        records.save_pid(host, "libvirtd", libvirtds[host.name])

    if not unconfigured:
        for host in lab.hosts:
            daemons.wait_answers(host, libvirtds[host.name])
        daemons.share_qemu_caps(list(lab.hosts), QEMU_CAPS_SEED)
    entries = []
    for host in lab.hosts:
        if not unconfigured:
            daemons.define_pool(host)
        pids = {k: v.pid for k, v in records.load_pids(host).items()}
        entries.append(
            HostEntry(
                name=host.name,
                address=host.address,
                uri=host.uri,
                netns=host.netns,
                host_uuid=host.host_uuid,
                instances_dir=str(lab.instances_dir(host, storage)),
                shaping_mbit=_shaping_for(shaping_mbit, host),
                pids=pids,
            )
        )
    inv = Inventory(
        lab=lab.name,
        lab_dir=str(lab.lab_dir),
        storage=storage,
        instances_path=str(INSTANCES_PATH),
        console_dir=str(lab.console_dir),
        storage_pool=daemons.POOL_NAME,
        network=str(lab.network),
        bridge={"name": lab.bridge, "address": lab.bridge_address},
        image={"kernel": str(kernel), "initrd": str(initrd)},
        hosts=entries,
        tls=lab.tls,
        hugepages=lab.hugepages,
    )
    write_lab_hosts_yml(inv, lab.inventory_path, lab.ansible_inventory_path, ssh=ssh,
                        unconfigured=unconfigured)
    return write_inventory(inv, lab.inventory_path)


def _discover(name: str, base_dir: Path | str) -> LabLayout:
    """The layout of lab ``name`` as far as anything of it exists (host count, subnet)."""
    bare = lab_layout(name, 1, base_dir)
    indices = {1}
    patterns = [
        (re.compile(rf"{re.escape(name)}-lab(\d+)"), netns.netns_list()),
        (re.compile(rf"{re.escape(name)}-h(\d+)"), os.listdir("/sys/class/net")),
        (re.compile(r"lab(\d+)"), _listdir(bare.lab_dir / "hosts")),
        (re.compile(rf"{re.escape(name)}-lab(\d+)"), _listdir(Path("/etc/netns"))),
    ]
    for rx, names in patterns:
        for n in names:
            m = rx.fullmatch(n)
            if m:
                indices.add(int(m.group(1)))
    subnet, tls, huge = None, False, False
    try:
        meta = json.loads((bare.lab_dir / "lab.json").read_text())
        subnet = meta.get("subnet")
        tls = bool(meta.get("tls", False))
        huge = bool(meta.get("hugepages", False))
        indices.add(int(meta.get("hosts", 1)))
    except (FileNotFoundError, json.JSONDecodeError, ValueError):
        pass
    return lab_layout(name, max(indices), base_dir, subnet, tls=tls, hugepages=huge)


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _lab_processes(host: HostLayout) -> set[Tracked]:
    """Every process of a host: tracked pids still alive, plus anything in its namespaces."""
    procs = {p for p in records.load_pids(host).values() if p.alive()}
    net_ids = [i for i in [netns.netns_id(host.netns)] if i]
    mnt_ids = [i for p in procs if (i := ns_id(f"/proc/{p.pid}/ns/mnt")) is not None]
    mnt_ids = [i for i in mnt_ids if i != ns_id("/proc/self/ns/mnt")]
    for pid in pids_in_namespaces("net", net_ids) + pids_in_namespaces("mnt", mnt_ids):
        st = start_time(pid)
        if st is not None:
            procs.add(Tracked(pid, st))
    return procs


def lab_down(name: str = DEFAULT_LAB, base_dir: Path | str = DEFAULT_BASE_DIR) -> None:
    """Remove everything lab ``name`` made: domains, daemons, QEMUs, namespaces, links,
    files. Safe to call when the lab is partly or not at all there."""
    # before any pid file is read: the lab's directory and the base directory are root's
    statedir.require_trusted(lab_layout(name, 1, base_dir).lab_dir, strict_levels=2)
    _require_root()
    lab = _discover(name, base_dir)
    for host in lab.hosts:
        pids = records.load_pids(host)
        libvirtd, holder = pids.get("libvirtd"), pids.get("holder")
        if libvirtd is not None and libvirtd.alive() and holder is not None and holder.alive():
            with contextlib.suppress(LabError):  # the daemon is killed below anyway
                daemons.destroy_domains(holder.pid)
    procs: set[Tracked] = set()
    for host in lab.hosts:
        procs |= _lab_processes(host)
    # Everything of the lab is discarded, so the grace period is short: libvirtd sometimes
    # lingers for seconds after SIGTERM, and nothing it would save is kept.
    terminate(procs, timeout=1.5)
    for host in lab.hosts:
        netns.delete_host_network(lab, host)
    netns.delete_bridge(lab)
    firewall.remove_root(lab)
    if lab.lab_dir.exists():
        left = machine.mounts_under(lab.lab_dir)
        if left:
            raise LabError(f"refusing to remove {lab.lab_dir}: mounts below it: {left}")
        shutil.rmtree(lab.lab_dir)
    machine.undo_if_last(lab.base_dir, name)


def host_state(answers: bool, link: str | None, alive: Mapping[str, bool]) -> str:
    """One word for a host in ``lab status``.

    >>> host_state(True, "up", {"holder": True, "virtlogd": True, "libvirtd": True})
    'up'
    >>> host_state(False, "down", {"holder": True})
    'host_down'
    >>> host_state(False, "up", {"holder": True, "virtlogd": True, "libvirtd": False})
    'service_down'
    >>> host_state(False, "down", {"holder": True, "virtlogd": True, "libvirtd": True})
    'link_down'
    """
    if answers:
        return "up"
    if not alive.get("holder") or link is None:
        return "missing"  # no namespace holder or no veth: the lab is broken here
    if not alive.get("libvirtd"):
        return "host_down" if not alive.get("virtlogd") else "service_down"
    return "link_down" if link == "down" else "not_answering"


def lab_status(name: str = DEFAULT_LAB, base_dir: Path | str = DEFAULT_BASE_DIR) -> dict[str, Any]:
    """What of lab ``name`` exists and whether each host's libvirtd answers.

    The lab's ``state`` is ``up`` (every libvirtd answers), ``degraded`` (the lab is whole
    but some host is down, its service stopped or its link cut: a fault), ``partial``
    (something of it is missing or broken) or ``down`` (nothing of it exists). Each host
    has a ``state`` of its own (:func:`host_state`).
    """
    lab = _discover(name, base_dir)
    existing_ns = set(netns.netns_list())
    hosts = []
    for host in lab.hosts:
        pids = records.load_pids(host)
        alive = {role: p.alive() for role, p in pids.items()}
        link = netns.link_state(host) if host.netns in existing_ns else None
        # an SSH lab's libvirtd may be started over SSH (provisioning), untracked by the lab
        started = bool(alive.get("libvirtd")) or bool(alive.get("sshd"))
        answering = started and link == "up" and daemons.answers(host.uri)
        domains: list[str] = []
        if answering:
            out = daemons.virsh(host.uri, "list", "--all", "--name", check=False)
            domains = [d for d in out.split() if d]
        hosts.append(
            {
                "name": host.name,
                "address": host.address,
                "uri": host.uri,
                "state": host_state(answering, link, alive),
                "netns": host.netns if host.netns in existing_ns else None,
                "veth": netns.link_exists(host.veth),
                "link": link,
                "processes": {r: {"pid": p.pid, "alive": alive[r]} for r, p in pids.items()},
                "answers": answering,
                "domains": domains,
            }
        )
    walled = firewall.root_table(lab) in firewall.listed_tables()
    any_left = (
        lab.lab_dir.exists()
        or netns.link_exists(lab.bridge)
        or walled
        or any(h["netns"] or h["veth"] for h in hosts)
    )
    whole = lab.inventory_path.exists() and netns.link_exists(lab.bridge) and walled
    if whole and all(h["answers"] for h in hosts):
        state = "up"
    elif whole and all(h["state"] != "missing" for h in hosts):
        state = "degraded"
    else:
        state = "partial" if any_left else "down"
    return {
        "lab": name,
        "state": state,
        "tls": lab.tls,
        "hugepages": lab.hugepages,
        "lab_dir": str(lab.lab_dir) if lab.lab_dir.exists() else None,
        "inventory": str(lab.inventory_path) if lab.inventory_path.exists() else None,
        "bridge": lab.bridge if netns.link_exists(lab.bridge) else None,
        "firewall": walled,
        "hosts": hosts if any_left else [],
    }


def wall_time(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``fn`` and return (its result, wall seconds it took)."""
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0
