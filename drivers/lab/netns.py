"""Network side of a lab: bridge, per-host network namespace, veth pair, link shaping,
and the long-lived holder process that owns each host's mount and UTS namespaces.

The holder is ``ip netns exec NS unshare --mount --uts --propagation private sleep
infinity``; every command "on a host" is run with ``nsenter`` into the holder's
namespaces, and the host's private directories are bind-mounted inside its mount namespace
only, so nothing of it is visible from the root namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.hugepages import HUGETLBFS_MOUNT
from livemig.drivers.lab.layout import (
    ETC_PKI,
    INSTANCES_PATH,
    PRIVATE_DIRS,
    HostLayout,
    LabLayout,
)
from livemig.drivers.lab.proc import Tracked, ns_id, run, start_time, track, wait_for

NS_IFACE = "eth0"  # name of the host's end of its veth pair, inside its namespace


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_list() -> list[str]:
    """Names of the network namespaces that `ip netns` knows."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_id(netns: str) -> tuple[int, int] | None:
    """Identity of a named network namespace, None if it does not exist."""
    return ns_id(Path("/run/netns", netns))


def _disable_ipv6(iface: str, netns: str | None = None) -> None:
    """No IPv6 chatter (router solicitations, DAD) on lab links."""
    cmd = ["sysctl", "-q", "-w", f"net.ipv6.conf.{iface}.disable_ipv6=1"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    run(cmd, check=False)


def check_subnet_free(lab: LabLayout) -> None:
    """Refuse a lab subnet that some interface other than the lab's bridge already uses."""
    out = run(["ip", "-o", "-4", "addr", "show"]).stdout
    for line in out.splitlines():
        parts = line.split()
        iface, cidr = parts[1], parts[3]
        addr = cidr.split("/")[0]
        if iface != lab.bridge and lab.network.overlaps(_net_of(cidr)):
            raise LabError(
                f"subnet {lab.network} of lab {lab.name!r} is already used by {iface} "
                f"({addr}); pass another subnet"
            )


def _net_of(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Interface(cidr).network


def create_bridge(lab: LabLayout) -> None:
    """The lab's bridge in the root namespace, with the lab's first address."""
    run(["ip", "link", "add", lab.bridge, "type", "bridge"])
    # Bridged lab traffic must not go through the machine's iptables (br_netfilter).
    run(
        ["ip", "link", "set", lab.bridge, "type", "bridge",
         "nf_call_iptables", "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"],
        check=False,
    )  # fmt: skip
    _disable_ipv6(lab.bridge)
    run(["ip", "addr", "add", lab.bridge_cidr, "dev", lab.bridge])
    run(["ip", "link", "set", lab.bridge, "up"])


def create_host_network(lab: LabLayout, host: HostLayout) -> None:
    """Namespace, veth pair on the bridge, address, loopback; no default route."""
    run(["ip", "netns", "add", host.netns])
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", NS_IFACE,
         "netns", host.netns])  # fmt: skip
    _disable_ipv6(host.veth)
    run(["ip", "link", "set", host.veth, "master", lab.bridge, "up"])
    _disable_ipv6(NS_IFACE, host.netns)
    cidr = f"{host.address}/{lab.network.prefixlen}"
    run(["ip", "-n", host.netns, "addr", "add", cidr, "dev", NS_IFACE])
    run(["ip", "-n", host.netns, "link", "set", NS_IFACE, "up"])
    run(["ip", "-n", host.netns, "link", "set", "lo", "up"])


def shape(host: HostLayout, mbit: float) -> None:
    """Cap the host's link at ``mbit`` Mbit/s each way (tbf on both ends of its veth)."""
    if mbit <= 0:
        raise LabError(f"shaping rate(={mbit} Mbit/s) must be > 0")
    rate_bytes = mbit * 1e6 / 8
    burst = max(64 * 1024, int(rate_bytes / 100))  # at least 10 ms worth of traffic
    tbf = ["root", "tbf", "rate", f"{mbit:g}mbit", "burst", str(burst), "latency", "50ms"]
    run(["tc", "qdisc", "replace", "dev", host.veth, *tbf])  # towards the host
    run(["ip", "netns", "exec", host.netns, "tc", "qdisc", "replace", "dev", NS_IFACE, *tbf])


def set_link(host: HostLayout, up: bool) -> None:
    """Both ends of the host's veth up or down (addresses and qdiscs stay configured)."""
    state = "up" if up else "down"
    run(["ip", "-n", host.netns, "link", "set", NS_IFACE, state])
    run(["ip", "link", "set", host.veth, state])


def link_state(host: HostLayout) -> str | None:
    """``up`` when both ends of the host's veth are up, ``down`` when either is down
    (administratively), None when the veth does not exist."""
    flags = Path("/sys/class/net", host.veth, "flags")
    try:
        root_up = int(flags.read_text(), 16) & 0x1
    except FileNotFoundError:
        return None
    out = run(["ip", "-n", host.netns, "-o", "link", "show", NS_IFACE], check=False).stdout
    ns_up = "<" in out and "UP" in out.split("<", 1)[1].split(">", 1)[0].split(",")
    return "up" if root_up and ns_up else "down"


def write_hosts_file(lab: LabLayout, host: HostLayout) -> None:
    """/etc/netns/NS/hosts: every lab host by name (``ip netns exec`` mounts it on /etc/hosts)."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.address}\t{h.name}" for h in lab.hosts]
    host.etc_netns_dir.mkdir(parents=True, exist_ok=True)
    (host.etc_netns_dir / "hosts").write_text("\n".join(lines) + "\n")


def start_holder(host: HostLayout) -> Tracked:
    """Start the process that keeps the host's mount and UTS namespaces alive."""
    unshare = ["unshare", "--mount", "--uts", "--propagation", "private"]
    cmd = ["ip", "netns", "exec", host.netns, *unshare, "sleep", "infinity"]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    my_uts = ns_id("/proc/self/ns/uts")
    want_net = netns_id(host.netns)

    def ready() -> bool:
        if proc.poll() is not None:
            raise LabError(f"holder of {host.netns} exited with {proc.returncode}")
        try:
            comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
        except FileNotFoundError:
            return False
        return (
            comm == "sleep"
            and ns_id(f"/proc/{proc.pid}/ns/uts") != my_uts
            and ns_id(f"/proc/{proc.pid}/ns/net") == want_net
        )

    wait_for(f"the namespace holder of {host.netns}", ready, timeout=10)
    return track(proc.pid)


def nsenter(holder: int, cmd: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Prefix that runs ``cmd`` in the network, mount and UTS namespaces of ``holder``."""
    return ["nsenter", f"--target={holder}", "--net", "--mount", "--uts", "--", *map(str, cmd)]


def host_run(
    holder: int,
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` on a lab host (inside the holder's namespaces)."""
    return run(nsenter(holder, cmd), check=check, timeout=timeout)


def setup_host_mounts(
    lab: LabLayout, host: HostLayout, holder: int, instances_dir: Path, private_pki: bool = False
) -> None:
    """Host name, private libvirt directories and the instances directory, all inside the
    holder's mount namespace (and in a TLS lab, or with ``private_pki``, the host's own
    certificate directory on /etc/pki; with huge pages, a hugetlbfs); also
    drop its copies of /run/netns (they would pin the network namespaces of other hosts
    and labs). ``mount -n``: libmount would otherwise create /run/mount/utab in the /run
    that every namespace shares."""
    host_run(holder, ["hostname", host.name])
    host_run(holder, ["umount", "-n", "--recursive", "--lazy", "/run/netns"], check=False)
    for key, target in PRIVATE_DIRS.items():
        src = host.private_dir(key)
        src.mkdir(parents=True, exist_ok=True)
        host_run(holder, ["mount", "-n", "--bind", src, target])
    host.backing_path(INSTANCES_PATH).mkdir(parents=True, exist_ok=True)
    instances_dir.mkdir(parents=True, exist_ok=True)
    host_run(holder, ["mount", "-n", "--bind", instances_dir, INSTANCES_PATH])
    if host.tls or private_pki:
        host.pki_dir.mkdir(parents=True, exist_ok=True)
        host_run(holder, ["mount", "-n", "--bind", host.pki_dir, ETC_PKI])
    if host.hugepages:
        host.backing_path(HUGETLBFS_MOUNT).mkdir(exist_ok=True)
        host_run(holder, ["mount", "-n", "-t", "hugetlbfs", "hugetlbfs", HUGETLBFS_MOUNT])


def holder_alive(pid: int | None, netns: str) -> bool:
    """Whether ``pid`` is a live process in the named network namespace."""
    if pid is None or start_time(pid) is None:
        return False
    want = netns_id(netns)
    return want is not None and ns_id(f"/proc/{pid}/ns/net") == want


def delete_host_network(lab: LabLayout, host: HostLayout) -> None:
    """Remove the host's veth pair, namespace and /etc/netns entry (each if present)."""
    if link_exists(host.veth):
        run(["ip", "link", "del", host.veth], check=False)
    if host.netns in netns_list():
        run(["ip", "netns", "del", host.netns])
    if host.etc_netns_dir.exists():
        for f in host.etc_netns_dir.iterdir():
            f.unlink()
        with contextlib.suppress(OSError):
            host.etc_netns_dir.rmdir()


def delete_bridge(lab: LabLayout) -> None:
    if link_exists(lab.bridge):
        run(["ip", "link", "del", lab.bridge])
