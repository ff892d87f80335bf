"""The lab's record that ``lab up`` writes (``inventory.yaml``): what a driver or test
needs to use the lab; beside it the same hosts as a standard Ansible inventory
(``hosts.yml``, :mod:`livemig.drivers.lab.ansible_inventory`), which livemig and Ansible
both read.

Example (``/var/tmp/livemig-lab/livemig/inventory.yaml``)::

    lab: livemig
    lab_dir: /var/tmp/livemig-lab/livemig
    storage: shared
    instances_path: /var/lib/libvirt/instances
    console_dir: /var/tmp/livemig-lab/livemig/consoles
    storage_pool: instances
    network: 198.18.0.0/24
    bridge: {name: livemig-br, address: 198.18.0.1}
    image: {kernel: /var/cache/livemig/image/<hash>/vmlinuz, initrd: .../initrd.img}
    hosts:
    - name: lab1
      address: 198.18.0.11
      uri: qemu+tcp://198.18.0.11/system
      netns: livemig-lab1
      host_uuid: 0c6c...
      instances_dir: /var/tmp/livemig-lab/livemig/instances
      shaping_mbit: null
      pids: {holder: 1234, virtlogd: 1240, libvirtd: 1243}
    tls: false
    hugepages: false

In a TLS lab (``tls: true``) each ``uri`` is
``qemu+tls://ADDRESS/system?pkipath=<lab_dir>/pki/client``: the root namespace's client
certificate and the lab's CA (keys are in files, never in the inventory). ``pids`` follow
the daemons through faults (a host that is down lists only its ``holder``).

``instances_path`` is where every host sees its instances directory; ``instances_dir`` is
the same directory seen from the root namespace (one directory for all hosts in ``shared``
mode, one per host in ``local`` mode). ``console_dir`` is at the same path everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from livemig.drivers.lab.errors import LabError


@dataclass(frozen=True, kw_only=True)
class HostEntry:
    """One host of the lab as the inventory lists it."""

    name: str
    address: str
    uri: str
    netns: str
    host_uuid: str
    instances_dir: str
    shaping_mbit: float | None = None
    pids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Inventory:
    """The whole lab as the inventory lists it."""

    lab: str
    lab_dir: str
    storage: str
    instances_path: str
    console_dir: str
    storage_pool: str
    network: str
    bridge: dict[str, str]
    image: dict[str, str] | None
    hosts: list[HostEntry]
    #: libvirtd is reached over TLS (``qemu+tls``) with the client certificates in the
    #: host uri's ``pkipath``; migrations can use ``VIR_MIGRATE_TLS``.
    tls: bool = False
    #: guests take their RAM from the machine's hugetlb pool
    #: (:mod:`livemig.drivers.lab.hugepages`, ``lab up --hugepages``).
    hugepages: bool = False

    def host(self, name: str) -> HostEntry:
        for h in self.hosts:
            if h.name == name:
                return h
        raise LabError(f"inventory of lab {self.lab!r} has no host {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        try:
            hosts = [HostEntry(**h) for h in data["hosts"]]
            return cls(**{**data, "hosts": hosts})
        except (KeyError, TypeError) as exc:
            raise LabError(f"inventory is malformed: {exc}") from exc


def write_inventory(inv: Inventory, path: Path) -> Path:
    """Write ``inv`` as YAML to ``path`` (atomically) and return the path."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(inv.to_dict(), sort_keys=False, default_flow_style=None))
    tmp.replace(path)
    return path


def load_inventory(path: Path | str) -> Inventory:
    """Read an inventory file written by ``lab up``."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as exc:
        raise LabError(f"{p}: no inventory (is the lab up?)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"{p}: unreadable ({exc})") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise LabError(f"{p}:{line} not YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(data, dict):
        raise LabError(f"{p}: not an inventory mapping")
    try:
        return Inventory.from_dict(data)
    except LabError as exc:
        raise LabError(f"{p}: {exc}") from exc
