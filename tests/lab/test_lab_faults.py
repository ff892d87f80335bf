"""Fault primitives on a real lab (``tfault``, 2 hosts): each one's effect seen through
libvirt, the guest's QEMU process and console, the network, the recorded pids and
``lab status``; and ``lab down`` after a host was left powered off.

The tests run in file order on one lab and one guest (booted on lab2): service down/up,
link down/up, host down/up, then host down and lab down. Needs root and
``scripts/setup-lab``; a lab that cannot start fails the tests (never a skip).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from labcheck import last_tick, wait_tick_above
from lablock import running_lab

from livemig.core.model import FaultKind
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.faults import inject_fault, layout_of, port_open
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.inventory import HostEntry, Inventory, load_inventory
from livemig.drivers.lab.lab import lab_down, lab_status
from livemig.drivers.lab.layout import LIBVIRT_TCP_PORT
from livemig.drivers.lab.netns import netns_id
from livemig.drivers.lab.proc import Tracked, ns_id, pids_in_namespaces, start_time

pytestmark = pytest.mark.lab

LAB = "tfault"
GUEST = f"{LAB}-g1"
SHAPE_MBIT = 800.0  # lab2's link is shaped, so LINK_UP / HOST_UP must shape it again
BOOT_TIMEOUT = 120.0

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass(kw_only=True)
class FaultLab:
    path: Path
    console: Path
    qemu_pid: int = 0  # the guest's QEMU on lab2, once booted

    @property
    def inventory(self) -> Inventory:
        return load_inventory(self.path)  # pids change with every restart

    def host(self, name: str) -> HostEntry:
        return self.inventory.host(name)

    def fault(self, kind: FaultKind, host: str = "lab2") -> float:
        t0 = time.monotonic()
        inject_fault(self.inventory, kind, host)
        return time.monotonic() - t0


def virsh(uri: str, *args: str, timeout: float = 60.0) -> str:
    cp = subprocess.run(
        ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=timeout
    )
    assert cp.returncode == 0, f"virsh -c {uri} {' '.join(args)}: {cp.stderr.strip()}"
    return cp.stdout


def connect_error(uri: str) -> str | None:
    """None if libvirt connects to ``uri``, else libvirt's error message."""
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError as exc:
        return str(exc)
    return None


def unreachable(uri: str, within: float = 5.0) -> bool:
    """Whether libvirt fails to reach ``uri`` (refused, or no answer ``within`` s: with
    the link down, a SYN to a cached neighbour is dropped and connect would wait minutes)."""
    try:
        cp = subprocess.run(["virsh", "-q", "-c", uri, "uri"], capture_output=True,
                            timeout=within)  # fmt: skip
    except subprocess.TimeoutExpired:
        return True
    return cp.returncode != 0




def qemus_of(host: HostEntry) -> list[int]:
    """Pids of QEMU processes in the host's network namespace."""
    ids = [i for i in [netns_id(host.netns)] if i]
    found = []
    for pid in pids_in_namespaces("net", ids):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except FileNotFoundError:
            continue
        if comm.startswith("qemu-system") and start_time(pid) is not None:
            found.append(pid)
    return found


def alive(pid: int) -> bool:
    return start_time(pid) is not None


def host_status(name: str) -> dict:
    status = lab_status(LAB)
    return next(h for h in status["hosts"] if h["name"] == name) | {"lab": status["state"]}


def tbf_on(iface: str, netns: str | None = None) -> bool:
    cmd = ["tc", "qdisc", "show", "dev", iface]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    return " tbf " in subprocess.run(cmd, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def flab() -> Iterator[FaultLab]:
    with running_lab(LAB, hosts=2, storage="shared", shaping_mbit={"lab2": SHAPE_MBIT}) as path:
        inv = load_inventory(path)
        yield FaultLab(path=path, console=Path(inv.console_dir) / f"{GUEST}.log")


@pytest.fixture(scope="module")
def guest(flab: FaultLab) -> FaultLab:
    """A 128 MiB guest running on lab2 (persistent), ticking on its console."""
    inv = flab.inventory
    assert inv.image is not None
    xml = domain_xml(GUEST, 128, 1, Path(inv.image["kernel"]), Path(inv.image["initrd"]),
                     8, 2, flab.console)  # fmt: skip
    conn = libvirt.open(inv.host("lab2").uri)
    try:
        conn.defineXML(xml).create()
    finally:
        conn.close()
    wait_tick_above(flab.console, 1, BOOT_TIMEOUT)
    (flab.qemu_pid,) = qemus_of(inv.host("lab2"))
    return flab


def test_libvirtd_listens_on_its_lab_address_only(flab: FaultLab) -> None:
    for host in flab.inventory.hosts:
        out = subprocess.run(["ip", "netns", "exec", host.netns, "ss", "-ltnH"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        local = {line.split()[3] for line in out.splitlines() if line.strip()}
        libvirt_ports = {a for a in local if a.endswith(f":{LIBVIRT_TCP_PORT}")}
        assert libvirt_ports == {f"{host.address}:{LIBVIRT_TCP_PORT}"}


def test_service_down_keeps_the_guest_and_service_up_reattaches(guest: FaultLab) -> None:
    lab2 = guest.host("lab2")
    old_libvirtd = lab2.pids["libvirtd"]
    guest.fault(FaultKind.SERVICE_DOWN)

    err = connect_error(lab2.uri)
    assert err is not None and "Connection refused" in err
    assert not alive(old_libvirtd)
    assert alive(guest.qemu_pid)  # QEMU keeps running without its libvirtd
    wait_tick_above(guest.console, last_tick(guest.console) + 2, 30)  # and the guest too
    assert set(guest.host("lab2").pids) == {"holder", "virtlogd"}
    status = host_status("lab2")
    assert (status["lab"], status["state"]) == ("degraded", "service_down")
    assert not status["answers"]
    assert connect_error(guest.host("lab1").uri) is None  # the other host is untouched

    guest.fault(FaultKind.SERVICE_UP)
    lab2 = guest.host("lab2")
    assert lab2.pids["libvirtd"] != old_libvirtd and alive(lab2.pids["libvirtd"])
    assert GUEST in virsh(lab2.uri, "list", "--state-running", "--name").split()
    assert virsh(lab2.uri, "domstate", GUEST).strip() == "running"
    assert qemus_of(lab2) == [guest.qemu_pid]  # re-attached to the same QEMU
    assert host_status("lab2")["state"] == "up" and lab_status(LAB)["state"] == "up"


def test_link_down_cuts_the_host_and_link_up_restores_it(guest: FaultLab) -> None:
    lab2 = guest.host("lab2")
    assert port_open(lab2.address, LIBVIRT_TCP_PORT)
    guest.fault(FaultKind.LINK_DOWN)

    assert not port_open(lab2.address, LIBVIRT_TCP_PORT, timeout=2.0)
    assert unreachable(lab2.uri)
    status = host_status("lab2")
    assert (status["state"], status["link"], status["lab"]) == ("link_down", "down", "degraded")
    assert alive(lab2.pids["libvirtd"]) and alive(guest.qemu_pid)  # nothing was stopped
    assert connect_error(guest.host("lab1").uri) is None

    took = guest.fault(FaultKind.LINK_UP)
    assert port_open(lab2.address, LIBVIRT_TCP_PORT)
    assert virsh(lab2.uri, "domstate", GUEST).strip() == "running"
    assert tbf_on(layout_of(guest.inventory).host("lab2").veth)  # shaping is back
    assert tbf_on("eth0", lab2.netns)
    assert guest.host("lab2").pids == lab2.pids
    assert host_status("lab2")["state"] == "up"
    print(f"link_up: {took:.2f} s")


def test_host_down_kills_its_guests_and_host_up_brings_services_back(guest: FaultLab) -> None:
    lab2 = guest.host("lab2")
    procs = [Tracked(p, st) for p in (lab2.pids["libvirtd"], lab2.pids["virtlogd"], guest.qemu_pid)
             if (st := start_time(p)) is not None]  # fmt: skip
    assert len(procs) == 3
    down_s = guest.fault(FaultKind.HOST_DOWN)

    assert not any(p.alive() for p in procs)
    assert qemus_of(lab2) == []
    assert not port_open(lab2.address, LIBVIRT_TCP_PORT, timeout=2.0)
    assert unreachable(lab2.uri)
    assert set(guest.host("lab2").pids) == {"holder"}
    assert alive(lab2.pids["holder"])  # the "machine" itself (its namespaces) stays
    status = host_status("lab2")
    assert (status["state"], status["link"], status["lab"]) == ("host_down", "down", "degraded")
    ticks = last_tick(guest.console)
    time.sleep(2.0)
    assert last_tick(guest.console) == ticks  # the guest is dead, not just unreachable

    up_s = guest.fault(FaultKind.HOST_UP)
    lab2 = guest.host("lab2")
    assert set(lab2.pids) == {"holder", "virtlogd", "libvirtd"}
    assert all(alive(p) for p in lab2.pids.values())
    assert virsh(lab2.uri, "uri").strip() == lab2.uri
    assert "running" in virsh(lab2.uri, "pool-info", "instances")
    assert virsh(lab2.uri, "domstate", GUEST).strip() == "shut off"  # defined, not restarted
    assert qemus_of(lab2) == []
    assert tbf_on(layout_of(guest.inventory).host("lab2").veth) and tbf_on("eth0", lab2.netns)
    assert lab_status(LAB)["state"] == "up"
    print(f"host_down: {down_s:.2f} s, host_up: {up_s:.2f} s")


def test_faults_are_idempotent_and_name_bad_hosts(guest: FaultLab) -> None:
    pids = guest.host("lab1").pids
    guest.fault(FaultKind.HOST_UP, "lab1")
    guest.fault(FaultKind.SERVICE_UP, "lab1")
    guest.fault(FaultKind.LINK_UP, "lab1")
    assert guest.host("lab1").pids == pids  # nothing restarted on a healthy host
    with pytest.raises(LabError, match="no host 'lab9'"):
        inject_fault(guest.inventory, FaultKind.HOST_DOWN, "lab9")


def test_lab_down_is_clean_after_a_host_left_down(guest: FaultLab) -> None:
    guest.fault(FaultKind.SERVICE_DOWN, "lab1")  # a service left down on lab1,
    guest.fault(FaultKind.SERVICE_UP, "lab1")  # then up again under a new pid,
    guest.fault(FaultKind.HOST_DOWN)  # lab2 left powered off
    guest.fault(FaultKind.LINK_DOWN, "lab1")  # and lab1's link left down
    inv = guest.inventory
    net_ids = [i for h in inv.hosts if (i := ns_id(f"/run/netns/{h.netns}"))]
    assert len(net_ids) == 2
    procs = {Tracked(p, st) for p in pids_in_namespaces("net", net_ids)
             if (st := start_time(p)) is not None}  # fmt: skip
    procs |= {Tracked(p, st) for h in inv.hosts for p in h.pids.values()
              if (st := start_time(p)) is not None}  # fmt: skip
    assert len(procs) >= 4  # two holders, lab1's virtlogd and libvirtd

    t0 = time.monotonic()
    lab_down(LAB)
    down_s = time.monotonic() - t0
    assert [p.pid for p in procs if p.alive()] == []
    assert pids_in_namespaces("net", net_ids) == []
    assert not any(n.startswith(f"{LAB}-") for n in os.listdir("/sys/class/net"))
    assert not Path(inv.lab_dir).exists()
    assert lab_status(LAB)["state"] == "down"
    print(f"lab down after faults: {down_s:.2f} s")
