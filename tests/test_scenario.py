"""The scenario schema: what loads, the defaults, every error (file, line, field, expectation)."""

from __future__ import annotations

import doctest
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livemig.core import scenario as scenario_module
from livemig.core.model import (
    AbortEvent,
    ControllerRestartEvent,
    DrainEvent,
    FaultEvent,
    FaultKind,
    FaultTrigger,
    ForceCompleteEvent,
    Heuristic,
    LiveMigrateEvent,
    MigrationModel,
    MigrationPolicy,
    NetworkSpec,
    Policy,
    SchedulerPolicy,
    Storage,
    TimeoutAction,
)
from livemig.core.profile import load_profile
from livemig.core.results import model_block
from livemig.core.scenario import (
    MIGRATE_FLAG_NAMES,
    ScenarioError,
    load_scenario,
    parse_hypervisor_version,
    parse_scenario,
)

GiB = 2**30
MiB = 2**20
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

# Lines 1-5; what a test appends starts at line 6.
BASE = """\
hosts:
  - {name: a, ram: 16GiB, vcpus: 4}
  - {name: b, ram: 16GiB, vcpus: 4}
vms:
  - {name: v, host: a, ram: 2GiB}
"""


def load(text: str):  # noqa: ANN201
    return parse_scenario(textwrap.dedent(text), "t.yaml")


def error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(textwrap.dedent(text), "t.yaml")
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return info.value


def fails(text: str, line: int, path: str, *fragments: str) -> str:
    """Assert the one-line message ``t.yaml:LINE: PATH: ...`` containing every fragment."""
    err = error(text)
    message = str(err)
    prefix = f"t.yaml:{line}: {path}: " if path else f"t.yaml:{line}: "
    assert message.startswith(prefix), message
    for fragment in fragments:
        assert fragment in message, message
    assert (err.source, err.line, err.path) == ("t.yaml", line, path)
    return message


def test_doctests() -> None:
    result = doctest.testmod(scenario_module)
    assert result.attempted >= 3 and result.failed == 0


# -- shipped scenarios -----------------------------------------------------------------


def test_every_shipped_scenario_loads() -> None:
    from livemig.consolidation import scenario as consolidation

    paths = sorted(SCENARIOS.glob("*.yaml"))
    for path in [p for p in paths if consolidation.is_consolidation(p.read_text())]:
        assert consolidation.load(path).expect, path  # the consolidation: kind
    paths = [p for p in paths if not consolidation.is_consolidation(p.read_text())]
    names = {path.stem for path in paths}
    assert {"quickstart", "rack-drain", "seed-explicit-dest", "seed-scheduler-retry"} <= names
    assert sum(name.startswith("seed-") for name in names) >= 14
    for path in paths:
        loaded = load_scenario(path)
        assert loaded.source == str(path) and loaded.hosts
        if path.stem.startswith("seed-"):
            head = path.read_text().split("\n\n")[0]
            assert head.startswith("# Seed path:") and "Expected" in head, path


def test_quickstart_and_rack_drain_shapes() -> None:
    quick = load_scenario(SCENARIOS / "quickstart.yaml")
    assert len(quick.hosts) == 8 and {h.rack for h in quick.hosts} == {"rack-1", "rack-2"}
    assert 35 <= len(quick.vms) <= 45
    assert any(isinstance(e, DrainEvent) for e in quick.events)
    assert any(isinstance(e, LiveMigrateEvent) and e.dest is None for e in quick.events)
    drain = load_scenario(SCENARIOS / "rack-drain.yaml")
    assert len(drain.hosts) == 40 and len({h.rack for h in drain.hosts}) == 4
    assert 380 <= len(drain.vms) <= 420
    assert drain.policy.migration.max_concurrent_per_host == 2
    assert [(e.at, type(e)) for e in drain.events] == [(0.0, DrainEvent)] * 3


# -- values and defaults ---------------------------------------------------------------


def test_defaults() -> None:
    loaded = load(BASE)
    assert loaded.name == "t" and loaded.seed == 0 and loaded.source == "t.yaml"
    assert loaded.network == NetworkSpec() and loaded.policy == Policy() and loaded.events == ()
    host = loaded.hosts[0]
    assert (host.ram, host.vcpus, host.disk) == (16 * GiB, 4, 0)
    assert (host.hypervisor_type, host.hypervisor_version) == ("QEMU", 10_000_002)
    assert (host.cpu_model, host.storage, host.rack, host.service) == (
        "Skylake-Server",
        Storage.SHARED,
        None,
        True,
    )
    vm = loaded.vms[0]
    assert (vm.ram, vm.vcpus, vm.disk, vm.disk_allocated) == (2 * GiB, 1, 0, None)
    # qemu model: the working set (a quarter of RAM) plus the guest OS's own footprint
    assert (vm.used_memory, vm.working_set, vm.dirty_rate) == (GiB // 2 + 64 * MiB, GiB // 2,
                                                               0.0)
    assert vm.volume_backed is False and vm.throttle_response == 1.0
    assert parse_scenario(BASE).name == "scenario"


def test_every_field() -> None:
    loaded = load(
        """\
        name: full
        seed: 9
        hosts:
          - name: h1
            ram: 64GiB
            vcpus: 8
            disk: 1TB
            hypervisor_type: KVM
            hypervisor_version: "9.1"
            cpu_model: Haswell
            storage: local
            rack: r1
            service: false
          - {name: h2, ram: 64GiB, vcpus: 8, disk: 1TB, rack: r1, hypervisor_version: 6.2}
          - {name: h3, ram: 64GiB, vcpus: 8, rack: r2, hypervisor_version: 7000001}
        network: {host_link: 25Gbit/s, uplink: 100Gbit/s}
        vms:
          - name: v1
            host: h1
            ram: 8GiB
            vcpus: 2
            disk: 40GiB
            disk_allocated: 4GiB
            used_memory: 6GiB
            working_set: 1GiB
            dirty_rate: 1Gbit/s
            volume_backed: true
        policy:
          scheduler:
            filters: [RamFilter, ComputeFilter]
            ram_allocation_ratio: 1.0
            ram_weight_multiplier: -1
            heuristic: best_fit
            max_retries: 3
          migration:
            live_migration_flag: "VIR_MIGRATE_LIVE, VIR_MIGRATE_PEER2PEER"
            block_migration_flag: [VIR_MIGRATE_LIVE, VIR_MIGRATE_NON_SHARED_INC]
            uri: "qemu+ssh://%s/system"
            bandwidth: 100MiB/s
            max_downtime: 300ms
            poll_interval: 1s
            max_concurrent_per_host: 3
            switchover_cost: 20ms
            completion_timeout: 0
            reserved_host_disk_mb: 1024
            reserved_host_memory_mb: 0
            service_down_time: 2min
            report_interval: 5s
        events:
          - {at: 0, live_migrate: {instance: v1, dest: h2, block_migration: true,
                                   disk_over_commit: true}}
          - {at: 1.5s, drain: {host: h2, block_migration: false}}
        """
    )
    assert (loaded.name, loaded.seed) == ("full", 9)
    h1, h2, h3 = loaded.hosts
    assert (h1.disk, h1.hypervisor_type, h1.hypervisor_version, h1.cpu_model) == (
        10**12,
        "KVM",
        9_001_000,
        "Haswell",
    )
    assert (h1.storage, h1.rack, h1.service) == (Storage.LOCAL, "r1", False)
    assert (h2.hypervisor_version, h3.hypervisor_version) == (6_002_000, 7_000_001)
    assert loaded.network == NetworkSpec(host_link=25e9 / 8, uplink=100e9 / 8)
    vm = loaded.vms[0]
    assert (vm.vcpus, vm.disk, vm.disk_allocated, vm.used_memory, vm.working_set) == (
        2,
        40 * GiB,
        4 * GiB,
        6 * GiB,
        GiB,
    )
    assert (vm.dirty_rate, vm.volume_backed) == (1.25e8, True)
    assert loaded.policy.scheduler == SchedulerPolicy(
        filters=("RamFilter", "ComputeFilter"),
        ram_allocation_ratio=1.0,
        ram_weight_multiplier=-1.0,
        heuristic=Heuristic.BEST_FIT,
        max_retries=3,
    )
    migration = loaded.policy.migration
    assert migration.live_migration_flag == "VIR_MIGRATE_LIVE, VIR_MIGRATE_PEER2PEER"
    assert migration.block_migration_flag == "VIR_MIGRATE_LIVE, VIR_MIGRATE_NON_SHARED_INC"
    assert (migration.uri, migration.bandwidth, migration.max_downtime) == (
        "qemu+ssh://%s/system",
        100 * MiB,
        0.3,
    )
    assert (migration.poll_interval, migration.max_concurrent_per_host) == (1.0, 3)
    assert migration.switchover_cost == pytest.approx(0.02)
    assert (migration.reserved_host_disk_mb, migration.reserved_host_memory_mb) == (1024, 0)
    assert (migration.service_down_time, migration.report_interval) == (120.0, 5.0)
    assert loaded.events == (
        LiveMigrateEvent(at=0.0, instance="v1", dest="h2", block_migration=True,
                         disk_over_commit=True),  # fmt: skip
        DrainEvent(at=1.5, host="h2"),
    )


def test_prefix_count_expansion() -> None:
    loaded = load(
        """\
        hosts:
          - {prefix: node-, count: 12, ram: 64GiB, vcpus: 8}
          - {prefix: small-, count: 9, ram: 64GiB, vcpus: 8}
          - {prefix: x, count: 100, ram: 1GiB, vcpus: 1}
        vms: []
        """
    )
    names = [h.name for h in loaded.hosts]
    assert names[:2] == ["node-01", "node-02"] and names[11] == "node-12"
    assert names[12:21] == [f"small-{i}" for i in range(1, 10)]
    assert names[21] == "x001" and names[-1] == "x100"


def test_glob_deals_round_robin_and_continues_across_entries() -> None:
    loaded = load(
        """\
        hosts:
          - {prefix: n, count: 3, ram: 64GiB, vcpus: 8}
          - {name: other, ram: 64GiB, vcpus: 8}
        vms:
          - {prefix: a, count: 4, host: "n*", ram: 1GiB}
          - {prefix: b, count: 2, host: "n*", ram: 1GiB}
          - {prefix: c, count: 3, host: "n[23]", ram: 1GiB}
          - {name: d, host: "?ther", ram: 1GiB}
        """
    )
    hosts = {vm.name: vm.host for vm in loaded.vms}
    assert [hosts[f"a{i}"] for i in range(1, 5)] == ["n1", "n2", "n3", "n1"]
    assert [hosts["b1"], hosts["b2"]] == ["n2", "n3"]
    assert [hosts[f"c{i}"] for i in range(1, 4)] == ["n2", "n3", "n2"]
    assert hosts["d"] == "other"


def test_racks_split_evenly_and_hosts_per_rack_fills_gaps() -> None:
    loaded = load(
        """\
        hosts:
          - {prefix: n, count: 10, ram: 8GiB, vcpus: 2, racks: 4}
          - {prefix: m, count: 5, ram: 8GiB, vcpus: 2}
          - {name: z, ram: 8GiB, vcpus: 2, rack: rack-6}
        network: {hosts_per_rack: 2, uplink: 40Gbit/s}
        vms: []
        """
    )
    racks = [h.rack for h in loaded.hosts]
    assert racks[:10] == ["rack-1"] * 3 + ["rack-2"] * 3 + ["rack-3"] * 2 + ["rack-4"] * 2
    assert racks[10:15] == ["rack-5", "rack-5", "rack-7", "rack-7", "rack-8"]
    assert racks[15] == "rack-6"
    assert load(BASE + "network: {hosts_per_rack: 1, uplink: 1Gbit/s}").hosts[1].rack == "rack-2"


def test_yaml_anchors_merge_keys_and_extension_keys() -> None:
    loaded = load(
        """\
        x-flavors:
          small: &small {ram: 2GiB, vcpus: 2}
          busy: &busy {dirty_rate: 10MiB/s, vcpus: 4}
        hosts:
          - {name: a, ram: 16GiB, vcpus: 8}
        vms:
          - {name: v1, host: a, <<: *small}
          - {name: v2, host: a, vcpus: 1, <<: [*busy, *small]}
        """
    )
    v1, v2 = loaded.vms
    assert (v1.ram, v1.vcpus) == (2 * GiB, 2)
    assert (v2.ram, v2.vcpus, v2.dirty_rate) == (2 * GiB, 1, 10 * MiB)


def test_capacity_limits_are_inclusive() -> None:
    # 16 GiB - 512 MiB reserved = 15.5 GiB; 4 vCPUs x 16 = 64 vCPUs.
    load(BASE.replace("ram: 2GiB", "ram: 15.5GiB, vcpus: 4") + "  - {prefix: w, count: 60, "
         "host: b, ram: 256MiB, vcpus: 1}\n")  # fmt: skip
    load(
        """\
        hosts: [{name: a, ram: 8GiB, vcpus: 1, disk: 10GiB, storage: local}]
        vms: [{prefix: v, count: 2, host: a, ram: 1GiB, disk: 5GiB}]
        """
    )
    load(  # shared storage: VM disks are not counted against the host's disk
        """\
        hosts: [{name: a, ram: 8GiB, vcpus: 1, disk: 1GiB}]
        vms: [{prefix: v, count: 2, host: a, ram: 1GiB, disk: 5GiB}]
        """
    )


def test_load_scenario_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "my-run.yaml"
    path.write_text(BASE)
    assert load_scenario(path).name == "my-run"
    path.write_text(BASE + "events: [{at: 1s, drain: {host: nowhere}}]\n")
    with pytest.raises(ScenarioError, match=rf"^{path}:6: events\[0\]\.drain\.host: unknown host"):
        load_scenario(str(path))
    path.write_bytes(b"name: ok\nhosts: [\xff]\n")
    with pytest.raises(ScenarioError, match=rf"^{path}:2: not UTF-8 text"):
        load_scenario(path)
    with pytest.raises(FileNotFoundError):
        load_scenario(tmp_path / "missing.yaml")


def test_a_file_name_that_is_not_utf8_gives_a_printable_name(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(b"run-\xff.yaml")  # a surrogate escape in the str
    path.write_text(BASE)
    loaded = load_scenario(path)
    assert loaded.name == "run-\ufffd" and loaded.name.encode("utf-8")  # plots, CSV: text
    assert loaded.source == str(path)  # the path itself, to open it again


def test_flag_names_match_core_flags() -> None:
    flags = pytest.importorskip("livemig.core.flags")
    assert tuple("VIR_MIGRATE_" + n for n in MIGRATE_FLAG_NAMES) == tuple(flags.MIGRATE_FLAGS)


def test_hypervisor_version_helper() -> None:
    assert parse_hypervisor_version("10") == 10_000_000
    with pytest.raises(ValueError, match="not a version"):
        parse_hypervisor_version("10.1000")
    with pytest.raises(ValueError, match="not a version"):
        parse_hypervisor_version(-1)


# -- convergence policy and the issue-4 events ----------------------------------------


def test_convergence_policy_fields() -> None:
    migration = load(
        BASE + textwrap.dedent("""\
        policy:
          migration:
            downtime_steps: 10
            downtime_delay: 75s
            timeout_action: force_complete
            permit_post_copy: true
            permit_auto_converge: true
            keepalive_interval: 2s
            keepalive_count: 3
        """)
    ).policy.migration
    assert (migration.downtime_steps, migration.downtime_delay) == (10, 75.0)
    assert migration.timeout_action is TimeoutAction.FORCE_COMPLETE
    assert (migration.permit_post_copy, migration.permit_auto_converge) == (True, True)
    assert (migration.keepalive_interval, migration.keepalive_count) == (2.0, 3)
    edges = load(BASE + "policy: {migration: {downtime_steps: 0, downtime_delay: 0, "
                 "timeout_action: abort, keepalive_count: 1}}\n").policy.migration  # fmt: skip
    assert (edges.downtime_steps, edges.downtime_delay, edges.keepalive_count) == (0, 0.0, 1)
    assert edges.timeout_action is TimeoutAction.ABORT
    defaults = load(BASE).policy.migration
    assert (defaults.downtime_steps, defaults.timeout_action, defaults.permit_post_copy) == (
        0, TimeoutAction.ABORT, False)  # fmt: skip


def test_operator_fault_and_restart_events() -> None:
    loaded = load(
        BASE + textwrap.dedent("""\
        events:
          - {at: 0s, live_migrate: {instance: v, dest: b}}
          - {at: 1s, abort: {instance: v}}
          - {at: 1s, force_complete: {instance: v}}
          - {at: 2s, host_down: {host: b, trigger: checks_passed}}
          - {at: 2s, host_up: {host: b, trigger: at}}
          - {at: 3s, link_down: {host: a}}
          - {at: 3s, link_up: {host: a}}
          - {at: 4s, service_down: {host: b, trigger: checks_passed}}
          - {at: 4s, service_up: {host: b}}
          - {at: 5s, controller_restart: {down_for: 5s}}
          - {at: 6s, controller_restart: {}}
        """)
    )
    assert loaded.events[1:] == (
        AbortEvent(at=1.0, instance="v"),
        ForceCompleteEvent(at=1.0, instance="v"),
        FaultEvent(at=2.0, kind=FaultKind.HOST_DOWN, host="b", trigger=FaultTrigger.CHECKS_PASSED),
        FaultEvent(at=2.0, kind=FaultKind.HOST_UP, host="b"),
        FaultEvent(at=3.0, kind=FaultKind.LINK_DOWN, host="a", trigger=FaultTrigger.AT),
        FaultEvent(at=3.0, kind=FaultKind.LINK_UP, host="a"),
        FaultEvent(at=4.0, kind=FaultKind.SERVICE_DOWN, host="b",
                   trigger=FaultTrigger.CHECKS_PASSED),  # fmt: skip
        FaultEvent(at=4.0, kind=FaultKind.SERVICE_UP, host="b"),
        ControllerRestartEvent(at=5.0, down_for=5.0),
        ControllerRestartEvent(at=6.0, down_for=0.0),
    )


RACK = """\
seed: 5
hosts:
  - {prefix: n, count: 6, ram: 16GiB, vcpus: 4}
  - {name: spare, ram: 16GiB, vcpus: 4}
vms:
  - {name: v, host: n1, ram: 2GiB}
"""


def _generated(text: str) -> list[FaultEvent]:
    return [e for e in load(text).events if isinstance(e, FaultEvent)]


def test_random_faults_expand_deterministically_within_the_window() -> None:
    text = RACK + ("events:\n  - {at: 10s, random_faults: {hosts: 'n*', host_down: 4, "
                   "link_down: 3, within: 1min, repair: 30s}}\n")  # fmt: skip
    events = _generated(text)
    assert events == _generated(text)  # same file and seed: the same events
    downs = [e for e in events if e.kind in (FaultKind.HOST_DOWN, FaultKind.LINK_DOWN)]
    ups = {(e.kind, e.host, e.at) for e in events if e.kind in (FaultKind.HOST_UP,
                                                                FaultKind.LINK_UP)}  # fmt: skip
    assert sum(e.kind is FaultKind.HOST_DOWN for e in downs) == 4
    assert sum(e.kind is FaultKind.LINK_DOWN for e in downs) == 3
    assert len(events) == 14  # each failure repaired 30 s later
    for e in downs:
        assert 10.0 <= e.at < 70.0 and e.host.startswith("n") and e.trigger is FaultTrigger.AT
        up = FaultKind.HOST_UP if e.kind is FaultKind.HOST_DOWN else FaultKind.LINK_UP
        assert (up, e.host, e.at + 30.0) in ups
    assert [e.at for e in events] == sorted(e.at for e in events)
    other_seed = _generated(text.replace("repair: 30s", "repair: 30s, seed: 6"))
    assert other_seed != events and len(other_seed) == 14
    assert _generated(text.replace("seed: 5", "seed: 6")) == other_seed  # default: scenario's


def test_random_faults_never_fail_a_host_that_is_down() -> None:
    # never repaired: at most one failure per host, the rest skipped
    events = _generated(RACK + "events: [{at: 0s, random_faults: {hosts: 'n[1-3]', "
                        "host_down: 10, link_down: 2, within: 10s}}]\n")  # fmt: skip
    hosts_down = [e.host for e in events if e.kind is FaultKind.HOST_DOWN]
    assert sorted(hosts_down) == ["n1", "n2", "n3"]
    assert sum(e.kind is FaultKind.LINK_DOWN for e in events) == 2
    assert all(e.kind in (FaultKind.HOST_DOWN, FaultKind.LINK_DOWN) for e in events)
    # repaired: a host fails again only after its host_up
    events = _generated(RACK + "events: [{at: 0s, random_faults: {hosts: 'n[12]', "
                        "host_down: 40, within: 100s, repair: 7s}}]\n")  # fmt: skip
    for host in ("n1", "n2"):
        kinds = [e.kind for e in events if e.host == host]
        assert kinds == [FaultKind.HOST_DOWN, FaultKind.HOST_UP] * (len(kinds) // 2), host
    assert 2 < sum(e.kind is FaultKind.HOST_DOWN for e in events) < 40  # some were skipped
    one = _generated(RACK + "events: [{at: 1s, random_faults: {hosts: spare, host_down: 2, "
                     "within: 1s}}]\n")  # fmt: skip
    assert [(e.kind, e.host) for e in one] == [(FaultKind.HOST_DOWN, "spare")]
    assert _generated(RACK + "events: [{at: 1s, random_faults: {hosts: '*', within: 1s}}]\n") == []


def test_random_faults_merge_with_written_events_by_time() -> None:
    loaded = load(
        RACK + textwrap.dedent("""\
        events:
          - {at: 0s, live_migrate: {instance: v}}
          - {at: 5s, random_faults: {hosts: 'n*', host_down: 3, within: 20s, repair: 4s}}
          - {at: 5s, abort: {instance: v}}
          - {at: 15s, controller_restart: {}}
          - {at: 25s, random_faults: {hosts: spare, link_down: 1, within: 1ms}}
          - {at: 25s, force_complete: {instance: v}}
        """)
    )
    events = loaded.events
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert isinstance(events[0], LiveMigrateEvent)
    assert events[1] == AbortEvent(at=5.0, instance="v")  # failures come after 5 s
    restart = events.index(ControllerRestartEvent(at=15.0))
    assert all(e.at <= 15.0 for e in events[:restart]) and all(e.at >= 15.0 for e in
                                                              events[restart:])  # fmt: skip
    # at 25 s the generator comes first (file order), its failure just after 25 s
    last = [e for e in events if e.at >= 25.0]
    assert last[0] == ForceCompleteEvent(at=25.0, instance="v")
    assert last[1].kind is FaultKind.LINK_DOWN and last[1].host == "spare" and last[1].at < 25.001
    assert len(events) == 4 + 3 * 2 + 1  # 4 written actions; 3 failures + repairs; 1 failure
    # a second generator without a seed draws differently from the first one
    twice = _generated(RACK + "events:\n" + "  - {at: 0s, random_faults: {hosts: 'n*', "
                       "host_down: 3, within: 10s}}\n" * 2)  # fmt: skip
    first = sorted(e.at for e in twice)[:3]
    assert len(twice) == 6 and sorted(e.at for e in twice) != sorted(first * 2)


def test_events_at_equal_times_keep_file_order() -> None:
    events = load(
        RACK + textwrap.dedent("""\
        events:
          - {at: 1s, force_complete: {instance: v}}
          - {at: 1s, random_faults: {hosts: n1, host_down: 1, within: 1us}}
          - {at: 1s, host_up: {host: n2}}
          - {at: 1s, abort: {instance: v}}
          - {at: 1s, controller_restart: {}}
        """)
    ).events
    assert [type(e) for e in events[:4]] == [ForceCompleteEvent, FaultEvent, AbortEvent,
                                             ControllerRestartEvent]  # fmt: skip
    assert events[1].kind is FaultKind.HOST_UP and events[1].host == "n2"
    assert events[4].kind is FaultKind.HOST_DOWN and 1.0 < events[4].at < 1.000001


# -- errors ----------------------------------------------------------------------------

HOST_A = "  - {name: a, ram: 16GiB, vcpus: 4}\n"

ERRORS = [
    # YAML itself
    ("syntax", "hosts:\n  - {name: a\nvms: []\n", 3, "", ["YAML syntax error"]),
    ("syntax-indent", BASE + "  bad: [1\n", 6, "", ["YAML syntax error"]),
    ("empty", "", 1, "", ["no content", "expected a mapping"]),
    ("comments-only", "# nothing\n", 1, "", ["no content"]),
    ("not-a-mapping", "- a\n- b\n", 1, "", ["a list is not valid here", "expected a mapping"]),
    ("two-documents", BASE + "---\nname: x\n", 6, "", ["YAML syntax error", "single document"]),
    ("duplicate-key", BASE + "seed: 1\nseed: 2\n", 7, "", ["duplicate key 'seed'", "line 6"]),
    ("duplicate-nested", BASE + "network:\n  uplink: 1Gbit/s\n  uplink: 2Gbit/s\n", 8,
     "network", ["duplicate key 'uplink' (first at line 7)"]),
    ("python-tag", BASE + "seed: !!python/object/apply:os.system [ls]\n", 6, "seed",
     ["unsupported YAML tag", "expected an integer"]),
    ("python-name", BASE + "name: !!python/name:os.system\n", 6, "name", ["unsupported YAML tag"]),
    ("timestamp", BASE + "events: [{at: 2001-12-14, drain: {host: a}}]\n", 6, "events[0].at",
     ["unsupported YAML tag", "timestamp"]),
    ("set-tag", BASE + "network: !!set {a, b}\n", 6, "network", ["expected a mapping"]),
    ("custom-tag", BASE + "seed: !seed 3\n", 6, "seed", ["unsupported YAML tag '!seed'"]),
    ("control-char", BASE + "name: \x01\n", 6, "", ["cannot read", "#x01"]),
    ("deep", "[" * 600, 1, "", ["nested too deeply"]),
    ("int-key", BASE + "1: x\n", 6, "", ["key 1 is not a string"]),
    ("merge-scalar", BASE + "network: {<<: 5}\n", 6, "network", ["to merge with <<"]),
    # top level
    ("unknown-top", BASE + "evnts: []\n", 6, "", ["unknown key 'evnts'", "did you mean 'events'",
                                                  "expected one of name, seed, hosts"]),
    ("missing-hosts", "vms: []\n", 1, "", ["missing key 'hosts'", "expected a list of hosts"]),
    ("missing-vms", "hosts:\n" + HOST_A, 1, "", ["missing key 'vms'"]),
    ("hosts-empty", "hosts: []\nvms: []\n", 1, "hosts", ["empty list", "at least one host"]),
    ("hosts-mapping", "hosts: {a: 1}\nvms: []\n", 1, "hosts", ["a mapping is not valid here",
                                                               "expected a list of hosts"]),
    ("name-bool", BASE + "name: yes\n", 6, "name", ["yes is not a string", "quote it"]),
    ("name-empty", BASE + "name: ''\n", 6, "name", ["empty string"]),
    ("seed-negative", BASE + "seed: -1\n", 6, "seed", ["-1 is out of range",
                                                       "expected an integer >= 0"]),
    ("seed-float", BASE + "seed: 1.5\n", 6, "seed", ["1.5 is not valid here",
                                                     "expected an integer"]),
    ("seed-huge-literal", BASE + "seed: 0b_\n", 6, "seed", ["expected an integer"]),
    # hosts
    ("host-unknown-key", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, vcpu: 2}\nvms: []\n", 2,
     "hosts[0]", ["unknown key 'vcpu'", "did you mean 'vcpus'", "expected one of name, prefix"]),
    ("host-no-name", "hosts:\n  - {ram: 1GiB, vcpus: 1}\nvms: []\n", 2, "hosts[0]",
     ["missing key 'name'", "prefix"]),
    ("host-name-and-prefix", "hosts:\n  - {name: a, prefix: b, count: 2, ram: 1GiB, vcpus: 1}\n"
     "vms: []\n", 2, "hosts[0]", ["'name' and 'prefix' cannot be used together"]),
    ("host-count-no-prefix", "hosts:\n  - {name: a, count: 2, ram: 1GiB, vcpus: 1}\nvms: []\n",
     2, "hosts[0].count", ["count needs a prefix"]),
    ("host-prefix-no-count", "hosts:\n  - {prefix: a, ram: 1GiB, vcpus: 1}\nvms: []\n", 2,
     "hosts[0]", ["missing key 'count'"]),
    ("host-count-zero", "hosts:\n  - {prefix: a, count: 0, ram: 1GiB, vcpus: 1}\nvms: []\n", 2,
     "hosts[0].count", ["0 is out of range", "expected an integer >= 1 and <= 100000"]),
    ("host-count-huge", "hosts:\n  - {prefix: a, count: 10000000000, ram: 1GiB, vcpus: 1}\n"
     "vms: []\n", 2, "hosts[0].count", ["out of range"]),
    ("host-name-space", "hosts:\n  - {name: a b, ram: 1GiB, vcpus: 1}\nvms: []\n", 2,
     "hosts[0].name", ["'a b' is not a valid host name", "expected no spaces"]),
    ("host-no-ram", "hosts:\n  - {name: a, vcpus: 1}\nvms: []\n", 2, "hosts[0]",
     ["missing key 'ram'"]),
    ("host-no-vcpus", "hosts:\n  - {name: a, ram: 1GiB}\nvms: []\n", 2, "hosts[0]",
     ["missing key 'vcpus'"]),
    ("host-ram-zero", "hosts:\n  - {name: a, ram: 0, vcpus: 1}\nvms: []\n", 2, "hosts[0].ram",
     ["0 must be > 0"]),
    ("host-ram-unit", "hosts:\n  - {name: a, ram: 16 gb, vcpus: 1}\nvms: []\n", 2,
     "hosts[0].ram", ["'16 gb' is not a size", "expected a number and one of B, KiB",
                      "did you mean 'GB'"]),
    ("host-vcpus-str", "hosts:\n  - {name: a, ram: 1GiB, vcpus: many}\nvms: []\n", 2,
     "hosts[0].vcpus", ["'many' is not valid here", "expected an integer >= 1"]),
    ("host-vcpus-list", "hosts:\n  - {name: a, ram: 1GiB, vcpus: [1]}\nvms: []\n", 2,
     "hosts[0].vcpus", ["a list is not valid here"]),
    ("host-disk-negative", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, disk: -1GiB}\nvms: []\n",
     2, "hosts[0].disk", ["'-1GiB' must be >= 0"]),
    ("host-version", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, hypervisor_version: 10.x}\n"
     "vms: []\n", 2, "hosts[0].hypervisor_version", ["'10.x' is not a version",
                                                     "expected MAJOR[.MINOR[.MICRO]]"]),
    ("host-version-bool", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, hypervisor_version: no}\n"
     "vms: []\n", 2, "hosts[0].hypervisor_version", ["expected a version"]),
    ("host-cpu", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, cpu_model: Skylake}\nvms: []\n", 2,
     "hosts[0].cpu_model", ["unknown CPU model 'Skylake'", "did you mean 'Skylake-Server'",
                            "expected one of Nehalem, SandyBridge"]),
    ("host-storage", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, storage: nfs}\nvms: []\n", 2,
     "hosts[0].storage", ["unknown storage 'nfs'", "expected one of shared, local"]),
    ("host-service", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, service: maybe}\nvms: []\n", 2,
     "hosts[0].service", ["expected true or false"]),
    ("host-type-empty", "hosts:\n  - {name: a, ram: 1GiB, vcpus: 1, hypervisor_type: ' '}\n"
     "vms: []\n", 2, "hosts[0].hypervisor_type", ["empty string"]),
    ("host-duplicate", BASE.replace("name: b", "name: a"), 3, "hosts[1].name",
     ["duplicate host name 'a'", "first defined at line 2"]),
    ("host-duplicate-prefix", "hosts:\n  - {name: n2, ram: 1GiB, vcpus: 1}\n  - {prefix: n, "
     "count: 3, ram: 1GiB, vcpus: 1}\nvms: []\n", 3, "hosts[1].prefix",
     ["duplicate host name 'n2'"]),
    ("rack-and-racks", "hosts:\n  - {prefix: a, count: 2, ram: 1GiB, vcpus: 1, rack: r, "
     "racks: 2}\nvms: []\n", 2, "hosts[0]", ["'rack' and 'racks' cannot be used together"]),
    ("racks-too-many", "hosts:\n  - {prefix: a, count: 2, ram: 1GiB, vcpus: 1, racks: 3}\n"
     "vms: []\n", 2, "hosts[0].racks", ["3 is out of range", "<= 2"]),
    ("rack-partial", BASE.replace("vcpus: 4}", "vcpus: 4, rack: r1}", 1)
     + "network: {uplink: 1Gbit/s}\n", 3, "hosts[1].name",
     ["'b' has no rack while 'a' has one", "hosts_per_rack"]),
    ("rack-no-uplink", BASE.replace("vcpus: 4}", "vcpus: 4, rack: r1}"), 2, "hosts[0].name",
     ["network.uplink is not set", "expected network: {uplink: RATE}"]),
    ("hosts-per-rack-no-uplink", BASE + "network: {hosts_per_rack: 4}\n", 2, "hosts[0].name",
     ["network.uplink is not set"]),
    # network
    ("network-unknown", BASE + "network: {uplinks: 1Gbit/s}\n", 6, "network",
     ["unknown key 'uplinks'", "did you mean 'uplink'"]),
    ("network-link-zero", BASE + "network: {host_link: 0}\n", 6, "network.host_link",
     ["0 must be > 0"]),
    ("network-link-size", BASE + "network: {host_link: 10GiB}\n", 6, "network.host_link",
     ["'10GiB' is not a rate", "did you mean 'GiB/s'"]),
    ("network-hosts-per-rack", BASE + "network: {hosts_per_rack: 0}\n", 6,
     "network.hosts_per_rack", ["expected an integer >= 1"]),
    ("network-list", BASE + "network: [1]\n", 6, "network", ["a list is not valid here",
                                                            "expected a mapping with keys"]),
    # vms
    ("vm-unknown-host", BASE.replace("host: a", "host: c"), 5, "vms[0].host",
     ["unknown host 'c'", "expected a host defined under hosts"]),
    ("vm-host-typo", BASE.replace("host: a", "host: aa").replace("name: b", "name: ab"), 5,
     "vms[0].host", ["unknown host 'aa'"]),
    ("vm-glob-nothing", BASE.replace("host: a", "host: 'z*'"), 5, "vms[0].host",
     ["the glob 'z*' matches no host"]),
    ("vm-host-null", BASE.replace("host: a", "host: null"), 5, "vms[0].host",
     ["expected a host name or a glob"]),
    ("vm-no-host", BASE.replace("host: a, ", ""), 5, "vms[0]", ["missing key 'host'"]),
    ("vm-no-ram", BASE.replace(", ram: 2GiB", ""), 5, "vms[0]", ["missing key 'ram'"]),
    ("vm-duplicate", BASE + "  - {name: v, host: b, ram: 1GiB}\n", 6, "vms[1].name",
     ["duplicate VM name 'v'", "first defined at line 5"]),
    ("vm-bigger-ram", BASE.replace("ram: 2GiB", "ram: 17GiB").replace("b, ram: 16", "b, ram: 32"),
     5, "vms[0].ram", ["VM 'v' needs 17 GiB but its host 'a' has 16 GiB",
                       "expected a VM no larger than its host (ram)"]),
    ("vm-bigger-vcpus", BASE.replace("ram: 2GiB", "ram: 2GiB, vcpus: 5").replace("vcpus: 4}\nvms",
     "vcpus: 8}\nvms"), 5, "vms[0].vcpus", ["needs 5 but its host 'a' has 4"]),
    ("vm-bigger-disk", "hosts: [{name: a, ram: 8GiB, vcpus: 1, disk: 10GiB, storage: local},\n"
     "        {name: b, ram: 8GiB, vcpus: 1, disk: 20GiB, storage: local}]\n"
     "vms: [{name: v, host: a, ram: 1GiB, disk: 11GiB}]\n", 3, "vms[0].disk",
     ["needs 11 GiB but its host 'a' has 10 GiB"]),
    ("vm-sum-ram", BASE + "  - {prefix: w, count: 4, host: a, ram: 4GiB}\n", 6, "vms[1].host",
     ["VM 'w4' does not fit on 'a'", "need 18 GiB of RAM", "offers 15.5 GiB",
      "reserved_host_memory_mb 512", "expected the VMs on a host to fit"]),
    ("vm-sum-vcpus", BASE + "  - {prefix: w, count: 64, host: a, ram: 1MiB}\n", 6, "vms[1].host",
     ["need 65 of vCPUs", "offers 64 (16 x 4)"]),
    ("vm-sum-disk", "hosts: [{name: a, ram: 8GiB, vcpus: 1, disk: 10GiB, storage: local}]\n"
     "vms: [{prefix: v, count: 3, host: a, ram: 1GiB, disk: 4GiB}]\n"
     "policy: {migration: {reserved_host_disk_mb: 0}}\n", 2, "vms[0].host",
     ["VM 'v3' does not fit", "need 12 GiB of disk", "offers 10 GiB"]),
    ("vm-sum-disk-reserved", "hosts: [{name: a, ram: 8GiB, vcpus: 1, disk: 10GiB, "
     "storage: local}]\nvms: [{prefix: v, count: 2, host: a, ram: 1GiB, disk: 5GiB}]\n"
     "policy: {migration: {reserved_host_disk_mb: 1}}\n", 2, "vms[0].host",
     ["reserved_host_disk_mb 1"]),
    ("vm-used-over-ram", BASE.replace("ram: 2GiB", "ram: 2GiB, used_memory: 3GiB"), 5,
     "vms[0].used_memory", ["3 GiB is more than ram (2 GiB)", "expected used_memory <= ram"]),
    ("vm-ws-over-used", BASE.replace("ram: 2GiB", "ram: 2GiB, used_memory: 1GiB, "
     "working_set: 1.5GiB"), 5, "vms[0].working_set", ["expected working_set <= used_memory"]),
    ("vm-ws-over-ram", BASE.replace("ram: 2GiB", "ram: 2GiB, working_set: 3GiB"), 5,
     "vms[0].working_set", ["more than used_memory (2 GiB)"]),
    ("vm-allocated-over-disk", BASE.replace("ram: 2GiB", "ram: 2GiB, disk: 1GiB, "
     "disk_allocated: 2GiB"), 5, "vms[0].disk_allocated", ["expected disk_allocated <= disk"]),
    ("vm-dirty-negative", BASE.replace("ram: 2GiB", "ram: 2GiB, dirty_rate: -5MiB/s"), 5,
     "vms[0].dirty_rate", ["'-5MiB/s' must be >= 0"]),
    ("vm-dirty-nan", BASE.replace("ram: 2GiB", "ram: 2GiB, dirty_rate: .nan"), 5,
     "vms[0].dirty_rate", ["is not a finite number"]),
    ("vm-volume-backed", BASE.replace("ram: 2GiB", "ram: 2GiB, volume_backed: 1"), 5,
     "vms[0].volume_backed", ["expected true or false"]),
    ("vm-entry-scalar", BASE + "  - v2\n", 6, "vms[1]", ["'v2' is not valid here",
                                                        "expected a VM: a mapping"]),
    # policy
    ("policy-unknown", BASE + "policy: {scheduling: {}}\n", 6, "policy",
     ["unknown key 'scheduling'", "did you mean 'scheduler'"]),
    ("filter-unknown", BASE + "policy: {scheduler: {filters: [RamFilter, RamFiltr]}}\n", 6,
     "policy.scheduler.filters[1]", ["unknown filter 'RamFiltr'", "did you mean 'RamFilter'",
                                     "expected one of RetryFilter"]),
    ("filter-duplicate", BASE + "policy: {scheduler: {filters: [RamFilter, RamFilter]}}\n", 6,
     "policy.scheduler.filters[1]", ["duplicate filter 'RamFilter'"]),
    ("filters-string", BASE + "policy: {scheduler: {filters: RamFilter}}\n", 6,
     "policy.scheduler.filters", ["expected a list of filter names"]),
    ("heuristic", BASE + "policy: {scheduler: {heuristic: bestfit}}\n", 6,
     "policy.scheduler.heuristic", ["unknown heuristic 'bestfit'", "did you mean 'best_fit'",
                                    "expected one of weighed, first_fit"]),
    ("ratio-zero", BASE + "policy: {scheduler: {ram_allocation_ratio: 0}}\n", 6,
     "policy.scheduler.ram_allocation_ratio", ["expected a number > 0"]),
    ("multiplier-inf", BASE + "policy: {scheduler: {ram_weight_multiplier: .inf}}\n", 6,
     "policy.scheduler.ram_weight_multiplier", ["out of range", "expected a number"]),
    ("max-retries", BASE + "policy: {scheduler: {max_retries: -2}}\n", 6,
     "policy.scheduler.max_retries", ["expected an integer >= -1"]),
    ("flag-unknown", BASE + "policy: {migration: {live_migration_flag: "
     "'VIR_MIGRATE_LIVE, VIR_MIGRATE_PEERTOPEER'}}\n", 6, "policy.migration.live_migration_flag",
     ["unknown migration flag 'VIR_MIGRATE_PEERTOPEER'", "did you mean 'VIR_MIGRATE_PEER2PEER'",
      "expected comma-separated", "PARALLEL"]),
    ("flag-bare", BASE + "policy: {migration: {block_migration_flag: 'VIR_MIGRATE_LIVE,"
     "NON_SHARED_INC'}}\n", 6, "policy.migration.block_migration_flag",
     ["unknown migration flag 'NON_SHARED_INC'", "did you mean 'VIR_MIGRATE_NON_SHARED_INC'"]),
    ("flag-list-item", BASE + "policy:\n  migration:\n    live_migration_flag:\n"
     "      - VIR_MIGRATE_LIVE\n      - VIR_MIGRATE_FAST\n", 10,
     "policy.migration.live_migration_flag[1]", ["unknown migration flag 'VIR_MIGRATE_FAST'"]),
    ("flag-empty", BASE + "policy: {migration: {live_migration_flag: ' , '}}\n", 6,
     "policy.migration.live_migration_flag", ["no flags", "expected comma-separated"]),
    ("uri-two", BASE + "policy: {migration: {uri: 'qemu://%s/%s'}}\n", 6, "policy.migration.uri",
     ["must contain exactly one %s", "expected a URI template"]),
    ("uri-none", BASE + "policy: {migration: {uri: 'qemu:///system'}}\n", 6,
     "policy.migration.uri", ["exactly one %s"]),
    ("uri-other", BASE + "policy: {migration: {uri: 'qemu://%s:%d/'}}\n", 6,
     "policy.migration.uri", ["exactly one %s"]),
    ("bandwidth-negative", BASE + "policy: {migration: {bandwidth: -1MiB/s}}\n", 6,
     "policy.migration.bandwidth", ["'-1MiB/s' must be >= 0"]),
    ("downtime-zero", BASE + "policy: {migration: {max_downtime: 0ms}}\n", 6,
     "policy.migration.max_downtime", ["'0ms' must be > 0"]),
    ("downtime-no-unit", BASE + "policy: {migration: {max_downtime: 500}}\n", 6,
     "policy.migration.max_downtime", ["500 is not a duration (no unit)",
                                       "expected a number and one of us, ms, s, min, h"]),
    ("poll-zero", BASE + "policy: {migration: {poll_interval: 0}}\n", 6,
     "policy.migration.poll_interval", ["must be > 0"]),
    ("concurrency-zero", BASE + "policy: {migration: {max_concurrent_per_host: 0}}\n", 6,
     "policy.migration.max_concurrent_per_host", ["expected an integer >= 1"]),
    ("switchover-negative", BASE + "policy: {migration: {switchover_cost: -1ms}}\n", 6,
     "policy.migration.switchover_cost", ["must be >= 0"]),
    ("reserved-mem", BASE + "policy: {migration: {reserved_host_memory_mb: 512MiB}}\n", 6,
     "policy.migration.reserved_host_memory_mb", ["expected an integer >= 0"]),
    ("reserved-disk", BASE + "policy: {migration: {reserved_host_disk_mb: -1}}\n", 6,
     "policy.migration.reserved_host_disk_mb", ["expected an integer >= 0"]),
    ("report-interval", BASE + "policy: {migration: {report_interval: 2min}}\n", 6,
     "policy.migration.report_interval", ["must be less than service_down_time (60 s)"]),
    ("service-down-time", BASE + "policy: {migration: {service_down_time: 5s}}\n", 6,
     "policy.migration.service_down_time", ["report_interval (10 s) must be less than"]),
    ("migration-unknown", BASE + "policy: {migration: {live_migration_flags: x}}\n", 6,
     "policy.migration", ["unknown key 'live_migration_flags'",
                          "did you mean 'live_migration_flag'"]),
    # events
    ("events-mapping", BASE + "events: {at: 1s}\n", 6, "events", ["expected a list of events"]),
    ("event-no-at", BASE + "events: [{drain: {host: a}}]\n", 6, "events[0]",
     ["missing key 'at'", "expected the event time"]),
    ("event-at-negative", BASE + "events: [{at: -2s, drain: {host: a}}]\n", 6, "events[0].at",
     ["'-2s' must be >= 0"]),
    ("event-at-no-unit", BASE + "events: [{at: 2, drain: {host: a}}]\n", 6, "events[0].at",
     ["2 is not a duration (no unit)"]),
    ("event-order", BASE + "events:\n  - {at: 2s, drain: {host: a}}\n  - {at: 2s, drain: "
     "{host: b}}\n  - {at: 1s, drain: {host: a}}\n", 9, "events[2].at",
     ["1 s is before the previous event (2 s, line 8)", "expected events in non-decreasing"]),
    ("event-no-action", BASE + "events: [{at: 1s}]\n", 6, "events[0]",
     ["no action", "expected one of live_migrate, drain"]),
    ("event-two-actions", BASE + "events: [{at: 1s, drain: {host: a}, live_migrate: "
     "{instance: v}}]\n", 6, "events[0]", ["'live_migrate' and 'drain' cannot be used together"]),
    ("event-unknown-kind", BASE + "events: [{at: 1s, reboot: {host: a}}]\n", 6, "events[0]",
     ["unknown key 'reboot'", "expected one of at, live_migrate, drain, abort"]),
    ("event-typo-kind", BASE + "events: [{at: 1s, live_migration: {instance: v}}]\n", 6,
     "events[0]", ["did you mean 'live_migrate'"]),
    ("event-body-scalar", BASE + "events: [{at: 1s, drain: a}]\n", 6, "events[0].drain",
     ["'a' is not valid here", "expected a mapping with keys host"]),
    ("migrate-unknown-vm", BASE + "events: [{at: 1s, live_migrate: {instance: w}}]\n", 6,
     "events[0].live_migrate.instance", ["unknown VM 'w'", "expected a VM defined under vms"]),
    ("migrate-no-instance", BASE + "events: [{at: 1s, live_migrate: {dest: b}}]\n", 6,
     "events[0].live_migrate", ["missing key 'instance'"]),
    ("migrate-unknown-dest", BASE + "events: [{at: 1s, live_migrate: {instance: v, dest: bb}}]"
     "\n", 6, "events[0].live_migrate.dest", ["unknown host 'bb'", "did you mean 'b'"]),
    ("migrate-host-key", BASE + "events: [{at: 1s, live_migrate: {instance: v, host: b}}]\n", 6,
     "events[0].live_migrate", ["unknown key 'host'", "the destination is called 'dest'"]),
    ("migrate-block-string", BASE + "events: [{at: 1s, live_migrate: {instance: v, "
     "block_migration: 'true'}}]\n", 6, "events[0].live_migrate.block_migration",
     ["expected true or false"]),
    ("drain-unknown-host", BASE + "events: [{at: 1s, drain: {host: c}}]\n", 6,
     "events[0].drain.host", ["unknown host 'c'"]),
    ("drain-no-host", BASE + "events: [{at: 1s, drain: {}}]\n", 6, "events[0].drain",
     ["missing key 'host'"]),
    ("drain-instance", BASE + "events: [{at: 1s, drain: {host: a, instance: v}}]\n", 6,
     "events[0].drain", ["unknown key 'instance'", "drain moves every VM"]),
]


@pytest.mark.parametrize(
    ("text", "line", "path", "fragments"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors(text: str, line: int, path: str, fragments: list[str]) -> None:
    fails(text, line, path, *fragments)


# The errors issue 4 lists, each with its exact one-line message (file:line: field: ...).
EV = BASE + "events: [{at: 1s, "
EXACT = [
    ("unknown-flag", BASE + "policy: {migration: {live_migration_flag: 'VIR_MIGRATE_LIVE, "
     "VIR_MIGRATE_POSTCOPI'}}\n",
     "t.yaml:6: policy.migration.live_migration_flag: unknown migration flag "
     "'VIR_MIGRATE_POSTCOPI' (did you mean 'VIR_MIGRATE_POSTCOPY'?); expected comma-separated "
     "VIR_MIGRATE_<NAME>, NAME one of " + ", ".join(MIGRATE_FLAG_NAMES)),
    ("unknown-host-vm", BASE.replace("host: a", "host: c"),
     "t.yaml:5: vms[0].host: unknown host 'c'; expected a host defined under hosts"),
    ("unknown-host-fault", EV + "host_down: {host: c}}]\n",
     "t.yaml:6: events[0].host_down.host: unknown host 'c'; expected a host defined under hosts"),
    ("unknown-host-random", EV + "random_faults: {hosts: c, host_down: 1, within: 1min}}]\n",
     "t.yaml:6: events[0].random_faults.hosts: unknown host 'c'; "
     "expected a host defined under hosts"),
    ("random-glob-matches-nothing", EV + "random_faults: {hosts: 'x*', link_down: 1, "
     "within: 1min}}]\n", "t.yaml:6: events[0].random_faults.hosts: the glob 'x*' matches no "
     "host; expected a pattern matching host names"),
    ("vm-larger-than-every-host", BASE.replace("ram: 2GiB", "ram: 20GiB"),
     "t.yaml:5: vms[0].ram: VM 'v' needs 20 GiB but the largest host has 16 GiB; "
     "expected a VM no larger than the largest host (ram)"),
    ("vm-more-vcpus-than-every-host", BASE.replace("ram: 2GiB", "ram: 2GiB, vcpus: 5"),
     "t.yaml:5: vms[0].vcpus: VM 'v' needs 5 but the largest host has 4; "
     "expected a VM no larger than the largest host (vcpus)"),
    ("vm-larger-than-its-host", BASE.replace("ram: 2GiB", "ram: 20GiB").replace("b, ram: 16GiB",
     "b, ram: 32GiB"), "t.yaml:5: vms[0].ram: VM 'v' needs 20 GiB but its host 'a' has "
     "16 GiB; expected a VM no larger than its host (ram)"),
    ("duplicate-host", BASE.replace("name: b", "name: a"),
     "t.yaml:3: hosts[1].name: duplicate host name 'a' (first defined at line 2); "
     "expected unique names"),
    ("duplicate-vm", BASE + "  - {name: v, host: b, ram: 1GiB}\n",
     "t.yaml:6: vms[1].name: duplicate VM name 'v' (first defined at line 5); "
     "expected unique names"),
    ("zero-link", BASE + "network: {host_link: 0}\n",
     "t.yaml:6: network.host_link: 0 must be > 0; expected a rate > 0"),
    ("negative-uplink", BASE + "network: {uplink: -1Gbit/s}\n",
     "t.yaml:6: network.uplink: '-1Gbit/s' must be > 0; expected a rate > 0"),
    ("negative-dirty-rate", BASE.replace("ram: 2GiB", "ram: 2GiB, dirty_rate: -5MiB/s"),
     "t.yaml:5: vms[0].dirty_rate: '-5MiB/s' must be >= 0; expected a rate >= 0"),
    ("negative-bandwidth", BASE + "policy: {migration: {bandwidth: -1MiB/s}}\n",
     "t.yaml:6: policy.migration.bandwidth: '-1MiB/s' must be >= 0; expected a rate >= 0"),
    ("events-out-of-order", BASE + "events:\n  - {at: 2s, drain: {host: a}}\n"
     "  - {at: 1s, abort: {instance: v}}\n",
     "t.yaml:8: events[1].at: 1 s is before the previous event (2 s, line 7); "
     "expected events in non-decreasing time order"),
    ("event-in-the-past", EV.replace("1s", "-1s") + "abort: {instance: v}}]\n",
     "t.yaml:6: events[0].at: '-1s' must be >= 0; expected a duration >= 0"),
    ("unknown-action", EV + "reboot: {host: a}}]\n",
     "t.yaml:6: events[0]: unknown key 'reboot'; expected one of at, live_migrate, drain, "
     "abort, force_complete, host_down, host_up, link_down, link_up, service_down, service_up, "
     "controller_restart, random_faults"),
    ("abort-unknown-vm", EV + "abort: {instance: w}}]\n",
     "t.yaml:6: events[0].abort.instance: unknown VM 'w'; expected a VM defined under vms"),
    ("abort-host-key", EV + "abort: {host: a}}]\n",
     "t.yaml:6: events[0].abort: unknown key 'host' (it names the VM: 'instance'); "
     "expected one of instance"),
    ("abort-no-instance", EV + "abort: {}}]\n",
     "t.yaml:6: events[0].abort: missing key 'instance'; "
     "expected the name of the VM whose migration to act on"),
    ("force-complete-unknown-field", EV + "force_complete: {instance: v, postcopy: true}}]\n",
     "t.yaml:6: events[0].force_complete: unknown key 'postcopy'; expected one of instance"),
    ("fault-unknown-field", EV + "link_down: {host: a, for: 5s}}]\n",
     "t.yaml:6: events[0].link_down: unknown key 'for'; expected one of host, trigger"),
    ("fault-instance-key", EV + "service_down: {instance: v}}]\n",
     "t.yaml:6: events[0].service_down: unknown key 'instance' (a fault names a host); "
     "expected one of host, trigger"),
    ("fault-at-inside", EV + "host_up: {host: a, at: 3s}}]\n",
     "t.yaml:6: events[0].host_up: unknown key 'at' (the time goes beside the action: {at: 2s, "
     "ACTION: {...}}); expected one of host, trigger"),
    ("fault-no-host", EV + "service_up: {}}]\n",
     "t.yaml:6: events[0].service_up: missing key 'host'; expected the host of the service_up"),
    ("restart-unknown-field", EV + "controller_restart: {down: 5s}}]\n",
     "t.yaml:6: events[0].controller_restart: unknown key 'down' (did you mean 'down_for'?); "
     "expected one of down_for"),
    ("restart-negative", EV + "controller_restart: {down_for: -5s}}]\n",
     "t.yaml:6: events[0].controller_restart.down_for: '-5s' must be >= 0; "
     "expected a duration >= 0"),
    ("restart-empty-value", EV + "controller_restart: }]\n",
     "t.yaml:6: events[0].controller_restart: an empty value is not valid here; "
     "expected a mapping with keys down_for"),
    ("random-unknown-field", EV + "random_faults: {hosts: '*', host_down: 1, within: 1min, "
     "repiar: 1s}}]\n", "t.yaml:6: events[0].random_faults: unknown key 'repiar' (did you mean "
     "'repair'?); expected one of hosts, host_down, link_down, within, repair, seed"),
    ("random-host-key", EV + "random_faults: {host: '*', within: 1min}}]\n",
     "t.yaml:6: events[0].random_faults: unknown key 'host' (the hosts that may fail are called "
     "'hosts'); expected one of hosts, host_down, link_down, within, repair, seed"),
    ("random-negative-count", EV + "random_faults: {hosts: '*', host_down: -1, within: 1min}}]\n",
     "t.yaml:6: events[0].random_faults.host_down: -1 is out of range; "
     "expected an integer >= 0 and <= 100000"),
    ("random-zero-window", EV + "random_faults: {hosts: '*', link_down: 1, within: 0s}}]\n",
     "t.yaml:6: events[0].random_faults.within: '0s' must be > 0; expected a duration > 0"),
    ("random-no-window", EV + "random_faults: {hosts: '*', host_down: 1}}]\n",
     "t.yaml:6: events[0].random_faults: missing key 'within'; expected the time window, "
     "e.g. 10min"),
    ("random-negative-repair", EV + "random_faults: {hosts: '*', within: 1s, repair: -1s}}]\n",
     "t.yaml:6: events[0].random_faults.repair: '-1s' must be >= 0; expected a duration >= 0"),
    ("random-negative-seed", EV + "random_faults: {hosts: '*', within: 1s, seed: -3}}]\n",
     "t.yaml:6: events[0].random_faults.seed: -3 is out of range; expected an integer >= 0"),
    ("bad-trigger", EV + "host_down: {host: a, trigger: checks-passed}}]\n",
     "t.yaml:6: events[0].host_down.trigger: unknown trigger 'checks-passed' (did you mean "
     "'checks_passed'?); expected one of at, checks_passed"),
    ("trigger-not-a-string", EV + "host_down: {host: a, trigger: yes}}]\n",
     "t.yaml:6: events[0].host_down.trigger: yes is not a string; expected one of at, "
     "checks_passed (quote it: 'yes')"),
    ("bad-timeout-action", BASE + "policy: {migration: {timeout_action: force-complete}}\n",
     "t.yaml:6: policy.migration.timeout_action: unknown timeout action 'force-complete' (did "
     "you mean 'force_complete'?); expected one of abort, force_complete"),
    ("timeout-action-pause", BASE + "policy: {migration: {timeout_action: pause}}\n",
     "t.yaml:6: policy.migration.timeout_action: unknown timeout action 'pause'; "
     "expected one of abort, force_complete"),
    ("downtime-steps-negative", BASE + "policy: {migration: {downtime_steps: -1}}\n",
     "t.yaml:6: policy.migration.downtime_steps: -1 is out of range; "
     "expected an integer >= 0 and <= 1000"),
    ("downtime-steps-huge", BASE + "policy: {migration: {downtime_steps: 1000001}}\n",
     "t.yaml:6: policy.migration.downtime_steps: 1000001 is out of range; "
     "expected an integer >= 0 and <= 1000"),
    ("downtime-delay-negative", BASE + "policy: {migration: {downtime_delay: -1s}}\n",
     "t.yaml:6: policy.migration.downtime_delay: '-1s' must be >= 0; expected a duration >= 0"),
    ("post-copy-int", BASE + "policy: {migration: {permit_post_copy: 1}}\n",
     "t.yaml:6: policy.migration.permit_post_copy: 1 is not valid here; expected true or false"),
    ("auto-converge-string", BASE + "policy: {migration: {permit_auto_converge: 'yes'}}\n",
     "t.yaml:6: policy.migration.permit_auto_converge: 'yes' is not valid here; "
     "expected true or false"),
    ("keepalive-interval-zero", BASE + "policy: {migration: {keepalive_interval: 0s}}\n",
     "t.yaml:6: policy.migration.keepalive_interval: '0s' must be > 0; expected a duration > 0"),
    ("keepalive-count-zero", BASE + "policy: {migration: {keepalive_count: 0}}\n",
     "t.yaml:6: policy.migration.keepalive_count: 0 is out of range; expected an integer >= 1"),
    # beyond what the simulator's 64-bit arrays and float products hold
    ("host-ram-huge", BASE.replace("ram: 16GiB", "ram: 1e30GiB", 1),
     "t.yaml:2: hosts[0].ram: '1e30GiB' is too large; expected a size <= 8192 TiB"),
    ("vm-disk-huge", BASE.replace("ram: 2GiB", "ram: 2GiB, disk: 8193TiB"),
     "t.yaml:5: vms[0].disk: '8193TiB' is too large; expected a size <= 8192 TiB"),
    ("host-vcpus-huge", BASE.replace("vcpus: 4", "vcpus: 100000000000000000000", 1),
     "t.yaml:2: hosts[0].vcpus: 100000000000000000000 is out of range; "
     "expected an integer >= 1 and <= 1048576"),
    ("reserved-memory-huge", BASE + "policy: {migration: {reserved_host_memory_mb: 8589934593}}\n",
     "t.yaml:6: policy.migration.reserved_host_memory_mb: 8589934593 is out of range; "
     "expected an integer >= 0 and <= 8589934592"),
    ("ratio-huge", BASE + "policy: {scheduler: {ram_allocation_ratio: 1e7}}\n",
     "t.yaml:6: policy.scheduler.ram_allocation_ratio: '1e7' is out of range; "
     "expected a number > 0 and <= 1e+06"),
    ("multiplier-huge", BASE + "policy: {scheduler: {ram_weight_multiplier: -1.0e+308}}\n",
     "t.yaml:6: policy.scheduler.ram_weight_multiplier: -1.0e+308 is out of range; "
     "expected a number from -1e+06 to 1e+06"),
    ("ratio-quoted-exponent", BASE + "policy: {scheduler: {ram_allocation_ratio: '1e3'}}\n",
     "t.yaml:6: policy.scheduler.ram_allocation_ratio: '1e3' is not valid here; "
     "expected a number > 0 and <= 1e+06"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in EXACT], ids=[c[0] for c in EXACT])
def test_exact_messages(text: str, message: str) -> None:
    assert str(error(text)) == message


def test_accepted_edge_values() -> None:
    loaded = load(BASE + "events:\n  - {at: 0, live_migrate: {instance: v, dest: a}}\n"
                  "  - {at: 0s, live_migrate: {instance: v}}\n")  # fmt: skip
    assert loaded.events[0].dest == "a"  # to itself: allowed, the run shows UnableToMigrateToSelf
    assert loaded.events[1].dest is None
    migration = load(BASE + "policy: {migration: {live_migration_flag: 'VIR_MIGRATE_LIVE,', "
                     "uri: 'x://%s/100%%'}}\n").policy.migration  # fmt: skip
    assert (migration.live_migration_flag, migration.uri) == ("VIR_MIGRATE_LIVE", "x://%s/100%%")
    assert load(BASE + "policy: {scheduler: {filters: []}}\n").policy.scheduler.filters == ()
    assert load(BASE.replace("ram: 2GiB", "ram: 2GiB, dirty_rate: 0")).vms[0].dirty_rate == 0.0
    assert MigrationPolicy().uri == load(BASE + "policy: {migration: {}}\n").policy.migration.uri
    # an anchor merged into itself is harmless
    assert load(BASE + "network: &n {<<: *n, uplink: 1Gbit/s}\n").network.uplink == 1.25e8


def test_limits_are_inclusive_and_exponents_are_numbers() -> None:
    loaded = load(
        """\
        hosts: [{name: a, ram: 8192TiB, vcpus: 1048576, disk: 8192TiB, storage: local}]
        vms: [{name: v, host: a, ram: 1GiB, vcpus: 1048576, disk: 8192TiB}]
        policy:
          scheduler: {ram_allocation_ratio: 1e6, ram_weight_multiplier: -1e6}
          migration: {reserved_host_memory_mb: 0, reserved_host_disk_mb: 0}
        """
    )
    assert loaded.hosts[0].ram == loaded.vms[0].disk == 2**53
    assert loaded.policy.scheduler.ram_allocation_ratio == 1e6
    assert loaded.policy.scheduler.ram_weight_multiplier == -1e6
    scheduler = load(BASE + "policy: {scheduler: {ram_allocation_ratio: 2.5e-1, "
                     "ram_weight_multiplier: .5E1}}\n").policy.scheduler  # fmt: skip
    assert (scheduler.ram_allocation_ratio, scheduler.ram_weight_multiplier) == (0.25, 5.0)


def test_error_is_a_value_error_with_parts() -> None:
    err = error(BASE + "seed: x\n")
    assert isinstance(err, ValueError)
    assert (err.source, err.line, err.path) == ("t.yaml", 6, "seed")
    assert err.problem.startswith("'x' is not valid here")


def test_long_values_are_shortened() -> None:
    message = str(error(BASE + "name: [" + "x" * 500 + "]\n"))
    assert len(message) < 200
    message = str(error(BASE.replace("host: a", "host: '" + "y" * 500 + "'")))
    assert len(message) < 400


# -- fuzz ------------------------------------------------------------------------------

VALID = yaml.safe_load(
    """\
name: fuzz
seed: 3
hosts:
  - {prefix: n, count: 3, ram: 64GiB, vcpus: 16, disk: 1TB, storage: local, racks: 2,
     hypervisor_version: "10.0.2", cpu_model: Haswell}
  - {name: m, ram: 32GiB, vcpus: 8, rack: rack-1, service: false}
network: {host_link: 10Gbit/s, uplink: 40Gbit/s}
vms:
  - {prefix: w, count: 4, host: "n*", ram: 4GiB, vcpus: 2, disk: 10GiB, used_memory: 3GiB,
     working_set: 1GiB, dirty_rate: 20MiB/s}
  - {name: d, host: m, ram: 8GiB, volume_backed: true}
policy:
  scheduler: {filters: [RamFilter, ComputeFilter], heuristic: weighed, max_retries: -1}
  migration: {live_migration_flag: "VIR_MIGRATE_LIVE, VIR_MIGRATE_PEER2PEER",
              uri: "qemu+tcp://%s/system", bandwidth: 0, max_downtime: 500ms,
              downtime_steps: 10, downtime_delay: 75s, timeout_action: force_complete,
              permit_post_copy: true, permit_auto_converge: false, keepalive_interval: 5s,
              keepalive_count: 5}
events:
  - {at: 1s, live_migrate: {instance: w1, dest: n2, block_migration: true}}
  - {at: 2s, drain: {host: m}}
  - {at: 3s, abort: {instance: w2}}
  - {at: 3s, force_complete: {instance: d}}
  - {at: 4s, link_down: {host: n1, trigger: checks_passed}}
  - {at: 5s, controller_restart: {down_for: 1s}}
  - {at: 6s, random_faults: {hosts: "n*", host_down: 2, link_down: 1, within: 1min,
                             repair: 10s, seed: 4}}
"""
)

WEIRD = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-1000, max_value=1000),
    st.sampled_from([10**9, 2**64, -(2**63), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
    st.sampled_from(
        ["-5MiB/s", "4GiB", "1Gbit/s", "300ms", "n*", "m", "w1", "%s", "0", "-1s", "1e999GiB",
         "RamFilter", "local", "a b", "VIR_MIGRATE_LIVE", "10.0.2", "*", "[", "~"]
    ),
)  # fmt: skip


def _mutate(data: st.DataObject, node: object) -> object:
    """Return a copy of ``node`` with one random change somewhere inside."""
    if isinstance(node, dict) and node and data.draw(st.integers(0, 3)):
        key = data.draw(st.sampled_from(sorted(node)))
        copy = dict(node)
        action = data.draw(st.sampled_from(["delete", "replace", "descend", "add"]))
        if action == "delete":
            del copy[key]
        elif action == "replace":
            copy[key] = data.draw(WEIRD)
        elif action == "add":
            copy[data.draw(st.text(max_size=8))] = data.draw(WEIRD)
        else:
            copy[key] = _mutate(data, node[key])
        return copy
    if isinstance(node, list) and node and data.draw(st.integers(0, 3)):
        index = data.draw(st.integers(0, len(node) - 1))
        copy = list(node)
        action = data.draw(st.sampled_from(["delete", "replace", "descend", "duplicate"]))
        if action == "delete":
            del copy[index]
        elif action == "replace":
            copy[index] = data.draw(WEIRD)
        elif action == "duplicate":
            copy.insert(index, node[index])
        else:
            copy[index] = _mutate(data, node[index])
        return copy
    return data.draw(WEIRD)


def _check(text: str) -> None:
    try:
        parse_scenario(text, "fuzz.yaml")
    except ScenarioError as err:
        message = str(err)
        assert message.startswith("fuzz.yaml:"), message
        assert len(message.splitlines()) == 1, message


FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.data())
def test_fuzz_mutated_documents(data: st.DataObject) -> None:
    doc = VALID
    for _ in range(data.draw(st.integers(1, 3))):
        doc = _mutate(data, doc)
    _check(yaml.safe_dump(doc, sort_keys=False))


@FUZZ
@given(st.data())
def test_fuzz_mutated_text(data: st.DataObject) -> None:
    text = yaml.safe_dump(VALID, sort_keys=False)
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 10)))
        text = text[:start] + data.draw(st.text(max_size=10)) + text[end:]
    _check(text)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_random_text(text: str) -> None:
    _check(text)


def test_valid_document_loads() -> None:
    loaded = parse_scenario(yaml.safe_dump(VALID), "fuzz.yaml")
    assert len(loaded.hosts) == 4 and len(loaded.vms) == 5 and len(loaded.events) == 6 + 6


# -- invisible characters in names ------------------------------------------------------
INVISIBLE = [("\\0", "U+0000"), ("\\e", "U+001B"), ("\\u202E", "U+202E"), ("\\x7f", "U+007F"),
             ("\\u200B", "U+200B"), ("\\u2028", "U+2028")]
NAMED = """\
name: "{scenario}"
hosts:
  - {{name: "{host}", ram: 16GiB, vcpus: 4, rack: "{rack}"}}
  - {{prefix: "{prefix}", count: 2, ram: 16GiB, vcpus: 4, rack: r1}}
vms:
  - {{name: "{vm}", host: a, ram: 2GiB}}
network: {{uplink: 10Gbit/s}}
events:
  - {{at: 1s, live_migrate: {{instance: "{ref}", dest: "{dest}"}}}}
"""
CLEAN = {"scenario": "s 1", "host": "a", "rack": "r1", "prefix": "n-", "vm": "v", "ref": "v",
         "dest": "a"}
WHERE = {"scenario": (1, "name", "scenario"), "host": (3, "hosts[0].name", "host"),
         "rack": (3, "hosts[0].rack", "rack"), "prefix": (4, "hosts[1].prefix", "host"),
         "vm": (6, "vms[0].name", "VM"), "ref": (9, "events[0].live_migrate.instance", "VM"),
         "dest": (9, "events[0].live_migrate.dest", "host")}


def test_names_without_invisible_characters_load() -> None:
    scenario = load(NAMED.format(**CLEAN))
    assert scenario.name == "s 1" and [h.name for h in scenario.hosts] == ["a", "n-1", "n-2"]


@pytest.mark.parametrize("field", list(WHERE))
@pytest.mark.parametrize(("escape", "code"), INVISIBLE)
def test_invisible_characters_in_names_are_refused(field: str, escape: str, code: str) -> None:
    """Controls (NUL, ESC, DEL), format characters (bidi override U+202E, zero-width space)
    and line separators in any name: one line naming file, line and field."""
    names = dict(CLEAN)
    names[field] = "x" + escape + "y"
    line, path, what = WHERE[field]
    fails(NAMED.format(**names), line, path, f"invisible character {code}",
          f"expected a {what} name of visible characters")


# -- the pre-copy model: model, profile, used_memory default, throttle_response ---------------


def test_used_memory_default_follows_the_model() -> None:
    """qemu: working_set + 64 MiB, capped at RAM; textbook (earlier releases): RAM."""
    qemu = load(BASE.replace("ram: 2GiB}", "ram: 2GiB, working_set: 100MiB}"))
    assert (qemu.vms[0].used_memory, qemu.vms[0].working_set) == (164 * MiB, 100 * MiB)
    full = load(BASE.replace("ram: 2GiB}", "ram: 2GiB, working_set: 2000MiB}"))
    assert full.vms[0].used_memory == 2 * GiB  # capped at RAM
    text = BASE + "policy: {migration: {model: textbook}}\n"
    old = load(text)
    assert (old.vms[0].used_memory, old.vms[0].working_set) == (2 * GiB, GiB // 2)
    given = load(BASE.replace("ram: 2GiB}", "ram: 2GiB, used_memory: 1GiB}"))
    assert (given.vms[0].used_memory, given.vms[0].working_set) == (GiB, GiB // 4)


@pytest.mark.parametrize(("written", "share"), [
    ("cpu_bound", 1.0), ("clock_paced", 0.1), ("0.25", 0.25), ("0", 0.0), ("1", 1.0)])
def test_throttle_response(written: str, share: float) -> None:
    loaded = load(BASE.replace("ram: 2GiB}", f"ram: 2GiB, throttle_response: {written}}}"))
    assert loaded.vms[0].throttle_response == share


def test_throttle_response_errors() -> None:
    fails(BASE.replace("ram: 2GiB}", "ram: 2GiB, throttle_response: clock}"), 5,
          "vms[0].throttle_response", "unknown throttle response 'clock'", "clock_paced")
    fails(BASE.replace("ram: 2GiB}", "ram: 2GiB, throttle_response: 1.5}"), 5,
          "vms[0].throttle_response", "1.5 is not valid here", "a number in [0, 1]")


def test_model_and_profile(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "lab.yaml").write_text(
        "name: lab-q10\nstartup_cost: 300ms\nswitchover_cost: 7ms\nlink_speed: 330MiB/s\n"
        "check_period: 40ms\nx-fit: {cases: 4}\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(BASE + "policy:\n  migration: {profile: profiles/lab.yaml, "
                        "switchover_cost: 9ms, bandwidth_window: 50ms}\n")
    m = load_scenario(scenario).policy.migration
    assert m.model is MigrationModel.QEMU
    assert (m.profile, m.profile_name) == (str(tmp_path / "profiles" / "lab.yaml"), "lab-q10")
    assert m.startup_cost == pytest.approx(0.3) and m.link_speed == 330 * MiB  # the profile's
    assert (m.switchover_cost, m.bandwidth_window) == pytest.approx((0.009, 0.05))  # scenario
    assert m.flush_speed is None  # neither: the model's default applies
    assert m.check_period == pytest.approx(0.04)  # the profile's
    assert load(BASE).policy.migration.profile is None
    block = model_block(m)  # what summary.json records
    assert (block["name"], block["profile"]) == ("qemu", "lab-q10")
    assert block["params"]["flush_speed"] is None and block["params"]["link_speed"] == 330 * MiB
    assert block["params"]["check_period"] == pytest.approx(0.04)


def test_profile_errors(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(BASE + "policy: {migration: {profile: missing.yaml}}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    message = str(info.value)
    assert message.startswith(f"{scenario}:6: policy.migration.profile: cannot read profile")
    assert "missing.yaml" in message and len(message.splitlines()) == 1
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\nstartup_cost: 285ms\nlink_sped: 1Gbit/s\n")
    scenario.write_text(BASE + "policy: {migration: {profile: p.yaml}}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    assert str(info.value).startswith(f"{profile}:3: unknown key 'link_sped'")
    profile.write_text("startup_cost: -1s\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    assert str(info.value).startswith(f"{profile}:1: startup_cost: ")
    # QEMU checks between iterations: a check period of 0 would make its schedule degenerate
    profile.write_text("check_period: 0ms\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(scenario)
    assert str(info.value) == (f"{profile}:1: check_period: '0ms' must be > 0; "
                               "expected a duration > 0")
    fails(BASE + "policy: {migration: {check_period: 0s}}\n", 6, "policy.migration.check_period",
          "must be > 0", "a duration > 0")
    fails(BASE + "policy: {migration: {model: qemu10}}\n", 6, "policy.migration.model",
          "unknown migration model 'qemu10'", "qemu, textbook")


def test_shipped_profile_loads() -> None:
    profile = load_profile(SCENARIOS.parent / "profiles" / "qemu10-lab.yaml")
    assert profile.name == "qemu10-lab"
    assert profile.values["startup_cost"] == pytest.approx(0.285)
    assert profile.values["link_speed"] == 330 * MiB


def test_every_shipped_profile_loads_and_the_calibrated_one_says_how_it_was_fitted() -> None:
    profiles = sorted((SCENARIOS.parent / "profiles").glob("*.yaml"))
    assert len(profiles) >= 2
    for path in profiles:
        assert load_profile(path).values["startup_cost"] > 0
    calibrated = yaml.safe_load((SCENARIOS.parent / "profiles" / "lab-calibrated.yaml")
                                .read_text())
    assert calibrated["measured"]["cases"] == 26 and len(calibrated["measured"]["fitted_on"]) == 6
