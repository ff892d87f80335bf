"""Names, addresses and paths of a lab, derived from its name alone (pure, no side effects).

Everything ``up`` creates and ``down`` removes is named here, so ``down`` can find the
leftovers of a killed run without any state file.

>>> lab = lab_layout("livemig", hosts=2)
>>> lab.bridge, lab.bridge_cidr
('livemig-br', '198.18.0.1/24')
>>> [(h.name, h.netns, h.address, h.veth) for h in lab.hosts][1]
('lab2', 'livemig-lab2', '198.18.0.12', 'livemig-h2')
>>> lab.hosts[0].uri
'qemu+tcp://198.18.0.11/system'
>>> lab_layout("livemig", hosts=1, tls=True).hosts[0].uri
'qemu+tls://198.18.0.11/system?pkipath=/var/tmp/livemig-lab/livemig/pki/client'
>>> lab_layout("Bad name!", hosts=2)
Traceback (most recent call last):
...
livemig.drivers.lab.errors.LabError: lab name(='Bad name!') must match [a-z][a-z0-9-]{0,8}
"""

from __future__ import annotations

import ipaddress
import re
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from livemig.drivers.lab.errors import LabError

DEFAULT_LAB = "livemig"
DEFAULT_BASE_DIR = Path("/var/tmp/livemig-lab")
#: Where each host sees its instances directory (the same path in every host).
INSTANCES_PATH = Path("/var/lib/libvirt/instances")
#: Directories that every host gets privately (bind mounts inside its mount namespace).
PRIVATE_DIRS: dict[str, Path] = {
    "etc": Path("/etc/libvirt"),
    "run": Path("/run/libvirt"),
    "lib": Path("/var/lib/libvirt"),
    "log": Path("/var/log/libvirt"),
    "cache": Path("/var/cache/libvirt"),
}
#: Where a TLS lab's host sees its own certificates (a bind mount of its ``pki`` directory).
ETC_PKI = Path("/etc/pki")
#: libvirtd's ports: plain TCP and TLS.
LIBVIRT_TCP_PORT = 16509
LIBVIRT_TLS_PORT = 16514
STORAGE_MODES = ("shared", "local")
MAX_HOSTS = 50
_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,8}")
_UUID_NS = uuid.UUID("6f1c2a1e-3b7d-4c1e-9a53-6c6976656d69")


@dataclass(frozen=True, kw_only=True)
class HostLayout:
    """One lab host: a network + mount + UTS namespace running its own libvirtd."""

    name: str  # host name inside the lab (UTS name and /etc/hosts entry), e.g. "lab1"
    index: int  # 1-based
    netns: str  # `ip netns` name, e.g. "livemig-lab1"
    address: str  # IPv4 address on the lab bridge
    veth: str  # root-namespace end of the host's veth pair (the other end is eth0)
    state_dir: Path  # private files of this host, seen from the root namespace
    host_uuid: str  # libvirtd's host_uuid (distinct per host; migration needs that)
    #: TLS labs: the root namespace's client certificates (libvirt's ``pkipath``); else None.
    client_pki_dir: Path | None = None
    #: guests take their RAM from the machine's hugetlb pool (:mod:`.hugepages`).
    hugepages: bool = False

    @property
    def tls(self) -> bool:
        return self.client_pki_dir is not None

    @property
    def uri(self) -> str:
        """libvirt URI that reaches this host's libvirtd from the root namespace."""
        if self.client_pki_dir is not None:
            return f"qemu+tls://{self.address}/system?pkipath={self.client_pki_dir}"
        return f"qemu+tcp://{self.address}/system"

    @property
    def port(self) -> int:
        """The TCP port libvirtd listens on (TLS or plain TCP)."""
        return LIBVIRT_TLS_PORT if self.tls else LIBVIRT_TCP_PORT

    @property
    def pki_dir(self) -> Path:
        """Backing directory of the host's :data:`ETC_PKI` (TLS labs only)."""
        return self.state_dir / "pki"

    def private_dir(self, key: str) -> Path:
        """Backing directory (root-namespace view) of one of :data:`PRIVATE_DIRS`."""
        return self.state_dir / key

    def backing_path(self, inside: Path) -> Path:
        """Where a path inside one of the host's :data:`PRIVATE_DIRS` is, seen from the
        root namespace (e.g. to make a mount point there before mounting on it).

        >>> host = lab_layout("livemig", hosts=1).hosts[0]
        >>> str(host.backing_path(INSTANCES_PATH))
        '/var/tmp/livemig-lab/livemig/hosts/lab1/lib/instances'
        """
        for key, target in PRIVATE_DIRS.items():
            if inside.is_relative_to(target):
                return self.private_dir(key) / inside.relative_to(target)
        raise LabError(f"{inside} is in none of a host's private directories")

    @property
    def pids_file(self) -> Path:
        return self.state_dir / "pids.json"

    @property
    def libvirtd_pidfile(self) -> Path:
        return self.state_dir / "libvirtd.pid"

    @property
    def virtlogd_pidfile(self) -> Path:
        return self.state_dir / "virtlogd.pid"

    @property
    def etc_netns_dir(self) -> Path:
        """``ip netns exec`` bind-mounts the files in here over /etc (hosts file)."""
        return Path("/etc/netns") / self.netns


@dataclass(frozen=True, kw_only=True)
class LabLayout:
    """A whole lab: bridge, hosts, directories."""

    name: str
    base_dir: Path
    network: ipaddress.IPv4Network
    hosts: tuple[HostLayout, ...]

    @property
    def lab_dir(self) -> Path:
        return self.base_dir / self.name

    @property
    def inventory_path(self) -> Path:
        return self.lab_dir / "inventory.yaml"

    @property
    def ansible_inventory_path(self) -> Path:
        """The lab's hosts as an Ansible inventory (``kvm_hosts``), for Ansible and livemig."""
        return self.lab_dir / "hosts.yml"

    @property
    def tls(self) -> bool:
        return bool(self.hosts) and self.hosts[0].tls

    @property
    def hugepages(self) -> bool:
        return bool(self.hosts) and self.hosts[0].hugepages

    @property
    def pki_dir(self) -> Path:
        """TLS labs: the lab's CA certificate and the root namespace's client credentials."""
        return self.lab_dir / "pki"

    @property
    def client_pki_dir(self) -> Path:
        return self.pki_dir / "client"

    @property
    def bridge(self) -> str:
        return f"{self.name}-br"

    @property
    def bridge_address(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def bridge_cidr(self) -> str:
        return f"{self.bridge_address}/{self.network.prefixlen}"

    @property
    def shared_instances_dir(self) -> Path:
        """Backing directory of the instances path in ``shared`` storage mode."""
        return self.lab_dir / "instances"

    @property
    def console_dir(self) -> Path:
        """A directory at the same path in every host and in the root namespace."""
        return self.lab_dir / "consoles"

    def instances_dir(self, host: HostLayout, storage: str) -> Path:
        """Root-namespace view of ``host``'s :data:`INSTANCES_PATH` in a storage mode."""
        if storage == "shared":
            return self.shared_instances_dir
        return host.state_dir / "instances"

    def host(self, name: str) -> HostLayout:
        for h in self.hosts:
            if name in (h.name, h.netns):
                return h
        raise LabError(f"lab {self.name!r} has no host {name!r}")


def default_network(name: str) -> ipaddress.IPv4Network:
    """The /24 of a lab in 198.18.0.0/15: .0 for the default lab, else one from its name.

    >>> str(default_network("livemig"))
    '198.18.0.0/24'
    >>> default_network("other") == default_network("other")
    True
    """
    third = 0 if name == DEFAULT_LAB else 1 + zlib.crc32(name.encode()) % 255
    return ipaddress.IPv4Network(f"198.18.{third}.0/24")


def lab_layout(
    name: str = DEFAULT_LAB,
    hosts: int = 2,
    base_dir: Path | str = DEFAULT_BASE_DIR,
    subnet: str | None = None,
    tls: bool = False,
    hugepages: bool = False,
) -> LabLayout:
    """Name everything of lab ``name`` with ``hosts`` hosts (``tls``: hosts reached over TLS;
    ``hugepages``: guests on huge pages)."""
    if not _NAME_RE.fullmatch(name):
        raise LabError(f"lab name(={name!r}) must match {_NAME_RE.pattern}")
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"hosts(={hosts}) must be between 1 and {MAX_HOSTS}")
    network = ipaddress.IPv4Network(subnet) if subnet else default_network(name)
    lab_range = ipaddress.IPv4Network("198.18.0.0/15")
    if not network.subnet_of(lab_range) or network.prefixlen > 25:
        raise LabError(f"subnet(={network}) must be a /25 or larger inside {lab_range}")
    base = Path(base_dir)
    client_pki = base / name / "pki" / "client" if tls else None
    hs = tuple(
        HostLayout(
            name=f"lab{i}",
            index=i,
            netns=f"{name}-lab{i}",
            address=str(network.network_address + 10 + i),
            veth=f"{name}-h{i}",
            state_dir=base / name / "hosts" / f"lab{i}",
            host_uuid=str(uuid.uuid5(_UUID_NS, f"{name}/lab{i}")),
            client_pki_dir=client_pki,
            hugepages=hugepages,
        )
        for i in range(1, hosts + 1)
    )
    return LabLayout(name=name, base_dir=base, network=network, hosts=hs)
