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
    until: 6h                  (= 24h; > 0) the run's horizon: no event may come later
                               (a generator's events after it are not played); at the
                               horizon queued migrations are cancelled and running
                               pre-copy jobs aborted (error HorizonReached); post-copy
                               ones, which cannot be aborted, finish
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
        used_memory: 3GiB      non-zero memory sent in round 0; <= ram (= working_set +
                               GUEST_OS_FOOTPRINT (64 MiB), at most ram; model textbook:
                               = ram)
        working_set: 512MiB    memory the guest keeps dirtying (= used_memory / 4 when
                               used_memory is given, else ram / 4)
        dirty_rate: 50MiB/s    (= 0; >= 0)       volume_backed: false
        throttle_response: cpu_bound | clock_paced | 0.3   (= cpu_bound = 1; clock_paced =
                               0.1) the share of its CPU the guest's writing needs: how much
                               an auto-converge throttle slows it (core/policy.py)
        memory_layout: [0.7, 1, 0.4, 0]  where the non-zero memory lies: its share in
                               each of N equal slices of the RAM, lowest address first
                               (= spread evenly; qemu model; livemig calibrate records a
                               guest's, docs/guest-ram-layout.md)
        cpu_trace: [80, 20, 50]  CPU utilisation, percent of the VM's vCPUs (0-100), one
                               sample every cpu_trace_interval, linear between, the last
                               holding (= none; core/cpu_trace.py); the lab guest burns it
                               (at most 400 samples there)
        cpu_trace_interval: 5min  (= 300s; > 0)
        dirty_rate_follows_cpu: true  (= false; needs cpu_trace) the simulator: dirty_rate
                               is the rate at 100 % CPU, x the trace's utilisation now
        image: debian-12.qcow2 real hosts: boot from this volume of the instances pool
                               (a qcow2 overlay per VM); adopt: true: migrate the existing
                               domain of this name, never destroy it (both: --driver libvirt)
    network:
      host_link: 10Gbit/s      (= 10Gbit/s; each host's link, each direction; > 0)
      hosts_per_rack: 10       puts hosts without a rack into racks of this size, in order,
                               named rack-K with the lowest K not used yet
      uplink: 40Gbit/s         rack switch <-> core; required when hosts are in racks
    policy:
      scheduler: {filters: [RamFilter, ComputeFilter, ...], ram_allocation_ratio: 1.5 (> 0),
                  ram_weight_multiplier: 1.0 (both at most MAX_FACTOR in size),
                  heuristic: weighed | first_fit | best_fit | worst_fit | random,
                  max_retries: -1 (-1: until no host is left)}
      migration: {live_migration_flag: "VIR_MIGRATE_LIVE, VIR_MIGRATE_PEER2PEER" (Nova's
                  comma-separated string, or a YAML list of names), block_migration_flag,
                  uri: "qemu+tcp://%s/system" (exactly one %s), bandwidth: 0 (0 = unlimited),
                  max_downtime: 500ms (>= 1ms), poll_interval: 500ms (>= 10ms),
                  max_concurrent_per_host: 1 (>= 1),
                  completion_timeout: 800s (per GiB of data; 0 disables),
                  reserved_host_disk_mb: 0, reserved_host_memory_mb: 512 (integers, MiB as
                  in Nova), service_down_time: 60s, report_interval: 10s (< service_down_time),
                  # convergence (modern Nova's live_migration_* options):
                  downtime_steps: 0 (0..MAX_DOWNTIME_STEPS; 0 = max_downtime from the start),
                  downtime_delay: 75s (>= 0; per GiB of data, between two downtime steps),
                  timeout_action: abort | force_complete (= abort; what completion_timeout does),
                  permit_post_copy: false, permit_auto_converge: false,
                  keepalive_interval: 5s (> 0), keepalive_count: 5 (>= 1; libvirt's keepalive
                  between the two libvirtds),
                  # the simulator's pre-copy model (drivers/precopy.py, core/profile.py):
                  model: qemu | textbook (= qemu),
                  profile: FILE (a YAML profile, relative to this file; its values apply
                  where this mapping does not set them),
                  startup_cost: 285ms, switchover_cost: 20ms (textbook: 0 and 0),
                  startup_cost_per_gib: 100ms (= 0; more start-up per GiB of the VM's RAM),
                  link_speed: 330MiB/s (= the host link), flush_speed (= link_speed),
                  bandwidth_window: 100ms, check_period: 50ms (uncapped passes)}
    events:                    exactly one action per event; the events as written are in
                               non-decreasing time order (at >= 0)
      - at: 2s
        live_migrate: {instance:* web-01, dest: node-b, block_migration: false,
                       disk_over_commit: false}
      - at: 10s
        drain: {host:* node-a, block_migration: false, disk_over_commit: false}
      - at: 12s
        abort: {instance:* web-02}            operator: abort its migration (queued or running)
      - at: 12s
        force_complete: {instance:* web-03}   operator: force its running migration to finish
      - at: 15s
        host_down: {host:* node-b, trigger: at | checks_passed (= at)}
                               also host_up, link_down, link_up, service_down, service_up;
                               checks_passed: fires at the first moment from `at` on when a
                               migration to the host has passed its checks
      - at: 20s
        controller_restart: {down_for: 5s}   (= 0s; >= 0; the mapping may be empty: {})
                               the livemig process dies; a new one starts down_for later
      - at: 0s
        random_faults:         a generator, expanded into host/link faults at load time
          hosts:* node-*       a host name or a glob; the hosts that may fail
          host_down: 3         (= 0; 0..MAX_GROUP_COUNT) host failures
          link_down: 2         (= 0; 0..MAX_GROUP_COUNT) link failures
          within:* 10min       (> 0) each failure at a uniform time in [at, at + within)
          repair: 2min         (= 0; >= 0) host_up / link_up that long after each failure;
                               0: never repaired
          seed: 7              (int >= 0; = the scenario's seed + the number of
                               random_faults events written before this one)
    expect:                    what a run must show; `livemig check` gates on it, `livemig
                               run` reports it (schema: core/expectations.py)
      instances: {"web-*": {status: completed, error: null, host: node-2, vm_state: active}}
      outcomes: {completed: 3, error: 1, total: 4}    exact counts of migrations by status
      stats: ["p95 total_time_s < 40s", "max downtime_ms <= 300ms",
              "sum data_transferred_bytes < 2TB", "sim_time_s < 10min"]
                               [min|max|mean|p50|p95|p99|sum|count] METRIC < <= > >= == VALUE
      invariants: {violations: 0, unverifiable: 0}    violations: 0 is always checked

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
* Names of hosts, VMs and racks may not contain whitespace, ``/``, ``%`` or invisible
  characters (Unicode categories Cc, Cf, Zl, Zp; nor may the scenario name); a group
  expands to at most ``MAX_GROUP_COUNT`` names. Host and VM names are separate namespaces.
* Strings are YAML strings: ``name: yes`` is a boolean and an error (quote it). A
  ``hypervisor_version`` written ``6.2`` (a YAML float) is read as the text ``"6.2"``.
  A plain (unquoted) ``1e3`` or ``2.5e-1``, text in YAML 1.1, is a number where a number
  is expected (``ram_allocation_ratio``, ``ram_weight_multiplier``).
* Sizes are at most ``MAX_BYTES`` (8192 TiB), vCPUs at most ``MAX_VCPUS`` (2**20),
  ``reserved_host_*_mb`` at most ``MAX_BYTES`` in MiB: the simulator keeps them in 64-bit
  integers. Larger values are errors, as are NaN and infinities anywhere.
* ``cpu_model`` must be one of ``CPU_MODELS`` so the simulator can order models.
* A VM larger than every host (RAM, vCPUs; disk against the ``local`` hosts) is reported
  as such; one merely larger than its own host names that host.
* Times and durations are at most ``MAX_SECONDS`` (1e9 s, about 31 years): beyond it,
  float seconds no longer resolve a migration's timings. ``poll_interval`` is at least
  ``MIN_POLL_INTERVAL`` (10 ms) and ``max_downtime`` at least ``MIN_MAX_DOWNTIME`` (1 ms,
  QEMU's own minimum downtime-limit). A written event after ``until`` is an error, and
  so is a ``controller_restart`` whose controller would still be down at ``until``.
* ``random_faults`` is expanded when the file is loaded, so ``Scenario.events`` only holds
  concrete events and ``livemig run --seed`` does not change the faults (the generator's
  ``seed`` does). Expansion, with ``random.Random(seed)``: the ``host_down`` failure
  times are drawn first (uniform in ``[at, at + within)``), then, in time order, each
  failure's host, uniformly among the matching hosts that are not down at that moment
  (a failure with none left is skipped); then the same for ``link_down``, where a link
  is down until its ``link_up``. Host and link failures are independent, and "down"
  only counts the generator's own failures (not written events, not other generators).
  Same file and seed: the same events.
* ``Scenario.events`` is sorted by time: the generated events are merged with the
  written ones; at equal times file order wins (a generator's events stand where the
  generator is written), and within one generator a repair comes before a failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from yaml.nodes import SequenceNode

from .expectations import read_expectations
from .flags import MIGRATE_FLAGS
from .model import (
    CPU_MODELS,
    DEFAULT_UNTIL,
    Heuristic,
    HostSpec,
    MigrationModel,
    MigrationPolicy,
    NetworkSpec,
    Policy,
    Scenario,
    SchedulerPolicy,
    Storage,
    TimeoutAction,
    VmSpec,
)
from .policy import CLOCK_PACED_SHARE
from .profile import READERS as PROFILE_READERS
from .profile import Profile, load_profile
from .scenario_events import _GLOB_CHARS, MAX_GROUP_COUNT, Hosts, matching_hosts, read_events
from .scheduler import CPU_ALLOCATION_RATIO, FILTERS
from .units import MiB, format_bytes
from .yaml_nodes import (
    MAX_SECONDS,
    Field,
    Mapping,
    Reader,
    ScenarioError,
    boolean,
    check_name,
    check_visible,
    choice,
    compose,
    decode_yaml_text,
    did_you_mean,
    duration,
    gc_paused,
    integer,
    number,
    rate,
    show,
    size,
    string,
)

__all__ = [
    "CPU_MODELS",
    "KNOWN_FILTERS",
    "MAX_BYTES",
    "MAX_DOWNTIME_STEPS",
    "MAX_FACTOR",
    "MAX_GROUP_COUNT",
    "MAX_SECONDS",
    "MAX_VCPUS",
    "MIN_MAX_DOWNTIME",
    "MIN_POLL_INTERVAL",
    "MIGRATE_FLAG_NAMES",
    "VCPU_OVERCOMMIT",
    "WORKING_SET_FRACTION",
    "GUEST_OS_FOOTPRINT",
    "ScenarioError",
    "expand_names",
    "format_hypervisor_version",
    "load_scenario",
    "parse_hypervisor_version",
    "parse_scenario",
]

MIGRATE_FLAG_NAMES: tuple[str, ...] = tuple(
    name.removeprefix("VIR_MIGRATE_") for name in MIGRATE_FLAGS
)
"""libvirt's ``VIR_MIGRATE_*`` flag names without the prefix (the bits are in core/flags.py)."""

KNOWN_FILTERS: tuple[str, ...] = tuple(FILTERS)  # the scheduler's filters, by name

VCPU_OVERCOMMIT = int(CPU_ALLOCATION_RATIO)  # Nova's cpu_allocation_ratio default (16)
MAX_DOWNTIME_STEPS = 1_000  # the schedule is a list of steps + 1 pairs
MAX_BYTES = 2**53  # 8192 TiB: any size; exact as a float, sums stay within int64
MAX_VCPUS = 2**20  # vCPUs of a host or a VM
MAX_FACTOR = 1e6  # |ram_allocation_ratio|, |ram_weight_multiplier|: products stay finite
MIN_POLL_INTERVAL = 0.01  # seconds: polling more often only spins (Nova polls every 0.5 s)
MIN_MAX_DOWNTIME = 0.001  # seconds: QEMU's own minimum downtime-limit (1 ms)
_MAX_MB = MAX_BYTES // MiB  # reserved_host_*_mb
WORKING_SET_FRACTION = 0.25  # default working_set = used_memory (or ram, qemu) * this
GUEST_OS_FOOTPRINT = 64 * MiB  # qemu model: default used_memory = working_set + this
THROTTLE_RESPONSES = {"cpu_bound": 1.0, "clock_paced": CLOCK_PACED_SHARE}

_FLAG_PREFIX = "VIR_MIGRATE_"
_VERSION = re.compile(r"([0-9]{1,6})(?:\.([0-9]{1,3}))?(?:\.([0-9]{1,3}))?")


# -- entry points ----------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file (``OSError`` if it cannot be read)."""
    path = Path(path)
    data = path.read_bytes()
    text = decode_yaml_text(data, str(path))
    # a file name that is not UTF-8 holds surrogate escapes: no text to print or plot
    stem = path.stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return parse_scenario(text, source=str(path), default_name=stem)


def parse_scenario(
    text: str, source: str = "<string>", *, default_name: str | None = None
) -> Scenario:
    """Check the YAML ``text`` of a scenario; ``source`` names it in error messages.

    The scenario's name defaults to ``default_name``, else the stem of ``source``
    (``"scenario"`` for a ``<...>`` source).
    """
    with gc_paused():  # see yaml_nodes.gc_paused: a big file's nodes, scanned again and again
        return _parse_scenario(text, source, default_name)


def _parse_scenario(text: str, source: str, default_name: str | None) -> Scenario:
    node = compose(text, source)
    if node is None:
        raise ScenarioError(source, 1, "", "no content; expected a mapping with hosts and vms")
    top = Field(node, "", source).mapping(
        ("name", "seed", "hosts", "vms", "network", "policy", "events", "expect", "until",
         "x-*"),
        "a mapping with keys hosts, vms, ...",
    )
    if default_name is None:
        default_name = "scenario" if source.startswith("<") else Path(source).stem
    network = _network(top.get("network"))
    policy = _policy(top.get("policy"))
    hosts = _hosts(top.require("hosts", "a list of hosts"), network)
    vms = _vms(top.require("vms", "a list of VMs"), hosts, policy.migration)
    seed = top.value("seed", integer(0), 0)
    expect = top.value("expect", lambda f: read_expectations(
        f, hosts=hosts, vms=[vm.name for vm in vms]), None)
    until = top.value("until", duration(positive=True), DEFAULT_UNTIL)
    return Scenario(
        name=top.value("name", _scenario_name, default_name),
        seed=seed,
        hosts=tuple(spec for spec, _ in hosts.values()),
        vms=tuple(vms),
        network=network,
        policy=policy,
        events=tuple(read_events(top.get("events"), hosts, {vm.name for vm in vms}, seed,
                                 until=until)),
        source=source,
        expect=expect,
        until=until,
    )


def _scenario_name(f: Field) -> str:
    return check_visible(f, string("a scenario name")(f), "scenario")


# -- small public helpers --------------------------------------------------------------


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
    """10000002 -> ``"10.0.2"``.

    >>> format_hypervisor_version(parse_hypervisor_version("6.2.1"))
    '6.2.1'
    """
    return f"{value // 1_000_000}.{value // 1_000 % 1_000}.{value % 1_000}"


# -- field readers ---------------------------------------------------------------------


def _version(f: Field) -> int:
    expected = "a version such as '10.0.2' (or libvirt's integer encoding)"
    value = f.scalar(expected)
    if isinstance(value, float):  # 6.2 reads as a float: use the text as written
        value = f.node.value
    if isinstance(value, bool) or not isinstance(value, int | str):
        f.wrong(expected)
    try:
        return parse_hypervisor_version(value)
    except ValueError:
        f.fail(f"{f.describe()} is not a version; expected MAJOR[.MINOR[.MICRO]], {expected}")


def _filters(f: Field) -> tuple[str, ...]:
    read = choice(KNOWN_FILTERS, "filter")
    names: list[str] = []
    for _, item in f.items("a list of filter names"):
        name = read(item)
        if name in names:
            item.fail(f"duplicate filter {show(name)}; expected each filter once")
        names.append(name)
    return tuple(names)


def _flags(f: Field) -> str:
    """Nova's comma-separated VIR_MIGRATE_* names (or a YAML list of them), normalised."""
    expected = "comma-separated VIR_MIGRATE_<NAME>"
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
            hint = did_you_mean(name, known)
            if name in MIGRATE_FLAG_NAMES:
                hint = f" (did you mean {_FLAG_PREFIX + name!r}?)"
            where.fail(
                f"unknown migration flag {show(name)}{hint}; expected {expected}, "
                f"NAME one of {', '.join(MIGRATE_FLAG_NAMES)}"
            )
        names.append(name)
    if not names:
        f.fail(f"no flags; expected {expected}")
    return ", ".join(names)


def _uri(f: Field) -> str:
    expected = "a URI template such as 'qemu+tcp://%s/system'"
    uri = f.text(expected)
    placeholders = re.findall(r"%(.?)", uri)
    if placeholders.count("s") != 1 or any(p not in ("s", "%") for p in placeholders):
        f.fail(
            f"{show(uri)} must contain exactly one %s (the destination host; %% is a literal %);"
            f" expected {expected}"
        )
    return uri


# -- network and policy ----------------------------------------------------------------

_NETWORK: dict[str, Reader] = {
    "host_link": rate(positive=True),
    "hosts_per_rack": integer(1),
    "uplink": rate(positive=True),
}

_SCHEDULER: dict[str, Reader] = {
    "filters": _filters,
    "ram_allocation_ratio": number(positive=True, limit=MAX_FACTOR),
    "ram_weight_multiplier": number(limit=MAX_FACTOR),
    "heuristic": choice([h.value for h in Heuristic], "heuristic", Heuristic),
    "max_retries": integer(-1),
}

_MIGRATION: dict[str, Reader] = {
    "live_migration_flag": _flags,
    "block_migration_flag": _flags,
    "uri": _uri,
    "bandwidth": rate(non_negative=True),
    "max_downtime": duration(MIN_MAX_DOWNTIME, positive=True),
    "poll_interval": duration(MIN_POLL_INTERVAL, positive=True),
    "max_concurrent_per_host": integer(1),
    **PROFILE_READERS,  # switchover_cost, startup_cost, link_speed, ... (core/profile.py)
    "model": choice([m.value for m in MigrationModel], "migration model", MigrationModel),
    "profile": string("a profile file (YAML, relative to the scenario file)"),
    "completion_timeout": duration(non_negative=True),
    "reserved_host_disk_mb": integer(0, _MAX_MB),
    "reserved_host_memory_mb": integer(0, _MAX_MB),
    "service_down_time": duration(positive=True),
    "report_interval": duration(positive=True),
    "downtime_steps": integer(0, MAX_DOWNTIME_STEPS),
    "downtime_delay": duration(non_negative=True),
    "timeout_action": choice([a.value for a in TimeoutAction], "timeout action", TimeoutAction),
    "permit_post_copy": boolean,
    "permit_auto_converge": boolean,
    "keepalive_interval": duration(positive=True),
    "keepalive_count": integer(1),
}


def _network(f: Field | None) -> NetworkSpec:
    return NetworkSpec() if f is None else NetworkSpec(**f.mapping(_NETWORK).read(_NETWORK))


def _policy(f: Field | None) -> Policy:
    if f is None:
        return Policy()
    m = f.mapping(("scheduler", "migration"))
    scheduler = m.value("scheduler", lambda s: s.mapping(_SCHEDULER).read(_SCHEDULER), {})
    migration_field = m.get("migration")
    if migration_field is None:
        return Policy(scheduler=SchedulerPolicy(**scheduler))
    mm = migration_field.mapping(_MIGRATION)
    values = mm.read(_MIGRATION)
    if "profile" in values:
        profile = _profile(mm.require("profile", ""), values["profile"])
        for key, value in profile.values.items():
            values.setdefault(key, value)  # the scenario's own setting wins
        values["profile"], values["profile_name"] = profile.path, profile.name
    migration = MigrationPolicy(**values)
    if migration.report_interval >= migration.service_down_time:
        where = mm.get("report_interval") or mm.get("service_down_time") or migration_field
        where.fail(
            f"report_interval ({migration.report_interval:g} s) must be less than "
            f"service_down_time ({migration.service_down_time:g} s); expected heartbeats "
            "often enough for services to be seen up"
        )
    return Policy(scheduler=SchedulerPolicy(**scheduler), migration=migration)


def _profile(f: Field, written: str) -> Profile:
    """The profile file named by ``policy.migration.profile`` (relative to the scenario)."""
    base = Path(".") if f.source.startswith("<") else Path(f.source).parent
    path = base / written
    try:
        return load_profile(path)
    except OSError as err:
        f.fail(f"cannot read profile {show(written)} ({path}): {err.strerror or err}; "
               "expected a profile file (YAML, see core/profile.py) relative to the scenario "
               "file")


# -- hosts -----------------------------------------------------------------------------

_HOST: dict[str, Reader] = {
    "ram": size(MAX_BYTES, positive=True),
    "vcpus": integer(1, MAX_VCPUS),
    "disk": size(MAX_BYTES, non_negative=True),
    "hypervisor_type": string("a hypervisor type such as QEMU"),
    "hypervisor_version": _version,
    "cpu_model": choice(CPU_MODELS, "CPU model"),
    "storage": choice([s.value for s in Storage], "storage", Storage),
    "service": boolean,
}

_Hosts = Hosts

def _entry_names(entry: Mapping, what: str) -> tuple[list[str], Field]:
    """The names an entry defines (``name:``, or ``prefix:`` + ``count:``) and their field."""
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


def _hosts(list_field: Field, network: NetworkSpec) -> _Hosts:
    hosts: _Hosts = {}
    for _, entry_field in list_field.items("a list of hosts"):
        entry = entry_field.mapping(
            ("name", "prefix", "count", *_HOST, "rack", "racks"),
            "a host: a mapping with name (or prefix and count), ram, vcpus, ...",
        )
        names, name_field = _entry_names(entry, "host")
        entry.require("ram", "the host's RAM, e.g. 256GiB")
        entry.require("vcpus", "the host's number of CPUs")
        values = {"disk": 0, **entry.read(_HOST)}
        racks: list[str | None] = [None] * len(names)
        if entry.only_one_of("rack", "racks") == "rack":
            rack_field = entry.require("rack", "")
            racks = [check_name(rack_field, rack_field.text("a rack name"), "rack")] * len(names)
        elif "racks" in entry:
            n = entry.require("racks", "").integer(1, len(names))
            size_, extra = divmod(len(names), n)
            racks = [f"rack-{k + 1}" for k in range(n) for _ in range(size_ + (k < extra))]
        for name, rack in zip(names, racks, strict=True):
            if name in hosts:
                name_field.fail(
                    f"duplicate host name {show(name)} (first defined at line "
                    f"{hosts[name][1].line}); expected unique names"
                )
            hosts[name] = (HostSpec(name=name, rack=rack, **values), name_field)
    if not hosts:
        list_field.fail("empty list; expected at least one host")
    _assign_racks(hosts, network)
    return hosts


def _assign_racks(hosts: _Hosts, network: NetworkSpec) -> None:
    """Fill racks from ``hosts_per_rack``, then check: racks for all hosts or for none."""
    if network.hosts_per_rack is not None:
        used = {spec.rack for spec, _ in hosts.values()}
        homeless = [name for name, (spec, _) in hosts.items() if spec.rack is None]
        k = 0
        for start in range(0, len(homeless), network.hosts_per_rack):
            k += 1
            while f"rack-{k}" in used:
                k += 1
            for name in homeless[start : start + network.hosts_per_rack]:
                spec, where = hosts[name]
                hosts[name] = (replace(spec, rack=f"rack-{k}"), where)
    racked = [name for name, (spec, _) in hosts.items() if spec.rack is not None]
    if not racked:
        return
    for name, (spec, where) in hosts.items():
        if spec.rack is None:
            where.fail(
                f"host {show(name)} has no rack while {show(racked[0])} has one; expected a "
                "rack for every host or for none (network.hosts_per_rack fills the gaps)"
            )
    if network.uplink is None:
        hosts[racked[0]][1].fail(
            "hosts are in racks but network.uplink is not set; expected network: "
            "{uplink: RATE} (the rack switch <-> core link, e.g. 40Gbit/s)"
        )


# -- VMs -------------------------------------------------------------------------------

_VM: dict[str, Reader] = {
    "ram": size(MAX_BYTES, positive=True),
    "vcpus": integer(1, MAX_VCPUS),
    "disk": size(MAX_BYTES, non_negative=True),
    "disk_allocated": size(MAX_BYTES, non_negative=True),
    "used_memory": size(MAX_BYTES, non_negative=True),
    "working_set": size(MAX_BYTES, non_negative=True),
    "dirty_rate": rate(non_negative=True),
    "volume_backed": boolean,
    "throttle_response": lambda f: _throttle_response(f),
    "cpu_trace": lambda f: _cpu_trace(f),
    "memory_layout": lambda f: _memory_layout(f),
    "cpu_trace_interval": duration(positive=True),
    "image": string("a disk image: a volume of the host's instances pool, e.g. debian-12.qcow2"),
    "adopt": boolean,
    "dirty_rate_follows_cpu": boolean,
}


def _numbers_up_to(f: Field, high: float, what: str, expected: str) -> list[float]:
    """The list ``f`` of numbers from 0 to ``high`` (each one ``what``, for its error)."""
    values = []
    for _, item in f.items(expected):
        value = item.number()
        if not 0 <= value <= high:
            item.fail(f"{item.describe()} is out of range; expected {what} from 0 to {high:g}")
        values.append(float(value))
    return values


def _cpu_trace(f: Field) -> tuple[float, ...]:
    """A non-empty list of percentages (0-100) of the VM's vCPUs."""
    expected = "a list of CPU utilisation percentages from 0 to 100, e.g. [80, 20, 50]"
    samples = _numbers_up_to(f, 100, "a percentage", expected)
    if not samples:
        f.fail(f"empty list; expected {expected}")
    return tuple(samples)


MAX_LAYOUT_SLICES = 4096


def _memory_layout(f: Field) -> tuple[float, ...]:
    """A non-empty list of shares (0-1), one per equal slice of the RAM, not all 0."""
    expected = ("a list of non-zero shares from 0 to 1, one per equal slice of the RAM, "
                "e.g. [0.7, 1, 0.4, 0]")
    shares = _numbers_up_to(f, 1, "a share", expected)
    if not shares or len(shares) > MAX_LAYOUT_SLICES:
        f.fail(f"{len(shares)} slices; expected {expected} (1 to {MAX_LAYOUT_SLICES} slices)")
    if not any(shares):
        f.fail("every slice is 0; expected at least one share above 0 (where the non-zero "
               "memory lies)")
    return tuple(shares)


def _throttle_response(f: Field) -> float:
    """``cpu_bound`` (1.0), ``clock_paced`` (:data:`CLOCK_PACED_SHARE`) or a number in
    [0, 1]: the share of its CPU the guest's writing needs."""
    expected = "cpu_bound, clock_paced or a number in [0, 1] (the CPU share the writing needs)"
    value = f.scalar(expected)
    if isinstance(value, str):
        if value not in THROTTLE_RESPONSES:
            f.fail(f"unknown throttle response {show(value)}"
                   f"{did_you_mean(value, THROTTLE_RESPONSES)}; expected {expected}")
        return THROTTLE_RESPONSES[value]
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        f.wrong(expected)
    return float(value)


def _vms(list_field: Field, hosts: _Hosts, migration: MigrationPolicy) -> list[VmSpec]:
    vms: dict[str, tuple[VmSpec, Field]] = {}
    dealt: dict[str, int] = {}  # glob -> how many VMs it has dealt so far
    load = {name: [0, 0, 0] for name in hosts}  # RAM, vCPUs, local disk placed so far
    specs = [spec for spec, _ in hosts.values()]
    largest = {  # what the largest host offers (disk: among hosts with local storage)
        "ram": max(h.ram for h in specs),
        "vcpus": max(h.vcpus for h in specs),
        "disk": max((h.disk for h in specs if h.storage == Storage.LOCAL), default=0),
    }
    for _, entry_field in list_field.items("a list of VMs"):
        entry = entry_field.mapping(
            ("name", "prefix", "count", "host", *_VM),
            "a VM: a mapping with name (or prefix and count), host, ram, ...",
        )
        names, name_field = _entry_names(entry, "VM")
        host_field = entry.require("host", "a host name or a glob such as node-*")
        targets = matching_hosts(host_field, hosts)
        entry.require("ram", "the VM's RAM, e.g. 4GiB")
        values = {"vcpus": 1, "disk": 0, "dirty_rate": 0.0, **entry.read(_VM)}
        if values.get("adopt") and "image" in values:
            entry.require("image", "").fail(
                "a VM adopts an existing domain or boots from an image; expected image or "
                "adopt: true, not both")
        if values.get("dirty_rate_follows_cpu") and "cpu_trace" not in values:
            entry.require("dirty_rate_follows_cpu", "").fail(
                "a dirty rate that follows the CPU needs the VM's cpu_trace; expected "
                "cpu_trace with it")
        if migration.model is MigrationModel.TEXTBOOK or "used_memory" in values:
            values.setdefault("used_memory", values["ram"])  # earlier releases' default
            values.setdefault("working_set", int(values["used_memory"] * WORKING_SET_FRACTION))
        else:  # the working set plus what the guest OS itself keeps non-zero
            values.setdefault("working_set", int(values["ram"] * WORKING_SET_FRACTION))
            values["used_memory"] = min(values["ram"],
                                        values["working_set"] + GUEST_OS_FOOTPRINT)
        for key, limit in (("disk_allocated", "disk"), ("used_memory", "ram"),
                           ("working_set", "used_memory")):  # fmt: skip
            if key in values and values[key] > values[limit]:
                entry.require(key, "").fail(
                    f"{format_bytes(values[key])} is more than {limit} "
                    f"({format_bytes(values[limit])}); expected {key} <= {limit}"
                )
        for name in names:
            if name in vms:
                name_field.fail(
                    f"duplicate VM name {show(name)} (first defined at line "
                    f"{vms[name][1].line}); expected unique names"
                )
            host = targets[0]
            if (pattern := host_field.node.value) and _GLOB_CHARS.search(pattern):
                host = targets[dealt.get(pattern, 0) % len(targets)]
                dealt[pattern] = dealt.get(pattern, 0) + 1
            vm = VmSpec(name=name, host=host, **values)
            _place(vm, hosts[host][0], load[host], migration, entry, largest)
            vms[name] = (vm, name_field)
    return [vm for vm, _ in vms.values()]


def _place(
    vm: VmSpec, host: HostSpec, load: list[int], mig: MigrationPolicy, entry: Mapping,
    largest: dict[str, int],
) -> None:
    """Check that ``vm`` fits on ``host`` next to the VMs already placed there (``load``)."""
    local_disk = vm.disk if host.storage == Storage.LOCAL else 0
    for key, need, have in (("ram", vm.ram, host.ram), ("vcpus", vm.vcpus, host.vcpus),
                            ("disk", local_disk, host.disk)):  # fmt: skip
        if need > have:
            fmt: Callable[[int], str] = str if key == "vcpus" else format_bytes
            if need > largest[key]:
                entry.require(key, "").fail(
                    f"VM {show(vm.name)} needs {fmt(need)} but the largest host has "
                    f"{fmt(largest[key])}; expected a VM no larger than the largest host ({key})"
                )
            entry.require(key, "").fail(
                f"VM {show(vm.name)} needs {fmt(need)} but its host {show(host.name)} has "
                f"{fmt(have)}; expected a VM no larger than its host ({key})"
            )
    load[0] += vm.ram
    load[1] += vm.vcpus
    load[2] += local_disk
    caps = (host.ram - mig.reserved_host_memory_mb * MiB, host.vcpus * VCPU_OVERCOMMIT,
            host.disk - mig.reserved_host_disk_mb * MiB)
    for index, (total, cap) in enumerate(zip(load, caps, strict=True)):
        if total > cap:  # the texts are only made for the error (20,000 VMs: 60,000 texts)
            what, how = (
                ("RAM", f"{format_bytes(host.ram)} - reserved_host_memory_mb "
                        f"{mig.reserved_host_memory_mb}"),
                ("vCPUs", f"{VCPU_OVERCOMMIT} x {host.vcpus}"),
                ("disk", f"{format_bytes(host.disk)} - reserved_host_disk_mb "
                         f"{mig.reserved_host_disk_mb}"),
            )[index]  # fmt: skip
            fmt = str if what == "vCPUs" else format_bytes
            entry.require("host", "").fail(
                f"VM {show(vm.name)} does not fit on {show(host.name)}: its VMs need "
                f"{fmt(total)} of {what} but it offers {fmt(max(cap, 0))} ({how}); "
                f"expected the VMs on a host to fit in its {what}"
            )
