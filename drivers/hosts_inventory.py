"""One inventory for Ansible and livemig: the hosts the real driver migrates between.

livemig reads a standard Ansible inventory, INI or YAML, with ansible-core's own parser
(``InventoryManager`` + ``VariableManager``: groups, children, ``[group:vars]``,
``group_vars/`` and ``host_vars/`` beside the file, all as Ansible resolves them; install
with ``pip install 'livemig[ansible]'``). The hosts are those of the group ``kvm_hosts``;
each needs these variables (set on the host or inherited from a group)::

    [kvm_hosts]
    kvm1 ansible_host=10.0.0.1 libvirt_uri=qemu+tls://kvm1/system
    kvm2 ansible_host=10.0.0.2 libvirt_uri=qemu+tls://kvm2/system

    [kvm_hosts:vars]
    migration_address=...        # optional: the address QEMU's stream goes to
    instances_path=/var/lib/libvirt/instances   # the ``instances`` storage pool's path
    storage=shared               # shared | local

=======================  ==================================================================
variable                 meaning
=======================  ==================================================================
``libvirt_uri``          required; the URI livemig opens (``qemu+tcp://``, ``qemu+tls://``,
                         ``qemu+ssh://``)
``instances_path``       required; where the host's ``instances`` pool keeps disks and images
``storage``              required; ``shared`` (one pool seen by every host) or ``local``
``ansible_host``         the address Ansible reaches (default: the host name)
``migration_address``    where QEMU's migration stream goes (default: ``ansible_host``)
``livemig_faults``       ``ansible``: faults through Ansible (see ``drivers/ansible_faults.py``);
                         ``lab``: the namespace lab's own; unset: faults are refused
``livemig_accel``        ``auto`` (KVM where libvirt offers it, else TCG), ``kvm`` or ``qemu``
``livemig_console_dir``  image guests' serial consoles go to ``DIR/VM.log`` on the host
                         (default: a pty)
``livemig_lab``,         the namespace lab's name and the lab's own record (pids, guest image,
``livemig_lab_record``   console directory); written by ``livemig lab up``
=======================  ==================================================================

The YAML file that ``lab up`` wrote before (``inventory.yaml``, a mapping with ``lab``,
``lab_dir`` and a ``hosts:`` list) still reads: it is the lab's own record, and
:func:`load_hosts_inventory` takes it as the inventory of that lab (no ansible-core needed).

Every problem is one :class:`InventoryError` line naming the file, the line where Ansible
knows it, the host, the variable and what was expected.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The Ansible group whose hosts livemig uses (the ``ansible`` playbooks provision it).
GROUP = "kvm_hosts"
STORAGE_KINDS = ("shared", "local")
ACCELS = ("auto", "kvm", "qemu")
FAULT_METHODS = ("ansible", "lab")


class InventoryError(ValueError):
    """The inventory cannot be used: one line, file (and line) first."""


@dataclass(frozen=True, kw_only=True)
class InventoryHost:
    """One host of the inventory, its variables resolved as Ansible resolves them."""

    name: str
    uri: str
    address: str
    migration_address: str
    instances_path: str
    storage: str
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class HostsInventory:
    """The ``kvm_hosts`` of an inventory file, in the file's order."""

    path: Path
    hosts: tuple[InventoryHost, ...]
    #: the namespace lab's name and record file (None on real hosts)
    lab: str | None = None
    lab_record: Path | None = None

    def host(self, name: str) -> InventoryHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def var(self, name: str, default: Any = None) -> Any:
        """A variable every host agrees on (the first host's; default when unset)."""
        return self.hosts[0].vars.get(name, default) if self.hosts else default

    @property
    def faults(self) -> str | None:
        """How faults are injected: ``lab``, ``ansible`` or None (refused)."""
        return self.var("livemig_faults")

    @property
    def accel(self) -> str:
        return str(self.var("livemig_accel", "auto"))


def load_hosts_inventory(path: str | Path) -> HostsInventory:
    """Read ``path``: an Ansible inventory (INI or YAML), or the lab's own YAML record."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError as exc:
        raise InventoryError(f"{p}: no such inventory file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"{p}: unreadable ({exc})") from exc
    record = _lab_record(text)
    if record is not None:
        return _from_lab_record(p, record)
    return _from_ansible(p)


# -- the lab's own record (the inventory.yaml of earlier releases) ----------------------------


def _lab_record(text: str) -> dict[str, Any] | None:
    """The parsed lab record if ``text`` is one (a mapping with lab, lab_dir, hosts list)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None  # maybe INI; Ansible's parser says what is wrong
    if isinstance(data, dict) and {"lab", "lab_dir"} <= data.keys() and isinstance(
            data.get("hosts"), list):
        return data
    return None


def _from_lab_record(path: Path, data: dict[str, Any]) -> HostsInventory:
    hosts = []
    for index, entry in enumerate(data["hosts"]):
        if not isinstance(entry, dict) or not {"name", "uri", "address"} <= entry.keys():
            raise InventoryError(f"{path}: hosts[{index}]: expected a mapping with name, "
                                 "address and uri (the lab's record)")
        lab_vars = {"livemig_lab": data["lab"], "livemig_lab_record": str(path),
                    "livemig_faults": "lab", "livemig_accel": "qemu",
                    "livemig_console_dir": str(data.get("console_dir", ""))}
        hosts.append(InventoryHost(
            name=str(entry["name"]), uri=str(entry["uri"]), address=str(entry["address"]),
            migration_address=str(entry["address"]),
            instances_path=str(data.get("instances_path", "")),
            storage=str(data.get("storage", "shared")), vars=lab_vars,
        ))
    return HostsInventory(path=path, hosts=tuple(hosts), lab=str(data["lab"]) or None,
                          lab_record=path)


# -- an Ansible inventory -------------------------------------------------------------------


def _from_ansible(path: Path) -> HostsInventory:
    try:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.vars.manager import VariableManager
    except ImportError as exc:
        raise InventoryError(
            f"{path}: reading an Ansible inventory needs ansible-core "
            f"(pip install 'livemig[ansible]'): {exc}") from exc
    loader = DataLoader()
    _parse_check(path, loader)
    with _quiet():
        manager = InventoryManager(loader=loader, sources=[str(path.resolve())])
    group = manager.groups.get(GROUP)
    if group is None or not group.get_hosts():
        raise InventoryError(
            f"{path}: no hosts in group {GROUP!r}; expected the KVM hosts in a group "
            f"{GROUP} (INI: [{GROUP}]; YAML: all: children: {GROUP}: hosts: ...)")
    variables = VariableManager(loader=loader, inventory=manager)
    hosts = []
    for host in group.get_hosts():
        resolved = variables.get_vars(host=host, include_hostvars=False)
        hosts.append(_host(path, host.name, resolved))
    lab = {h.vars.get("livemig_lab") for h in hosts}
    record = {h.vars.get("livemig_lab_record") for h in hosts}
    lab_name = lab.pop() if len(lab) == 1 else None
    lab_record = record.pop() if len(record) == 1 else None
    return HostsInventory(path=path, hosts=tuple(hosts), lab=lab_name or None,
                          lab_record=_relative(path, lab_record) if lab_record else None)


#: The variables of :class:`InventoryHost`, what each must be.
_REQUIRED = {
    "libvirt_uri": "a libvirt URI such as qemu+tls://kvm1/system",
    "instances_path": "the directory of the host's 'instances' storage pool",
    "storage": "shared or local",
}


def _host(path: Path, name: str, v: dict[str, Any]) -> InventoryHost:
    for key, expected in _REQUIRED.items():
        if v.get(key) in (None, ""):
            raise InventoryError(f"{_where(path, v.get('inventory_hostname'))}: host {name}: "
                                 f"no {key}; expected {key} = {expected} "
                                 f"(on the host or its group {GROUP})")
        if not isinstance(v[key], str):
            _fail(path, name, key, v[key], expected)
    if v["storage"] not in STORAGE_KINDS:
        _fail(path, name, "storage", v["storage"], "shared or local")
    if "://" not in v["libvirt_uri"]:
        _fail(path, name, "libvirt_uri", v["libvirt_uri"], _REQUIRED["libvirt_uri"])
    for key, allowed in (("livemig_accel", ACCELS), ("livemig_faults", FAULT_METHODS)):
        if key in v and v[key] not in allowed:
            _fail(path, name, key, v[key], " or ".join(allowed))
    address = str(v.get("ansible_host") or name)
    own = {k: _plain(val) for k, val in v.items()
           if not k.startswith(("inventory_", "ansible_", "group_names", "groups",
                                "omit", "playbook_dir"))}
    own["ansible_host"] = address
    return InventoryHost(
        name=name, uri=str(v["libvirt_uri"]), address=address,
        migration_address=str(v.get("migration_address") or address),
        instances_path=str(v["instances_path"]), storage=str(v["storage"]), vars=own,
    )


def _fail(path: Path, host: str, key: str, value: Any, expected: str) -> None:
    raise InventoryError(f"{_where(path, value)}: host {host}: {key}={value!r}; expected "
                         f"{expected}")


def _where(path: Path, value: Any) -> str:
    """``file:line`` of a value Ansible read (it tags each with its origin), else ``file``."""
    try:
        from ansible._internal._datatag._tags import Origin

        origin = Origin.get_tag(value)
    except ImportError:
        origin = None
    if origin is None or not origin.path:
        return str(path)
    return f"{origin.path}:{origin.line_num}" if origin.line_num else str(origin.path)


def _plain(value: Any) -> Any:
    """A value without Ansible's tags (plain str/int/list/dict)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _relative(path: Path, other: str) -> Path:
    p = Path(other)
    return p if p.is_absolute() else path.parent / p


def _parse_check(path: Path, loader: Any) -> None:
    """Parse with the one plugin the file's form calls for, for its own error message
    (``InventoryManager`` tries every plugin and reports only "failed to parse")."""
    from ansible.errors import AnsibleError
    from ansible.inventory.data import InventoryData
    from ansible.plugins.loader import inventory_loader

    kind = "yaml" if path.suffix in (".yml", ".yaml") else "ini"
    plugin = inventory_loader.get(kind)
    try:
        with _quiet():
            plugin.parse(InventoryData(), loader, str(path.resolve()), cache=False)
    except AnsibleError as exc:
        message = getattr(exc, "message", None) or str(exc)
        first = " ".join(str(message).split("\n\n")[0].split())
        where = _where(path, getattr(exc, "obj", None))
        raise InventoryError(f"{where}: not an Ansible inventory in {kind.upper()}: {first}; "
                             f"expected group {GROUP} with its hosts and variables") from exc


@contextlib.contextmanager
def _quiet() -> Any:
    """Ansible's warnings go to stderr by itself; livemig reports errors as one line."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield
