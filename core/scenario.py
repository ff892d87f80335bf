"""Scenario files: the YAML schema and its loader.

``load_scenario(path)`` / ``parse_scenario(text, source)`` return a frozen
:class:`~livemig.core.model.Scenario` or raise :class:`ScenarioError`, whose message is
one line: ``FILE:LINE: FIELD.PATH: what is wrong; expected ...``. Files are read with
PyYAML's SafeLoader only. Unknown keys, duplicate keys and unsupported YAML tags are
errors. Quantities carry units (:mod:`livemig.core.units`): sizes ``4GiB`` ``500MB``,
rates ``10Gbit/s`` ``50MiB/s``, durations ``300ms`` ``2s`` ``5min``; a bare number is
only accepted when it is ``0``.

Schema (``*`` required, ``=`` default)::

    name: text                 = the file name without extension
    seed: int >= 0             = 0        seeds every random choice of a run
    hosts:*                    list of hosts or host groups, in scenario order
      - name: node-a           one host, or a group: prefix: node-  count: 12
                               -> node-01 .. node-12 (index from 1, zero-padded to
                               the width of count)
        ram:* 256GiB           vcpus:* 64              disk: 2TB  (= 0)
        hypervisor_type: QEMU  hypervisor_version: "10.0.2" (= 10.0.2; an int is
                               libvirt's encoding major*1e6 + minor*1e3 + micro)
        cpu_model: Skylake-Server   one of CPU_MODELS, oldest first; a source CPU runs on a
                               destination with the same or a newer model
        storage: shared | local (= shared)    service: true (false: no compute service)
        rack: r1               or, on a group, racks: N -> hosts split in contiguous,
                               as-even-as-possible blocks over racks rack-1 .. rack-N
    vms:*                      list of VMs or VM groups (name: or prefix: + count:)
      - prefix: web-   count: 20
        host:* node-a          a host name, or a glob (node-*, node-0[1-4]): VMs are dealt
                               round-robin over the matching hosts in scenario order; the
                               deal continues across entries that use the same glob
        ram:* 4GiB             vcpus: 2 (= 1)    disk: 20GiB (= 0; local-disk size)
        disk_allocated: 5GiB   (= disk; what block migration with disk_over_commit counts)
        used_memory: 3GiB      (= ram; non-zero memory sent in round 0; <= ram)
        working_set: 512MiB    (= used_memory / 4; memory the guest keeps dirtying)
        dirty_rate: 50MiB/s    (= 0; >= 0)       volume_backed: false
    network:
      host_link: 10Gbit/s      (= 10Gbit/s; each host's link, each direction; > 0)
      hosts_per_rack: 10       puts hosts without a rack into racks of this size, in order,
                               named rack-K with the lowest K not used yet
      uplink: 40Gbit/s         rack switch <-> core; required when hosts are in racks
    policy:
      scheduler: {filters: [RamFilter, ComputeFilter, ...], ram_allocation_ratio: 1.5,
                  ram_weight_multiplier: 1.0, heuristic: weighed | first_fit | best_fit
                  | worst_fit | random, max_retries: -1 (-1: until no host is left)}
      migration: {live_migration_flag: "VIR_MIGRATE_LIVE, VIR_MIGRATE_PEER2PEER" (Nova's
                  comma-separated string, or a YAML list of names), block_migration_flag,
                  uri: "qemu+tcp://%s/system" (exactly one %s), bandwidth: 0 (0 = unlimited),
                  max_downtime: 500ms, poll_interval: 500ms, max_concurrent_per_host: 1 (>= 1),
                  switchover_cost: 0s, reserved_host_disk_mb: 0, reserved_host_memory_mb: 512,
                  service_down_time: 60s, report_interval: 10s (< service_down_time)}
    events:                    in non-decreasing time order; exactly one action per event
      - at: 2s
        live_migrate: {instance:* web-01, dest: node-b, block_migration: false,
                       disk_over_commit: false}
      - at: 10s
        drain: {host:* node-a, block_migration: false, disk_over_commit: false}

Decisions:

* Capacity is checked at load time, in scenario order. A VM may not be larger than its
  host (RAM, vCPUs; disk on ``local`` storage). The VMs on a host must fit: RAM within
  ``ram - reserved_host_memory_mb``; vCPUs within ``VCPU_OVERCOMMIT`` (16, Nova's
  cpu_allocation_ratio) times the host's; disk, on ``local`` storage only, within
  ``disk - reserved_host_disk_mb`` (shared storage is one pool outside the hosts).
* ``dest`` of ``live_migrate`` may be omitted or null: the scheduler picks, as with Nova's
  ``host: null``. ``block_migration`` and ``disk_over_commit`` default to false. The run
  always sends Nova a complete request, so a scenario cannot produce the API's
  "host and block_migration must be specified" error. ``dest`` may equal the source
  (that is how UnableToMigrateToSelf is shown).
* Racks are all or nothing: when any host has one, every host must (``hosts_per_rack``
  fills the gaps) and ``network.uplink`` is required.
* YAML anchors and merge keys are allowed (``<<: *small_vm``); top-level keys starting
  with ``x-`` are ignored, a place to define anchors.
* A group expands to at most ``MAX_GROUP_COUNT`` names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yaml.nodes import SequenceNode

from .model import (
    DrainEvent,
    Event,
    Heuristic,
    HostSpec,
    LiveMigrateEvent,
    MigrationPolicy,
    NetworkSpec,
    Policy,
    Scenario,
    SchedulerPolicy,
    Storage,
    VmSpec,
)
from .units import format_bytes, parse_bytes, parse_duration, parse_rate
from .yaml_nodes import Field, Mapping, ScenarioError, check_name, compose, did_you_mean, show

__all__ = [
    "CPU_MODELS",
    "KNOWN_FILTERS",
    "MAX_GROUP_COUNT",
    "MIGRATE_FLAG_NAMES",
    "VCPU_OVERCOMMIT",
    "ScenarioError",
    "expand_names",
    "format_hypervisor_version",
    "load_scenario",
    "parse_hypervisor_version",
    "parse_scenario",
]

MIGRATE_FLAG_NAMES: tuple[str, ...] = (
    "LIVE", "PEER2PEER", "TUNNELLED", "PERSIST_DEST", "UNDEFINE_SOURCE", "PAUSED",
    "NON_SHARED_DISK", "NON_SHARED_INC", "CHANGE_PROTECTION", "UNSAFE", "OFFLINE",
    "COMPRESSED", "ABORT_ON_ERROR", "AUTO_CONVERGE", "RDMA_PIN_ALL", "POSTCOPY", "TLS",
    "PARALLEL",
)  # fmt: skip
"""libvirt's ``VIR_MIGRATE_*`` flag names, without the prefix (the bits are in core/flags.py)."""

KNOWN_FILTERS: tuple[str, ...] = (
    "RetryFilter", "AvailabilityZoneFilter", "RamFilter", "ComputeFilter",
    "ComputeCapabilitiesFilter", "ImagePropertiesFilter", "ServerGroupAntiAffinityFilter",
    "ServerGroupAffinityFilter", "CoreFilter", "DiskFilter",
)  # fmt: skip

CPU_MODELS: tuple[str, ...] = (
    "Nehalem", "SandyBridge", "Haswell", "Skylake-Server", "Icelake-Server",
)  # fmt: skip
"""Known CPU models, oldest first: a source CPU runs on a destination of the same or a later one."""

VCPU_OVERCOMMIT = 16  # Nova's cpu_allocation_ratio default
MAX_GROUP_COUNT = 100_000
WORKING_SET_FRACTION = 0.25
MiB = 2**20

_FLAG_PREFIX = "VIR_MIGRATE_"
_TOP_KEYS = ("name", "seed", "hosts", "vms", "network", "policy", "events", "x-*")
_HOST_KEYS = (
    "name", "prefix", "count", "ram", "vcpus", "disk", "hypervisor_type",
    "hypervisor_version", "cpu_model", "storage", "rack", "racks", "service",
)  # fmt: skip
_VM_KEYS = (
    "name", "prefix", "count", "host", "ram", "vcpus", "disk", "disk_allocated",
    "used_memory", "working_set", "dirty_rate", "volume_backed",
)  # fmt: skip
_GLOB_CHARS = re.compile(r"[*?\[]")
_VERSION = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,3}))?(?:\.([0-9]{1,3}))?")


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file (``OSError`` if it cannot be read)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ScenarioError(str(path), line, "", "not UTF-8 text; expected a YAML file") from None
    return parse_scenario(text, source=str(path), default_name=path.stem)


def parse_scenario(
    text: str, source: str = "<string>", *, default_name: str | None = None
) -> Scenario:
    """Check the YAML ``text`` of a scenario; ``source`` names it in error messages."""
    node = compose(text, source)
    if node is None:
        raise ScenarioError(source, 1, "", "no content; expected a mapping with hosts and vms")
    top = Field(node, "", source).mapping(_TOP_KEYS, "a mapping with keys hosts, vms, ...")
    if default_name is None:
        default_name = "scenario" if source.startswith("<") else Path(source).stem
    name = _optional(top, "name", lambda f: f.text("a scenario name"), default_name)
    seed = _optional(top, "seed", lambda f: f.integer(0), 0)
    network = _network(top.get("network"))
    policy = _policy(top.get("policy"))
    hosts = _Hosts(top.require("hosts", "a list of hosts"), network, policy.migration)
    vms = _vms(top.require("vms", "a list of VMs"), hosts, policy.migration)
    events = _events(top.get("events"), hosts.specs, {vm.name for vm in vms})
    return Scenario(
        name=name,
        seed=seed,
        hosts=tuple(hosts.specs.values()),
        vms=tuple(vms),
        network=network,
        policy=policy,
        events=tuple(events),
        source=source,
    )


def _optional(mapping: Mapping, key: str, read: Callable[[Field], Any], default: Any) -> Any:
    value = mapping.get(key)
    return default if value is None else read(value)


def _collect(mapping: Mapping, readers: dict[str, Callable[[Field], Any]]) -> dict[str, Any]:
    """``{key: read(field)}`` for the keys present (absent ones keep the model's default)."""
    return {key: read(f) for key, read in readers.items() if (f := mapping.get(key)) is not None}


def _size(**sign: bool) -> Callable[[Field], int]:
    return lambda f: int(f.quantity(parse_bytes, **sign))


def _rate(**sign: bool) -> Callable[[Field], float]:
    return lambda f: f.quantity(parse_rate, **sign)


def _duration(**sign: bool) -> Callable[[Field], float]:
    return lambda f: f.quantity(parse_duration, **sign)


def _choice(choices: tuple[str, ...], what: str) -> Callable[[Field], str]:
    def read(f: Field) -> str:
        value = f.text(what)
        if value not in choices:
            f.fail(
                f"unknown {what} {show(value)}{did_you_mean(value, choices)}; "
                f"expected one of {', '.join(choices)}"
            )
        return value

    return read


# -- names, versions -------------------------------------------------------------------


def expand_names(prefix: str, count: int) -> list[str]:
    """``prefix`` + index from 1, zero-padded to the width of ``count``.

    >>> expand_names("node-", 12)[:2], expand_names("node-", 12)[-1], expand_names("vm", 3)
    (['node-01', 'node-02'], 'node-12', ['vm1', 'vm2', 'vm3'])
    """
    width = len(str(count))
    return [f"{prefix}{index:0{width}d}" for index in range(1, count + 1)]


def parse_hypervisor_version(value: str | int) -> int:
    """``"10.0.2"`` -> 10000002 (libvirt: major*1e6 + minor*1e3 + micro); ints pass through.

    >>> parse_hypervisor_version("10.0.2"), parse_hypervisor_version("6.2")
    (10000002, 6002000)
    >>> parse_hypervisor_version(4)
    4
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _VERSION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a version; expected MAJOR[.MINOR[.MICRO]]")
    major, minor, micro = (int(part or 0) for part in match.groups())
    return major * 1_000_000 + minor * 1_000 + micro


def format_hypervisor_version(value: int) -> str:
    """10000002 -> ``"10.0.2"``."""
    return f"{value // 1_000_000}.{value // 1_000 % 1_000}.{value % 1_000}"


def _version(f: Field) -> int:
    value = f.scalar("a version such as '10.0.2'")
    if isinstance(value, float):  # 6.2 reads as a float: use the text as written
        value = f.node.value
    if isinstance(value, bool) or not isinstance(value, int | str):
        f.wrong("a version such as '10.0.2'")
    try:
        return parse_hypervisor_version(value)
    except ValueError:
        f.fail(
            f"{f.describe()} is not a version; expected MAJOR[.MINOR[.MICRO]] "
            "such as '10.0.2' (or libvirt's integer encoding)"
        )


def _entry_names(entry: Mapping, what: str) -> tuple[list[str], Field]:
    """The names an entry defines (``name:``, or ``prefix:`` + ``count:``) and the field."""
    key = entry.only_one_of("name", "prefix")
    if key is None:
        entry.field.fail("missing key 'name'; expected name: NAME, or prefix: P with count: N")
    if key == "name":
        if "count" in entry:
            entry.key_field("count").fail("count needs a prefix; expected prefix: with count:")
        f = entry.require("name", "")
        return [check_name(f, f.text(f"a {what} name"), what)], f
    f = entry.require("prefix", "")
    prefix = f.text("a name prefix")
    count = entry.require("count", f"the number of {what}s").integer(1, MAX_GROUP_COUNT)
    names = expand_names(prefix, count)
    check_name(f, names[0], what)
    return names, f


# -- network and policy ----------------------------------------------------------------


def _network(f: Field | None) -> NetworkSpec:
    if f is None:
        return NetworkSpec()
    m = f.mapping(("host_link", "hosts_per_rack", "uplink"))
    return NetworkSpec(
        **_collect(
            m,
            {
                "host_link": _rate(positive=True),
                "hosts_per_rack": lambda v: v.integer(1),
                "uplink": _rate(positive=True),
            },
        )
    )


def _filters(f: Field) -> tuple[str, ...]:
    read = _choice(KNOWN_FILTERS, "filter")
    names: list[str] = []
    for _, item in f.items("a list of filter names"):
        name = read(item)
        if name in names:
            item.fail(f"duplicate filter {show(name)}; expected each filter once")
        names.append(name)
    return tuple(names)


def _flags(f: Field) -> str:
    """Nova's comma-separated VIR_MIGRATE_* names (or a YAML list of them), normalised."""
    expected = "comma-separated VIR_MIGRATE_* names"
    if isinstance(f.node, SequenceNode):
        items = [(item, item.text("a VIR_MIGRATE_* name")) for _, item in f.items()]
    else:
        items = [(f, part) for part in f.text(expected).split(",")]
    known = [_FLAG_PREFIX + name for name in MIGRATE_FLAG_NAMES]
    names = []
    for where, raw in items:
        name = raw.strip()
        if not name:
            continue  # as Nova and core/flags.py: blank items are ignored
        if name not in known:
            hint = (
                f" (did you mean {_FLAG_PREFIX + name!r}?)"
                if name in MIGRATE_FLAG_NAMES
                else did_you_mean(name, known)
            )
            where.fail(
                f"unknown migration flag {show(name)}{hint}; expected {expected}: "
                f"VIR_MIGRATE_ + one of {', '.join(MIGRATE_FLAG_NAMES)}"
            )
        names.append(name)
    if not names:
        f.fail(f"no flags; expected {expected}")
    return ", ".join(names)


def _uri(f: Field) -> str:
    uri = f.text("a URI template such as 'qemu+tcp://%s/system'")
    placeholders = re.findall(r"%(.?)", uri)
    if placeholders.count("s") != 1 or any(p not in ("s", "%") for p in placeholders):
        f.fail(
            f"{show(uri)} must contain exactly one %s (the destination host; write %% "
            "for a literal %); expected a URI template such as 'qemu+tcp://%s/system'"
        )
    return uri


def _policy(f: Field | None) -> Policy:
    if f is None:
        return Policy()
    m = f.mapping(("scheduler", "migration"))
    scheduler, migration = SchedulerPolicy(), MigrationPolicy()
    if (sf := m.get("scheduler")) is not None:
        sm = sf.mapping(
            ("filters", "ram_allocation_ratio", "ram_weight_multiplier", "heuristic", "max_retries")
        )
        heuristics = tuple(h.value for h in Heuristic)
        scheduler = SchedulerPolicy(
            **_collect(
                sm,
                {
                    "filters": _filters,
                    "ram_allocation_ratio": lambda v: v.number(positive=True),
                    "ram_weight_multiplier": lambda v: v.number(),
                    "heuristic": lambda v: Heuristic(_choice(heuristics, "heuristic")(v)),
                    "max_retries": lambda v: v.integer(-1),
                },
            )
        )
    if (mf := m.get("migration")) is not None:
        readers: dict[str, Callable[[Field], Any]] = {
            "live_migration_flag": _flags,
            "block_migration_flag": _flags,
            "uri": _uri,
            "bandwidth": _rate(non_negative=True),
            "max_downtime": _duration(positive=True),
            "poll_interval": _duration(positive=True),
            "max_concurrent_per_host": lambda v: v.integer(1),
            "switchover_cost": _duration(non_negative=True),
            "completion_timeout": _duration(non_negative=True),
            "reserved_host_disk_mb": lambda v: v.integer(0),
            "reserved_host_memory_mb": lambda v: v.integer(0),
            "service_down_time": _duration(positive=True),
            "report_interval": _duration(positive=True),
        }
        mm = mf.mapping(tuple(readers))
        migration = MigrationPolicy(**_collect(mm, readers))
        if migration.report_interval >= migration.service_down_time:
            where = mm.get("report_interval") or mm.get("service_down_time") or mf
            where.fail(
                f"report_interval ({migration.report_interval:g} s) must be less than "
                f"service_down_time ({migration.service_down_time:g} s); expected "
                "heartbeats often enough for services to be seen up"
            )
    return Policy(scheduler=scheduler, migration=migration)


# -- hosts -----------------------------------------------------------------------------


@dataclass
class _Hosts:
    """The ``hosts`` list, expanded; ``specs`` keeps scenario order."""

    field: Field
    network: NetworkSpec
    migration: MigrationPolicy
    specs: dict[str, HostSpec] = field(default_factory=dict)
    where: dict[str, Field] = field(default_factory=dict)  # name -> the field defining it

    def __post_init__(self) -> None:
        entries = list(self.field.items("a list of hosts"))
        if not entries:
            self.field.fail("empty list; expected at least one host")
        for _, entry_field in entries:
            self._entry(entry_field)
        self._assign_racks()

    def _entry(self, entry_field: Field) -> None:
        entry = entry_field.mapping(
            _HOST_KEYS, "a host: a mapping with name (or prefix and count), ram, vcpus, ..."
        )
        names, name_field = _entry_names(entry, "host")
        common = _collect(
            entry,
            {
                "ram": _size(positive=True),
                "vcpus": lambda v: v.integer(1),
                "disk": _size(non_negative=True),
                "hypervisor_type": lambda v: v.text("a hypervisor type such as QEMU"),
                "hypervisor_version": _version,
                "cpu_model": _choice(CPU_MODELS, "CPU model"),
                "storage": lambda v: Storage(
                    _choice(tuple(s.value for s in Storage), "storage")(v)
                ),
                "service": Field.boolean,
            },
        )
        common.setdefault("disk", 0)
        for key in ("ram", "vcpus"):
            if key not in common:
                entry.require(
                    key, "the host's " + ("RAM, e.g. 256GiB" if key == "ram" else "number of CPUs")
                )
        racks = [None] * len(names)
        rack_key = entry.only_one_of("rack", "racks")
        if rack_key == "rack":
            rf = entry.require("rack", "")
            racks = [check_name(rf, rf.text("a rack name"), "rack")] * len(names)
        elif rack_key == "racks":
            n = entry.require("racks", "").integer(1, len(names))
            size, extra = divmod(len(names), n)
            racks = [f"rack-{k + 1}" for k in range(n) for _ in range(size + (k < extra))]
        for name, rack in zip(names, racks, strict=True):
            if name in self.where:
                first = self.where[name].line
                name_field.fail(
                    f"duplicate host name {show(name)} (first defined at line {first}); "
                    "expected unique names"
                )
            self.specs[name] = HostSpec(name=name, rack=rack, **common)
            self.where[name] = name_field

    def _assign_racks(self) -> None:
        per_rack = self.network.hosts_per_rack
        if per_rack is not None:
            used = {spec.rack for spec in self.specs.values()}
            homeless = [name for name, spec in self.specs.items() if spec.rack is None]
            k = 0
            for start in range(0, len(homeless), per_rack):
                k += 1
                while f"rack-{k}" in used:
                    k += 1
                for name in homeless[start : start + per_rack]:
                    self.specs[name] = replace(self.specs[name], rack=f"rack-{k}")
        with_rack = [name for name, spec in self.specs.items() if spec.rack is not None]
        if not with_rack:
            return
        for name, spec in self.specs.items():
            if spec.rack is None:
                self.where[name].fail(
                    f"host {show(name)} has no rack while {show(with_rack[0])} has one; expected a "
                    "rack for every host or for none (network.hosts_per_rack fills the gaps)"
                )
        if self.network.uplink is None:
            self.where[with_rack[0]].fail(
                "hosts are in racks but network.uplink is not set; expected network: "
                "{uplink: RATE} (the rack switch <-> core link, e.g. 40Gbit/s)"
            )


# -- VMs -------------------------------------------------------------------------------


@dataclass
class _Load:
    ram: int = 0
    vcpus: int = 0
    disk: int = 0


def _vms(list_field: Field, hosts: _Hosts, migration: MigrationPolicy) -> list[VmSpec]:
    vms: list[VmSpec] = []
    where: dict[str, Field] = {}
    deal: dict[str, int] = {}  # glob -> how many VMs it has dealt so far
    load = {name: _Load() for name in hosts.specs}
    for _, entry_field in list_field.items("a list of VMs"):
        entry = entry_field.mapping(
            _VM_KEYS, "a VM: a mapping with name (or prefix and count), host, ram, ..."
        )
        names, name_field = _entry_names(entry, "VM")
        host_field = entry.require("host", "a host name or a glob such as node-*")
        targets = _targets(host_field, hosts)
        ram_field = entry.require("ram", "the VM's RAM, e.g. 4GiB")
        ram = _size(positive=True)(ram_field)
        vcpus = _optional(entry, "vcpus", lambda v: v.integer(1), 1)
        disk = _optional(entry, "disk", _size(non_negative=True), 0)
        allocated = _optional(entry, "disk_allocated", _size(non_negative=True), None)
        used = _optional(entry, "used_memory", _size(non_negative=True), ram)
        working = _optional(entry, "working_set", _size(non_negative=True), None)
        dirty = _optional(entry, "dirty_rate", _rate(non_negative=True), 0.0)
        _at_most(entry, "disk_allocated", allocated, "disk", disk)
        _at_most(entry, "used_memory", used, "ram", ram)
        _at_most(entry, "working_set", working, "used_memory", used)
        if working is None:
            working = int(used * WORKING_SET_FRACTION)
        volume_backed = _optional(entry, "volume_backed", Field.boolean, False)
        pattern = host_field.node.value
        for name in names:
            if name in where:
                name_field.fail(
                    f"duplicate VM name {show(name)} (first defined at line "
                    f"{where[name].line}); expected unique names"
                )
            where[name] = name_field
            if _GLOB_CHARS.search(pattern):
                host = targets[deal.get(pattern, 0) % len(targets)]
                deal[pattern] = deal.get(pattern, 0) + 1
            else:
                host = targets[0]
            vm = VmSpec(
                name=name,
                host=host,
                ram=ram,
                vcpus=vcpus,
                disk=disk,
                disk_allocated=allocated,
                used_memory=used,
                working_set=working,
                dirty_rate=dirty,
                volume_backed=volume_backed,
            )
            _place(vm, hosts.specs[host], load[host], migration, entry)
            vms.append(vm)
    return vms


def _at_most(entry: Mapping, key: str, value: int | None, limit_key: str, limit: int) -> None:
    if value is not None and value > limit:
        entry.require(key, "").fail(
            f"{format_bytes(value)} is more than {limit_key} ({format_bytes(limit)}); "
            f"expected {key} <= {limit_key}"
        )


def _targets(f: Field, hosts: _Hosts) -> list[str]:
    pattern = f.text("a host name or a glob such as node-*")
    if not _GLOB_CHARS.search(pattern):
        if pattern not in hosts.specs:
            f.fail(
                f"unknown host {show(pattern)}{did_you_mean(pattern, hosts.specs)}; "
                "expected a host defined under hosts"
            )
        return [pattern]
    matches = [name for name in hosts.specs if fnmatch.fnmatchcase(name, pattern)]
    if not matches:
        f.fail(f"the glob {show(pattern)} matches no host; expected a pattern matching host names")
    return matches


def _place(vm: VmSpec, host: HostSpec, load: _Load, mig: MigrationPolicy, entry: Mapping) -> None:
    """Check that ``vm`` fits on ``host`` next to the VMs already placed there."""
    local = host.storage == Storage.LOCAL
    for key, need, have in (
        ("ram", vm.ram, host.ram),
        ("vcpus", vm.vcpus, host.vcpus),
        ("disk", vm.disk if local else 0, host.disk),
    ):
        if need > have:
            show_ = (lambda n: str(n)) if key == "vcpus" else format_bytes
            entry.require(key, "").fail(
                f"VM {show(vm.name)} needs {show_(need)} but its host {show(host.name)} has "
                f"{show_(have)}; expected a VM no larger than its host ({key})"
            )
    load.ram += vm.ram
    load.vcpus += vm.vcpus
    load.disk += vm.disk if local else 0
    ram_cap = host.ram - mig.reserved_host_memory_mb * MiB
    disk_cap = host.disk - mig.reserved_host_disk_mb * MiB
    checks = (
        (
            "RAM",
            load.ram,
            ram_cap,
            f"{format_bytes(host.ram)} - reserved_host_memory_mb {mig.reserved_host_memory_mb}",
        ),
        ("vCPUs", load.vcpus, host.vcpus * VCPU_OVERCOMMIT, f"{VCPU_OVERCOMMIT} x {host.vcpus}"),
        (
            "disk",
            load.disk,
            disk_cap,
            f"{format_bytes(host.disk)} - reserved_host_disk_mb {mig.reserved_host_disk_mb}",
        ),
    )
    for what, total, cap, how in checks:
        if total > cap:
            fmt = str if what == "vCPUs" else format_bytes
            entry.require("host", "").fail(
                f"VM {show(vm.name)} does not fit on {show(host.name)}: its VMs need {fmt(total)} "
                f"of {what} but it offers {fmt(max(cap, 0))} ({how}); expected the VMs on a "
                f"host to fit in its {what}"
            )


# -- events ----------------------------------------------------------------------------

_MOVE_KEYS = ("block_migration", "disk_over_commit")


def _known(f: Field, names: Iterable[str], what: str, *, null: bool = False) -> Any:
    """A name that ``names`` (hosts or VMs) defines; ``None`` for null when ``null``."""
    section = "hosts" if what == "host" else "vms"
    value = f.text(f"a {what} name", null=null)
    if value is not None and value not in names:
        f.fail(
            f"unknown {what} {show(value)}{did_you_mean(value, names)}; "
            f"expected a {what} defined under {section}"
        )
    return value


def _live_migrate(body: Mapping, at: float, hosts: dict[str, HostSpec], vms: set[str]) -> Event:
    return LiveMigrateEvent(
        at=at,
        instance=_known(body.require("instance", "the name of the VM to move"), vms, "VM"),
        dest=_optional(body, "dest", lambda f: _known(f, hosts, "host", null=True), None),
        **_collect(body, {key: Field.boolean for key in _MOVE_KEYS}),
    )


def _drain(body: Mapping, at: float, hosts: dict[str, HostSpec], vms: set[str]) -> Event:
    return DrainEvent(
        at=at,
        host=_known(body.require("host", "the host to empty"), hosts, "host"),
        **_collect(body, {key: Field.boolean for key in _MOVE_KEYS}),
    )


# action key -> (allowed keys of its body, hints for wrong keys, reader); add kinds here.
_EVENT_KINDS: dict[str, tuple[tuple[str, ...], dict[str, str], Callable[..., Event]]] = {
    "live_migrate": (
        ("instance", "dest", *_MOVE_KEYS),
        {"host": "(the destination is called 'dest')"},
        _live_migrate,
    ),
    "drain": (("host", *_MOVE_KEYS), {"instance": "(drain moves every VM of 'host')"}, _drain),
}


def _events(f: Field | None, hosts: dict[str, HostSpec], vms: set[str]) -> list[Event]:
    if f is None:
        return []
    events: list[Event] = []
    previous: tuple[float, int] | None = None
    kinds = tuple(_EVENT_KINDS)
    for _, entry_field in f.items("a list of events"):
        entry = entry_field.mapping(
            ("at", *kinds), "an event: at: TIME and one action of " + ", ".join(kinds)
        )
        at_field = entry.require("at", "the event time, e.g. at: 2s")
        at = _duration(non_negative=True)(at_field)
        kind = entry.only_one_of(*kinds)
        if kind is None:
            entry.field.fail(f"no action; expected one of {', '.join(kinds)}")
        if previous is not None and at < previous[0]:
            at_field.fail(
                f"{at:g} s is before the previous event ({previous[0]:g} s, line "
                f"{previous[1]}); expected events in non-decreasing time order"
            )
        previous = (at, at_field.line)
        allowed, hints, read = _EVENT_KINDS[kind]
        body = entry.require(kind, "").mapping(allowed, hints=hints)
        events.append(read(body, at, hosts, vms))
    return events
