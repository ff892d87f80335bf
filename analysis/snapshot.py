"""A placement snapshot: hosts with their capacity, VMs with their demand and current host.

The input of the optimality bound (:mod:`livemig.analysis.optimum`). A consolidation
controller builds one per interval from plain data (:meth:`Snapshot.from_mapping`, or the
dataclasses directly); ``livemig optimum`` reads one from a YAML or JSON file
(:func:`load_snapshot`)::

    max_utilization: 0.9        # optional: the fraction of each host's CPU that may be used
    hosts:
      - {name: h1, cpu: 2660, ram: 4GiB}   # cpu: any unit (MIPS, cores), the VMs' unit
      - {name: h2, cpu: 2660, ram: 4GiB}   # ram: optional; on every host or on none
    vms:
      - {name: v1, cpu: 500, ram: 1GiB, host: h1}   # host: where it runs now (or null)

``cpu`` is a number >= 0 (> 0 for a host) in one unit for all; ``ram`` is a size with a
unit (``4GiB``) or a whole number of bytes (>= 1 MiB, as a JSON dump writes it). When the
hosts give ``ram``, every VM must too. Errors name the file, line and field.

>>> snap = Snapshot.from_mapping({
...     "hosts": [{"name": "h1", "cpu": 100}, {"name": "h2", "cpu": 100}],
...     "vms": [{"name": "a", "cpu": 30, "host": "h1"}, {"name": "b", "cpu": 40, "host": "h2"}]})
>>> snap.active_hosts, snap.total_cpu, snap.has_ram
(2, 70.0, False)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livemig.core.units import parse_bytes
from livemig.core.yaml_nodes import Field, ScenarioError, check_name, compose

MIN_RAM_BYTES = 2**20
"""A ``ram`` given as a bare number is bytes; below this it is surely a forgotten unit."""


class SnapshotError(ValueError):
    """A snapshot that is not consistent (unknown host, duplicate name, RAM on some hosts).

    ``kind`` (``"host"`` or ``"VM"``) and ``name`` say which entry it is about, if one.
    """

    def __init__(self, message: str, kind: str | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.name = kind, name


@dataclass(frozen=True)
class HostCapacity:
    """A host: its CPU capacity and (optionally) its RAM in bytes."""

    name: str
    cpu: float
    ram: int | None = None


@dataclass(frozen=True)
class VmDemand:
    """A VM: its current CPU demand, its RAM in bytes (optional) and where it runs now."""

    name: str
    cpu: float
    host: str | None
    ram: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Hosts and VMs at one moment; checked when made (:class:`SnapshotError`)."""

    hosts: tuple[HostCapacity, ...]
    vms: tuple[VmDemand, ...]
    max_utilization: float = 1.0

    def __post_init__(self) -> None:
        if not self.hosts:
            raise SnapshotError("a snapshot needs at least one host")
        if not (0 < self.max_utilization <= 1):
            raise SnapshotError(f"max_utilization {self.max_utilization} is out of range; "
                                "expected a fraction > 0 and <= 1")
        names = [h.name for h in self.hosts]
        _no_duplicates(names, "host")
        _no_duplicates([v.name for v in self.vms], "VM")
        for h in self.hosts:
            if not (math.isfinite(h.cpu) and h.cpu > 0):
                raise SnapshotError(f"host {h.name}: cpu {h.cpu} must be a number > 0",
                                    "host", h.name)
            if h.ram is not None and h.ram <= 0:
                raise SnapshotError(f"host {h.name}: ram {h.ram} must be > 0", "host", h.name)
        with_ram = [h.ram is not None for h in self.hosts]
        if any(with_ram) and not all(with_ram):
            missing = self.hosts[with_ram.index(False)].name
            raise SnapshotError(f"host {missing} has no ram but others do; expected ram on "
                                "every host or on none", "host", missing)
        known = set(names)
        for v in self.vms:
            if not (math.isfinite(v.cpu) and v.cpu >= 0):
                raise SnapshotError(f"VM {v.name}: cpu {v.cpu} must be a number >= 0",
                                    "VM", v.name)
            if v.host is not None and v.host not in known:
                raise SnapshotError(f"VM {v.name}: host {v.host!r} is not one of the hosts",
                                    "VM", v.name)
            if self.has_ram and v.ram is None:
                raise SnapshotError(f"VM {v.name} has no ram; expected ram on every VM when "
                                    "the hosts give theirs", "VM", v.name)
            if not self.has_ram and v.ram is not None:
                raise SnapshotError(f"VM {v.name} gives ram but the hosts do not; expected "
                                    "ram on every host too", "VM", v.name)
            if v.ram is not None and v.ram < 0:
                raise SnapshotError(f"VM {v.name}: ram {v.ram} must be >= 0", "VM", v.name)

    @property
    def has_ram(self) -> bool:
        """Is RAM a constraint (the hosts give theirs)?"""
        return self.hosts[0].ram is not None

    @property
    def active_hosts(self) -> int:
        """Hosts with at least one VM now."""
        return len({v.host for v in self.vms if v.host is not None})

    @property
    def total_cpu(self) -> float:
        """The VMs' CPU demand, summed."""
        return math.fsum(v.cpu for v in self.vms)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Snapshot:
        """A snapshot from plain data (the file's structure, sizes as bytes or unit strings)."""
        def ram(value: Any) -> int | None:
            if value is None or isinstance(value, int):
                return value
            return parse_bytes(value)

        hosts = tuple(HostCapacity(str(h["name"]), float(h["cpu"]), ram(h.get("ram")))
                      for h in data["hosts"])
        vms = tuple(VmDemand(str(v["name"]), float(v["cpu"]), v.get("host"), ram(v.get("ram")))
                    for v in data.get("vms", ()))
        return cls(hosts, vms, float(data.get("max_utilization", 1.0)))

    def as_mapping(self) -> dict[str, Any]:
        """The plain data :meth:`from_mapping` reads (and ``json.dumps`` writes).

        >>> snap = Snapshot((HostCapacity("h", 10.0),), (VmDemand("v", 2.0, "h"),))
        >>> Snapshot.from_mapping(json.loads(json.dumps(snap.as_mapping()))) == snap
        True
        """
        def drop_none(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if v is not None}

        return {
            "max_utilization": self.max_utilization,
            "hosts": [drop_none({"name": h.name, "cpu": h.cpu, "ram": h.ram})
                      for h in self.hosts],
            "vms": [drop_none({"name": v.name, "cpu": v.cpu, "ram": v.ram}) | {"host": v.host}
                    for v in self.vms],
        }


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SnapshotError(f"{what} name {name!r} appears twice; expected unique names",
                                what, name)
        seen.add(name)


# -- the file ---------------------------------------------------------------------------------
def _ram(f: Field) -> int:
    value = f.scalar("a size with a unit (4GiB) or a number of bytes")
    if isinstance(value, int) and not isinstance(value, bool):
        if value < MIN_RAM_BYTES:
            f.fail(f"{value} bytes is too small to be meant; expected a size with a unit "
                   "(e.g. 4GiB) or a number of bytes >= 1MiB")
        return value
    return int(f.quantity(parse_bytes, positive=True))


def _host(f: Field) -> HostCapacity:
    m = f.mapping(("name", "cpu", "ram"))
    name = _name(m.require("name", "the host's name"), "host")
    cpu = m.require("cpu", "the host's CPU capacity").number(positive=True)
    return HostCapacity(name, cpu, m.value("ram", _ram, None))


def _vm(f: Field) -> VmDemand:
    m = f.mapping(("name", "cpu", "ram", "host"))
    name = _name(m.require("name", "the VM's name"), "VM")
    cpu_field = m.require("cpu", "the VM's current CPU demand")
    cpu = cpu_field.number()
    if cpu < 0:
        cpu_field.fail(f"{cpu_field.describe()} is out of range; expected a number >= 0")
    host_field = m.get("host")
    host = None if host_field is None else host_field.text("a host's name", null=True)
    return VmDemand(name, cpu, host, m.value("ram", _ram, None))


def _name(f: Field, what: str) -> str:
    value = f.text(f"a {what} name")
    assert value is not None
    return check_name(f, value, what)


def parse_snapshot(text: str, source: str = "<string>") -> Snapshot:
    """A snapshot from YAML or JSON text; a problem is a :class:`ScenarioError` with the
    file, line and field (``FILE:LINE: vms[3].host: ...``)."""
    node = compose(text, source)
    if node is None:
        raise ScenarioError(source, 1, "", "empty file; expected a mapping with hosts and vms")
    root = Field(node, "", source)
    top = root.mapping(("hosts", "vms", "max_utilization"))
    hosts_field = top.require("hosts", "a list of hosts")
    hosts = [_host(f) for _, f in hosts_field.items("a list of hosts")]
    if not hosts:
        hosts_field.fail("no hosts; expected at least one")
    vms_field = top.get("vms")
    vm_fields = [] if vms_field is None else list(vms_field.items("a list of VMs"))
    vms = [_vm(f) for _, f in vm_fields]
    util_field = top.get("max_utilization")
    util = 1.0 if util_field is None else util_field.number(positive=True, limit=1.0)
    try:
        return Snapshot(tuple(hosts), tuple(vms), util)
    except SnapshotError as err:  # name the entry at fault
        entries = [f for _, f in hosts_field.items()] if err.kind == "host" else \
            [f for _, f in vm_fields]
        named = [f for f in entries if _entry_name(f) == err.name]
        where = named[-1] if named else root
        raise ScenarioError(source, where.line, where.path, str(err)) from None


def _entry_name(f: Field) -> str | None:
    name = f.mapping(("name", "cpu", "ram", "host")).get("name")
    return None if name is None else str(name.node.value)


def load_snapshot(path: str | Path) -> Snapshot:
    """The snapshot in the YAML or JSON file ``path`` (see the module docstring)."""
    p = Path(path)
    return parse_snapshot(p.read_text(encoding="utf-8"), str(p))


def dump_snapshot(snapshot: Snapshot, path: str | Path) -> None:
    """Write ``snapshot`` as JSON (which :func:`load_snapshot` reads back)."""
    Path(path).write_text(json.dumps(snapshot.as_mapping(), indent=1) + "\n", encoding="utf-8")
