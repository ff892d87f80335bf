"""The namespace lab for real: two libvirtd hosts, a guest, a live migration, clean down.

Needs root and the packages of ``scripts/setup-lab``. These tests fail (never skip) when
the lab cannot start. They use their own lab name, so a developer's default lab is left
alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from labcheck import last_tick, wait_tick_above

from livemig.drivers.lab import firewall
from livemig.drivers.lab.daemons import host_uuid_of
from livemig.drivers.lab.guest import domain_xml
from livemig.drivers.lab.inventory import Inventory, load_inventory
from livemig.drivers.lab.lab import lab_down, lab_status, lab_up
from livemig.drivers.lab.layout import lab_layout
from livemig.drivers.lab.proc import Tracked, ns_id, pids_in_namespaces, start_time

pytestmark = pytest.mark.lab

LAB = "lmtest"
GUEST = f"{LAB}-g1"
BOOT_TIMEOUT = 120.0  # TCG boot on a busy 2-core machine


def virsh(uri: str, *args: str, timeout: float = 60.0) -> str:
    cp = subprocess.run(
        ["virsh", "-q", "-c", uri, *args], capture_output=True, text=True, timeout=timeout
    )
    assert cp.returncode == 0, f"virsh -c {uri} {' '.join(args)}: {cp.stderr.strip()}"
    return cp.stdout




def lab_traces() -> dict[str, list[str]]:
    """Whatever of lab LAB is visible from the root namespace."""
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if LAB in line
    ]
    links = [n for n in os.listdir("/sys/class/net") if n.startswith(f"{LAB}-")]
    netns = [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
             if n.startswith(f"{LAB}-")]  # fmt: skip
    files = [p for p in ("/var/tmp/livemig-lab/" + LAB, "/etc/netns/" + LAB + "-lab1")
             if os.path.exists(p)]  # fmt: skip
    tables = [t for t in firewall.listed_tables() if t == f"livemig_{LAB}"]
    return {"mounts": mounts, "links": links, "netns": netns, "files": files,
            "tables": tables}


def lab_processes(inv: Inventory) -> set[Tracked]:
    """Live processes of the lab: its tracked pids and everything in its namespaces."""
    procs = set()
    ids = [i for h in inv.hosts if (i := ns_id(f"/run/netns/{h.netns}"))]
    for pid in [p for h in inv.hosts for p in h.pids.values()] + pids_in_namespaces("net", ids):
        st = start_time(pid)
        if st is not None:
            procs.add(Tracked(pid, st))
    return procs


def assert_lab_gone(procs: set[Tracked], net_ids: list[tuple[int, int]]) -> None:
    assert lab_traces() == {"mounts": [], "links": [], "netns": [], "files": [], "tables": []}
    assert [p.pid for p in procs if p.alive()] == []
    assert pids_in_namespaces("net", net_ids) == []
    qemus = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True)
    assert GUEST not in qemus.stdout
    assert lab_status(LAB)["state"] == "down"


@pytest.fixture(scope="module")
def lab() -> Iterator[Inventory]:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (run them as root after scripts/setup-lab)")
    t0 = time.monotonic()
    inventory = lab_up(LAB, hosts=2, storage="shared")
    print(f"lab up: {time.monotonic() - t0:.1f} s")
    try:
        yield load_inventory(inventory)
    finally:
        lab_down(LAB)


def test_every_libvirtd_answers_over_tcp(lab: Inventory) -> None:
    assert [h.name for h in lab.hosts] == ["lab1", "lab2"]
    for host in lab.hosts:
        assert virsh(host.uri, "uri").strip() == host.uri
        assert virsh(host.uri, "hostname").strip() == host.name
    assert lab_status(LAB)["state"] == "up"


def connects(address: str, port: int, *, user: int | None = None) -> bool:
    """Whether a TCP connection from the root namespace succeeds (as root, or as ``user``:
    a uid and gid, with no supplementary groups). bash's /dev/tcp: no Python needed."""
    cmd = ["timeout", "20", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


def test_only_root_reaches_the_unauthenticated_libvirtds(lab: Inventory) -> None:
    """Issue 8, S1: plain mode's ``auth_tcp = "none"`` libvirtd (root on its host) was
    reachable by any user of the machine; the lab's nftables table lets only root's
    sockets into the lab's subnet, and each host takes connections from the subnet only."""
    nobody = 65534
    for host in lab.hosts:
        assert connects(host.address, 16509)  # the controller (root) gets through
        assert not connects(host.address, 16509, user=nobody)
        assert not connects(host.address, 49152, user=nobody)  # QEMU's migration ports
        assert firewall.listed_tables(host.netns) == [firewall.HOST_TABLE]
    assert lab_status(LAB)["firewall"] is True


def test_host_uuids_differ(lab: Inventory) -> None:
    uuids = [host_uuid_of(h.uri) for h in lab.hosts]
    assert uuids == [h.host_uuid for h in lab.hosts]
    assert len(set(uuids)) == 2


def test_instances_pool_is_shared(lab: Inventory) -> None:
    lab1, lab2 = lab.hosts
    assert lab1.instances_dir == lab2.instances_dir
    for host in lab.hosts:
        assert "running" in virsh(host.uri, "pool-info", lab.storage_pool)
    marker = Path(lab1.instances_dir) / "shared-marker.img"
    marker.write_bytes(b"\0" * 4096)
    try:
        virsh(lab2.uri, "pool-refresh", lab.storage_pool)
        assert "shared-marker.img" in virsh(lab2.uri, "vol-list", lab.storage_pool)
    finally:
        marker.unlink()


def test_live_migration_keeps_the_guest_ticking(lab: Inventory) -> None:
    lab1, lab2 = lab.hosts
    assert lab.image is not None
    console = Path(lab.console_dir) / f"{GUEST}.log"
    xml = domain_xml(GUEST, 128, 1, Path(lab.image["kernel"]), Path(lab.image["initrd"]),
                     16, 8, console)  # fmt: skip
    xml_file = Path(lab.lab_dir) / f"{GUEST}.xml"
    xml_file.write_text(xml)
    virsh(lab1.uri, "define", str(xml_file))
    virsh(lab1.uri, "start", GUEST)
    before = wait_tick_above(console, 1, BOOT_TIMEOUT)

    t0 = time.monotonic()
    virsh(lab1.uri, "migrate", "--live", "--p2p", "--undefinesource", "--persistent",
          GUEST, lab2.uri, timeout=180)  # fmt: skip
    print(f"migration: {time.monotonic() - t0:.1f} s")

    assert virsh(lab2.uri, "domstate", GUEST).strip() == "running"
    assert GUEST not in virsh(lab1.uri, "list", "--all", "--name").split()
    assert GUEST in virsh(lab2.uri, "list", "--persistent", "--name").split()
    switched = last_tick(console)
    assert switched >= before
    # The guest keeps running on lab2: its console (now written by lab2) counts on.
    wait_tick_above(console, switched + 3, 60)
    text = console.read_text(errors="replace")
    assert "Kernel panic" not in text and "dirtier exited" not in text


def test_down_removes_everything_and_twice_is_fine(lab: Inventory) -> None:
    procs = lab_processes(lab)
    assert len(procs) >= 6  # holder, virtlogd, libvirtd per host (+ the guest's QEMU)
    net_ids = [i for h in lab.hosts if (i := ns_id(f"/run/netns/{h.netns}"))]
    assert len(net_ids) == 2
    t0 = time.monotonic()
    lab_down(LAB)
    print(f"lab down: {time.monotonic() - t0:.1f} s")
    assert_lab_gone(procs, net_ids)
    lab_down(LAB)
    assert_lab_gone(procs, net_ids)


def test_up_recovers_from_a_killed_lab(lab: Inventory) -> None:
    inv = load_inventory(lab_up(LAB, hosts=2, storage="local"))
    # Simulate a crash: the daemons die (and lab2's namespace holder too); namespaces,
    # links, lab1's holder and every file stay behind.
    for host in inv.hosts:
        for role in ("libvirtd", "virtlogd"):
            os.kill(host.pids[role], signal.SIGKILL)
    os.kill(inv.hosts[1].pids["holder"], signal.SIGKILL)
    assert lab_status(LAB)["state"] == "partial"
    stale = lab_processes(inv)

    inv2 = load_inventory(lab_up(LAB, hosts=2, storage="shared"))
    assert not any(p.alive() for p in stale)
    for host in inv2.hosts:
        assert virsh(host.uri, "uri").strip() == host.uri
    assert inv2.storage == "shared"

    procs = lab_processes(inv2)
    net_ids = [i for h in inv2.hosts if (i := ns_id(f"/run/netns/{h.netns}"))]
    lab_down(LAB)
    assert_lab_gone(procs, net_ids)
    assert lab_layout(LAB).lab_dir == Path("/var/tmp/livemig-lab") / LAB
