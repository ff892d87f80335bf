"""The driver contract (drivers/base.py), checked on every registered driver.

Only the Driver API is used here, so the same assertions hold for the
simulator and for real libvirt hosts; see ``harness.py`` for how to register a
driver. Migrations go through the API exactly as the orchestrator calls it.
"""

from __future__ import annotations

import math

import pytest
from contract.harness import ContractLab

from livemig.core.errors import MigrationError
from livemig.core.flags import POSTCOPY, parse_flags
from livemig.drivers.base import (
    DomainFact,
    DomainState,
    Driver,
    HostFacts,
    HostTable,
    JobType,
    WorldFacts,
)


def live_flags(lab: ContractLab) -> int:
    return parse_flags(lab.policy.live_migration_flag)


# -- facts ----------------------------------------------------------------------------------


def test_is_a_driver(contract_driver: ContractLab) -> None:
    assert isinstance(contract_driver.driver, Driver)


def test_host_names(contract_driver: ContractLab) -> None:
    lab = contract_driver
    names = lab.driver.host_names()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert {lab.source, lab.dest} <= set(names)
    assert len(set(names)) == len(names)
    assert lab.driver.host_names() == names  # a stable order


def test_host_facts_shape_and_units(contract_driver: ContractLab) -> None:
    lab = contract_driver
    for name in (lab.source, lab.dest):
        f = lab.driver.host_facts(name)
        assert isinstance(f, HostFacts) and f.name == name
        for field in ("hypervisor_version", "memory_mb", "free_ram_mb", "vcpus", "vcpus_used",
                      "local_gb", "disk_available_least"):
            value = getattr(f, field)
            assert isinstance(value, int) and not isinstance(value, bool), (field, value)
        assert isinstance(f.hypervisor_type, str) and f.hypervisor_type
        assert isinstance(f.cpu_model, str) and f.cpu_model
        assert f.hypervisor_version > 0
        assert 64 <= f.memory_mb < 1 << 24  # MiB: neither bytes nor GiB
        assert f.free_ram_mb <= f.memory_mb
        assert f.vcpus > 0 and f.vcpus_used >= 0
        assert 0 <= f.disk_available_least <= f.local_gb
        assert isinstance(f.last_heartbeat, float) and math.isfinite(f.last_heartbeat)
        # the compute service is up by Nova's rule
        assert abs(lab.env.now - f.last_heartbeat) <= lab.policy.service_down_time


def test_resident_vm_is_counted_on_its_host(contract_driver: ContractLab) -> None:
    lab = contract_driver
    f = lab.driver.host_facts(lab.source)
    assert f.memory_mb - f.free_ram_mb >= lab.vm_ram_mb  # MiB of the VM (plus reserved)
    assert f.vcpus_used >= 1


def test_host_table_matches_host_facts(contract_driver: ContractLab) -> None:
    lab = contract_driver
    table = lab.driver.host_table()
    assert isinstance(table, HostTable)
    assert list(table.names) == lab.driver.host_names()
    for name in table.names:
        f, row = lab.driver.host_facts(name), table.index[name]
        assert table.memory_mb[row] == f.memory_mb
        assert table.free_ram_mb[row] == f.free_ram_mb
        assert table.vcpus[row] == f.vcpus and table.vcpus_used[row] == f.vcpus_used
        assert table.disk_available_least[row] == f.disk_available_least
        assert table.last_heartbeat[row] == f.last_heartbeat


def test_unknown_host_is_a_key_error(contract_driver: ContractLab) -> None:
    with pytest.raises(KeyError):
        contract_driver.driver.host_facts("no-such-host")


def test_instance_location(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    assert drv.instance_host(lab.vm) == lab.source
    assert drv.instance_running_on(lab.vm, lab.source)
    assert not drv.instance_running_on(lab.vm, lab.dest)
    assert drv.instance_host("no-such-vm") is None
    assert not drv.instance_running_on("no-such-vm", lab.source)


def test_no_job_before_a_migration(contract_driver: ContractLab) -> None:
    assert contract_driver.driver.job_info(contract_driver.vm).type is JobType.NONE


def test_compare_cpu_is_reflexive(contract_driver: ContractLab) -> None:
    lab = contract_driver
    for name in (lab.source, lab.dest):
        assert lab.driver.compare_cpu(name, name) is True


def test_same_cpu_hosts_are_compatible_both_ways(contract_driver: ContractLab) -> None:
    lab = contract_driver  # the canonical hosts have the same CPU
    assert lab.driver.compare_cpu(lab.source, lab.dest)
    assert lab.driver.compare_cpu(lab.dest, lab.source)


def test_shared_storage_test_file(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    marker = drv.create_shared_storage_test_file(lab.dest)
    assert isinstance(marker, str) and marker
    other = drv.create_shared_storage_test_file(lab.dest)
    assert other != marker
    try:
        assert drv.check_shared_storage_test_file(lab.dest, marker)  # a host sees its own
        assert drv.check_shared_storage_test_file(lab.source, marker)  # same pool: shared
        drv.cleanup_shared_storage_test_file(lab.dest, marker)
        assert not drv.check_shared_storage_test_file(lab.dest, marker)
        assert not drv.check_shared_storage_test_file(lab.source, marker)
        assert drv.check_shared_storage_test_file(lab.source, other)  # only that one went
    finally:
        drv.cleanup_shared_storage_test_file(lab.dest, marker)  # idempotent
        drv.cleanup_shared_storage_test_file(lab.dest, other)
    assert not drv.check_shared_storage_test_file(lab.source, other)
    assert not drv.check_shared_storage_test_file(lab.source, "never-created")


def test_cpu_utilisation_is_a_share_of_the_vcpus(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    share = drv.cpu_utilisation(lab.vm)
    assert isinstance(share, float) and 0.0 <= share <= 1.0, share
    with pytest.raises(KeyError):
        drv.cpu_utilisation("no-such-instance")


def test_a_paused_guest_uses_no_cpu(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    try:
        drv.suspend(lab.vm)
        # a paused QEMU runs no vCPU: nothing but a clock tick of rounding
        assert drv.cpu_utilisation(lab.vm) <= 0.02
    finally:
        drv.resume(lab.vm)


# -- actions ----------------------------------------------------------------------------------


def test_full_migration_through_the_driver_api(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    src_before = drv.host_facts(lab.source).free_ram_mb
    dest_before = drv.host_facts(lab.dest).free_ram_mb

    drv.pre_live_migration(lab.vm, lab.dest, False)
    assert drv.host_facts(lab.dest).free_ram_mb == dest_before - lab.vm_ram_mb  # claimed
    drv.start_migration(lab.vm, lab.dest, uri=lab.uri(lab.dest), flags=live_flags(lab),
                        bandwidth_mib=0)
    info, seen = lab.poll_until_ended()
    assert info.type is JobType.COMPLETED, info
    assert set(seen) <= {JobType.UNBOUNDED, JobType.COMPLETED}
    assert info.time_elapsed > 0 and info.data_processed > 0
    assert info.memory_iteration >= 1
    assert info.downtime is not None and info.downtime >= 0

    assert not drv.instance_running_on(lab.vm, lab.source)
    assert drv.instance_running_on(lab.vm, lab.dest)
    assert drv.instance_host(lab.vm) == lab.dest

    drv.post_live_migration(lab.vm, lab.source, lab.dest)
    assert drv.host_facts(lab.source).free_ram_mb == src_before + lab.vm_ram_mb
    assert drv.host_facts(lab.dest).free_ram_mb == dest_before - lab.vm_ram_mb
    assert drv.instance_host(lab.vm) == lab.dest
    assert drv.job_info(lab.vm).type is JobType.COMPLETED  # the orchestrator reads it after post
    assert 0.0 <= drv.cpu_utilisation(lab.vm) <= 1.0  # read where the guest runs now


def test_abort_leaves_the_instance_on_its_source(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    dest_before = drv.host_facts(lab.dest).free_ram_mb
    drv.pre_live_migration(lab.vm, lab.dest, False)
    # 1 MiB/s: the 128 MiB guest cannot finish before the abort
    drv.start_migration(lab.vm, lab.dest, uri=lab.uri(lab.dest), flags=live_flags(lab),
                        bandwidth_mib=1)
    lab.wait(1.0)
    assert drv.job_info(lab.vm).type is JobType.UNBOUNDED
    drv.set_max_downtime(lab.vm, 0.1)  # accepted while the job runs
    drv.abort_job(lab.vm)
    info, _ = lab.poll_until_ended()
    assert info.type is JobType.CANCELLED, info
    assert info.error
    assert drv.instance_running_on(lab.vm, lab.source)
    assert not drv.instance_running_on(lab.vm, lab.dest)
    assert drv.instance_host(lab.vm) == lab.source

    drv.rollback_live_migration(lab.vm, lab.source, lab.dest, False)
    assert drv.host_facts(lab.dest).free_ram_mb == dest_before  # the claim is released
    assert drv.instance_host(lab.vm) == lab.source


def test_rollback_releases_the_destination_claim(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    before = drv.host_facts(lab.dest)
    drv.pre_live_migration(lab.vm, lab.dest, False)
    claimed = drv.host_facts(lab.dest)
    assert claimed.free_ram_mb == before.free_ram_mb - lab.vm_ram_mb
    assert claimed.vcpus_used == before.vcpus_used + 1
    drv.rollback_live_migration(lab.vm, lab.source, lab.dest, False)
    after = drv.host_facts(lab.dest)
    assert (after.free_ram_mb, after.vcpus_used) == (before.free_ram_mb, before.vcpus_used)
    assert drv.instance_host(lab.vm) == lab.source


# -- world facts, suspend / resume, post-copy (issue 4) -----------------------------------------


def vm_facts(lab: ContractLab) -> list[DomainFact]:
    return [f for f in lab.driver.world().domains if f.instance == lab.vm]


def test_world_shows_the_guest_and_the_claims(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    world = drv.world()
    assert isinstance(world, WorldFacts)
    assert vm_facts(lab) == [DomainFact(instance=lab.vm, host=lab.source,
                                        state=DomainState.RUNNING)]
    assert lab.vm not in world.claims
    assert not {lab.source, lab.dest} & set(world.unreachable)
    assert not {lab.source, lab.dest} & set(world.overcommitted)
    drv.pre_live_migration(lab.vm, lab.dest, False)
    assert drv.world().claims.get(lab.vm) == lab.dest
    drv.rollback_live_migration(lab.vm, lab.source, lab.dest, False)
    assert lab.vm not in drv.world().claims
    assert vm_facts(lab) == [DomainFact(instance=lab.vm, host=lab.source,
                                        state=DomainState.RUNNING)]


def test_suspend_and_resume(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    try:
        drv.suspend(lab.vm)
        assert vm_facts(lab) == [DomainFact(instance=lab.vm, host=lab.source,
                                            state=DomainState.PAUSED)]
        assert drv.instance_running_on(lab.vm, lab.source)  # paused is still active
    finally:
        drv.resume(lab.vm)
    assert vm_facts(lab) == [DomainFact(instance=lab.vm, host=lab.source,
                                        state=DomainState.RUNNING)]
    drv.resume(lab.vm)  # running already: nothing happens
    assert vm_facts(lab)[0].state is DomainState.RUNNING


def test_start_postcopy_moves_the_guest_and_the_job_completes(
    contract_driver: ContractLab,
) -> None:
    lab, drv = contract_driver, contract_driver.driver
    src_before = drv.host_facts(lab.source).free_ram_mb
    dest_before = drv.host_facts(lab.dest).free_ram_mb
    drv.pre_live_migration(lab.vm, lab.dest, False)
    # 1 MiB/s: pre-copy would take minutes; post-copy pulls the rest uncapped
    drv.start_migration(lab.vm, lab.dest, uri=lab.uri(lab.dest),
                        flags=live_flags(lab) | POSTCOPY, bandwidth_mib=1)
    lab.wait(1.0)
    assert drv.job_info(lab.vm).type is JobType.UNBOUNDED
    drv.start_postcopy(lab.vm)
    info, seen = lab.poll_until_ended()
    assert info.type is JobType.COMPLETED, info
    assert set(seen) <= {JobType.UNBOUNDED, JobType.COMPLETED}
    assert drv.instance_running_on(lab.vm, lab.dest)
    assert not drv.instance_running_on(lab.vm, lab.source)
    assert drv.instance_host(lab.vm) == lab.dest
    drv.post_live_migration(lab.vm, lab.source, lab.dest)
    assert drv.host_facts(lab.source).free_ram_mb == src_before + lab.vm_ram_mb
    assert drv.host_facts(lab.dest).free_ram_mb == dest_before - lab.vm_ram_mb
    assert vm_facts(lab) == [DomainFact(instance=lab.vm, host=lab.dest,
                                        state=DomainState.RUNNING)]


def test_start_postcopy_without_the_flag_raises(contract_driver: ContractLab) -> None:
    lab, drv = contract_driver, contract_driver.driver
    drv.pre_live_migration(lab.vm, lab.dest, False)
    drv.start_migration(lab.vm, lab.dest, uri=lab.uri(lab.dest), flags=live_flags(lab),
                        bandwidth_mib=1)
    lab.wait(1.0)
    with pytest.raises(MigrationError):
        drv.start_postcopy(lab.vm)
    assert drv.job_info(lab.vm).type is JobType.UNBOUNDED  # the job goes on
    drv.abort_job(lab.vm)
    info, _ = lab.poll_until_ended()
    assert info.type is JobType.CANCELLED, info
    drv.rollback_live_migration(lab.vm, lab.source, lab.dest, False)
    assert drv.instance_host(lab.vm) == lab.source
