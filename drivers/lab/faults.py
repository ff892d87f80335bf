"""Faults for real: a lab host powers off or on, its link is cut or restored, its libvirtd
stops or starts. :func:`inject_fault` returns once the fault is in effect.

=============  ==========================================================================
kind           what happens to the host
=============  ==========================================================================
host_down      SIGKILL to every process in its network namespace but the namespace holder
               (QEMUs, libvirtd, virtlogd), both ends of its veth down, its /run/libvirt
               emptied (a tmpfs does not survive power-off)
host_up        link up (shaping re-applied), virtlogd and libvirtd started, waits until
               libvirtd answers and the ``instances`` pool is active; no guest restarts
link_down      both ends of its veth down: nothing passes either way
link_up        both ends up, shaping re-applied; waits until libvirtd is reachable again
service_down   libvirtd stopped (SIGTERM, SIGKILL after a grace period); QEMUs keep running
service_up     libvirtd started; waits until it answers (it re-attaches to running guests)
=============  ==========================================================================

Every fault is idempotent (``host_up`` on a host that is up changes nothing). The host's
recorded pids and the inventory's ``pids`` follow the daemons (see
:mod:`livemig.drivers.lab.records`); ``lab down`` removes the lab after any sequence of
faults. The ``Inventory`` passed in is not changed (it is frozen): load the file again to
see new pids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

from livemig.core.model import FaultKind
from livemig.drivers.lab import daemons, netns, records
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.inventory import Inventory
from livemig.drivers.lab.layout import HostLayout, LabLayout, lab_layout
from livemig.drivers.lab.proc import Tracked, pids_in_namespaces, start_time, wait_for

SERVICE_STOP_GRACE = 10.0  # seconds libvirtd gets to exit after SIGTERM
REACH_TIMEOUT = 20.0  # seconds for a restored link to carry libvirt's port again


def inject_fault(inventory: Inventory, kind: FaultKind, host: str) -> None:
    """Put fault ``kind`` into effect on lab host ``host``; :class:`LabError` if it cannot."""
    try:
        kind = FaultKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise LabError(f"fault kind(={kind!r}) must be one of {known}") from None
    lab = layout_of(inventory)
    h = lab.host(host)
    shaping = inventory.host(h.name).shaping_mbit
    holder = _holder(h)
    if kind is FaultKind.HOST_DOWN:
        _host_down(h, holder)
    elif kind is FaultKind.HOST_UP:
        _link_up(h, shaping, wait=False)
        _start_services(h, holder)
    elif kind is FaultKind.LINK_DOWN:
        netns.set_link(h, up=False)
    elif kind is FaultKind.LINK_UP:
        _link_up(h, shaping, wait=True)
    elif kind is FaultKind.SERVICE_DOWN:
        _stop_libvirtd(h)
    else:  # SERVICE_UP
        _start_services(h, holder)
    records.sync_inventory(lab.inventory_path, h)


def layout_of(inventory: Inventory) -> LabLayout:
    """The layout of the lab an inventory describes."""
    lab_dir = Path(inventory.lab_dir)
    return lab_layout(
        inventory.lab, len(inventory.hosts), lab_dir.parent, inventory.network, tls=inventory.tls
    )


def _holder(host: HostLayout) -> Tracked:
    holder = records.load_pids(host).get("holder")
    if holder is None or not netns.holder_alive(holder.pid, host.netns):
        raise LabError(
            f"host {host.name} has no live namespace holder: the lab is broken "
            "(lab down, then lab up)"
        )
    return holder


def _host_down(host: HostLayout, holder: Tracked) -> None:
    """Power off: kill everything running on the host at once, then cut its link."""
    ids = [i for i in [netns.netns_id(host.netns)] if i]
    victims = {p for p in records.load_pids(host).values() if p.alive()}
    for pid in pids_in_namespaces("net", ids):
        st = start_time(pid)
        if st is not None:
            victims.add(Tracked(pid, st))
    victims.discard(holder)
    left = _kill(victims, signal.SIGKILL, timeout=10.0)
    if left:
        pids = sorted(p.pid for p in left)
        raise LabError(f"host {host.name}: processes {pids} survived SIGKILL")
    netns.set_link(host, up=False)
    run_dir = host.private_dir("run")  # the host's /run/libvirt
    for entry in run_dir.iterdir() if run_dir.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    records.save_pid(host, "libvirtd", None)
    records.save_pid(host, "virtlogd", None)


def _kill(procs: set[Tracked], sig: signal.Signals, timeout: float) -> set[Tracked]:
    """Send ``sig`` to the live ones; return those still alive after ``timeout`` s."""
    for p in procs:
        if p.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
    deadline = time.monotonic() + timeout
    live = {p for p in procs if p.alive()}
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = {p for p in live if p.alive()}
    return live


def _stop_libvirtd(host: HostLayout) -> None:
    libvirtd = records.load_pids(host).get("libvirtd")
    if libvirtd is not None and libvirtd.alive():
        left = _kill({libvirtd}, signal.SIGTERM, SERVICE_STOP_GRACE)
        if _kill(left, signal.SIGKILL, 5.0):
            raise LabError(f"libvirtd of {host.name} (pid {libvirtd.pid}) survived SIGKILL")
    records.save_pid(host, "libvirtd", None)


def _start_services(host: HostLayout, holder: Tracked) -> None:
    """virtlogd and libvirtd, each unless it already runs; wait for libvirtd and the pool."""
    pids = records.load_pids(host)
    virtlogd = pids.get("virtlogd")
    if virtlogd is None or not virtlogd.alive():
        records.save_pid(host, "virtlogd", daemons.start_virtlogd(host, holder.pid))
    libvirtd = pids.get("libvirtd")
    if libvirtd is None or not libvirtd.alive():
        libvirtd = daemons.start_libvirtd(host, holder.pid)
        records.save_pid(host, "libvirtd", libvirtd)
    deadline = time.monotonic() + 60.0
    while not daemons.answers_locally(holder.pid):
        if not libvirtd.alive():
            raise LabError(f"libvirtd of {host.name} died while starting (see its libvirtd.log)")
        if time.monotonic() > deadline:
            raise LabError(f"libvirtd of {host.name} does not answer on its unix socket")
        time.sleep(0.2)
    daemons.ensure_pool(host, holder.pid)
    if netns.link_state(host) == "up":  # reachable from the lab too, over TCP or TLS
        daemons.wait_answers(host, libvirtd)


def _link_up(host: HostLayout, shaping_mbit: float | None, wait: bool) -> None:
    """Both ends up, shaping again; with ``wait``, until libvirtd's port is reachable
    (when libvirtd runs) or the veth reports carrier on both ends."""
    netns.set_link(host, up=True)
    if shaping_mbit is not None:
        netns.shape(host, shaping_mbit)
    libvirtd = records.load_pids(host).get("libvirtd")
    if wait and libvirtd is not None and libvirtd.alive():
        wait_for(
            f"{host.address}:{host.port} ({host.name}) after its link came up",
            lambda: port_open(host.address, host.port),
            timeout=REACH_TIMEOUT,
            interval=0.2,
        )
    else:
        wait_for(
            f"carrier on {host.veth}",
            lambda: _operstate(host.veth) == "up",
            timeout=REACH_TIMEOUT,
            interval=0.05,
        )


def _operstate(iface: str) -> str:
    try:
        return Path("/sys/class/net", iface, "operstate").read_text().strip()
    except FileNotFoundError:
        return "missing"


def port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``address:port`` from here succeeds within ``timeout`` s."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False
