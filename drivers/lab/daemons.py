"""Each lab host's own virtlogd and libvirtd: configuration, start, readiness, the
``instances`` storage pool, and destroying the host's domains before it goes down.

Daemons are started with ``-d -p <pidfile>`` inside the host's namespaces and tracked by
pid and start time; they are never looked up or stopped by name.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from livemig.drivers.lab import pki
from livemig.drivers.lab.errors import LabError
from livemig.drivers.lab.hugepages import HUGETLBFS_MOUNT
from livemig.drivers.lab.layout import INSTANCES_PATH, HostLayout
from livemig.drivers.lab.netns import host_run
from livemig.drivers.lab.proc import Tracked, read_pidfile, run, track, wait_for

POOL_NAME = "instances"


def libvirtd_conf(host: HostLayout) -> str:
    """libvirtd.conf. Plain TCP without auth (lab use only!), or in a TLS lab x509 over TLS
    with TCP off; either way listening on the host's own lab address only, which is
    reachable from the lab's bridge and nowhere else.

    >>> from livemig.drivers.lab.layout import lab_layout
    >>> conf = libvirtd_conf(lab_layout("t", 1).hosts[0])
    >>> "listen_tcp = 1" in conf and 'auth_tcp = "none"' in conf and "listen_tls = 0" in conf
    True
    >>> conf = libvirtd_conf(lab_layout("t", 1, tls=True).hosts[0])
    >>> "listen_tcp = 0" in conf and "listen_tls = 1" in conf and "auth_tcp" not in conf
    True
    """
    if host.tls:
        transport = [
            "listen_tls = 1",
            "listen_tcp = 0",
            "# the client certificate, checked against the lab's own CA, is the authentication",
            'auth_tls = "none"',
            f'key_file = "{pki.LIBVIRT_SERVER_KEY}"',
            f'cert_file = "{pki.LIBVIRT_SERVER_CERT}"',
            f'ca_file = "{pki.LIBVIRT_CA}"',
            "tls_no_verify_certificate = 0",
        ]
    else:
        transport = ["listen_tls = 0", "listen_tcp = 1", 'auth_tcp = "none"']
    return "\n".join(
        [
            "# livemig lab host " + host.name,
            *transport,
            f'listen_addr = "{host.address}"',
            'auth_unix_rw = "none"',
            'auth_unix_ro = "none"',
            f'host_uuid = "{host.host_uuid}"',
            'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"',
            "",
        ]
    )


def qemu_conf(host: HostLayout) -> str:
    """qemu.conf: QEMU as root with no confinement, migration on the host's lab address;
    in a TLS lab, migration TLS with the host's certificates (client ones verified); with
    huge pages, the host's hugetlbfs.

    >>> from livemig.drivers.lab.layout import lab_layout
    >>> conf = qemu_conf(lab_layout("t", 1, tls=True).hosts[0])
    >>> 'migrate_tls_x509_cert_dir = "/etc/pki/qemu"' in conf
    True
    >>> qemu_conf(lab_layout("t", 1, hugepages=True).hosts[0]).splitlines()[-1]
    'hugetlbfs_mount = "/var/lib/libvirt/hugepages"'
    """
    tls = (
        [
            f'default_tls_x509_cert_dir = "{pki.QEMU_TLS_DIR}"',
            "default_tls_x509_verify = 1",
            f'migrate_tls_x509_cert_dir = "{pki.QEMU_TLS_DIR}"',
            "migrate_tls_x509_verify = 1",
        ]
        if host.tls
        else []
    )
    huge = [f'hugetlbfs_mount = "{HUGETLBFS_MOUNT}"'] if host.hugepages else []
    return "\n".join(
        [
            "# livemig lab host " + host.name,
            'user = "root"',
            'group = "root"',
            'security_driver = "none"',
            "dynamic_ownership = 0",
            "remember_owner = 0",
            "cgroup_controllers = [ ]",
            "namespaces = [ ]",
            f'migration_host = "{host.address}"',
            f'migration_address = "{host.address}"',
            *tls,
            *huge,
            "",
        ]
    )


def virtlogd_conf() -> str:
    return 'log_outputs = "3:file:/var/log/libvirt/virtlogd.log"\n'


def write_configs(host: HostLayout) -> None:
    """Write the three config files into the host's private /etc/libvirt."""
    etc = host.private_dir("etc")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "libvirtd.conf").write_text(libvirtd_conf(host))
    (etc / "qemu.conf").write_text(qemu_conf(host))
    (etc / "virtlogd.conf").write_text(virtlogd_conf())


def _start_daemon(holder: int, argv: list[str], pidfile: Path, what: str) -> Tracked:
    pidfile.unlink(missing_ok=True)
    host_run(holder, argv, timeout=60)
    wait_for(f"{what} pidfile {pidfile}", lambda: read_pidfile(pidfile) is not None, timeout=10)
    pid = read_pidfile(pidfile)
    assert pid is not None
    return track(pid)


def start_virtlogd(host: HostLayout, holder: int) -> Tracked:
    argv = ["virtlogd", "-d", "-p", str(host.virtlogd_pidfile), "-f", "/etc/libvirt/virtlogd.conf"]
    return _start_daemon(holder, argv, host.virtlogd_pidfile, f"virtlogd of {host.name}")


def libvirtd_cpu() -> int:
    """The one CPU every lab libvirtd runs on (the lowest this process may use).

    libvirt keeps its QEMU capabilities cache only while the host's cpuid reads the same,
    and cpuid leaf 0x1f reports the x2APIC id of the CPU that reads it: a libvirtd that
    runs on another CPU than the one that filled the cache throws it away and probes QEMU
    again (about 8 s, 4 s per emulator, at lab up or at the host's first domain). Pinned,
    every libvirtd reads the same cpuid. libvirt gives each QEMU all the host's CPUs again,
    so the guests are not pinned.
    """
    return min(os.sched_getaffinity(0))


def start_libvirtd(host: HostLayout, holder: int) -> Tracked:
    argv = ["taskset", "-c", str(libvirtd_cpu()),
            "libvirtd", "--listen", "-d", "-p", str(host.libvirtd_pidfile),
            "-f", "/etc/libvirt/libvirtd.conf"]  # fmt: skip
    return _start_daemon(holder, argv, host.libvirtd_pidfile, f"libvirtd of {host.name}")


def virsh(uri: str, *args: str, check: bool = True, timeout: float = 30.0) -> str:
    """Run ``virsh -c uri args...`` from the root namespace; return its stdout."""
    return run(["virsh", "-q", "-c", uri, *args], check=check, timeout=timeout).stdout


def answers(uri: str, timeout: float = 5.0) -> bool:
    """Whether the libvirtd at ``uri`` answers a request."""
    try:
        return virsh(uri, "uri", timeout=timeout).strip() == uri
    except LabError:
        return False


def wait_answers(host: HostLayout, daemon: Tracked, timeout: float = 60.0) -> None:
    """Wait until the host's libvirtd answers over qemu+tcp; fail early if it died."""
    deadline = time.monotonic() + timeout
    while not answers(host.uri, timeout=10):
        if not daemon.alive():
            log = host.private_dir("log") / "libvirtd.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise LabError(f"libvirtd of {host.name} died while starting; log tail:\n{tail}")
        if time.monotonic() > deadline:
            raise LabError(f"libvirtd of {host.name} does not answer at {host.uri}")
        time.sleep(0.2)


def define_pool(host: HostLayout) -> None:
    """A persistent, autostarted, active ``dir`` pool :data:`POOL_NAME` on the instances path."""
    virsh(host.uri, "pool-define-as", POOL_NAME, "dir", "--target", str(INSTANCES_PATH))
    virsh(host.uri, "pool-autostart", POOL_NAME)
    virsh(host.uri, "pool-start", POOL_NAME)


def pool_active(holder: int) -> bool:
    """Whether the host's :data:`POOL_NAME` pool is active (asked on the host itself)."""
    try:
        info = local_virsh(holder, "pool-info", POOL_NAME, timeout=10)
    except LabError:
        return False
    return any(line.split() == ["State:", "running"] for line in info.splitlines())


def ensure_pool(host: HostLayout, holder: int, timeout: float = 30.0) -> None:
    """Wait for the pool to be active after a (re)start; start it if autostart did not."""
    deadline = time.monotonic() + timeout
    while not pool_active(holder):
        host_run(holder, ["virsh", "-q", "-c", "qemu:///system", "pool-start", POOL_NAME],
                 check=False, timeout=10)  # fmt: skip
        if time.monotonic() > deadline:
            raise LabError(f"storage pool {POOL_NAME!r} of {host.name} does not become active")
        time.sleep(0.2)


def answers_locally(holder: int) -> bool:
    """Whether the host's libvirtd answers on its unix socket."""
    try:
        return bool(local_virsh(holder, "uri", timeout=10).strip())
    except LabError:
        return False


def local_virsh(holder: int, *args: str, timeout: float = 20.0) -> str:
    """``virsh`` on the host itself, through libvirtd's unix socket (no network, no TLS)."""
    cmd = ["virsh", "-q", "-c", "qemu:///system", *args]
    return host_run(holder, cmd, timeout=timeout).stdout


def destroy_domains(holder: int, timeout: float = 20.0) -> list[str]:
    """Destroy every running domain of the host's libvirtd; return their names.

    Works through the host's unix socket, so a host whose link is down is no slower."""
    names = [n for n in local_virsh(holder, "list", "--name", timeout=timeout).split() if n]
    for n in names:
        host_run(holder, ["virsh", "-q", "-c", "qemu:///system", "destroy", n],
                 check=False, timeout=timeout)  # fmt: skip
    return names


def _caps_dir(host: HostLayout) -> Path:
    return host.private_dir("cache") / "qemu" / "capabilities"


def seed_qemu_caps(host: HostLayout, seed: Path) -> None:
    """Give the host libvirt's QEMU capabilities cache from an earlier probe.

    Probing QEMU takes libvirtd 8-20 s of CPU per host on first use under TCG; libvirt
    checks a cached file (libvirt and QEMU versions, ctimes, kernel, CPU) and probes
    again if it does not match, so a stale seed costs only that probe.
    """
    files = sorted(seed.glob("*.xml")) if seed.is_dir() else []
    if not files:
        return
    dest = _caps_dir(host)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f.name)


def share_qemu_caps(hosts: list[HostLayout], seed: Path) -> None:
    """Make the first host's libvirtd probe QEMU (if its cache is stale or missing), then
    copy its cache to the other hosts and to ``seed`` for later labs."""
    if not hosts:
        return
    virsh(hosts[0].uri, "capabilities", timeout=120)
    files = sorted(_caps_dir(hosts[0]).glob("*.xml"))
    seed.mkdir(parents=True, exist_ok=True)
    for dest in [seed] + [_caps_dir(h) for h in hosts[1:]]:
        dest.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dest / f.name)


def host_uuid_of(uri: str) -> str:
    """The host UUID that the libvirtd at ``uri`` reports (from its capabilities)."""
    caps = virsh(uri, "capabilities")
    start = caps.index("<uuid>") + len("<uuid>")
    return caps[start : caps.index("</uuid>", start)]
